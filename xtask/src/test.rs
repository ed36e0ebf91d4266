//! `cargo xtask test`: formatting, lints, the whole test suite, and a check
//! that no test left a process behind.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
    install_foreign_programs()?;
    let cargo = crate::cargo();
    crate::run(&cargo, &["fmt", "--all", "--", "--check"])?;
    crate::run(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // The scenario suite is a `test = false` target, which --all-targets skips.
    crate::run(
        &cargo,
        &[
            "clippy",
            "-p",
            "zinit-tests",
            "--test",
            "shutdown",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let (mut passed, mut failed, mut ok) = cargo_test(&cargo)?;
    match test_shutdown_counts() {
        Ok((p, f, good)) => {
            passed += p;
            failed += f;
            ok &= good;
        }
        Err(e) => {
            println!("the shutdown scenario suite did not run: {e:#}");
            ok = false;
        }
    }
    if let Err(e) = install_check() {
        println!("install check: FAILED: {e:#}");
        failed += 1;
    } else {
        println!("install check: ok");
        passed += 1;
    }
    let leaked = leaked_processes();
    if !leaked.is_empty() {
        println!("the tests left processes behind:\n{}", leaked.join("\n"));
    }
    // One closing line for the whole suite.
    println!("tests: {passed} passed, {failed} failed");
    if !ok || failed > 0 {
        bail!("some tests failed");
    }
    if !leaked.is_empty() {
        bail!("the tests left processes behind");
    }
    Ok(())
}

/// The Debian programs the tests run besides zinit's own fixture (nginx
/// and redis-server), installed with apt-get when missing. Their package
/// scripts are kept from starting them as system services.
pub fn install_foreign_programs() -> Result<()> {
    let missing: Vec<&str> = [
        ("nginx", "/usr/sbin/nginx"),
        ("redis-server", "/usr/bin/redis-server"),
    ]
    .into_iter()
    .filter(|(_, path)| !std::path::Path::new(path).exists())
    .map(|(package, _)| package)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let policy = std::path::Path::new("/usr/sbin/policy-rc.d");
    let placed = !policy.exists();
    if placed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            policy,
            "#!/bin/sh\n# zinit's tests: do not start services from package scripts\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let apt = |args: &[&str]| -> Result<()> {
        eprintln!("$ apt-get {}", args.join(" "));
        let status = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        anyhow::ensure!(status.success(), "apt-get {} failed ({status})", args[0]);
        Ok(())
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&missing);
    let installed = apt(&["update", "-qq"]).and_then(|()| apt(&install));
    if placed {
        let _ = std::fs::remove_file(policy);
    }
    installed.map_err(|e| anyhow::anyhow!("installing {}: {e:#}", missing.join(" ")))
}

/// `cargo xtask test-shutdown`.
pub fn test_shutdown() -> Result<()> {
    install_foreign_programs()?;
    let (passed, failed, ok) = test_shutdown_counts()?;
    println!("tests: {passed} passed, {failed} failed");
    if !ok || failed > 0 {
        bail!("shutdown scenarios failed");
    }
    Ok(())
}

/// Installs release binaries into a temporary prefix and runs the shutdown
/// scenario suite against them (its watchdog scenario uses the debug build
/// with the test-only fault hook).
fn test_shutdown_counts() -> Result<(u64, u64, bool)> {
    let built = crate::install::build_release(false)?;
    let prefix = std::env::temp_dir().join(format!("zinit-prefix-{}", std::process::id()));
    crate::install::install_binaries(&built, &prefix)?;
    let cargo = crate::cargo();
    // `--workspace` keeps the features of the other builds: nothing is
    // compiled a second time.
    let args = [
        "test",
        "--workspace",
        "--test",
        "shutdown",
        "--color",
        "never",
    ];
    let result = run_counting(&cargo, &args, &[("ZINIT_BIN_DIR", prefix.join("bin"))]);
    let _ = std::fs::remove_dir_all(&prefix);
    result
}

/// Runs the whole test suite, echoing its output, and adds up the
/// `test result:` lines of every test binary.
fn cargo_test(cargo: &str) -> Result<(u64, u64, bool)> {
    let args = ["test", "--workspace", "--no-fail-fast", "--color", "never"];
    run_counting(cargo, &args, &[])
}

/// Runs a test command, echoing its output, and adds up its closing lines.
fn run_counting(
    cargo: &str,
    args: &[&str],
    env: &[(&str, std::path::PathBuf)],
) -> Result<(u64, u64, bool)> {
    use std::io::BufRead;
    eprintln!("$ {cargo} {}", args.join(" "));
    let mut child = std::process::Command::new(cargo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(crate::root())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let (mut passed, mut failed) = (0, 0);
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, "passed");
            failed += count(rest, "failed");
        } else if let Some((_, rest)) = line.split_once("scenarios: ") {
            // The shutdown suite's own closing line: "N passed, N failed".
            passed += count(rest.replace(',', ";").as_str(), "passed");
            failed += count(rest.replace(',', ";").as_str(), "failed");
        }
    }
    let status = child.wait()?;
    Ok((passed, failed, status.success()))
}

/// The number before `word` in "ok. 5 passed; 0 failed; ...".
fn count(summary: &str, word: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(word)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Processes still running a binary from this workspace's target directory.
fn leaked_processes() -> Vec<String> {
    let target = crate::root().join("target");
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.to_string();
            pid.parse::<u32>().ok()?;
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            (exe.starts_with(&target) && pid != me).then(|| format!("{pid} {}", exe.display()))
        })
        .collect()
}

/// `cargo xtask install` against a running server: it shuts the server down
/// gracefully, installs the binaries, and with `--restart` starts it again.
fn install_check() -> Result<()> {
    use std::time::{Duration, Instant};
    let built = crate::install::build_release(true)?;
    let dir = std::env::temp_dir().join(format!("zinit-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("conf"))?;
    let tag = format!("zinstall-{}", std::process::id());
    std::fs::write(
        dir.join("conf/svc.yaml"),
        format!(
            "exec: {} --tag {tag} --width 2\n",
            built.join("zinit-fixture").display()
        ),
    )?;
    let socket = dir.join("s.sock");
    let zinit = |args: &[&str]| {
        std::process::Command::new(built.join("zinit"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
    };
    let mut old = std::process::Command::new(built.join("zinit_server"))
        .arg("--config")
        .arg(dir.join("conf"))
        .arg("--socket")
        .arg(&socket)
        .args(["--log-level", "error"])
        .spawn()?;
    let outcome = (|| -> Result<()> {
        let end = Instant::now() + Duration::from_secs(10);
        while !zinit(&["info"])?.status.success() {
            if Instant::now() > end {
                bail!("the server did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::install::run(crate::install::Args {
            prefix: dir.join("prefix"),
            socket: Some(socket.clone()),
            restart: true,
        })?;
        if old.try_wait()?.is_none() {
            bail!("the old server is still running");
        }
        for name in crate::install::BINARIES {
            if !dir.join("prefix/bin").join(name).exists() {
                bail!("{name} was not installed");
            }
        }
        let end = Instant::now() + Duration::from_secs(10);
        let info = loop {
            let out = zinit(&["--json", "info"])?;
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).into_owned();
            }
            if Instant::now() > end {
                bail!("the restarted server does not answer");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if info.contains(&format!("\"pid\":{},", old.id())) {
            bail!("the server was not restarted: {info}");
        }
        let down = zinit(&["shutdown"])?;
        if !down.status.success() {
            bail!("shutting the restarted server down failed");
        }
        Ok(())
    })();
    let _ = old.kill();
    let _ = old.wait();
    crate::bench::reap_tag(&tag);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
