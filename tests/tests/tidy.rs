//! The invariants ARCHITECTURE.md states about the code's shape, checked
//! against the code itself (as rust-analyzer's tidy tests do): which crate
//! may depend on which, where a `tonic::Status` may be built, where raw
//! `libc` calls and `unsafe` may appear, and that every module says what it
//! is for. A change that breaks one of them fails here, with the place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The library and binary sources of every crate in `crates/`.
fn crate_sources() -> Vec<PathBuf> {
    rust_files(&root().join("crates"))
        .into_iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "src"))
        .collect()
}

/// The lines of `path` before its `#[cfg(test)]` module (unit tests may
/// use what production code may not).
fn production_lines(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).expect("read source");
    text.lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .enumerate()
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn each_crate_depends_only_on_the_layers_it_may_know() {
    let allowed: BTreeMap<&str, &[&str]> = BTreeMap::from([
        ("zinit-proto", &[][..]),
        ("zinit-process", &[][..]),
        ("zinit-supervisor", &["zinit-process"][..]),
        ("zinit-client", &["zinit-proto"][..]),
        (
            "zinit-server",
            &["zinit-supervisor", "zinit-proto", "zinit-client"][..],
        ),
        ("zinit-cli", &["zinit-proto", "zinit-client"][..]),
        ("zinit-ui", &["zinit-proto", "zinit-client"][..]),
        ("zinit-pid1", &["zinit-process", "zinit-client"][..]),
    ]);
    // Crates that speak gRPC; the layers below never do.
    let grpc: BTreeSet<&str> = [
        "zinit-proto",
        "zinit-client",
        "zinit-server",
        "zinit-cli",
        "zinit-ui",
        "zinit-pid1",
    ]
    .into();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = zinit_tests::output_within(
        std::process::Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(root()),
        std::time::Duration::from_secs(120),
    );
    assert!(out.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut problems = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name");
        if matches!(name, "zinit-tests" | "xtask") {
            continue;
        }
        let Some(may) = allowed.get(name) else {
            problems.push(format!("{name} is not in the layer table of this test"));
            continue;
        };
        for dep in package["dependencies"].as_array().expect("dependencies") {
            if dep["kind"].as_str().is_some() {
                continue; // dev and build dependencies
            }
            let dep = dep["name"].as_str().expect("dependency name");
            if dep.starts_with("zinit-") && !may.contains(&dep) {
                problems.push(format!("{name} depends on {dep}"));
            }
            if dep == "libc" && name != "zinit-process" {
                problems.push(format!("{name} depends on libc (use nix)"));
            }
            if dep == "tonic" && !grpc.contains(name) {
                problems.push(format!("{name} depends on tonic"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_grpc_status_is_built_only_in_the_servers_convert_module() {
    let server = root().join("crates/zinit-server/src");
    let mut found = Vec::new();
    for file in rust_files(&server) {
        if file.ends_with("convert.rs") {
            continue;
        }
        for (line, text) in production_lines(&file) {
            if let Some(at) = text.find("Status::") {
                let rest = &text[at + "Status::".len()..];
                if rest.starts_with(|c: char| c.is_ascii_lowercase()) {
                    found.push(format!("{}:{line}: {}", relative(&file), text.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "tonic::Status built outside convert.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn raw_system_calls_and_unsafe_stay_in_the_process_crates_sys_module() {
    // The spawn module's pre-exec closure and its plan (raw pointers built
    // before the fork) are the only other unsafe code.
    let unsafe_allowed = [
        "crates/zinit-process/src/sys.rs",
        "crates/zinit-process/src/spawn.rs",
    ];
    let mut libc = Vec::new();
    let mut unsafe_code = Vec::new();
    for file in crate_sources() {
        let name = relative(&file);
        let generated = name.starts_with("crates/zinit-proto/");
        for (line, text) in production_lines(&file) {
            let code = text.split("//").next().unwrap_or("");
            if code.contains("libc::") && name != "crates/zinit-process/src/sys.rs" {
                libc.push(format!("{name}:{line}: {}", text.trim()));
            }
            if !generated
                && (code.contains("unsafe {") || code.contains("unsafe impl"))
                && !unsafe_allowed.contains(&name.as_str())
            {
                unsafe_code.push(format!("{name}:{line}: {}", text.trim()));
            }
        }
    }
    assert!(
        libc.is_empty(),
        "raw libc outside zinit-process/src/sys.rs (use nix, or add a safe function to sys.rs):\n{}",
        libc.join("\n")
    );
    assert!(
        unsafe_code.is_empty(),
        "unsafe code outside the process crate's sys and spawn modules:\n{}",
        unsafe_code.join("\n")
    );
}

#[test]
fn every_module_says_what_it_is_for() {
    let missing: Vec<String> = crate_sources()
        .into_iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!") && !relative(file).starts_with("crates/zinit-proto/")
        })
        .map(|file| relative(&file))
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a `//!` line:\n{}",
        missing.join("\n")
    );
}
