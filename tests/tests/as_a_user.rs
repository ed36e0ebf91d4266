//! zinit run by an ordinary user, as a developer runs a local stack: the
//! server and the CLI as the real unprivileged user `nobody` (copies of the
//! binaries in the test's directory, so that any checkout works), finding
//! each other by the documented socket rules (`--socket`, `ZINIT_SOCKET`,
//! `$XDG_RUNTIME_DIR/zinit.sock`, `/tmp/zinit-$UID.sock`), and refusing
//! everyone else in both directions.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use zinit_process::Command;
use zinit_process::spawn::Output;
use zinit_tests::{Tag, wait_gone, workspace_bin};

const NOBODY: u32 = 65534;

/// What a command printed and returned.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A copy of the workspace binary `name` that every user may run.
fn public_copy(tag: &Tag, name: &str) -> PathBuf {
    let dir = tag.dir().join("bin");
    std::fs::create_dir_all(&dir).expect("bin dir");
    let copy = dir.join(name);
    if !copy.exists() {
        std::fs::copy(workspace_bin(name), &copy).expect("copy binary");
    }
    copy
}

/// A command as `uid` (its own group), with only `env` (and PATH).
fn as_user(uid: u32, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .user(uid, uid, Vec::new())
        .current_dir("/");
    for (key, value) in env {
        command = command.env(*key, *value);
    }
    command
}

/// Runs a command to its end (bounded to 20 s) and collects its output.
async fn run(command: Command) -> Ran {
    let mut child = command
        .stdout(Output::Piped)
        .stderr(Output::Piped)
        .spawn()
        .expect("spawn");
    let stdout = child.take_stdout().expect("stdout");
    let stderr = child.take_stderr().expect("stderr");
    let read = |fd| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::fs::File::from(fd).read_to_string(&mut text);
            text
        })
    };
    let (out, err) = (read(stdout), read(stderr));
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the command ended within 20 s")
        .expect("wait");
    Ran {
        code: match status {
            zinit_process::spawn::ExitStatus::Exited(code) => code,
            other => panic!("the command died: {other:?}"),
        },
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}

/// A directory only `uid` may use (what `XDG_RUNTIME_DIR` is).
fn private_dir(tag: &Tag, name: &str, uid: u32) -> PathBuf {
    let dir = tag.dir().join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    nix::unistd::chown(
        &dir,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(uid)),
    )
    .expect("chown");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    dir
}

