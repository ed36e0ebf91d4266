//! Helpers for the web UI tests: `zinit_ui` started on a free loopback port,
//! a small HTTP/1.1 client (for the security checks and for WebDriver), and a
//! headless Chromium driven through chromedriver's W3C WebDriver protocol.
//!
//! The WebDriver client is a few plain HTTP calls, so the tests need no
//! WebDriver crate and no Python: Debian's `chromium` and `chromium-driver`
//! are all, installed with apt-get when missing. Every process started here
//! carries the test's tag in its argv (the socket path, the chromedriver log
//! path, Chromium's `--user-data-dir`), so the [`Tag`] reaps them, pass or
//! fail.

use crate::{Tag, bin_dir, workspace_bin};
use serde_json::{Value, json};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs Debian's `chromium` and `chromium-driver` when either binary is
/// missing (`apt-get update && apt-get install -y`, bounded to 15 minutes;
/// needs root and Debian's package registry).
pub fn ensure_chromium() {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return;
    }
    eprintln!("installing chromium and chromium-driver with apt-get (not found in /usr/bin)");
    let started = Instant::now();
    let mut child = Command::new("sh")
        .args([
            "-c",
            "apt-get update && apt-get install -y -o DPkg::Lock::Timeout=300 chromium chromium-driver",
        ])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("run apt-get");
    let end = Instant::now() + Duration::from_secs(900);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for apt-get") {
            break status;
        }
        if Instant::now() > end {
            // SAFETY: kill(2) on the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!("installing chromium took more than 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        status.success() && Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "`apt-get install chromium chromium-driver` failed ({status}); the browser tests need them (and root)"
    );
    eprintln!(
        "chromium installed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// Where the tests save screenshots: `target/ui-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let dir = bin_dir()
        .parent()
        .expect("target dir")
        .join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("create target/ui-screenshots");
    dir
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running `zinit_ui`, killed when dropped.
#[derive(Debug)]
pub struct Ui {
    /// The process.
    pub child: Child,
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// What it wrote to stderr so far.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

/// How a `zinit_ui` start went: serving, or exited with its stderr.
#[derive(Debug)]
pub enum UiStart {
    /// It serves the page.
    Serving(Ui),
    /// It exited at start-up with this code and stderr.
    Exited(Option<i32>, String),
}

impl Ui {
    /// Starts `zinit_ui --listen 127.0.0.1:0 --socket SOCKET ARGS` (as `uid`
    /// if given) and waits (at most 15 s) for the address it prints.
    pub fn start(socket: &Path, args: &[&str], uid: Option<u32>) -> UiStart {
        let mut command = Command::new(workspace_bin("zinit_ui"));
        command
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().expect("spawn zinit_ui");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err_pipe = child.stderr.take().expect("stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err_pipe)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[zinit_ui] {line}");
                let mut text = sink.lock().unwrap_or_else(|e| e.into_inner());
                text.push_str(&line);
                text.push('\n');
            }
        });
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = std::io::BufReader::new(out);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining, so that the pipe never fills.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_string);
        match url {
            Some(url) => {
                let addr = url
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string();
                UiStart::Serving(Ui {
                    child,
                    url,
                    addr,
                    stderr,
                })
            }
            None => {
                let end = Instant::now() + Duration::from_secs(10);
                let code = loop {
                    if let Some(status) = child.try_wait().expect("wait zinit_ui") {
                        break status.code();
                    }
                    if Instant::now() > end {
                        let _ = child.kill();
                        let _ = child.wait();
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                // Let the stderr reader catch up.
                std::thread::sleep(Duration::from_millis(100));
                let text = stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
                UiStart::Exited(code, text)
            }
        }
    }

    /// Starts it and expects it to serve.
    pub fn serving(socket: &Path, args: &[&str], uid: Option<u32>) -> Ui {
        match Self::start(socket, args, uid) {
            UiStart::Serving(ui) => ui,
            UiStart::Exited(code, stderr) => {
                panic!("zinit_ui exited at start-up ({code:?}):\n{stderr}")
            }
        }
    }

    /// An HTTP request to it, bounded to 30 s.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpResponse {
        http(
            &self.addr,
            method,
            path,
            headers,
            body,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The first `bound` of an event stream (or up to `until` in its text).
    pub fn stream_head(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        until: &str,
        bound: Duration,
    ) -> HttpResponse {
        request(&self.addr, "GET", path, headers, None, bound, Some(until))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

impl Ui {
    /// Opens `GET path` and keeps the connection open once the answer's
    /// head has arrived (at most 10 s): an event stream a page holds. The
    /// stream closes when the [`Held`] drops.
    pub fn hold(&self, path: &str, headers: &[(&str, &str)]) -> Held {
        let mut stream = TcpStream::connect(&self.addr)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr));
        let mut text = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        stream.write_all(text.as_bytes()).expect("send the request");
        let end = Instant::now() + Duration::from_secs(10);
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer to GET {path} within 10 s");
            stream.set_read_timeout(Some(left)).expect("timeout");
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) => panic!("GET {path}: {e}"),
            }
        }
        let response = parse_response(&raw).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Held { response, stream }
    }
}

/// An answer whose connection stays open (see [`Ui::hold`]).
#[derive(Debug)]
pub struct Held {
    /// The status and headers; the body is what has arrived so far (after
    /// the first read, with the chunks' framing: search it, do not parse it).
    pub response: HttpResponse,
    stream: TcpStream,
}

