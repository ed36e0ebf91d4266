//! Who may use the page, and the checks every request passes. Without a
//! token: the caller's uid (a loopback connection's owner, from
//! /proc/net/tcp) must be root or zinit_ui's own, so that the page never
//! lets a local user do what the zinit socket would refuse them, and the
//! `Host` header must be a loopback name. With a token: the login and its
//! session cookie. Always, for every POST: a same-origin check and the
//! anti-CSRF token. Secrets are compared in constant time.

use anyhow::{Context, Result};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// The session cookie's name.
pub const COOKIE: &str = "zinit_ui_session";
/// The header that carries the anti-CSRF token on every POST.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The secrets of this process, and who may connect.
pub struct Secrets {
    /// Embedded in every page and required on every POST.
    pub csrf: String,
    /// The session cookie's value once the login token was given.
    session: String,
    /// The login token (`--token-file`), if the page needs one.
    token: Option<Vec<u8>>,
    /// The address the page is served on.
    local: SocketAddr,
    /// This process's uid: without a token, only it and root get in.
    uid: u32,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("local", &self.local)
            .field("uid", &self.uid)
            .field("needs_login", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Fresh random secrets for the page served on `local`; `token` guards
    /// the page if given.
    pub fn new(token: Option<Vec<u8>>, local: SocketAddr) -> Result<Self> {
        Ok(Self {
            csrf: random_hex(32).context("reading random bytes for the CSRF token")?,
            session: random_hex(32).context("reading random bytes for the session")?,
            token,
            local,
            // SAFETY: geteuid has no preconditions.
            uid: unsafe { libc::geteuid() },
        })
    }

    /// Whether the page needs a login.
    pub fn needs_login(&self) -> bool {
        self.token.is_some()
    }

    /// Whether `given` is the login token.
    pub fn token_matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|token| ct_eq(token, given.trim().as_bytes()))
    }

    /// Whether the request carries the session cookie (or needs none).
    pub fn logged_in(&self, headers: &HeaderMap) -> bool {
        if self.token.is_none() {
            return true;
        }
        cookie(headers, COOKIE)
            .is_some_and(|value| ct_eq(value.as_bytes(), self.session.as_bytes()))
    }

    /// The `Set-Cookie` value that logs a browser in: HttpOnly, SameSite=Strict,
    /// for this process's lifetime (a restarted zinit_ui asks again).
    pub fn session_cookie(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            self.session
        ))
        .expect("hex is a valid header value")
    }
}

/// `n` random bytes from the kernel, as hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled part of `bytes`.
        let got = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += got as usize;
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equality that takes the same time wherever the first difference is.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Reads a token file with the server's TCP token rules
/// (`zinit_client::token`): a regular file readable by its owner only
/// (mode & 0o077 == 0), holding at least 16 bytes after trimming whitespace.
pub fn read_token_file(path: &Path) -> Result<Vec<u8>> {
    Ok(zinit_client::token::read_token_file(path)?.into_bytes())
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The uid that owns the TCP socket at `peer` connected to `local`, when
/// both are on this machine (a loopback connection): the client's entry in
/// /proc/net/tcp (or tcp6) has `peer` as its local and `local` as its remote
/// address.
pub fn loopback_peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let want = (hex_addr(peer), hex_addr(local));
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 7
                && fields[1].eq_ignore_ascii_case(&want.0)
                && fields[2].eq_ignore_ascii_case(&want.1)
            {
                return fields[7].parse().ok();
            }
        }
    }
    None
}

/// An address as /proc/net/tcp{,6} prints it: the address in the kernel's
/// byte order, 32 bits at a time, then `:PORT` in hex.
fn hex_addr(addr: SocketAddr) -> String {
    let words = |bytes: &[u8]| -> String {
        bytes
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect()
    };
    let ip = match addr.ip() {
        IpAddr::V4(v4) => words(&v4.octets()),
        IpAddr::V6(v6) => words(&v6.octets()),
    };
    format!("{ip}:{:04X}", addr.port())
}

