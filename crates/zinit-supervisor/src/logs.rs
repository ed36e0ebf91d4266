//! Output capture: every unit's stdout and stderr, line by line, with a
//! timestamp and the stream, in a bounded ring per unit; live followers that
//! are told how many lines they missed when they lag; bytes that are not
//! UTF-8 kept (lossily) without stopping the reader; and an optional log
//! file per unit with size-based rotation.

use nix::fcntl::OFlag;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::watch;
use zinit_process::identity::FsIdentity;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One captured line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Increases by one for every line of every unit.
    pub seq: u64,
    /// When it was read.
    pub time: SystemTime,
    /// The unit.
    pub unit: String,
    /// The stream.
    pub stream: Stream,
    /// The text, without the newline (invalid UTF-8 replaced).
    pub text: String,
}

/// Lines longer than this are split.
const MAX_LINE: usize = 64 * 1024;

/// What a follower receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Followed {
    /// The next line.
    Line(Arc<LogLine>),
    /// The follower fell behind and this many lines were dropped from the
    /// ring before it read them (one notice for the whole gap).
    Missed(u64),
}

/// The kept lines of one unit (or of every unit), oldest first, bounded by
/// lines and bytes.
#[derive(Debug, Default)]
struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
    /// How many lines this ring has taken in all: the position of the next
    /// line, so a follower can tell what it missed.
    taken: u64,
    /// No more lines will come (a job that has ended): its followers end
    /// once they have read every line.
    finished: bool,
}

impl Ring {
    fn push(&mut self, line: Arc<LogLine>, max_lines: usize, max_bytes: usize) {
        self.bytes += line.text.len();
        self.lines.push_back(line);
        self.taken += 1;
        while self.lines.len() > max_lines || (self.bytes > max_bytes && self.lines.len() > 1) {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.text.len();
            }
        }
    }

    /// The position of the oldest kept line.
    fn first(&self) -> u64 {
        self.taken - self.lines.len() as u64
    }

    /// The line at position `at`, if still kept.
    fn at(&self, at: u64) -> Option<&Arc<LogLine>> {
        at.checked_sub(self.first())
            .and_then(|i| self.lines.get(usize::try_from(i).ok()?))
    }
}

#[derive(Debug)]
struct Inner {
    seq: u64,
    rings: HashMap<String, Ring>,
    /// Every unit's lines, for followers of all units.
    all: Ring,
}

/// Every unit's recent output. Followers read the rings themselves (no copy
/// per follower), so memory is bounded by the rings whatever the number of
/// followers and however far behind they are.
#[derive(Debug)]
pub struct LogHub {
    inner: Mutex<Inner>,
    /// The number of the newest line; followers wait on it.
    newest: watch::Sender<u64>,
    max_lines: usize,
    max_bytes: usize,
}

impl LogHub {
    /// A hub keeping at most `max_lines` lines and `max_bytes` bytes of text
    /// per unit (and four times that for the ring of all units).
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                seq: 0,
                rings: HashMap::new(),
                all: Ring::default(),
            }),
            newest: watch::channel(0).0,
            max_lines,
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends a line to `unit`'s ring and wakes the followers.
    pub fn push(&self, unit: &str, stream: Stream, text: String) -> Arc<LogLine> {
        let mut inner = self.lock();
        inner.seq += 1;
        let line = Arc::new(LogLine {
            seq: inner.seq,
            time: SystemTime::now(),
            unit: unit.to_string(),
            stream,
            text,
        });
        let (lines, bytes) = (self.max_lines, self.max_bytes);
        inner
            .rings
            .entry(unit.to_string())
            .or_default()
            .push(line.clone(), lines, bytes);
        inner.all.push(line.clone(), lines * 4, bytes * 4);
        let seq = inner.seq;
        drop(inner);
        self.newest.send_replace(seq);
        line
    }

    /// The last `last` lines (all kept lines when `None`) of `unit`, or of
    /// every unit in order when `unit` is `None`.
    pub fn snapshot(&self, unit: Option<&str>, last: Option<usize>) -> Vec<Arc<LogLine>> {
        snapshot_of(&self.lock(), unit, last)
    }

    /// A snapshot and a follower that continues exactly after it (taken
    /// under one lock: no line is lost or repeated in between).
    pub fn follow(
        self: &Arc<Self>,
        unit: Option<&str>,
        last: Option<usize>,
    ) -> (Vec<Arc<LogLine>>, Follower) {
        let mut inner = self.lock();
        let lines = snapshot_of(&inner, unit, last);
        let next = match unit {
            Some(unit) => inner.rings.entry(unit.to_string()).or_default().taken,
            None => inner.all.taken,
        };
        drop(inner);
        let follower = Follower {
            hub: self.clone(),
            unit: unit.map(str::to_string),
            next,
            newest: self.newest.subscribe(),
        };
        (lines, follower)
    }

    /// Marks `unit`'s output as complete: its followers end once they have
    /// read every line so far, and later followers end after their
    /// snapshot. For jobs, whose output ends with them.
    pub fn finish(&self, unit: &str) {
        self.lock()
            .rings
            .entry(unit.to_string())
            .or_default()
            .finished = true;
        self.newest.send_modify(|_| {});
    }

    /// Forgets a unit's ring (its followers end).
    pub fn remove(&self, unit: &str) {
        self.lock().rings.remove(unit);
        self.newest.send_modify(|_| {});
    }
}

