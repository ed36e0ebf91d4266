//! What a program started by `zinit_server` inherits, read from `/proc` of
//! programs that change none of it (`sleep`, `cp`), on every path that
//! starts something: a service, a readiness test, a stop command, a job, a
//! restart, an add and a reload; with and without cgroups. The server itself
//! is started the careless way (a leaked descriptor, a low open-file limit,
//! secrets in its environment, a working directory of its own), and none of
//! that may reach the programs.

use std::path::Path;
use std::time::Duration;
use zinit_tests::{Inherited, Server, Tag, wait_gone};

/// Reads a `/proc/PID/status` copy: (SigBlk, SigIgn, Umask).
fn status_copy(path: &Path) -> (u64, u64, u32) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{key} in {}", path.display()))
            .to_string()
    };
    (
        u64::from_str_radix(&field("SigBlk:"), 16).expect("hex"),
        u64::from_str_radix(&field("SigIgn:"), 16).expect("hex"),
        u32::from_str_radix(&field("Umask:"), 8).expect("octal"),
    )
}

/// Checks a program started by the server: the clean start, no trace of the
/// server's careless parent, the open-file limit the server was given (or
/// the unit's), and the documented environment.
fn check_started(server: &Server, name: &str, nofile: u64) -> Inherited {
    let pid = server.pid_of(name);
    let state = Inherited::of(pid);
    state.assert_clean(name);
    assert!(
        !state.fd_targets.iter().any(|t| t.contains(Server::LEAKED)),
        "{name}: the leaked descriptor reached it"
    );
    assert_eq!(state.nofile, nofile, "{name}: open-file limit");
    for secret in ["ZT_SECRET", "RUST_BACKTRACE", "ZINIT_CGROUP", "CARGO"] {
        assert_eq!(state.var(secret), None, "{name}: {secret} leaked in");
    }
    assert!(state.var("PATH").is_some(), "{name}: no PATH");
    assert_eq!(state.var("ZINIT_UNIT"), Some(name));
    state
}

