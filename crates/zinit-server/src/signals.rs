//! OS signals, taken by a thread of their own with `sigwait`, so that a
//! second Ctrl+C forces the shutdown even when the runtime is busy: SIGHUP
//! reloads, SIGTERM starts (or joins) the shutdown, SIGINT starts it and a
//! second SIGINT forces it. The signals are blocked before any other thread
//! exists, so no other thread takes one. A shutdown started here has the
//! deadline of `--shutdown-timeout` (30 s by default; zinit_pid1 passes its
//! own bound), and is followed by a power-off, not a reboot.

use crate::shutdown::ShutdownController;
use nix::sys::signal::{SigSet, Signal};
use std::time::Duration;
use zinit_supervisor::Supervisor;

/// The signals the server takes on its signal thread.
pub struct Signals(SigSet);

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and every thread
/// started after it). Children get an empty mask back at spawn.
pub fn block() -> std::io::Result<Signals> {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block()?;
    Ok(Signals(set))
}

/// Starts the signal thread; shutdowns it starts have the deadline `deadline`.
pub fn spawn_thread(
    signals: Signals,
    controller: ShutdownController,
    sup: Supervisor,
    deadline: Duration,
) {
    let runtime = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("zinit-signals".into())
        .spawn(move || {
            let mut interrupts = 0;
            loop {
                let Ok(signal) = signals.0.wait() else {
                    continue;
                };
                match signal {
                    Signal::SIGHUP => {
                        let sup = sup.clone();
                        runtime.spawn(async move {
                            match sup.reload(false).await {
                                Ok(s) => tracing::info!(
                                    "SIGHUP: reloaded; added {:?}, removed {:?}, restarted {:?}, updated {:?}",
                                    s.added,
                                    s.removed,
                                    s.changed,
                                    s.updated
                                ),
                                Err(e) => tracing::error!("SIGHUP: reload refused: {e}"),
                            }
                        });
                    }
                    Signal::SIGINT => {
                        interrupts += 1;
                        let force = interrupts > 1;
                        if force {
                            tracing::warn!(
                                "second SIGINT: forcing the shutdown (the sweep and verification still run)"
                            );
                        }
                        let _guard = runtime.enter();
                        controller.start(deadline, force, None, false);
                    }
                    _ => {
                        let _guard = runtime.enter();
                        controller.start(deadline, false, None, false);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the signal thread: {e}");
    }
}
