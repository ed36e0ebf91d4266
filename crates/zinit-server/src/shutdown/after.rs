//! The after-shutdown file (`--after-shutdown-file`): what the shutdown
//! asked the machine to do next, `reboot` or `poweroff`, written when the
//! shutdown ends and before the server exits, for zinit_pid1 to read. It is
//! written atomically (a new temporary file in the same directory, then a
//! rename), so a reader sees the whole word or no file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where to write, and what.
#[derive(Debug, Clone)]
pub struct AfterShutdown {
    /// The file.
    pub path: PathBuf,
    /// `reboot` when true, else `poweroff`.
    pub reboot: bool,
}

impl AfterShutdown {
    /// The word written.
    pub fn word(&self) -> &'static str {
        if self.reboot { "reboot" } else { "poweroff" }
    }

    /// Writes the file. Takes no lock (the watchdog thread calls it too).
    pub fn write(&self) -> std::io::Result<()> {
        let name = self
            .path
            .file_name()
            .ok_or_else(|| std::io::Error::other("the after-shutdown file has no file name"))?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = dir.join(temp_name);
        let _ = std::fs::remove_file(&temp);
        // create_new: O_EXCL, which never follows a symbolic link.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)?;
        file.write_all(format!("{}\n", self.word()).as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &self.path)
    }

    /// Writes the file, logging a failure on stderr.
    pub fn write_or_warn(&self) {
        if let Err(e) = self.write() {
            eprintln!(
                "zinit_server: cannot write the after-shutdown file {}: {e}",
                self.path.display()
            );
        }
    }
}