/// Waits (bounded) until a socket appears at `path`.
async fn wait_for_socket(path: &Path) {
    let end = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(
            Instant::now() < end,
            "no socket at {} within 15 s",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config directory with one `sleep` service, readable by everyone.
fn config(tag: &Tag) -> PathBuf {
    let conf = tag.dir().join("conf");
    std::fs::create_dir_all(&conf).expect("conf");
    let sleep = tag.program("sleep");
    std::fs::write(
        conf.join("nap.yaml"),
        format!("exec: {} 1000\n", sleep.display()),
    )
    .expect("service");
    conf
}

#[tokio::test]
async fn a_user_runs_the_server_at_the_xdg_socket_and_only_that_user_gets_in() {
    let tag = Tag::new("user-xdg");
    let conf = config(&tag);
    let server_bin = public_copy(&tag, "zinit_server");
    let zinit = public_copy(&tag, "zinit");
    let xdg = private_dir(&tag, "xdg", NOBODY);
    let xdg_text = xdg.display().to_string();
    let env = [("XDG_RUNTIME_DIR", xdg_text.as_str())];
    let conf_text = conf.display().to_string();
    let mut server = as_user(NOBODY, &server_bin, &["--config", &conf_text], &env)
        .stderr(Output::Null)
        .spawn()
        .expect("server as nobody");
    let socket = xdg.join("zinit.sock");
    wait_for_socket(&socket).await;

    // The user's CLI finds the server by the same rule.
    let info = run(as_user(NOBODY, &zinit, &["--json", "info"], &env)).await;
    assert_eq!(info.code, 0, "{}", info.stderr);
    let info: serde_json::Value = serde_json::from_str(&info.stdout).expect("json");
    assert_eq!(
        info["cgroups"], false,
        "a user's server runs in process-group mode"
    );
    let end = Instant::now() + Duration::from_secs(10);
    let nap = loop {
        let list = run(as_user(NOBODY, &zinit, &["--json", "status", "nap"], &env)).await;
        let status: serde_json::Value = serde_json::from_str(&list.stdout).unwrap_or_default();
        if status["state"] == "running" {
            break status["pid"].as_i64().expect("pid") as i32;
        }
        assert!(Instant::now() < end, "nap never ran: {}", list.stdout);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let owner = std::fs::read_to_string(format!("/proc/{nap}/status")).expect("status");
    assert!(
        owner
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "the user's service runs as the user"
    );

    // Root's CLI refuses to talk to a server run by someone else.
    let socket_text = socket.display().to_string();
    let root = run(Command::new(&zinit).args(["--socket", &socket_text, "list"])).await;
    assert_eq!(root.code, 5, "{}", root.stderr);
    assert!(
        root.stderr.contains("refusing to talk to the server") && root.stderr.contains("uid 65534"),
        "{}",
        root.stderr
    );
    // Another user cannot even connect.
    let other = run(as_user(
        12345,
        &zinit,
        &["--socket", &socket_text, "list"],
        &[],
    ))
    .await;
    assert_ne!(other.code, 0);
    assert!(
        other.stderr.to_lowercase().contains("permission denied"),
        "{}",
        other.stderr
    );

    // The user shuts it down.
    let down = run(as_user(NOBODY, &zinit, &["shutdown"], &env)).await;
    assert_eq!(down.code, 0, "{}{}", down.stdout, down.stderr);
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("the server exits")
        .expect("wait");
    assert_eq!(status, zinit_process::spawn::ExitStatus::Exited(0));
    assert!(wait_gone(&[nap], tag.as_str(), Duration::from_secs(2)).is_empty());
}

#[tokio::test]
async fn without_xdg_the_socket_is_per_user_in_tmp_and_zinit_socket_overrides_it() {
    let tag = Tag::new("user-tmp");
    let conf = config(&tag);
    let server_bin = public_copy(&tag, "zinit_server");
    let zinit = public_copy(&tag, "zinit");
    let conf_text = conf.display().to_string();
    let socket = PathBuf::from(format!("/tmp/zinit-{NOBODY}.sock"));
    assert!(
        !socket.exists() || std::os::unix::net::UnixStream::connect(&socket).is_err(),
        "a server already answers on {}; this test needs that path",
        socket.display()
    );
    let mut server = as_user(NOBODY, &server_bin, &["--config", &conf_text], &[])
        .stderr(Output::Null)
        .spawn()
        .expect("server as nobody");
    wait_for_socket(&socket).await;
    let listed = run(as_user(NOBODY, &zinit, &["list"], &[])).await;
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("nap"), "{}", listed.stdout);

    // ZINIT_SOCKET wins over the default, and --socket over ZINIT_SOCKET.
    let elsewhere = tag.dir().join("nowhere.sock");
    let elsewhere_text = elsewhere.display().to_string();
    let overridden = run(as_user(
        NOBODY,
        &zinit,
        &["list"],
        &[("ZINIT_SOCKET", &elsewhere_text)],
    ))
    .await;
    assert_ne!(overridden.code, 0);
    assert!(
        overridden.stderr.contains(&elsewhere_text),
        "{}",
        overridden.stderr
    );
    let socket_text = socket.display().to_string();
    let explicit = run(as_user(
        NOBODY,
        &zinit,
        &["--socket", &socket_text, "list"],
        &[("ZINIT_SOCKET", &elsewhere_text)],
    ))
    .await;
    assert_eq!(explicit.code, 0, "{}", explicit.stderr);

    let down = run(as_user(NOBODY, &zinit, &["shutdown"], &[])).await;
    assert_eq!(down.code, 0, "{}{}", down.stdout, down.stderr);
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("the server exits")
        .expect("wait");
    assert_eq!(status, zinit_process::spawn::ExitStatus::Exited(0));
    assert!(!socket.exists(), "the socket is removed at exit");
}
