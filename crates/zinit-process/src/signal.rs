//! Signal names: parsing `TERM`, `SIGTERM`, `sigterm` or `15` into a [`Signal`].

pub use nix::sys::signal::Signal;
use std::str::FromStr;

/// A signal name or number that is not a signal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signal {0:?} (expected a name such as TERM, SIGKILL or a number such as 15)")]
pub struct SignalError(pub String);

/// Parses a signal name with or without the `SIG` prefix, in any case, or a
/// signal number.
pub fn parse_signal(text: &str) -> Result<Signal, SignalError> {
    let trimmed = text.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| SignalError(text.to_string()));
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| SignalError(text.to_string()))
}

/// The short name of a signal, without `SIG`: `TERM`, `KILL`, ...
pub fn short_name(signal: Signal) -> &'static str {
    let full = signal.as_str();
    full.strip_prefix("SIG").unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_with_or_without_sig_in_any_case_and_numbers() {
        for text in ["TERM", "SIGTERM", "sigterm", "term", "15", " Term "] {
            assert_eq!(parse_signal(text), Ok(Signal::SIGTERM), "{text}");
        }
        assert_eq!(parse_signal("hup"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("SIGUSR2"), Ok(Signal::SIGUSR2));
    }

    #[test]
    fn rejects_what_is_not_a_signal() {
        for text in ["", "SIG", "TERMINATE", "0", "99", "-1", "SIGFOO"] {
            assert!(parse_signal(text).is_err(), "{text}");
        }
    }

    #[test]
    fn short_name_drops_the_prefix() {
        assert_eq!(short_name(Signal::SIGKILL), "KILL");
    }
}
