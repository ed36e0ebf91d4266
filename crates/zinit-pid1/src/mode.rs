//! Where zinit_pid1 runs, which decides how it ends: PID 1 of the machine
//! (power off or reboot), PID 1 of a container's PID namespace (exit with a
//! code), or not PID 1 at all (a child subreaper under another init).

use std::path::Path;

/// The inode of the initial PID namespace (the kernel's `PROC_PID_INIT_INO`):
/// `readlink /proc/self/ns/pid` is `pid:[4026531836]` only there.
pub const PROC_PID_INIT_INO: u64 = 4026531836;

/// How zinit_pid1 runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of the initial PID namespace: the machine's init. Ends with
    /// reboot(2): power off, or reboot when asked.
    Machine,
    /// PID 1 of another PID namespace, told to take the machine path
    /// (`--machine`, for tests): reboot(2) there ends only the namespace.
    MachineInNamespace,
    /// PID 1 of another PID namespace (a container): exits with a code.
    Container,
    /// Not PID 1: a child subreaper that reaps and sweeps only its own
    /// descendants (under `docker run --init`, another init, a shell).
    Subreaper,
}

/// Why `--machine` was refused.
#[derive(Debug)]
pub struct NotPid1(pub u32);

impl std::fmt::Display for NotPid1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--machine needs zinit_pid1 to be PID 1 of a PID namespace (this is pid {})",
            self.0
        )
    }
}

impl Mode {
    /// Finds out where this process runs. `machine` is `--machine`.
    pub fn detect(machine: bool) -> Result<Self, NotPid1> {
        let pid = std::process::id();
        if pid != 1 {
            return if machine {
                Err(NotPid1(pid))
            } else {
                Ok(Self::Subreaper)
            };
        }
        if initial_namespace() {
            Ok(Self::Machine)
        } else if machine {
            Ok(Self::MachineInNamespace)
        } else {
            Ok(Self::Container)
        }
    }

    /// Whether this process is PID 1 (of some PID namespace).
    pub fn is_pid1(self) -> bool {
        self != Self::Subreaper
    }

    /// Whether it ends with reboot(2) rather than by exiting.
    pub fn ends_with_reboot(self) -> bool {
        matches!(self, Self::Machine | Self::MachineInNamespace)
    }

    /// A few words for the log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Machine => "PID 1 of the machine",
            Self::MachineInNamespace => {
                "PID 1 of a PID namespace, taking the machine path (--machine): reboot(2) ends the namespace"
            }
            Self::Container => "PID 1 of a PID namespace (a container)",
            Self::Subreaper => "not PID 1: running as a child subreaper",
        }
    }
}

/// Whether this process is in the initial PID namespace. A machine's init
/// may start without /proc: then it is mounted first (PID 1 only).
fn initial_namespace() -> bool {
    let link = Path::new("/proc/self/ns/pid");
    if std::fs::read_link(link).is_err() {
        mount_proc();
    }
    match std::fs::read_link(link) {
        Ok(target) => is_initial(&target.to_string_lossy()),
        // Without /proc nothing proves a machine: take the container path,
        // which never calls reboot(2).
        Err(_) => false,
    }
}

/// Whether a `/proc/PID/ns/pid` link target names the initial namespace.
pub fn is_initial(target: &str) -> bool {
    target == format!("pid:[{PROC_PID_INIT_INO}]")
}

fn mount_proc() {
    use nix::mount::{MsFlags, mount};
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    if let Err(e) = mount(Some("proc"), "/proc", Some("proc"), flags, None::<&str>) {
        crate::warn!("/proc is not mounted and mounting it failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_initial_namespace_is_a_machine() {
        assert!(is_initial("pid:[4026531836]"));
        assert!(!is_initial("pid:[4026532411]"));
        assert!(!is_initial(""));
    }

    #[test]
    fn a_test_process_is_not_pid1() {
        assert_eq!(Mode::detect(false).ok(), Some(Mode::Subreaper));
        let refused = Mode::detect(true).expect_err("--machine needs PID 1");
        assert!(refused.to_string().contains("--machine"));
    }
}