/// A live follower of one unit's (or every unit's) output: it reads the
/// ring from its own position, so it holds no lines of its own.
#[derive(Debug)]
pub struct Follower {
    hub: Arc<LogHub>,
    unit: Option<String>,
    /// The position in the ring of the next line to read.
    next: u64,
    newest: watch::Receiver<u64>,
}

impl Follower {
    /// The next line, or one notice for the lines that fell out of the ring
    /// before this follower read them; `None` once the unit is forgotten or
    /// its output has ended (a finished job) and every line was read.
    pub async fn next(&mut self) -> Option<Followed> {
        loop {
            self.newest.mark_unchanged();
            {
                let inner = self.hub.lock();
                let ring = match &self.unit {
                    Some(unit) => inner.rings.get(unit)?,
                    None => &inner.all,
                };
                if self.next < ring.first() {
                    let missed = ring.first() - self.next;
                    self.next = ring.first();
                    return Some(Followed::Missed(missed));
                }
                if let Some(line) = ring.at(self.next) {
                    self.next += 1;
                    return Some(Followed::Line(line.clone()));
                }
                if ring.finished {
                    return None;
                }
            }
            if self.newest.changed().await.is_err() {
                return None;
            }
        }
    }
}

fn snapshot_of(inner: &Inner, unit: Option<&str>, last: Option<usize>) -> Vec<Arc<LogLine>> {
    let mut lines: Vec<Arc<LogLine>> = match unit {
        Some(unit) => inner
            .rings
            .get(unit)
            .map(|r| r.lines.iter().cloned().collect())
            .unwrap_or_default(),
        None => {
            let mut all: Vec<Arc<LogLine>> = inner
                .rings
                .values()
                .flat_map(|r| r.lines.iter().cloned())
                .collect();
            all.sort_unstable_by_key(|l| l.seq);
            all
        }
    };
    if let Some(last) = last {
        let skip = lines.len().saturating_sub(last);
        lines.drain(..skip);
    }
    lines
}

/// A log file that rotates by size: `path` → `path.1` → ... → `path.keep`.
///
/// It is opened (and rotated) never through a symbolic link, only if it is
/// a regular file with one name, and — for a unit that runs as a user —
/// with that user's rights, so a user who can write the log's directory
/// cannot make root write anywhere else.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    owner: Option<FsIdentity>,
    file: std::fs::File,
    size: u64,
}

/// Opens `path` for appending without following a link at its end, and
/// checks that it is a regular file with one name (not a hard link to
/// someone else's file).
fn open_append(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        // Never through a link, and never blocking on a FIFO planted there
        // (its open fails at once without a reader; with one, it is not a
        // regular file).
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is a symbolic link; zinit does not write through links",
                        path.display()
                    ),
                )
            } else {
                e
            }
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a regular file with a single name; zinit does not write to it",
                path.display()
            ),
        ));
    }
    Ok(file)
}