impl Held {
    /// Reads on until `text` has arrived in the body (at most `bound`);
    /// whether it did.
    pub fn read_until(&mut self, text: &str, bound: Duration) -> bool {
        let end = Instant::now() + bound;
        let mut buf = [0u8; 16 * 1024];
        loop {
            if String::from_utf8_lossy(&self.response.body).contains(text) {
                return true;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    return String::from_utf8_lossy(&self.response.body).contains(text);
                }
                Ok(n) => self.response.body.extend_from_slice(&buf[..n]),
            }
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer decoded).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request to `addr` (`host:port`) with `Connection: close`.
/// A `Host` in `headers` replaces the default one.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    bound: Duration,
) -> std::io::Result<HttpResponse> {
    request(addr, method, path, headers, body, bound, None)
}

fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    bound: Duration,
    until: Option<&str>,
) -> std::io::Result<HttpResponse> {
    let end = Instant::now() + bound;
    let mut stream = TcpStream::connect(addr)?;
    stream.set_write_timeout(Some(bound))?;
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        text.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    stream.write_all(text.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if until.is_some() {
                break;
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no complete answer within {bound:?}"),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if until.is_some()
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        }
        if let Some(until) = until
            && String::from_utf8_lossy(&raw).contains(until)
        {
            break;
        }
        // A server that keeps the connection open despite `Connection:
        // close` (chromedriver does): stop at the end of the body.
        if let Ok(response) = parse_response(&raw)
            && response
                .header("content-length")
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| response.body.len() >= n)
        {
            return Ok(response);
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Decodes a chunked body, as far as it is complete.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&raw[..eol]);
        let Ok(size) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        let start = eol + 2;
        if size == 0 {
            break;
        }
        let stop = (start + size).min(raw.len());
        out.extend_from_slice(&raw[start..stop]);
        if start + size + 2 > raw.len() {
            break;
        }
        raw = &raw[start + size + 2..];
    }
    out
}

/// Decodes standard base64 (screenshots come that way).
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// A headless Chromium under chromedriver, with one WebDriver session.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    name: String,
}

/// The key of an element reference in W3C WebDriver.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a headless Chromium (profile in the tag's
    /// directory) with a 1440×1000 window. `name` prefixes screenshots.
    pub fn start(tag: &Tag, name: &str) -> Self {
        ensure_chromium();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = tag.dir().join("chromedriver.log");
        // Chromium's crash handler puts its database under XDG_CONFIG_HOME:
        // in the tag's directory, its argv carries the tag too.
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env("XDG_CONFIG_HOME", tag.dir().join("xdg-config"))
            .env("XDG_CACHE_HOME", tag.dir().join("xdg-cache"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
            name: name.to_string(),
        };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http(
                &browser.addr,
                "GET",
                "/status",
                &[],
                None,
                Duration::from_secs(2),
            )
            .ok()
            .is_some_and(|r| r.json()["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < end,
                "chromedriver did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tag.dir().join("chromium-profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-dev-shm-usage",
            "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
            "--no-pings",
            // No name resolves: the page is on 127.0.0.1 and nothing else is reached.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--window-size=1440,1000",
            "--force-device-scale-factor=1",
            "--hide-scrollbars",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let value = browser
            .command("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("starting a Chromium session: {e}"));
        browser.session = value["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string());
        let response = http(
            &self.addr,
            method,
            path,
            &[("Content-Type", "application/json")],
            body.as_deref(),
            Duration::from_secs(60),
        )
        .map_err(|e| format!("{method} {path}: {e}"))?;
        let json = response.json();
        if response.status != 200 {
            return Err(format!(
                "{method} {path}: {} {}: {}",
                response.status, json["value"]["error"], json["value"]["message"]
            ));
        }
        Ok(json["value"].clone())
    }

    fn session_command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        self.command(method, &path, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.session_command("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub fn js(&self, script: &str) -> Value {
        self.session_command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Clicks the first element matching `css`.
    pub fn click(&self, css: &str) {
        let found = self.session_command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        let id = found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"));
        self.session_command("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Types `text` into the first element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let found = self.session_command(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        let id = found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}"));
        self.session_command(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Polls `script` until it returns something other than null, false, 0
    /// or "" (at most `bound`); returns that. On timeout it saves a
    /// screenshot and panics, saying what it waited for.
    pub fn wait(&self, what: &str, bound: Duration, script: &str) -> Value {
        let end = Instant::now() + bound;
        loop {
            let value = self.js(script);
            let truthy = match &value {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            if Instant::now() > end {
                let shot = self.screenshot(&format!("failed-{}", what.replace(' ', "-")));
                let body = self.js("return document.body.innerText");
                panic!(
                    "waited {bound:?} for {what}; screenshot {}; page text:\n{}",
                    shot.display(),
                    body.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG of the window as `target/ui-screenshots/NAME-STEP.png`.
    pub fn screenshot(&self, step: &str) -> PathBuf {
        let data = self.session_command("GET", "/screenshot", None);
        let png = base64_decode(data.as_str().expect("base64 screenshot"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = screenshot_dir().join(format!("{}-{step}.png", self.name));
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = http(
                &self.addr,
                "DELETE",
                &path,
                &[],
                None,
                Duration::from_secs(10),
            );
        }
        // Let chromedriver end (and reap Chromium) by itself, then make sure.
        let _ = http(
            &self.addr,
            "GET",
            "/shutdown",
            &[],
            None,
            Duration::from_secs(5),
        );
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && matches!(self.driver.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_of_known_values() {
        assert_eq!(base64_decode("aGVsbG8="), b"hello");
        assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), b"abcde");
        assert_eq!(dechunk(b"3\r\nabc\r\n5\r\nde"), b"abcde");
    }
}
