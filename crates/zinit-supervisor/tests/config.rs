//! Service files: the accepted fields, and a table of bad files with the
//! exact error each must give (file, field, value, line, message).

use std::path::Path;
use std::time::Duration;
use zinit_process::Signal;
use zinit_process::stop::StopMode;
use zinit_supervisor::config::{LogMode, RestartMode, load_dir, parse_service};

fn parse(text: &str) -> Result<zinit_supervisor::config::ServiceConfig, Vec<String>> {
    parse_service(Path::new("/etc/zinit/web.yaml"), "web", text)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect())
}

#[test]
fn the_original_zinit_fields_keep_working() {
    let service = parse(
        "exec: /usr/bin/web --port 80 'two words'\n\
         test: curl -sf http://127.0.0.1/health\n\
         oneshot: false\n\
         after: [db, cache]\n\
         signal:\n  stop: sigint\n\
         shutdown_timeout: 20\n\
         log: stdout\n\
         env:\n  PORT: 80\n  NAME: web\n\
         dir: /srv/web\n",
    )
    .expect("valid");
    assert_eq!(service.exec, ["/usr/bin/web", "--port", "80", "two words"]);
    assert_eq!(service.test.as_deref().map(|t| t[0].as_str()), Some("curl"));
    assert_eq!(service.after, ["db", "cache"]);
    assert_eq!(service.stop_signal, Signal::SIGINT);
    assert_eq!(service.stop_timeout, Duration::from_secs(20));
    assert_eq!(service.log.mode, LogMode::Stdout);
    assert_eq!(
        service.env,
        [("PORT".into(), "80".into()), ("NAME".into(), "web".into())]
    );
    assert_eq!(service.dir.as_deref(), Some(Path::new("/srv/web")));
    assert_eq!(service.restart.mode, RestartMode::Always);
}

#[test]
fn defaults_follow_the_brief() {
    let service = parse("exec: /bin/true").expect("valid");
    assert_eq!(service.stop_timeout, Duration::from_secs(10));
    assert_eq!(service.stop_signal, Signal::SIGTERM);
    assert_eq!(service.stop_mode, StopMode::Tree);
    assert_eq!(service.restart.mode, RestartMode::Always);
    assert_eq!(service.test_interval, Duration::from_millis(500));
    assert_eq!(service.test_timeout, Duration::from_secs(60));
    assert_eq!(service.log.mode, LogMode::Ring);
    assert!(service.log.file.is_none());
    assert_eq!(service.dir, None);
    let oneshot = parse("exec: /bin/true\noneshot: true").expect("valid");
    assert_eq!(oneshot.restart.mode, RestartMode::Never);
}

#[test]
fn the_new_fields_parse() {
    let service = parse(
        "exec: /bin/web\n\
         stop_signal: QUIT\n\
         stop_timeout_ms: 2500\n\
         stop: /bin/web --drain\n\
         stop_mode: group\n\
         ports: [8080, \"53/udp\", \"8443/tcp\"]\n\
         process_filters: [\"name:web\", \"exe:/bin/web\", \"web --worker\"]\n\
         restart:\n  policy: on-failure\n  delay: 100ms\n  factor: 3\n  max_delay: 5s\n  reset_after: 1m\n  max_restarts: 4\n\
         log:\n  file: /var/log/web.log\n  max_size: 4096\n  keep: 2\n\
         user: nobody\n",
    )
    .expect("valid");
    assert_eq!(service.stop_signal, Signal::SIGQUIT);
    assert_eq!(service.stop_timeout, Duration::from_millis(2500));
    assert_eq!(
        service.stop_command.as_deref().map(<[String]>::len),
        Some(2)
    );
    assert_eq!(service.stop_mode, StopMode::Group);
    assert_eq!(
        service
            .ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["8080/tcp", "53/udp", "8443/tcp"]
    );
    assert_eq!(service.process_filters.len(), 3);
    assert_eq!(service.restart.mode, RestartMode::OnFailure);
    assert_eq!(service.restart.delay, Duration::from_millis(100));
    assert_eq!(service.restart.max_restarts, Some(4));
    let file = service.log.file.expect("log file");
    assert_eq!((file.max_size, file.keep), (4096, 2));
    let run_as = service.run_as.expect("user");
    assert_eq!((run_as.uid, run_as.user.as_str()), (65534, "nobody"));
}