impl RotatingFile {
    /// Opens (appending to) `path`, as `owner` when given (its directory is
    /// created first, as that user).
    pub fn open(
        path: PathBuf,
        max_size: u64,
        keep: u32,
        owner: Option<FsIdentity>,
    ) -> io::Result<Self> {
        let open = || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open_append(&path)
        };
        let file = match &owner {
            Some(owner) => owner.run(open)?,
            None => open()?,
        };
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_size,
            keep,
            owner,
            file,
            size,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    /// Writes one line, rotating first if it would not fit.
    pub fn write_line(&mut self, line: &LogLine) -> io::Result<()> {
        let stamp = humantime::format_rfc3339_millis(line.time);
        let stream = match line.stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        let text = format!("{stamp} {stream} {}\n", line.text);
        if self.size > 0 && self.size + text.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(text.as_bytes())?;
        self.size += text.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let rotate = || {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if std::fs::symlink_metadata(&from).is_ok() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            open_append(&self.path)
        };
        self.file = match &self.owner {
            Some(owner) => owner.run(rotate)?,
            None => rotate()?,
        };
        self.size = 0;
        Ok(())
    }
}

/// Where captured lines go besides the hub.
#[derive(Debug, Clone, Default)]
pub struct Sinks {
    /// Echo to the server's stdout as `[unit] text`.
    pub echo: bool,
    /// A rotating file.
    pub file: Option<Arc<Mutex<RotatingFile>>>,
}

/// The most a capture reads at once, into a buffer on the stack of the
/// thread that runs it (never kept in the task between reads).
const READ_CHUNK: usize = 16 * 1024;

/// Reads a pipe until every writer has closed it, line by line, into the
/// hub (and the sinks). Returns when the pipe reaches end of file. Lines
/// longer than 64 KiB are split. A quiet pipe costs no buffer: bytes are
/// read into a stack buffer once the pipe is readable, and only the start
/// of a line still waiting for its end is kept.
pub async fn capture(hub: Arc<LogHub>, unit: String, stream: Stream, pipe: OwnedFd, sinks: Sinks) {
    let Ok(receiver) = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) else {
        return;
    };
    let emit = |raw: &[u8]| {
        let line = hub.push(&unit, stream, String::from_utf8_lossy(raw).into_owned());
        if sinks.echo {
            println!("[{unit}] {}", line.text);
        }
        if let Some(file) = &sinks.file {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = file.write_line(&line);
        }
    };
    // The start of a line whose end has not been read yet.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let ended = receiver.readable().await.is_err();
        let mut chunk = [0u8; READ_CHUNK];
        let n = if ended {
            0
        } else {
            match receiver.try_read(&mut chunk) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(_) => 0,
            }
        };
        if n == 0 {
            // End of file: a last line without its newline is still a line.
            for part in pending.chunks(MAX_LINE) {
                emit(part);
            }
            return;
        }
        let mut rest = &chunk[..n];
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = (&rest[..at], &rest[at + 1..]);
            rest = tail;
            if pending.is_empty() {
                emit_line(head, &emit);
            } else {
                pending.extend_from_slice(head);
                emit_line(&pending, &emit);
                pending.clear();
            }
        }
        pending.extend_from_slice(rest);
        let whole = pending.len() / MAX_LINE * MAX_LINE;
        if whole > 0 {
            for part in pending[..whole].chunks(MAX_LINE) {
                emit(part);
            }
            pending.drain(..whole);
        }
        if pending.is_empty() {
            // Give a long line's memory back.
            pending = Vec::new();
        }
    }
}

