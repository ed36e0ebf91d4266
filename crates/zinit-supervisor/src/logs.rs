//! Output capture: every unit's stdout and stderr, line by line, with a
//! timestamp and the stream, in a bounded ring per unit; live followers that
//! catch up from the ring when they lag, and are told how many lines they
//! missed only when those are gone from it too; bytes that are not
//! UTF-8 kept (lossily) without stopping the reader; and an optional log
//! file per unit with size-based rotation. A job's output is finished once
//! the job has ended and its pipes are closed: its followers then end.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::broadcast;

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
    /// The follower lagged and this many lines were dropped for it.
    Missed(u64),
}

/// A live follower of one unit's (or every unit's) output.
#[derive(Debug)]
pub struct Follower {
    hub: Arc<LogHub>,
    unit: Option<String>,
    rx: broadcast::Receiver<Arc<LogLine>>,
    /// The last line delivered (or the snapshot's last): older ones are skipped.
    after: u64,
    /// Lines taken back from the ring after a lag, delivered first.
    backlog: VecDeque<Arc<LogLine>>,
}

impl Follower {
    /// The next line or lag notice; `None` when the unit's output has
    /// ended (a finished job) or the hub is gone.
    pub async fn next(&mut self) -> Option<Followed> {
        loop {
            if let Some(line) = self.backlog.pop_front() {
                self.after = line.seq;
                return Some(Followed::Line(line));
            }
            match self.rx.recv().await {
                Ok(line) if line.seq <= self.after => continue,
                Ok(line) => {
                    self.after = line.seq;
                    return Some(Followed::Line(line));
                }
                Err(broadcast::error::RecvError::Lagged(dropped)) => {
                    let missed = self.catch_up(dropped);
                    if missed > 0 {
                        return Some(Followed::Missed(missed));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// After `dropped` lines were dropped for this follower: takes every
    /// line after the last delivered one back from the ring, and returns
    /// how many are gone from it too. Under the hub's lock, nothing is
    /// pushed meanwhile: the lines since the last delivered one are the
    /// dropped ones and those still waiting in the channel.
    fn catch_up(&mut self, dropped: u64) -> u64 {
        let inner = self.hub.lock();
        let since = dropped + self.rx.len() as u64;
        self.backlog = snapshot_of(&inner, self.unit.as_deref(), None)
            .into_iter()
            .filter(|line| line.seq > self.after)
            .collect();
        // What is still in the channel is in the backlog now: drop it, so
        // that the channel holds only lines after the backlog.
        while self.rx.try_recv().is_ok() {}
        since.saturating_sub(self.backlog.len() as u64)
    }
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<Arc<LogLine>>,
    bytes: usize,
    tx: broadcast::Sender<Arc<LogLine>>,
    /// No more lines will come (a job that has ended): followers end.
    finished: bool,
}

#[derive(Debug)]
struct Inner {
    seq: u64,
    rings: HashMap<String, Ring>,
}

/// Every unit's recent output.
#[derive(Debug)]
pub struct LogHub {
    inner: Mutex<Inner>,
    all: broadcast::Sender<Arc<LogLine>>,
    max_lines: usize,
    max_bytes: usize,
    follow_buffer: usize,
}

impl LogHub {
    /// A hub keeping at most `max_lines` lines and `max_bytes` bytes of text
    /// per unit; followers that fall more than `follow_buffer` lines behind
    /// are told how many they missed.
    pub fn new(max_lines: usize, max_bytes: usize, follow_buffer: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                seq: 0,
                rings: HashMap::new(),
            }),
            all: broadcast::channel(follow_buffer).0,
            max_lines,
            max_bytes,
            follow_buffer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring<'a>(&self, inner: &'a mut Inner, unit: &str) -> &'a mut Ring {
        inner.rings.entry(unit.to_string()).or_insert_with(|| Ring {
            lines: VecDeque::new(),
            bytes: 0,
            tx: broadcast::channel(self.follow_buffer).0,
            finished: false,
        })
    }

    /// Appends a line to `unit`'s ring and sends it to followers.
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
        let (max_lines, max_bytes) = (self.max_lines, self.max_bytes);
        let ring = self.ring(&mut inner, unit);
        ring.bytes += line.text.len();
        ring.lines.push_back(line.clone());
        while ring.lines.len() > max_lines || (ring.bytes > max_bytes && ring.lines.len() > 1) {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes -= old.text.len();
            }
        }
        let _ = ring.tx.send(line.clone());
        let _ = self.all.send(line.clone());
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
        let after = inner.seq;
        let rx = match unit {
            Some(unit) => {
                let ring = self.ring(&mut inner, unit);
                if ring.finished {
                    // Nothing more will come: a follower that ends at once.
                    broadcast::channel(1).1
                } else {
                    ring.tx.subscribe()
                }
            }
            None => self.all.subscribe(),
        };
        let follower = Follower {
            hub: self.clone(),
            unit: unit.map(str::to_string),
            rx,
            after,
            backlog: VecDeque::new(),
        };
        (lines, follower)
    }

