//! What a validated service file is: the types every other part reads.

use std::path::PathBuf;
use std::time::Duration;
use zinit_process::limits::Limit;
use zinit_process::stop::StopMode;
use zinit_process::{Port, ProcessFilter, Signal};

/// The most a stop may take; longer timeouts are capped (with a warning).
pub const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Restarts in a row (without a stable run of `reset_after` between them)
/// after which a unit is failed, unless its file says otherwise.
pub const DEFAULT_MAX_RESTARTS: u32 = 10;
/// The stop timeout when none is given (as in the original zinit).
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a readiness test is retried when the file does not say.
pub const DEFAULT_TEST_INTERVAL: Duration = Duration::from_millis(500);
/// How long a readiness test may keep failing when the file does not say.
pub const DEFAULT_TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a unit's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// Kept in a bounded in-memory ring, readable with `zinit logs`.
    Ring,
    /// Written to the server's stdout, prefixed with the unit name (and kept in the ring).
    Stdout,
    /// Discarded.
    Null,
}

/// A log file with size-based rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file (absolute).
    pub path: PathBuf,
    /// Rotate when the file reaches this many bytes.
    pub max_size: u64,
    /// How many rotated files to keep (`path.1` .. `path.N`).
    pub keep: u32,
}

/// How a unit's output is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The mode.
    pub mode: LogMode,
    /// An optional file, written besides the mode.
    pub file: Option<LogFile>,
    /// Whether the file named the mode (else the server's default applies:
    /// `ring`, or under zinit_pid1 in a container `stdout`).
    pub mode_given: bool,
}

/// When a unit is restarted after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// After every exit.
    Always,
    /// After a non-zero exit or a death by signal.
    OnFailure,
    /// Never.
    Never,
}

/// The restart policy with its exponential back-off.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: RestartMode,
    /// The first delay.
    pub delay: Duration,
    /// Each further delay is the previous one times this.
    pub factor: f64,
    /// The longest delay.
    pub max_delay: Duration,
    /// A unit that ran this long without exiting starts again from `delay`.
    pub reset_after: Duration,
    /// After this many restarts in a row the unit is failed (`None`: no limit).
    pub max_restarts: Option<u32>,
}

impl RestartPolicy {
    /// The default policy: `always` for services, `never` for oneshots.
    pub fn default_for(oneshot: bool) -> Self {
        Self {
            mode: if oneshot {
                RestartMode::Never
            } else {
                RestartMode::Always
            },
            delay: Duration::from_millis(500),
            factor: 2.0,
            max_delay: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            max_restarts: Some(DEFAULT_MAX_RESTARTS),
        }
    }
}

/// The user a unit runs as, resolved when the file is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user name as written.
    pub user: String,
    /// Its uid.
    pub uid: u32,
    /// The primary gid (the user's, or the `group` field's).
    pub gid: u32,
    /// Supplementary groups of the user.
    pub groups: Vec<u32>,
    /// The user's home directory (from the password database).
    pub home: PathBuf,
    /// The user's login shell (from the password database).
    pub shell: PathBuf,
}

impl ServiceConfig {
    /// A digest of the parsed configuration (comments, formatting and key
    /// order change nothing): a successor compares it with the file it
    /// loaded to tell an unchanged service from a changed one.
    pub fn digest(&self) -> String {
        self.digest_cache
            .get_or_init(|| self.compute_digest())
            .clone()
    }

