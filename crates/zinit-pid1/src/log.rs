//! zinit_pid1's log: one line per event on stderr, `zinit_pid1: ...`,
//! filtered by the level of `--log-level` (the first word of a tracing
//! filter such as `info,zinit=debug` counts). `--log-level` is checked as
//! zinit_server checks it, before anything starts.

use std::sync::atomic::{AtomicU8, Ordering};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Failures only.
    Error = 0,
    /// And what went wrong but was handled.
    Warn = 1,
    /// And every step (the default).
    Info = 2,
    /// And every reaped orphan.
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// The levels `--log-level` takes (zinit_server's).
const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// `--log-level` as zinit_server takes it: a level, or a tracing filter
/// whose every directive without a target (`=`) is a level. Checked here so
/// that a misspelt level ends zinit_pid1 at once instead of a server that
/// can never start.
pub fn check_level(text: &str) -> Result<String, String> {
    let unknown = text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.contains('=') && !d.contains('['))
        .find(|d| !LEVELS.contains(&d.to_ascii_lowercase().as_str()));
    match unknown {
        Some(word) => Err(format!(
            "unknown log level {word:?}: expected one of {} (or a filter such as info,zinit_supervisor=debug)",
            LEVELS.join(", ")
        )),
        None => Ok(text.to_string()),
    }
}

impl Level {
    /// The level named by `--log-level`.
    pub fn parse(text: &str) -> Self {
        let first = text
            .split([',', '='])
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match first.as_str() {
            "error" | "off" => Self::Error,
            "warn" => Self::Warn,
            "debug" | "trace" => Self::Debug,
            _ => Self::Info,
        }
    }
}

/// Sets the level for the rest of the run.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Whether messages of `level` are shown.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line at `level`.
pub fn line(level: Level, message: std::fmt::Arguments<'_>) {
    if enabled(level) {
        eprintln!("zinit_pid1: {message}");
    }
}

/// Logs at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Level::Info, format_args!($($arg)*)) };
}

/// Logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Level::Warn, format_args!($($arg)*)) };
}

/// Logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Level::Error, format_args!($($arg)*)) };
}

/// Logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::line($crate::log::Level::Debug, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::Level;

    #[test]
    fn levels_from_flags_and_filters() {
        assert_eq!(Level::parse("warn"), Level::Warn);
        assert_eq!(Level::parse("ERROR"), Level::Error);
        assert_eq!(Level::parse("debug,hyper=off"), Level::Debug);
        assert_eq!(Level::parse("zinit=trace"), Level::Info);
        assert_eq!(Level::parse(""), Level::Info);
        assert!(Level::Error < Level::Info);
    }
}