#[test]
fn a_stop_timeout_above_thirty_seconds_is_capped_with_a_warning() {
    let service = parse("exec: /bin/db\nshutdown_timeout: 60").expect("valid");
    assert_eq!(service.stop_timeout, Duration::from_secs(30));
    assert_eq!(service.warnings.len(), 1);
    assert!(
        service.warnings[0].contains("30 s"),
        "{:?}",
        service.warnings
    );
    let zero = parse("exec: /bin/db\nstop_timeout_ms: 0").expect("valid");
    assert_eq!(zero.stop_timeout, Duration::ZERO);
}

/// Each bad file and the exact error it must give.
const BAD: &[(&str, &str)] = &[
    (
        "exec: /bin/a\nlimits:\n  nofile: lots\n",
        "/etc/zinit/web.yaml:3: field `limits.nofile` = \"lots\": expected a whole number, unlimited, or SOFT:HARD",
    ),
    (
        "exec: /bin/a\nlimits:\n  nofile: \"2048:1024\"\n",
        "/etc/zinit/web.yaml:3: field `limits.nofile` = \"2048:1024\": the soft limit is above the hard limit",
    ),
    (
        "exec: /bin/a\nexce: typo\n",
        "/etc/zinit/web.yaml:2: field `exce`: unknown field; expected one of: exec, test, test_interval, test_timeout, oneshot, after, signal, stop_signal, shutdown_timeout, stop_timeout_ms, stop, stop_mode, log, env, dir, ports, process_filters, restart, user, group, limits, pid_file",
    ),
    (
        "oneshot: true\n",
        "/etc/zinit/web.yaml: field `exec`: missing: every service needs a command",
    ),
    (
        "exec: \"\"\n",
        "/etc/zinit/web.yaml:1: field `exec` = \"\": the command is empty",
    ),
    (
        "exec: /bin/a 'open\n",
        "/etc/zinit/web.yaml:1: field `exec` = \"/bin/a 'open\": unbalanced quotes or a trailing backslash",
    ),
    (
        "exec: [/bin/a]\n",
        "/etc/zinit/web.yaml:1: field `exec` = - /bin/a: expected a string, found a list",
    ),
    (
        "exec: /bin/a\noneshot: yes please\n",
        "/etc/zinit/web.yaml:2: field `oneshot` = \"yes please\": expected true or false, found a string",
    ),
    (
        "exec: /bin/a\nsignal:\n  stop: SIGTERMINATE\n",
        "/etc/zinit/web.yaml:3: field `signal.stop` = \"SIGTERMINATE\": unknown signal \"SIGTERMINATE\" (expected a name such as TERM, SIGKILL or a number such as 15)",
    ),
    (
        "exec: /bin/a\nsignal:\n  reload: HUP\n",
        "/etc/zinit/web.yaml:3: field `signal.reload`: unknown field; expected one of: stop",
    ),
    (
        "exec: /bin/a\nstop_signal: KILL\n",
        "/etc/zinit/web.yaml:2: field `stop_signal` = \"KILL\": SIGKILL and SIGSTOP cannot be a graceful stop signal",
    ),
    (
        "exec: /bin/a\nsignal:\n  stop: INT\nstop_signal: TERM\n",
        "/etc/zinit/web.yaml:4: field `stop_signal`: give either `signal.stop` or `stop_signal`, not both",
    ),
    (
        "exec: /bin/a\nshutdown_timeout: 5\nstop_timeout_ms: 500\n",
        "/etc/zinit/web.yaml:3: field `stop_timeout_ms`: give either `shutdown_timeout` (seconds) or `stop_timeout_ms` (milliseconds), not both",
    ),
    (
        "exec: /bin/a\nshutdown_timeout: -1\n",
        "/etc/zinit/web.yaml:2: field `shutdown_timeout` = -1: expected a non-negative number",
    ),
    (
        "exec: /bin/a\nports: [80, 70000]\n",
        "/etc/zinit/web.yaml:2: field `ports` = 70000: invalid port \"70000\": expected a number from 1 to 65535, optionally followed by /tcp or /udp",
    ),
    (
        "exec: /bin/a\nports: [\"53/sctp\"]\n",
        "/etc/zinit/web.yaml:2: field `ports` = \"53/sctp\": invalid port \"53/sctp\": expected a number from 1 to 65535, optionally followed by /tcp or /udp",
    ),
    (
        "exec: /bin/a\nprocess_filters: [\"cmdline:(\"]\n",
        "/etc/zinit/web.yaml:2: field `process_filters` = \"cmdline:(\": invalid process filter \"cmdline:(\": regex parse error:\n    (\n    ^\nerror: unclosed group",
    ),
    (
        "exec: /bin/a\nprocess_filters: [\"exe:bin/a\"]\n",
        "/etc/zinit/web.yaml:2: field `process_filters` = \"exe:bin/a\": invalid process filter \"exe:bin/a\": exe: needs an absolute path",
    ),
    (
        "exec: /bin/a\nstop_mode: all\n",
        "/etc/zinit/web.yaml:2: field `stop_mode` = \"all\": expected tree, group or main",
    ),
    (
        "exec: /bin/a\nrestart: sometimes\n",
        "/etc/zinit/web.yaml:2: field `restart` = \"sometimes\": expected always, on-failure or never",
    ),
    (
        "exec: /bin/a\nrestart:\n  delay: soon\n",
        "/etc/zinit/web.yaml:3: field `restart.delay` = \"soon\": expected a duration such as 500ms, 10s or 1m, or a number of seconds",
    ),
    (
        "exec: /bin/a\nlog: syslog\n",
        "/etc/zinit/web.yaml:2: field `log` = \"syslog\": expected ring, stdout or null (or a mapping with `file`)",
    ),
    (
        "exec: /bin/a\ndir: srv/web\n",
        "/etc/zinit/web.yaml:2: field `dir` = \"srv/web\": must be an absolute path",
    ),
    (
        "exec: /bin/a\nuser: no-such-user-zinit\n",
        "/etc/zinit/web.yaml:2: field `user` = \"no-such-user-zinit\": no such user",
    ),
    (
        "exec: /bin/a\nafter: [web]\n",
        "/etc/zinit/web.yaml:2: field `after` = \"web\": a service cannot start after itself",
    ),
    (
        "exec: /bin/a\nafter: [db, db]\n",
        "/etc/zinit/web.yaml:2: field `after` = \"db\": listed twice",
    ),
    (
        "exec: /bin/a\nenv: [A=1]\n",
        "/etc/zinit/web.yaml:2: field `env` = - A=1: expected a mapping, found a list",
    ),
    (
        "- exec: /bin/a\n",
        "/etc/zinit/web.yaml: a service file is a mapping of fields (exec: ..., after: ...), found a list",
    ),
    (
        "exec: /bin/a\n  bad: indent\n",
        "/etc/zinit/web.yaml:2: invalid YAML: mapping values are not allowed in this context at line 2 column 6",
    ),
];

