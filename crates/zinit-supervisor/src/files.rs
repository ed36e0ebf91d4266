//! Files root writes or reads on someone else's behalf, safely: a new file
//! is written beside its target (created exclusively, never through a
//! link) and renamed over it, so a reader never sees half a file and a
//! planted link is replaced, never followed.

use nix::fcntl::OFlag;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically, with `mode`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    write_atomically_with(path, mode, |file| file.write_all(bytes))
}

/// Writes to `path` atomically, with `mode`: `write` fills the new file
/// (through a buffer) before it replaces the old one.
pub(crate) fn write_atomically_with(
    path: &Path,
    mode: u32,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&temp)?;
    let mut file = std::io::BufWriter::new(file);
    let written = write(&mut file).and_then(|()| file.flush());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(())
}
