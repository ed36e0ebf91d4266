//! Foreign gRPC clients against a real `zinit_server` on its unix socket:
//! Python's grpcio with stubs generated from the repo's proto, grpcio's
//! reflection client (v1alpha and v1), and grpcurl (reflection v1alpha).
//!
//! The Python side lives in tests/python: `venv.sh` makes a cached venv at
//! `<target dir>/python-venv` from `requirements.txt` (python3 and PyPI are
//! needed the first time), `client_test.py` and `reflection_test.py` check
//! the server. Every wait is bounded; the server is stopped and tagged
//! processes are reaped, pass or fail.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use zinit_process::spawn::ExitStatus as ServerExit;
use zinit_tests::{Server, Tag, bin_dir, wait_gone};

const FIXTURE: &str = env!("CARGO_BIN_EXE_zinit-fixture");
/// tests/python in this repository.
const PYTHON_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python");

/// What a bounded command did, stdout and stderr together.
#[derive(Debug)]
struct Outcome {
    status: Option<ExitStatus>,
    output: String,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(status) => writeln!(f, "({status})")?,
            None => writeln!(f, "(killed: it did not finish in time)")?,
        }
        f.write_str(&self.output)
    }
}

/// Runs `command` in its own process group, its output in `log`; kills the
/// whole group (pip, grpcurl and all) if it is not done within `bound`.
fn run_bounded(mut command: Command, bound: Duration, log: &Path) -> Outcome {
    let file = std::fs::File::create(log).expect("create log");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone log"))
        .stderr(file)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    let end = Instant::now() + bound;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > end {
            // The group we created; its leader is not reaped yet, so the
            // group id is still ours.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    Outcome { status, output }
}

/// The venv's python, once `venv.sh` has made or reused the venv (it locks
/// out concurrent callers, in this process or another).
fn venv_python(tag: &Tag) -> PathBuf {
    let venv = bin_dir().parent().expect("target dir").join("python-venv");
    let mut setup = Command::new("bash");
    setup.arg(Path::new(PYTHON_DIR).join("venv.sh")).arg(&venv);
    let started = Instant::now();
    let log = tag.dir().join("venv.log");
    let out = run_bounded(setup, Duration::from_secs(1200), &log);
    assert!(
        out.status.is_some_and(|s| s.success()),
        "setting up the Python venv {} failed {out}",
        venv.display()
    );
    eprintln!(
        "python venv {} ready in {:.1} s",
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    venv.join("bin/python")
}

/// Writes the service files (name, fixture arguments) and starts a server
/// on `<tag dir>/s.sock` (/tmp/TAG/s.sock: well under 108 bytes).
async fn start_server(tag: &Tag, services: &[(&str, &str)]) -> Server {
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf dir");
    for (name, args) in services {
        let text = format!("exec: {FIXTURE} --tag {} {args}\n", tag.as_str());
        std::fs::write(conf.join(format!("{name}.yaml")), text).expect("service file");
    }
    let server = Server::start(tag, &conf, &[]).await;
    assert!(
        server.socket.as_os_str().len() < 108,
        "{}",
        server.socket.display()
    );
    server
}

/// Runs a script of tests/python with the venv's python (at most 120 s),
/// the tag in its argv; panics with its output if it fails.
fn run_script(python: &Path, tag: &Tag, script: &str, args: &[&str]) {
    let mut command = Command::new(python);
    command
        .arg(Path::new(PYTHON_DIR).join(script))
        .args(args)
        .args(["--tag", tag.as_str()]);
    let log = tag.dir().join(format!("{script}.log"));
    let out = run_bounded(command, Duration::from_secs(120), &log);
    assert!(
        out.status.is_some_and(|s| s.success()),
        "{script} failed {out}"
    );
    eprint!("{script}:\n{}", out.output);
}

/// Stops the server with SIGTERM; it must exit 0 and take its services'
/// processes along.
async fn stop_cleanly(mut server: Server, tag: &Tag) {
    let pids = tag.pids();
    assert_eq!(server.stop().await, Some(ServerExit::Exited(0)));
    assert!(!server.socket.exists(), "socket removed at exit");
    let left = wait_gone(&pids, tag.as_str(), Duration::from_secs(5));
    assert!(left.is_empty(), "processes left after the server: {left:?}");
}

#[tokio::test]
async fn python_grpc_client_lists_units_reads_logs_and_follows_events() {
    let tag = Tag::new("py");
    let python = venv_python(&tag);
    let server = start_server(&tag, &[("printer", "--output-lines 5"), ("idle", "")]).await;
    let socket = server.socket.to_str().expect("utf-8 socket path");
    run_script(
        &python,
        &tag,
        "client_test.py",
        &[
            socket,
            "idle",
            "printer",
            "--log-unit",
            "printer",
            "--log-lines",
            "5",
            "--events-unit",
            "idle",
        ],
    );
    stop_cleanly(server, &tag).await;
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_and_grpcurl_describe_the_control_service() {
    let tag = Tag::new("pyrefl");
    let python = venv_python(&tag);
    let server = start_server(&tag, &[("idle", "")]).await;
    let socket = server.socket.to_str().expect("utf-8 socket path");
    run_script(&python, &tag, "reflection_test.py", &[socket]);
    stop_cleanly(server, &tag).await;
}