#[test]
fn every_bad_file_gives_its_exact_error() {
    for (text, expected) in BAD {
        let errors = parse(text).expect_err(text);
        assert_eq!(errors, vec![expected.to_string()], "for file:\n{text}");
    }
}

#[test]
fn all_problems_of_a_file_are_reported_at_once() {
    let errors = parse("exec: \"\"\nstop_mode: all\nports: [0]\n").expect_err("invalid");
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

/// A config directory of test files, removed when dropped.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new(name: &str, files: &[(&str, &str)]) -> Self {
        let temp = tempfile::Builder::new()
            .prefix(&format!("zt-config-{name}."))
            .tempdir()
            .expect("mkdir");
        for (file, text) in files {
            std::fs::write(temp.path().join(file), text).expect("write");
        }
        Self(temp)
    }
}

#[test]
fn a_directory_keeps_its_valid_services_and_lists_the_invalid_ones() {
    let dir = Dir::new(
        "mixed",
        &[
            ("db.yaml", "exec: /bin/db\n"),
            ("web.yml", "exec: /bin/web\nafter: [db]\n"),
            ("broken.yaml", "exec: /bin/x\nstop_signal: NOPE\n"),
            ("needs-broken.yaml", "exec: /bin/y\nafter: [broken]\n"),
            ("needs-ghost.yaml", "exec: /bin/z\nafter: [ghost]\n"),
            ("README.md", "not a service"),
            (".hidden.yaml", "exec: ignored"),
        ],
    );
    let set = load_dir(dir.0.path()).expect("readable");
    assert_eq!(
        set.services.keys().collect::<Vec<_>>(),
        ["db", "needs-broken", "web"]
    );
    assert_eq!(
        set.invalid.keys().collect::<Vec<_>>(),
        ["broken", "needs-ghost"]
    );
    let ghost = set.invalid["needs-ghost"][0].to_string();
    assert!(
        ghost.ends_with("needs-ghost.yaml:2: field `after` = \"ghost\": depends on a service that does not exist"),
        "{ghost}"
    );
}

