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
    crate::run(&cargo, &["test", "--workspace", "--no-fail-fast"])?;
    let leaked = leaked_processes();
    if !leaked.is_empty() {
        bail!("the tests left processes behind:\n{}", leaked.join("\n"));
    }
    eprintln!("xtask test: fmt, clippy and every test passed; no process left behind");
    Ok(())
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