#[tokio::test]
async fn every_path_that_starts_a_program_gives_it_a_clean_start() {
    for cgroups in [true, false] {
        let tag = Tag::new(if cgroups { "clean-cg" } else { "clean-pg" });
        let conf = tag.dir().join("conf");
        std::fs::create_dir_all(&conf).expect("conf");
        let sleep = tag.program("sleep").display().to_string();
        let cp = tag.program("cp").display().to_string();
        let dir = tag.dir().display().to_string();
        let write = |name: &str, text: String| {
            std::fs::write(conf.join(format!("{name}.yaml")), text).expect("write service")
        };
        write(
            "plain",
            format!(
                "exec: {sleep} 1000\n\
                 test: {cp} /proc/self/status {dir}/test-status\n\
                 stop: {cp} /proc/self/status {dir}/stop-status\n"
            ),
        );
        write("nobody", format!("exec: {sleep} 1001\nuser: nobody\n"));
        // A user whose home exists starts there.
        write("homed", format!("exec: {sleep} 1009\nuser: root\n"));
        write(
            "grouped",
            format!("exec: {sleep} 1006\nuser: nobody\ngroup: daemon\n"),
        );
        let sh = tag.program("sh").display().to_string();
        write(
            "silent",
            format!("exec: {sh} -c 'echo said; echo shouted >&2; exec {sleep} 1007'\nlog: null\n"),
        );
        write(
            "limited",
            format!(
                "exec: {sleep} 1002\nlimits:\n  nofile: 512\n  core: 0\n  nproc: \"300:400\"\n\
                 env:\n  GREETING: hi\ndir: {dir}\n"
            ),
        );
        // `env` overrides everything else, the passed-through locale too.
        write(
            "envy",
            format!(
                "exec: {sleep} 1008\nenv:\n  PATH: /opt/envy/bin\n  LANG: fr_FR.UTF-8\n  HOME: /srv/envy\n"
            ),
        );
        // The fallback mode is forced with ZINIT_CGROUP=off (which must not
        // reach the services either).
        let mut env: Vec<(&str, &str)> = vec![
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "C"),
            ("TZ", "Europe/Paris"),
            ("LANGUAGE", "en"),
        ];
        if !cgroups {
            env.push(("ZINIT_CGROUP", "off"));
        }
        let env = env.as_slice();
        let mut server = Server::start_careless(&tag, &conf, &[], env).await;
        let info = server.zinit(&["--json", "info"]).json();
        assert_eq!(
            info["cgroups"],
            cgroups && zinit_tests::host_allows_cgroups()
        );
        server.wait_running(&[
            "plain", "nobody", "limited", "grouped", "silent", "envy", "homed",
        ]);
        // The server raised its own open-file limit (a pidfd per process);
        // its children get the original back (below).
        let server_nofile = Inherited::of(server.child.pid()).nofile;
        assert!(
            server_nofile > 1024,
            "the server kept {server_nofile} open files"
        );
        // ...and grew its descriptor table before its threads started, so
        // that a large shutdown never stalls on the table's growth.
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", server.child.pid())).unwrap();
        let table: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("FDSize in the server's status");
        assert!(
            table >= zinit_process::limits::PRESIZED_DESCRIPTORS.min(server_nofile),
            "the server's descriptor table has {table} slots"
        );

        // Services, and the user's identity for a user: service.
        let plain = check_started(&server, "plain", 1024);
        assert_eq!(plain.cwd, Path::new("/"));
        assert_eq!(plain.var("USER"), Some("root"));
        assert_eq!(plain.var("HOME"), Some("/root"));
        // The locale and time zone pass through; nothing else of the server's.
        for (key, value) in [
            ("LANG", "C.UTF-8"),
            ("LC_TIME", "C"),
            ("TZ", "Europe/Paris"),
            ("LANGUAGE", "en"),
        ] {
            assert_eq!(plain.var(key), Some(value), "{key}");
        }
        let envy = check_started(&server, "envy", 1024);
        assert_eq!(envy.var("PATH"), Some("/opt/envy/bin"));
        assert_eq!(envy.var("LANG"), Some("fr_FR.UTF-8"));
        assert_eq!(envy.var("HOME"), Some("/srv/envy"));
        assert_eq!(envy.var("TZ"), Some("Europe/Paris"));
        let nobody = check_started(&server, "nobody", 1024);
        assert_eq!(nobody.var("USER"), Some("nobody"));
        assert_eq!(nobody.var("LOGNAME"), Some("nobody"));
        assert_eq!(nobody.var("HOME"), Some("/nonexistent"));
        assert_eq!(
            nobody.var("SHELL"),
            Some("/usr/sbin/nologin"),
            "from the password entry"
        );
        assert_eq!(nobody.cwd, Path::new("/"), "no home directory: /");
        let homed = check_started(&server, "homed", 1024);
        assert_eq!(
            homed.cwd,
            Path::new("/root"),
            "a user: service starts at home"
        );
        assert_eq!(
            nobody.ids,
            (65534, 65534, vec![65534]),
            "nobody, in its own group only"
        );
        // `group:` sets the group, and the user keeps no other.
        let grouped = check_started(&server, "grouped", 1024);
        assert_eq!(grouped.ids, (65534, 1, vec![1]), "nobody in group daemon");
        // `log: null`: both streams go to /dev/null, nothing is kept.
        let silent = Inherited::of(server.pid_of("silent"));
        assert_eq!(
            silent.fd_targets[..3],
            ["/dev/null", "/dev/null", "/dev/null"],
            "stdin, stdout and stderr of a log: null service"
        );
        let kept = server.zinit(&["logs", "silent"]);
        assert_eq!(kept.code, 0, "{}", kept.stderr);
        assert!(
            !kept.stdout.contains("said") && !kept.stdout.contains("shouted"),
            "log: null kept output: {}",
            kept.stdout
        );
        let limited = check_started(&server, "limited", 512);
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid_of("limited")))
            .expect("limits");
        let limit = |name: &str| {
            limits
                .lines()
                .find(|l| l.starts_with(name))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        assert!(limit("Max core file size").contains("0 0"), "{limits}");
        assert!(limit("Max processes").contains("300 400"), "{limits}");
        assert_eq!(limited.var("GREETING"), Some("hi"));
        assert_eq!(limited.cwd, tag.dir());

        // The readiness test ran as clean as the service.
        let (blk, ign, umask) = status_copy(&tag.dir().join("test-status"));
        assert_eq!((blk, ign, umask), (0, 0, 0o022), "readiness test");

        // A job.
        let job = server.zinit(&["job", "run", "--no-wait", "--", &sleep, "1003"]);
        assert_eq!(job.code, 0, "{}", job.stderr);
        let job = job.stdout.trim().to_string();
        server.wait_state(&job, "running");
        check_started(&server, &job, 1024);
        assert_eq!(server.zinit(&["job", "cancel", &job]).code, 0);

        // A restart.
        let before = server.pid_of("limited");
        assert_eq!(server.zinit(&["restart", "limited"]).code, 0);
        assert_ne!(server.pid_of("limited"), before);
        check_started(&server, "limited", 512);

        // An add.
        let added = tag.dir().join("added.yaml");
        std::fs::write(&added, format!("exec: {sleep} 1004\n")).expect("write");
        assert_eq!(server.zinit(&["add", &added.display().to_string()]).code, 0);
        server.wait_running(&["added"]);
        check_started(&server, "added", 1024);

        // A reload.
        write("reloaded", format!("exec: {sleep} 1005\n"));
        assert_eq!(server.zinit(&["reload"]).code, 0);
        server.wait_running(&["reloaded"]);
        check_started(&server, "reloaded", 1024);

        // SIGTERM reaches sleep at once: `kill` does what it says.
        let pid = server.pid_of("nobody");
        assert_eq!(server.zinit(&["kill", "nobody", "TERM"]).code, 0);
        assert!(
            wait_gone(&[pid], tag.as_str(), Duration::from_secs(2)).is_empty(),
            "sleep did not die of SIGTERM"
        );

        // A stop: the stop command ran clean, and sleep stopped gracefully.
        let stop = server.zinit(&["--json", "stop", "plain"]);
        assert_eq!(stop.code, 0, "{}", stop.stderr);
        let stop = stop.last_json();
        assert_eq!(stop["outcome"], "graceful", "{stop}");
        assert_eq!(stop["processes_killed"], 0, "{stop}");
        assert!(stop["duration"].as_f64().expect("duration") < 2.0, "{stop}");
        let (blk, ign, umask) = status_copy(&tag.dir().join("stop-status"));
        assert_eq!((blk, ign, umask), (0, 0, 0o022), "stop command");

        // The shutdown stops every sleep gracefully.
        let down = server.zinit(&["--json", "shutdown"]);
        assert_eq!(down.code, 0, "{}{}", down.stdout, down.stderr);
        let summary = down
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|e| e["kind"] == "summary")
            .expect("summary");
        assert_eq!(summary["processes_killed"], 0, "{summary}");
        assert_eq!(summary["units_killed"], 0, "{summary}");
        assert_eq!(summary["clean"], true, "{summary}");
        let status = server.stop().await;
        assert_eq!(status, Some(zinit_process::spawn::ExitStatus::Exited(0)));
    }
}
