//! Output streams that outlive the process reading them: a named pipe
//! (FIFO) per stream, whose writing end the child gets opened read-write.
//!
//! A plain pipe dies with its reader: once the reading process is gone, the
//! writer's next `write` gets `SIGPIPE` (or `EPIPE`), and most programs
//! die of it. A FIFO opened read-write by the writer is its own reader as
//! far as the kernel is concerned, so writing never fails: while nobody
//! reads, what is written stays in the pipe's buffer ([`BUFFER`]), and once
//! that is full the writer blocks until a reader comes back. A new reader opens the FIFO by its path
//! and continues where the old one stopped.
//!
//! The reader sees end of file once every writing end is closed: the child
//! and everything that inherited its output.

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::stat::{Mode, SFlag};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a stream keeps while nobody reads it: the kernel's default pipe
/// capacity. (A larger one, 1 MiB through `F_SETPIPE_SZ`, was tried: a
/// service flooding its output then kept the server's capture so busy that
/// a stalled log follower was not dropped in time; and an unprivileged
/// user's larger pipes count against its pipe limit.)
pub const BUFFER: usize = 64 * 1024;

/// A new FIFO at `path` (mode 0600; `path` must not exist): its reading
/// end (non-blocking) and the end to hand to a child (read-write, so the
/// pipe always has a reader). Both are close-on-exec.
pub fn create(path: &Path) -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)?;
    let opened = open_reader(path).and_then(|reader| {
        let writer = open(path, true)?;
        Ok((reader, writer))
    });
    if opened.is_err() {
        let _ = std::fs::remove_file(path);
    }
    opened
}

/// The reading end of an existing FIFO (non-blocking, close-on-exec,
/// never through a link, and only a FIFO). Opening it never waits for a
/// writer; once no writer is left, reading gives end of file.
pub fn open_reader(path: &Path) -> io::Result<OwnedFd> {
    open(path, false)
}

fn open(path: &Path, read_write: bool) -> io::Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(true)
        .write(read_write)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)?;
    if !file.metadata()?.file_type().is_fifo() {
        return Err(io::Error::other(format!(
            "{} is not a named pipe",
            path.display()
        )));
    }
    let fd = OwnedFd::from(file);
    if read_write {
        // The child's end blocks when the buffer is full, as a pipe does.
        let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    }
    Ok(fd)
}

/// Removes the FIFO at `path`, if that is what is there (never a file of
/// another type, never through a link).
pub fn remove(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::other(format!(
            "{} is not a named pipe",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `dir` (mode 0700) unless it exists as a directory (not a link)
/// owned by this user that nobody else may write.
pub fn prepare_dir(dir: &Path) -> io::Result<()> {
    match nix::unistd::mkdir(dir, Mode::S_IRWXU) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let meta = nix::sys::stat::lstat(dir)?;
    let is_dir = SFlag::from_bits_truncate(meta.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if !is_dir || meta.st_uid != nix::unistd::geteuid().as_raw() || meta.st_mode & 0o022 != 0 {
        return Err(io::Error::other(format!(
            "{} is not a directory of this user that only it may write",
            dir.display()
        )));
    }
    Ok(())
}
