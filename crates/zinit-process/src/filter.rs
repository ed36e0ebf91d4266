//! Process filters: `name:NAME`, `exe:/abs/path`, `cmdline:REGEX` (a string
//! without a prefix is a cmdline regex), and the processes they match.
//!
//! Matching never returns this process, its ancestors, PID 1 or kernel
//! threads, however broad the filter.

use crate::members::protected_pids;
use crate::proc_table::{ProcessInfo, ProcessTable};
use regex::Regex;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The kernel keeps at most this many bytes of a command name.
const COMM_LEN: usize = 15;

/// Which processes a filter selects.
#[derive(Debug, Clone)]
pub enum ProcessFilter {
    /// The command name, exactly (compared on its first 15 bytes, as the kernel keeps it).
    Name(String),
    /// The executable's absolute path (also when it was replaced: "(deleted)").
    Exe(PathBuf),
    /// A regular expression searched in the arguments joined by single spaces.
    Cmdline(Regex),
}

/// A filter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// `name:` with nothing after it.
    #[error("invalid process filter {0:?}: name: needs a process name")]
    EmptyName(String),
    /// `exe:` with a relative path.
    #[error("invalid process filter {0:?}: exe: needs an absolute path")]
    RelativeExe(String),
    /// A regex that does not compile (or an empty one, which matches everything).
    #[error("invalid process filter {filter:?}: {reason}")]
    BadRegex {
        /// The whole filter.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl FromStr for ProcessFilter {
    type Err = FilterError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(name) = text.strip_prefix("name:") {
            if name.is_empty() {
                return Err(FilterError::EmptyName(text.to_string()));
            }
            let mut cut = name.len().min(COMM_LEN);
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            return Ok(Self::Name(name[..cut].to_string()));
        }
        if let Some(path) = text.strip_prefix("exe:") {
            if !path.starts_with('/') {
                return Err(FilterError::RelativeExe(text.to_string()));
            }
            return Ok(Self::Exe(PathBuf::from(path)));
        }
        let pattern = text.strip_prefix("cmdline:").unwrap_or(text);
        if pattern.is_empty() {
            return Err(FilterError::BadRegex {
                filter: text.to_string(),
                reason: "an empty pattern would match every process".to_string(),
            });
        }
        Regex::new(pattern)
            .map(Self::Cmdline)
            .map_err(|e| FilterError::BadRegex {
                filter: text.to_string(),
                reason: e.to_string(),
            })
    }
}

impl fmt::Display for ProcessFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => write!(f, "name:{name}"),
            Self::Exe(path) => write!(f, "exe:{}", path.display()),
            Self::Cmdline(re) => write!(f, "cmdline:{}", re.as_str()),
        }
    }
}

impl ProcessFilter {
    /// How much of each process this filter needs: a name is in the basic
    /// read, an executable or a command line only in the full one (which
    /// can block on a process in uninterruptible sleep).
    pub fn detail(&self) -> crate::Detail {
        match self {
            Self::Name(_) => crate::Detail::Basic,
            Self::Exe(_) | Self::Cmdline(_) => crate::Detail::Full,
        }
    }

    /// Whether `info` (read with [`crate::Detail::Full`]) matches.
    pub fn matches(&self, info: &ProcessInfo) -> bool {
        match self {
            Self::Name(name) => info.comm == *name,
            Self::Exe(path) => info.exe.as_ref().is_some_and(|exe| {
                exe == path || exe.as_os_str() == format!("{} (deleted)", path.display()).as_str()
            }),
            Self::Cmdline(re) => !info.cmdline.is_empty() && re.is_match(&info.cmdline_string()),
        }
    }
}

/// The processes in `table` (read with [`crate::Detail::Full`]) that match
/// any of `filters`, sorted by pid, with the index of the first matching
/// filter. Never this process, its ancestors, PID 1, kernel threads, or
/// anything in `also_protect`.
pub fn matching<'t>(
    filters: &[ProcessFilter],
    table: &'t ProcessTable,
    also_protect: &[i32],
) -> Vec<(&'t ProcessInfo, usize)> {
    let protected = protected_pids(table);
    let mut out: Vec<(&ProcessInfo, usize)> = table
        .iter()
        .filter(|p| {
            !p.kernel_thread && !protected.contains(&p.pid) && !also_protect.contains(&p.pid)
        })
        .filter_map(|p| filters.iter().position(|f| f.matches(p)).map(|i| (p, i)))
        .collect();
    out.sort_unstable_by_key(|(p, _)| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_defaults_to_cmdline() {
        assert!(matches!("name:nginx".parse(), Ok(ProcessFilter::Name(n)) if n == "nginx"));
        assert!(matches!(
            "exe:/usr/bin/x".parse(),
            Ok(ProcessFilter::Exe(_))
        ));
        assert!(matches!(
            "cmdline:^a b$".parse(),
            Ok(ProcessFilter::Cmdline(_))
        ));
        assert!(matches!(
            "worker --id \\d+".parse(),
            Ok(ProcessFilter::Cmdline(_))
        ));
    }

    #[test]
    fn cuts_names_to_what_the_kernel_keeps() {
        let filter: ProcessFilter = "name:a-very-long-process-name".parse().expect("valid");
        assert_eq!(filter.to_string(), "name:a-very-long-pro");
    }

    #[test]
    fn rejects_bad_filters_with_the_reason() {
        assert_eq!(
            "name:".parse::<ProcessFilter>().unwrap_err(),
            FilterError::EmptyName("name:".into())
        );
        assert_eq!(
            "exe:bin/x".parse::<ProcessFilter>().unwrap_err(),
            FilterError::RelativeExe("exe:bin/x".into())
        );
        for bad in ["cmdline:(", "", "cmdline:"] {
            assert!(
                matches!(
                    bad.parse::<ProcessFilter>(),
                    Err(FilterError::BadRegex { .. })
                ),
                "{bad}"
            );
        }
    }
}