#[test]
fn a_valid_file_that_depends_on_an_invalid_one_stays_valid_and_waits_for_it() {
    let dir = Dir::new(
        "blocked",
        &[
            ("broken.yaml", "exec: /bin/x\nstop_signal: NOPE\n"),
            ("needs-broken.yaml", "exec: /bin/y\nafter: [broken]\n"),
            ("needs-needs.yaml", "exec: /bin/z\nafter: [needs-broken]\n"),
        ],
    );
    let set = load_dir(dir.0.path()).expect("readable");
    assert_eq!(
        set.services.keys().collect::<Vec<_>>(),
        ["needs-broken", "needs-needs"]
    );
    assert_eq!(set.invalid.keys().collect::<Vec<_>>(), ["broken"]);
    assert_eq!(set.errors().len(), 1, "only the broken file has an error");
    let warnings = set.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].ends_with(
            "needs-broken.yaml: needs-broken will wait for broken, whose service file is invalid"
        ),
        "{warnings:?}"
    );
}

#[test]
fn a_cycle_is_printed_and_its_members_are_invalid_and_their_dependents_wait() {
    let dir = Dir::new(
        "cycle",
        &[
            ("a.yaml", "exec: /bin/a\nafter: [b]\n"),
            ("b.yaml", "exec: /bin/b\nafter: [c]\n"),
            ("c.yaml", "exec: /bin/c\nafter: [a]\n"),
            ("d.yaml", "exec: /bin/d\nafter: [a]\n"),
            ("e.yaml", "exec: /bin/e\n"),
        ],
    );
    let set = load_dir(dir.0.path()).expect("readable");
    assert_eq!(set.services.keys().collect::<Vec<_>>(), ["d", "e"]);
    assert_eq!(set.invalid.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    let a = set.invalid["a"][0].to_string();
    assert!(
        a.ends_with("field `after`: dependency cycle: a -> b -> c -> a"),
        "{a}"
    );
    assert!(
        set.warnings()
            .iter()
            .any(|w| w.ends_with("d will wait for a, whose service file is invalid")),
        "{:?}",
        set.warnings()
    );
}

#[test]
fn two_files_for_one_name_are_a_duplicate() {
    let dir = Dir::new(
        "dup",
        &[
            ("web.yaml", "exec: /bin/a\n"),
            ("web.yml", "exec: /bin/b\n"),
        ],
    );
    let set = load_dir(dir.0.path()).expect("readable");
    assert!(set.services.is_empty());
    assert!(
        set.invalid["web"][0]
            .to_string()
            .contains("duplicate service \"web\"")
    );
}

#[test]
fn limits_set_soft_and_hard_values() {
    use zinit_process::limits::UNLIMITED;
    let service = parse(
        "exec: /bin/web\nlimits:\n  nofile: 4096\n  core: unlimited\n  nproc: \"512:1024\"\n",
    )
    .expect("valid");
    let limits: Vec<(u64, u64)> = service.limits.iter().map(|l| (l.soft, l.hard)).collect();
    assert_eq!(limits, [(4096, 4096), (UNLIMITED, UNLIMITED), (512, 1024)]);
}

#[test]
fn names_of_the_form_job_n_are_left_to_jobs() {
    let errors = parse_service(
        Path::new("/etc/zinit/job-7.yaml"),
        "job-7",
        "exec: /bin/a\n",
    )
    .expect_err("reserved");
    assert_eq!(
        errors[0].to_string(),
        "/etc/zinit/job-7.yaml: \"job-7\" is not a valid service name: names of the form job-N are reserved for jobs"
    );
    for fine in ["job-runner", "job-", "jobs-1", "my-job-1"] {
        parse_service(Path::new("/etc/zinit/x.yaml"), fine, "exec: /bin/a\n")
            .unwrap_or_else(|e| panic!("{fine}: {e:?}"));
    }
}

#[test]
fn a_file_with_an_impossible_name_or_too_big_is_invalid_and_named() {
    let huge = format!("exec: /bin/a\n#{}\n", "x".repeat(1024 * 1024));
    let dir = Dir::new(
        "names",
        &[
            ("ok_name-1.2@x.yaml", "exec: /bin/ok\n"),
            ("sp ace.yaml", "exec: /bin/a\n"),
            ("dol$lar.yaml", "exec: /bin/a\n"),
            ("ünï.yaml", "exec: /bin/a\n"),
            ("huge.yaml", &huge),
        ],
    );
    let set = load_dir(dir.0.path()).expect("readable");
    assert_eq!(set.services.keys().collect::<Vec<_>>(), ["ok_name-1.2@x"]);
    for (name, why) in [
        ("sp ace", "letters, digits"),
        ("dol$lar", "letters, digits"),
        ("ünï", "letters, digits"),
        ("huge", "larger than 1048576 bytes"),
    ] {
        let errors = set
            .invalid
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not listed as invalid: {:?}", set.invalid));
        let text = errors[0].to_string();
        assert!(
            text.contains(&format!("{name}.yaml")) && text.contains(why),
            "{name}: {text}"
        );
    }
}
