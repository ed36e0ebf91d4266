//! The end of a machine's life: `sync`, then reboot(2) to power off or
//! reboot (a container syncs only its own file system, then exits). Inside a PID namespace other than the initial one (`--machine`,
//! for tests), reboot(2) ends only the namespace: its init is killed, and
//! the parent sees SIGINT (power off) or SIGHUP (reboot).
//!
//! Also the kernel's ctrl-alt-del: disabled at start on a machine, so the
//! kernel sends SIGINT to PID 1 instead of rebooting at once.

use crate::mode::Mode;
use nix::sys::reboot::{RebootMode, reboot, set_cad_enabled};
use std::time::Duration;

/// Makes ctrl-alt-del send SIGINT to PID 1 (machine only).
pub fn disable_ctrl_alt_del(mode: Mode) {
    if mode == Mode::Machine
        && let Err(e) = set_cad_enabled(false)
    {
        crate::warn!("cannot disable ctrl-alt-del's immediate reboot: {e}");
    }
}

/// Writes dirty buffers to disk, waiting at most `bound` (a stuck file
/// system must not hold the end forever); true when it finished. A machine
/// syncs every file system (`sync`); a container only its own root file
/// system (`syncfs` of `/`): a host-wide sync would wait for every other
/// container's and the host's dirty pages (0.5 s with 1 GiB dirty
/// elsewhere), which are not this container's to write.
pub fn sync(mode: Mode, bound: Duration) -> bool {
    let whole_machine = mode.ends_with_reboot();
    let write = move || {
        if whole_machine {
            nix::unistd::sync();
        } else {
            match std::fs::File::open("/") {
                Ok(root) => {
                    if let Err(e) = nix::unistd::syncfs(&root) {
                        crate::warn!("syncfs of /: {e}");
                    }
                }
                Err(e) => crate::warn!("cannot open / to sync it: {e}"),
            }
        }
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("sync".into())
        .spawn(move || {
            write();
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => rx.recv_timeout(bound).is_ok(),
        Err(_) => {
            write();
            true
        }
    }
}

/// Powers off or reboots (`mode` must end with reboot(2)). Returns only if
/// reboot(2) failed, with its error.
pub fn power_off_or_reboot(mode: Mode, reboot_now: bool) -> nix::Error {
    assert!(
        mode.ends_with_reboot(),
        "reboot(2) is only for a machine, or --machine inside a PID namespace"
    );
    let how = if reboot_now {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    crate::info!(
        "{}",
        if reboot_now {
            "rebooting"
        } else {
            "powering off"
        }
    );
    match reboot(how) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}
