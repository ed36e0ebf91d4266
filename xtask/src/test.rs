//! `cargo xtask test`: formatting, lints, the whole test suite, and a check
//! that no test left a process behind.

use anyhow::{Result, bail};

pub fn run() -> Result<()> {
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
    let (passed, failed, ok) = cargo_test(&cargo)?;
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

/// Runs the whole test suite, echoing its output, and adds up the
/// `test result:` lines of every test binary.
fn cargo_test(cargo: &str) -> Result<(u64, u64, bool)> {
    use std::io::BufRead;
    // The shutdown suite's watchdog scenario needs the server's test-only
    // fault hook; release builds never have it.
    let args = [
        "test",
        "--workspace",
        "--no-fail-fast",
        "--color",
        "never",
        "--features",
        "zinit-server/test-hooks",
    ];
    eprintln!("$ {cargo} {}", args.join(" "));
    let mut child = std::process::Command::new(cargo)
        .args(args)
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
