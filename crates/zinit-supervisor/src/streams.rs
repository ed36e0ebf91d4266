//! Units' output streams that survive the server: a FIFO per stream in the
//! streams directory beside the socket (`SOCKET.streams`, mode 0700).
//!
//! A unit's stdout and stderr are the writing ends of two FIFOs, opened
//! read-write (`zinit_process::fifo`), so a unit that writes while no server
//! runs never gets `SIGPIPE` or `EPIPE`: its output waits in the pipe (up to
//! [`zinit_process::fifo::BUFFER`], 64 KiB, per stream, then the writer blocks), and
//! the next server opens the FIFOs by the names in the record and reads on.
//! A FIFO is removed once its reader sees end of file (every writer gone);
//! a starting server removes the ones no recorded unit uses.

use crate::logs::Stream;
use std::collections::HashSet;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zinit_process::fifo;

/// The directory of the FIFOs.
#[derive(Debug, Clone)]
pub(crate) struct StreamDir {
    dir: PathBuf,
}

/// One stream of a unit's instance, as the server reads it.
#[derive(Debug)]
pub(crate) struct Reader {
    pub stream: Stream,
    pub fd: OwnedFd,
    /// The FIFO's path (`None` for a plain pipe).
    pub fifo: Option<PathBuf>,
}

/// A new instance's streams: the readers, and the ends for the child.
#[derive(Debug)]
pub(crate) struct NewStreams {
    pub readers: Vec<Reader>,
    pub stdout: Arc<OwnedFd>,
    pub stderr: Arc<OwnedFd>,
}

fn suffix(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "out",
        Stream::Stderr => "err",
    }
}

/// The stream a recorded FIFO name is for, if it is a name this module
/// gives (`UNIT.SERVER.INSTANCE.out|err`, no slash, not hidden).
pub(crate) fn stream_of(name: &str) -> Option<Stream> {
    if name.is_empty() || name.len() > 255 || name.starts_with('.') || name.contains('/') {
        return None;
    }
    match name.rsplit_once('.')?.1 {
        "out" => Some(Stream::Stdout),
        "err" => Some(Stream::Stderr),
        _ => None,
    }
}

impl StreamDir {
    /// The directory, made if needed (refused if others may write it).
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fifo::prepare_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Two new FIFOs for `unit`'s instance `instance`.
    pub fn create(&self, unit: &str, instance: u64) -> io::Result<NewStreams> {
        let server = std::process::id();
        let mut readers = Vec::new();
        let mut ends = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let path = self
                .dir
                .join(format!("{unit}.{server}.{instance}.{}", suffix(stream)));
            match fifo::create(&path) {
                Ok((reader, end)) => {
                    readers.push(Reader {
                        stream,
                        fd: reader,
                        fifo: Some(path),
                    });
                    ends.push(Arc::new(end));
                }
                Err(e) => {
                    for reader in &readers {
                        remove(reader.fifo.as_deref());
                    }
                    return Err(io::Error::new(
                        e.kind(),
                        format!("creating {}: {e}", path.display()),
                    ));
                }
            }
        }
        let stderr = ends.pop().expect("two ends");
        let stdout = ends.pop().expect("two ends");
        Ok(NewStreams {
            readers,
            stdout,
            stderr,
        })
    }

    /// The readers of a previous server's FIFOs, by recorded name (names
    /// that are not ours, or FIFOs that are gone, are skipped with a note).
    pub fn reopen(&self, names: &[String], notes: &mut Vec<String>) -> Vec<Reader> {
        let mut readers = Vec::new();
        for name in names {
            let Some(stream) = stream_of(name) else {
                notes.push(format!("not a stream name: {name:?}"));
                continue;
            };
            let path = self.dir.join(name);
            match fifo::open_reader(&path) {
                Ok(fd) => readers.push(Reader {
                    stream,
                    fd,
                    fifo: Some(path),
                }),
                Err(e) => notes.push(format!("cannot reopen {}: {e}", path.display())),
            }
        }
        readers
    }

    /// Removes every FIFO in the directory but those named in `keep`.
    pub fn remove_others(&self, keep: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                remove(Some(&entry.path()));
            }
        }
    }
}

/// Removes a FIFO whose reader saw end of file.
pub(crate) fn remove(path: Option<&Path>) {
    if let Some(path) = path
        && let Err(e) = fifo::remove(path)
    {
        tracing::warn!("cannot remove the stream {}: {e}", path.display());
    }
}

/// The name a recorded FIFO is known by (its file name).
pub(crate) fn name_of(path: &Path) -> Option<String> {
    path.file_name().map(|n| n.to_string_lossy().into_owned())
}
