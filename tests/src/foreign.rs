//! Programs we did not write, for tests that check zinit with what users
//! run: `sleep`, `sh` with and without a `trap`, `python3 -m http.server`,
//! nginx (a master and workers) and redis-server. `cargo xtask test`
//! installs nginx, redis-server and PostgreSQL when they are missing.

use crate::{Tag, which};
use std::path::Path;

/// The real interpreter behind `python3` (a shim would change argv).
pub fn python() -> String {
    let out = crate::output_within(
        std::process::Command::new("python3").args(["-c", "import sys; print(sys.executable)"]),
        std::time::Duration::from_secs(30),
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A daemon the test command installs; its absence is a failure.
pub fn installed(name: &str) -> String {
    which(name)
        .or_else(|| {
            ["/usr/sbin", "/usr/bin"]
                .iter()
                .map(|d| Path::new(d).join(name))
                .find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!("{name} is not installed; `cargo xtask test` installs it (apt-get install nginx redis-server)")
        })
        .display()
        .to_string()
}

/// The programs, as (unit name, command line); their files live in the
/// tag's directory, and every argv carries the tag.
pub fn programs(tag: &Tag) -> Vec<(&'static str, String)> {
    let dir = tag.dir().display().to_string();
    let sleep = tag.program("sleep").display().to_string();
    let t = tag.as_str();
    let nginx_conf = tag.dir().join("nginx.conf");
    std::fs::create_dir_all(tag.dir().join("nginx")).expect("nginx prefix");
    std::fs::write(
        &nginx_conf,
        format!(
            "daemon off;\nmaster_process on;\nworker_processes 2;\npid {dir}/nginx.pid;\n\
             error_log {dir}/nginx-error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {dir}/nginx/body;\n\
             proxy_temp_path {dir}/nginx/proxy;\n  fastcgi_temp_path {dir}/nginx/fastcgi;\n\
             uwsgi_temp_path {dir}/nginx/uwsgi;\n  scgi_temp_path {dir}/nginx/scgi;\n\
             server {{ listen unix:{dir}/nginx.sock; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n"
        ),
    )
    .expect("nginx.conf");
    vec![
        ("sleep", format!("{sleep} 1000")),
        (
            "sh-trap",
            format!("sh -c 'trap \"exit 0\" TERM; while :; do {sleep} 1000 & wait $!; done' {t}"),
        ),
        (
            "sh-plain",
            format!("sh -c '{sleep} 1000; {sleep} 1000' {t}"),
        ),
        (
            "python",
            format!(
                "{} -m http.server 0 --bind 127.0.0.1 --directory {dir}",
                python()
            ),
        ),
        (
            "nginx",
            format!(
                "{} -c {} -p {dir}/nginx",
                installed("nginx"),
                nginx_conf.display()
            ),
        ),
        (
            "redis",
            format!(
                "{} --port 0 --unixsocket {dir}/redis.sock --save '' --appendonly no \
                 --set-proc-title no --dir {dir}",
                installed("redis-server")
            ),
        ),
    ]
}