/// Emits one line read up to its newline: without a trailing `\r`, split
/// every 64 KiB.
fn emit_line(line: &[u8], emit: &impl Fn(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        emit(line);
    }
    for part in line.chunks(MAX_LINE) {
        emit(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bounds() {
        let hub = LogHub::new(3, 1000);
        for i in 0..5 {
            hub.push("web", Stream::Stdout, format!("line {i}"));
        }
        let texts: Vec<String> = hub
            .snapshot(Some("web"), None)
            .iter()
            .map(|l| l.text.clone())
            .collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"]);
        let hub = LogHub::new(100, 10);
        for i in 0..5 {
            hub.push("web", Stream::Stdout, format!("{i}xxx"));
        }
        assert_eq!(
            hub.snapshot(Some("web"), None).len(),
            2,
            "10 bytes hold two 4-byte lines"
        );
    }

    #[test]
    fn all_units_interleave_in_order_and_last_n_cuts() {
        let hub = LogHub::new(100, 10_000);
        hub.push("a", Stream::Stdout, "1".into());
        hub.push("b", Stream::Stderr, "2".into());
        hub.push("a", Stream::Stdout, "3".into());
        let all: Vec<String> = hub
            .snapshot(None, None)
            .iter()
            .map(|l| l.text.clone())
            .collect();
        assert_eq!(all, ["1", "2", "3"]);
        assert_eq!(hub.snapshot(None, Some(1))[0].text, "3");
    }

    #[tokio::test]
    async fn a_follower_continues_after_its_snapshot_and_hears_of_lag() {
        let hub = Arc::new(LogHub::new(4, 10_000));
        hub.push("web", Stream::Stdout, "before".into());
        let (snapshot, mut follower) = hub.follow(Some("web"), None);
        assert_eq!(snapshot.len(), 1);
        hub.push("other", Stream::Stdout, "not for us".into());
        hub.push("web", Stream::Stdout, "after".into());
        match follower.next().await {
            Some(Followed::Line(line)) => assert_eq!(line.text, "after"),
            other => panic!("{other:?}"),
        }
        for i in 0..10 {
            hub.push("web", Stream::Stdout, format!("{i}"));
        }
        assert_eq!(follower.next().await, Some(Followed::Missed(6)));
        // One notice for the whole gap, then the oldest line still kept.
        match follower.next().await {
            Some(Followed::Line(line)) => assert_eq!(line.text, "6"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn followers_of_a_finished_unit_end_after_its_last_line() {
        let hub = Arc::new(LogHub::new(100, 10_000));
        hub.push("job-1", Stream::Stdout, "first".into());
        let (_, mut early) = hub.follow(Some("job-1"), None);
        hub.push("job-1", Stream::Stdout, "last".into());
        hub.finish("job-1");
        match early.next().await {
            Some(Followed::Line(line)) => assert_eq!(line.text, "last"),
            other => panic!("{other:?}"),
        }
        assert_eq!(early.next().await, None, "the follower ends");
        let (snapshot, mut late) = hub.follow(Some("job-1"), None);
        assert_eq!(snapshot.len(), 2);
        assert_eq!(late.next().await, None, "a later follower ends at once");
    }

    #[tokio::test]
    async fn followers_hold_no_lines_of_their_own() {
        // A thousand stalled followers on a flood of 64 KiB lines: what is
        // kept is the ring (bounded by bytes), whatever they do not read.
        let hub = Arc::new(LogHub::new(10_000, 1024 * 1024));
        let mut followers: Vec<Follower> =
            (0..1000).map(|_| hub.follow(Some("web"), None).1).collect();
        for _ in 0..200 {
            hub.push("web", Stream::Stdout, "x".repeat(64 * 1024));
        }
        let kept: usize = hub
            .snapshot(Some("web"), None)
            .iter()
            .map(|l| l.text.len())
            .sum();
        assert!(kept <= 1024 * 1024, "{kept} bytes kept");
        // Each follower hears of what it missed, once, then reads on.
        for follower in &mut followers[..3] {
            assert!(matches!(follower.next().await, Some(Followed::Missed(n)) if n > 0));
            assert!(matches!(follower.next().await, Some(Followed::Line(_))));
        }
    }

    #[test]
    fn a_log_file_rotates_by_size() {
        let temp = tempfile::tempdir().expect("temp dir");
        let dir = temp.path().join("logs");
        let path = dir.join("web.log");
        let mut file = RotatingFile::open(path.clone(), 200, 2, None).expect("open");
        let hub = LogHub::new(10, 10_000);
        for i in 0..20 {
            let line = hub.push("web", Stream::Stdout, format!("line number {i:02}"));
            file.write_line(&line).expect("write");
        }
        assert!(std::fs::metadata(&path).expect("current").len() <= 200);
        assert!(dir.join("web.log.1").exists() && dir.join("web.log.2").exists());
        assert!(!dir.join("web.log.3").exists(), "keeps two rotated files");
        let current = std::fs::read_to_string(&path).expect("read");
        assert!(current.trim_end().ends_with("line number 19"));
    }
}