    /// Marks `unit`'s output as complete: its followers end once they have
    /// read every line sent so far, and later followers end after their
    /// snapshot. For jobs, whose output ends with them.
    pub fn finish(&self, unit: &str) {
        let mut inner = self.lock();
        let follow_buffer = self.follow_buffer;
        let ring = self.ring(&mut inner, unit);
        if !ring.finished {
            ring.finished = true;
            // Dropping the followers' sender closes their channel.
            ring.tx = broadcast::channel(follow_buffer).0;
        }
    }

    /// Forgets a unit's ring (its followers end).
    pub fn remove(&self, unit: &str) {
        self.lock().rings.remove(unit);
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
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    keep: u32,
    file: std::fs::File,
    size: u64,
}

impl RotatingFile {
    /// Opens (appending to) `path`.
    pub fn open(path: PathBuf, max_size: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            max_size,
            keep,
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
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
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

/// Reads a pipe until every writer has closed it, line by line, into the
/// hub (and the sinks). Returns when the pipe reaches end of file.
pub async fn capture(hub: Arc<LogHub>, unit: String, stream: Stream, pipe: OwnedFd, sinks: Sinks) {
    let Ok(receiver) = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe) else {
        return;
    };
    let mut reader = tokio::io::BufReader::with_capacity(16 * 1024, receiver);
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 {
            return;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let line = hub.push(&unit, stream, text);
        if sinks.echo {
            println!("[{unit}] {}", line.text);
        }
        if let Some(file) = &sinks.file {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = file.write_line(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bounds() {
        let hub = LogHub::new(3, 1000, 16);
        for i in 0..5 {
            hub.push("web", Stream::Stdout, format!("line {i}"));
        }
        let texts: Vec<String> = hub
            .snapshot(Some("web"), None)
            .iter()
            .map(|l| l.text.clone())
            .collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"]);
        let hub = LogHub::new(100, 10, 16);
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
        let hub = LogHub::new(100, 10_000, 16);
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

    async fn texts(follower: &mut Follower, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < n {
            match follower.next().await {
                Some(Followed::Line(line)) => out.push(line.text.clone()),
                other => panic!("{other:?}"),
            }
        }
        out
    }

    #[tokio::test]
    async fn a_lagging_follower_catches_up_from_the_ring_and_hears_only_of_lines_gone() {
        let hub = Arc::new(LogHub::new(5, 10_000, 4));
        hub.push("web", Stream::Stdout, "before".into());
        let (snapshot, mut follower) = hub.follow(Some("web"), None);
        assert_eq!(snapshot.len(), 1);
        hub.push("other", Stream::Stdout, "not for us".into());
        hub.push("web", Stream::Stdout, "after".into());
        assert_eq!(texts(&mut follower, 1).await, ["after"]);
        // Four lines fit the follower's buffer, the ring keeps five: six
        // lines behind, it loses nothing.
        for i in 0..5 {
            hub.push("web", Stream::Stdout, format!("{i}"));
        }
        assert_eq!(texts(&mut follower, 5).await, ["0", "1", "2", "3", "4"]);
        // Ten lines behind, five are gone from the ring too.
        for i in 5..15 {
            hub.push("web", Stream::Stdout, format!("{i}"));
        }
        assert_eq!(follower.next().await, Some(Followed::Missed(5)));
        assert_eq!(
            texts(&mut follower, 5).await,
            ["10", "11", "12", "13", "14"]
        );
        hub.push("web", Stream::Stdout, "live".into());
        assert_eq!(texts(&mut follower, 1).await, ["live"]);
    }

    #[tokio::test]
    async fn followers_of_a_finished_unit_end_after_its_last_line() {
        let hub = Arc::new(LogHub::new(100, 10_000, 16));
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

    #[test]
    fn a_log_file_rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("zt-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("web.log");
        let mut file = RotatingFile::open(path.clone(), 200, 2).expect("open");
        let hub = LogHub::new(10, 10_000, 4);
        for i in 0..20 {
            let line = hub.push("web", Stream::Stdout, format!("line number {i:02}"));
            file.write_line(&line).expect("write");
        }
        assert!(std::fs::metadata(&path).expect("current").len() <= 200);
        assert!(dir.join("web.log.1").exists() && dir.join("web.log.2").exists());
        assert!(!dir.join("web.log.3").exists(), "keeps two rotated files");
        let current = std::fs::read_to_string(&path).expect("read");
        assert!(current.trim_end().ends_with("line number 19"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
