//! Programs we did not write, under a real `zinit_server`: `sleep`, `sh`
//! with and without a `trap`, `python3 -m http.server`, and the Debian
//! daemons nginx (a master and workers) and redis-server. Each must start
//! without what the server's careless parent left it (a descriptor, a
//! secret), run without blocked signals, and stop with its stop signal,
//! gracefully (no SIGKILL) and well inside its timeout, as a service and as
//! a job. `cargo xtask test` installs nginx and redis-server when missing.

use zinit_process::Signal;
use zinit_tests::foreign::programs;
use zinit_tests::{Inherited, Server, Tag, sig_bit};

/// Checks what the program (and its processes) inherited.
fn check_inherited(server: &Server, tag: &Tag, name: &str) {
    let pid = server.pid_of(name);
    let state = Inherited::of(pid);
    assert!(
        !state.fd_targets.iter().any(|t| t.contains(Server::LEAKED)),
        "{name}: the leaked descriptor reached it: {:?}",
        state.fd_targets
    );
    assert_eq!(state.var("ZT_SECRET"), None, "{name}: the secret leaked in");
    match name {
        // Programs that change nothing of what they inherited.
        "sleep" => state.assert_clean(name),
        // The shells ignore nothing themselves. A foreground child is a
        // plain sleep; a background one (`&`) ignores SIGINT and SIGQUIT,
        // because POSIX asks a non-interactive shell to do that to it.
        "sh-trap" | "sh-plain" => {
            assert_eq!(state.sigign, 0, "{name}: ignored {:016x}", state.sigign);
            let sleeps = zinit_tests::tagged_pids(tag.as_str())
                .into_iter()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                        s.contains("(sleep)")
                            && s.split_whitespace().nth(3) == Some(pid.to_string().as_str())
                    })
                })
                .collect::<Vec<_>>();
            assert!(!sleeps.is_empty(), "{name}: no sleep below the shell");
            for child in sleeps {
                let mut child_state = Inherited::of(child);
                if name == "sh-trap" {
                    assert_eq!(
                        child_state.sigign,
                        sig_bit(Signal::SIGINT) | sig_bit(Signal::SIGQUIT),
                        "{name}'s background sleep"
                    );
                    child_state.sigign = 0;
                }
                child_state.assert_clean(&format!("{name}'s sleep"));
            }
        }
        // Python ignores SIGPIPE and SIGXFSZ itself, and blocks nothing.
        "python" => {
            assert_eq!(state.sigblk, 0, "python: blocked {:016x}", state.sigblk);
            assert_eq!(
                state.sigign,
                sig_bit(Signal::SIGPIPE) | sig_bit(Signal::SIGXFSZ),
                "python: ignored {:016x}",
                state.sigign
            );
        }
        // nginx and redis set their own masks and handlers.
        _ => {}
    }
}

/// Stops `name` and asserts the stop was graceful and quick.
fn stop_gracefully(server: &Server, name: &str, command: &[&str]) {
    let out = server.zinit(command);
    assert_eq!(out.code, 0, "{name}: {}{}", out.stdout, out.stderr);
    let answer = out.last_json();
    assert_eq!(answer["outcome"], "graceful", "{name}: {answer}");
    if let Some(killed) = answer.get("processes_killed") {
        assert_eq!(killed, 0, "{name}: {answer}");
    }
    if let Some(duration) = answer["duration"].as_f64() {
        assert!(duration < 5.0, "{name} took {duration} s: {answer}");
    }
    if name == "nginx"
        && let Some(exited) = answer["processes_exited"].as_u64()
    {
        // A master and 2 workers, and at most one round of replacements:
        // the stop moves up to the master instead of letting it respawn.
        assert!(
            (3..=5).contains(&exited),
            "nginx: {exited} exited: {answer}"
        );
    }
}

#[tokio::test]
async fn programs_we_did_not_write_start_clean_and_stop_gracefully_as_services() {
    let tag = Tag::new("foreign-svc");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    let programs = programs(&tag);
    for (name, exec) in &programs {
        std::fs::write(
            conf.join(format!("{name}.yaml")),
            format!(
                "exec: \"{}\"\nshutdown_timeout: 10\n",
                exec.replace('"', "\\\"")
            ),
        )
        .expect("service file");
    }
    let server = Server::start_careless(&tag, &conf, &[], &[]).await;
    let names: Vec<&str> = programs.iter().map(|(n, _)| *n).collect();
    server.wait_running(&names);
    for name in &names {
        check_inherited(&server, &tag, name);
    }
    for name in &names {
        stop_gracefully(&server, name, &["--json", "stop", name]);
        let status = server.zinit(&["--json", "status", name]).json();
        assert!(
            status["reason"]
                .as_str()
                .is_some_and(|r| r.contains("gracefully")),
            "{name}: {status}"
        );
    }
    // And once more after a restart, through the shutdown.
    for name in &names {
        assert_eq!(server.zinit(&["start", name]).code, 0, "{name} restarts");
    }
    for name in &names {
        check_inherited(&server, &tag, name);
    }
    let down = server.zinit(&["--json", "shutdown"]);
    assert_eq!(down.code, 0, "{}{}", down.stdout, down.stderr);
    let events: Vec<serde_json::Value> = down
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for name in &names {
        let stopped = events
            .iter()
            .find(|e| e["kind"] == "unit_stopped" && e["unit"] == *name)
            .unwrap_or_else(|| panic!("no unit_stopped for {name}"));
        assert_eq!(stopped["outcome"], "graceful", "{stopped}");
        assert_eq!(stopped["processes_killed"], 0, "{stopped}");
    }
    assert!(
        !events
            .iter()
            .any(|e| e["kind"] == "signal_sent" && e["signal"] == "SIGKILL"),
        "no SIGKILL in the shutdown"
    );
}

#[tokio::test]
async fn programs_we_did_not_write_stop_gracefully_as_jobs() {
    let tag = Tag::new("foreign-job");
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    let server = Server::start_careless(&tag, &conf, &[], &[]).await;
    for (name, exec) in programs(&tag) {
        let argv = shlex::split(&exec).expect("split");
        let mut args = vec!["job", "run", "--no-wait", "--"];
        args.extend(argv.iter().map(String::as_str));
        let out = server.zinit(&args);
        assert_eq!(out.code, 0, "{name}: {}{}", out.stdout, out.stderr);
        let job = out.stdout.trim().to_string();
        server.wait_state(&job, "running");
        let pid = server.pid_of(&job);
        let state = Inherited::of(pid);
        assert!(
            !state.fd_targets.iter().any(|t| t.contains(Server::LEAKED)),
            "{name} job: the leaked descriptor reached it"
        );
        if name == "sleep" {
            state.assert_clean("sleep job");
        }
        stop_gracefully(&server, name, &["--json", "job", "cancel", &job]);
    }
}