/// Whether a `Host` header names this machine's loopback interface:
/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((name, _)) => name,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Paths anyone may fetch: the page itself (which shows the login form when
/// needed), the files it loads, and the login.
fn is_public(method: &Method, path: &str) -> bool {
    match *method {
        Method::GET | Method::HEAD => {
            matches!(path, "/" | "/app.css" | "/app.js" | "/favicon.svg")
        }
        Method::POST => path == "/login",
        _ => false,
    }
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The checks in front of every route, and the security headers on every
/// answer.
pub async fn guard(State(secrets): State<Arc<Secrets>>, request: Request, next: Next) -> Response {
    let mut response = check(&secrets, request, next).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn check(secrets: &Secrets, request: Request, next: Next) -> Response {
    if !secrets.needs_login() {
        // Without a token the page is for the users who can use the zinit
        // socket anyway: root and the user running zinit_ui.
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let uid = peer.and_then(|peer| loopback_peer_uid(peer, secrets.local));
        if !uid.is_some_and(|uid| uid == 0 || uid == secrets.uid) {
            let who = uid.map_or("an unknown user".to_string(), |uid| format!("uid {uid}"));
            return refuse(
                StatusCode::FORBIDDEN,
                &format!(
                    "zinit_ui runs as uid {} and lets only that user and root in without a token \
                     (the page never widens what the zinit socket allows); this browser runs as {who}: \
                     start zinit_ui with --token-file to let others in",
                    secrets.uid
                ),
            );
        }
    }
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Without a token, only loopback names: a page of another site whose name
    // resolves to 127.0.0.1 (DNS rebinding) is not same-origin with us and
    // gets nothing.
    if !secrets.needs_login() && !is_loopback_host(&host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "zinit_ui answers only to localhost, 127.0.0.1 or [::1] (without --token-file)",
        );
    }
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
        if host.is_empty() || origin != Some(format!("http://{host}").as_str()) {
            return refuse(
                StatusCode::FORBIDDEN,
                "cross-origin request refused (the Origin header must be this page's)",
            );
        }
        let csrf = headers.get(CSRF_HEADER).map(HeaderValue::as_bytes);
        if !csrf.is_some_and(|given| ct_eq(given, secrets.csrf.as_bytes())) {
            return refuse(StatusCode::FORBIDDEN, "missing or wrong anti-CSRF token");
        }
    }
    if !is_public(&method, request.uri().path()) && !secrets.logged_in(headers) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "log in first: open the page and give the token",
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:8090",
            "127.0.0.1:1",
            "127.1.2.3",
            "[::1]:8090",
            "[::1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example:8090",
            "10.0.0.1:8090",
            "[::2]:80",
            "localhost.evil.example",
            "[::1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn a_loopback_connection_names_its_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(local).expect("connect");
        let peer = client.local_addr().expect("client addr");
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(loopback_peer_uid(peer, local), Some(me));
        assert_eq!(
            loopback_peer_uid(local, peer),
            Some(me),
            "the other end too"
        );
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert_eq!(loopback_peer_uid(elsewhere, local), None);
        assert_eq!(
            hex_addr("127.0.0.1:8090".parse().expect("addr")),
            "0100007F:1F9A"
        );
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn token_file_rules() {
        let dir = std::env::temp_dir().join(format!("zinit-ui-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        std::fs::write(&path, "  0123456789abcdef\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_token_file(&path).expect("valid"),
            b"0123456789abcdef".to_vec()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = read_token_file(&path)
            .expect_err("group-readable")
            .to_string();
        assert!(err.contains("group or others"), "{err}");
        std::fs::write(&path, "short\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = read_token_file(&path).expect_err("short").to_string();
        assert!(err.contains("too short"), "{err}");
        let link = dir.join("link");
        std::os::unix::fs::symlink(&path, &link).expect("symlink");
        assert!(read_token_file(&link).is_err(), "symlinks are not followed");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let local = "127.0.0.1:8090".parse().expect("addr");
        let secrets = Secrets::new(Some(b"0123456789abcdef".to_vec()), local).expect("secrets");
        let mut headers = HeaderMap::new();
        assert!(!secrets.logged_in(&headers));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={}", secrets.session)).expect("value"),
        );
        assert!(secrets.logged_in(&headers));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("zinit_ui_session=nope"),
        );
        assert!(!secrets.logged_in(&headers));
        assert!(secrets.token_matches("0123456789abcdef\n"));
        assert!(!secrets.token_matches("0123456789abcdeX"));
    }
}