    fn compute_digest(&self) -> String {
        let text = self
            .fields(self)
            .iter()
            .map(|f| f.old.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        // FNV-1a, 64 bits: stable across builds, enough to see a change.
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// What changed from this configuration to `new`, field by field, as
    /// parsed: comments, formatting and key order are no change.
    pub fn changes(&self, new: &ServiceConfig) -> Vec<FieldChange> {
        self.fields(new)
            .into_iter()
            .filter(|f| f.old != f.new)
            .collect()
    }

    /// Every field that matters, in this and in `new`.
    fn fields(&self, new: &ServiceConfig) -> Vec<FieldChange> {
        fn field<T: std::fmt::Debug>(
            name: &'static str,
            restarts: bool,
            old: &T,
            new: &T,
        ) -> FieldChange {
            FieldChange {
                field: name,
                restarts,
                old: format!("{old:?}"),
                new: format!("{new:?}"),
            }
        }
        let (a, b) = (self, new);
        vec![
            // What the process is started with: a change restarts it.
            field("exec", true, &a.exec, &b.exec),
            field("oneshot", true, &a.oneshot, &b.oneshot),
            field("env", true, &a.env, &b.env),
            field("dir", true, &a.dir, &b.dir),
            field("user", true, &a.run_as, &b.run_as),
            field("limits", true, &a.limits, &b.limits),
            field("pid_file", true, &a.pid_file, &b.pid_file),
            // Its output is read through the pipes of its run: a new log
            // setting takes effect with the next run.
            field("log", true, &a.log, &b.log),
            // What a running unit applies as it is.
            field("test", false, &a.test, &b.test),
            field("test_interval", false, &a.test_interval, &b.test_interval),
            field("test_timeout", false, &a.test_timeout, &b.test_timeout),
            field("after", false, &a.after, &b.after),
            field("signal", false, &a.stop_signal, &b.stop_signal),
            field("stop_timeout", false, &a.stop_timeout, &b.stop_timeout),
            field("stop", false, &a.stop_command, &b.stop_command),
            field("stop_mode", false, &a.stop_mode, &b.stop_mode),
            field("ports", false, &a.ports, &b.ports),
            field(
                "process_filters",
                false,
                &a.process_filters,
                &b.process_filters,
            ),
            field("restart", false, &a.restart, &b.restart),
        ]
    }

    /// A unit known only from a record (no file): its command and how to
    /// stop it, nothing else.
    pub fn recorded(
        name: &str,
        exec: Vec<String>,
        stop_signal: Signal,
        stop_timeout: Duration,
        stop_mode: StopMode,
    ) -> Self {
        Self {
            name: name.to_string(),
            file: PathBuf::new(),
            source: String::new(),
            exec,
            test: None,
            test_interval: Duration::from_millis(500),
            test_timeout: Duration::from_secs(60),
            oneshot: true,
            after: Vec::new(),
            pid_file: None,
            stop_signal,
            stop_timeout,
            // As recorded: the unit's own, given or not.
            stop_timeout_given: true,
            stop_command: None,
            stop_mode,
            log: LogConfig {
                mode: LogMode::Ring,
                file: None,
                mode_given: false,
            },
            env: Vec::new(),
            dir: None,
            ports: Vec::new(),
            process_filters: Vec::new(),
            restart: RestartPolicy::default_for(true),
            run_as: None,
            limits: Vec::new(),
            warnings: Vec::new(),
            digest_cache: std::sync::OnceLock::new(),
        }
    }
}

/// One field of a service file that differs between two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field's name, as in the file (`exec`, `signal`, ...).
    pub field: &'static str,
    /// Whether a running unit must restart for it (else it applies live).
    pub restarts: bool,
    /// The old value, as parsed.
    pub old: String,
    /// The new value, as parsed.
    pub new: String,
}

/// A validated service file.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The name (the file stem).
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The file's text, as read.
    pub source: String,
    /// The command and its arguments.
    pub exec: Vec<String>,
    /// The readiness test command.
    pub test: Option<Vec<String>>,
    /// How often the test is retried.
    pub test_interval: Duration,
    /// How long the test may keep failing before the start fails.
    pub test_timeout: Duration,
    /// A oneshot runs once and is never restarted by default.
    pub oneshot: bool,
    /// Units this one starts after (and stops before).
    pub after: Vec<String>,
    /// For a program that can only daemonize: where it writes its pid. Once
    /// the started process exits 0, the pid read from here is the unit's
    /// main process.
    pub pid_file: Option<PathBuf>,
    /// The stop signal.
    pub stop_signal: Signal,
    /// The stop timeout (at most 30 s).
    pub stop_timeout: Duration,
    /// Whether the file gave it (else it is the default, 10 s, which a
    /// shorter shutdown deadline replaces without cutting anything short).
    pub stop_timeout_given: bool,
    /// A command run first when stopping, within half of the budget.
    pub stop_command: Option<Vec<String>>,
    /// Which processes get the stop signal, in which order.
    pub stop_mode: StopMode,
    /// Output handling.
    pub log: LogConfig,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub dir: Option<PathBuf>,
    /// Ports whose holders the shutdown's final sweep kills.
    pub ports: Vec<Port>,
    /// Filters whose matches the shutdown's final sweep kills.
    pub process_filters: Vec<ProcessFilter>,
    /// The restart policy.
    pub restart: RestartPolicy,
    /// The user to run as.
    pub run_as: Option<RunAs>,
    /// Resource limits its commands start with (others: as the server was given).
    pub limits: Vec<Limit>,
    /// Things worth a warning that are not errors (a capped timeout).
    pub warnings: Vec<String>,
    /// [`ServiceConfig::digest`], once computed (the record asks for it at
    /// every save). A clone whose fields are changed afterwards keeps it, as
    /// a digest of the file's text did (the takeover's "old stop settings"
    /// copy is still the file's service); replace it when a change must count.
    pub digest_cache: std::sync::OnceLock<String>,
}

impl ServiceConfig {
    /// A oneshot that runs `argv` as it is, with every other field at the
    /// default a service file gets: what an ad-hoc job (`job run -- CMD
    /// ARGS`) runs. Nothing is parsed, so any argument goes through.
    pub fn for_command(name: &str, argv: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            file: PathBuf::from("(job command)"),
            source: String::new(),
            exec: argv,
            test: None,
            test_interval: DEFAULT_TEST_INTERVAL,
            test_timeout: DEFAULT_TEST_TIMEOUT,
            oneshot: true,
            after: Vec::new(),
            pid_file: None,
            stop_signal: Signal::SIGTERM,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            stop_timeout_given: false,
            stop_command: None,
            stop_mode: StopMode::Tree,
            log: LogConfig {
                mode: LogMode::Ring,
                file: None,
                mode_given: false,
            },
            env: Vec::new(),
            dir: None,
            ports: Vec::new(),
            process_filters: Vec::new(),
            restart: RestartPolicy::default_for(true),
            run_as: None,
            limits: Vec::new(),
            warnings: Vec::new(),
            digest_cache: std::sync::OnceLock::new(),
        }
    }
}
