//! How to reach a zinit server: where its socket is (`--socket`, else
//! `ZINIT_SOCKET`, else `/run/zinit.sock` as root, `$XDG_RUNTIME_DIR/zinit.sock`
//! otherwise, `/tmp/zinit-$UID.sock` without `XDG_RUNTIME_DIR`), and a
//! `Control` client over that unix socket, or over the server's loopback
//! TCP listener with its token (`token`).

pub mod token;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Uri};
use zinit_proto::v1::control_client::ControlClient;

/// The environment variable that names the socket.
pub const SOCKET_ENV: &str = "ZINIT_SOCKET";

/// The socket path: `explicit` if given, else the rules above.
pub fn socket_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    if let Some(path) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let uid = nix::unistd::geteuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/zinit.sock");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("zinit.sock"),
        None => PathBuf::from(format!("/tmp/zinit-{uid}.sock")),
    }
}

/// Why a connection failed, in the words the CLI shows.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens on the socket.
    #[error("no zinit server at {0}: is zinit_server running?")]
    NoServer(PathBuf),
    /// The socket exists but this user may not connect.
    #[error("permission denied on {0}")]
    PermissionDenied(PathBuf),
    /// The process listening on the socket is neither root nor this user:
    /// someone else's server (a planted socket); nothing is sent to it.
    #[error(
        "refusing to talk to the server on {path}: it runs as uid {uid}, neither root nor you (uid {me})"
    )]
    UntrustedServer {
        /// The socket.
        path: PathBuf,
        /// The uid of the process listening on it.
        uid: u32,
        /// This process's uid.
        me: u32,
    },
    /// Anything else.
    #[error("cannot connect to {path}: {source}")]
    Other {
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Nothing listens on the TCP address.
    #[error("no zinit server at {0}: is zinit_server running with --tcp {0}?")]
    NoTcpServer(SocketAddr),
    /// The TCP address is not a loopback address.
    #[error("--tcp {0}: only loopback addresses are allowed")]
    NotLoopback(SocketAddr),
    /// The token file cannot be used.
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// Someone else listens on the TCP address: the token is not sent.
    #[error(
        "the listener on {addr} belongs to uid {uid}, not to root, to you or to the token file's owner: the token is not sent"
    )]
    UntrustedListener {
        /// The address.
        addr: SocketAddr,
        /// The listener's owner.
        uid: u32,
    },
    /// The TCP connection failed.
    #[error("cannot connect to {addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// Where a zinit server is reached.
#[derive(Debug, Clone)]
pub enum Target {
    /// Its unix socket.
    Unix(PathBuf),
    /// Its loopback TCP listener, with the file holding its token.
    Tcp {
        /// The address (loopback only).
        addr: SocketAddr,
        /// The token file (see [`token::read_token_file`]).
        token_file: PathBuf,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "{}", path.display()),
            Self::Tcp { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// Sends `authorization: Bearer TOKEN` with every call (TCP), or nothing.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A `Control` client on either transport.
pub type Client = ControlClient<InterceptedService<Channel, Bearer>>;

/// The largest message a client accepts (long log snapshots).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Connects to the server at `target`. Over TCP, the address must be
/// loopback, the token file must follow the token rules, and the listener
/// must belong to root, to this user or to the token file's owner before
/// the token is sent.
pub async fn connect_to(target: &Target) -> Result<Client, ConnectError> {
    let (channel, bearer) = channel_to(target).await?;
    Ok(ControlClient::with_interceptor(channel, bearer).max_decoding_message_size(MAX_MESSAGE))
}

/// The gRPC health service of the server at `target` (`grpc.health.v1`),
/// reached as [`connect_to`] reaches the Control service.
pub async fn health_to(target: &Target) -> Result<HealthClient, ConnectError> {
    let (channel, bearer) = channel_to(target).await?;
    Ok(tonic_health::pb::health_client::HealthClient::with_interceptor(channel, bearer))
}

/// A client of the server's gRPC health service.
pub type HealthClient =
    tonic_health::pb::health_client::HealthClient<InterceptedService<Channel, Bearer>>;

/// A channel to the server at `target`, and what every call on it carries.
async fn channel_to(target: &Target) -> Result<(Channel, Bearer), ConnectError> {
    match target {
        Target::Unix(path) => Ok((unix_channel(path).await?, Bearer::default())),
        Target::Tcp { addr, token_file } => {
            if !addr.ip().is_loopback() {
                return Err(ConnectError::NotLoopback(*addr));
            }
            let token = token::read_token_file(token_file)?;
            let me = nix::unistd::geteuid().as_raw();
            match listener_owner(*addr) {
                None => return Err(ConnectError::NoTcpServer(*addr)),
                Some(uid) if uid == 0 || uid == me || Some(uid) == token::owner(token_file) => {}
                Some(uid) => return Err(ConnectError::UntrustedListener { addr: *addr, uid }),
            }
            let tcp = |source| ConnectError::Tcp {
                addr: *addr,
                source,
            };
            let channel = Endpoint::try_from(format!("http://{addr}"))
                .map_err(|e| tcp(io::Error::other(e)))?
                .connect()
                .await
                .map_err(|e| tcp(io::Error::other(e)))?;
            let value: MetadataValue<Ascii> = format!("Bearer {}", token.as_str())
                .parse()
                .map_err(|e| tcp(io::Error::other(e)))?;
            Ok((channel, Bearer(Some(value))))
        }
    }
}

/// The owner of the TCP socket listening on `addr` (or on the wildcard
/// address of its family and port), from /proc/net/tcp and tcp6.
pub fn listener_owner(addr: SocketAddr) -> Option<u32> {
    const LISTEN: &str = "0A";
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() <= 7 || fields[3] != LISTEN {
                continue;
            }
            let Some(local) = parse_proc_addr(fields[1]) else {
                continue;
            };
            let matches = local.port() == addr.port()
                && (local.ip() == addr.ip() || local.ip().is_unspecified());
            if matches {
                return fields[7].parse().ok();
            }
        }
    }
    None
}

/// An address as /proc/net/tcp{,6} prints it: the address in the kernel's
/// byte order, 32 bits at a time, then `:PORT` in hex.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..ip.len() / 8)
        .map(|i| {
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()
                .map(u32::to_ne_bytes)
        })
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Connects to the server on `path`. The connection is made now, so that a
/// missing server or a refused permission is reported here.
pub async fn connect(path: &Path) -> Result<ControlClient<Channel>, ConnectError> {
    Ok(ControlClient::new(unix_channel(path).await?).max_decoding_message_size(MAX_MESSAGE))
}

/// A channel over the unix socket at `path`.
async fn unix_channel(path: &Path) -> Result<Channel, ConnectError> {
    // Probe first, so the error says what went wrong.
    match tokio::net::UnixStream::connect(path).await {
        Ok(probe) => check_server(&probe, path)?,
        Err(e) => {
            return Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ConnectError::NoServer(path.to_path_buf())
                }
                io::ErrorKind::PermissionDenied => {
                    ConnectError::PermissionDenied(path.to_path_buf())
                }
                _ => ConnectError::Other {
                    path: path.to_path_buf(),
                    source: e,
                },
            });
        }
    }
    let socket = path.to_path_buf();
    // The URI is a placeholder: the connector ignores it and dials the socket
    // (and `:authority` becomes `localhost`).
    let channel = Endpoint::try_from("http://localhost")
        .map_err(|e| ConnectError::Other {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&socket).await?;
                check_server(&stream, &socket)
                    .map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e.to_string()))?;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| ConnectError::Other {
            path: path.to_path_buf(),
            source: io::Error::other(e),
        })?;
    Ok(channel)
}

/// Only a server run by root or by this user is trusted (`SO_PEERCRED`):
/// a socket someone else planted gets nothing, not even a request.
fn check_server(stream: &tokio::net::UnixStream, path: &Path) -> Result<(), ConnectError> {
    let me = nix::unistd::geteuid().as_raw();
    let uid = stream
        .peer_cred()
        .map_err(|source| ConnectError::Other {
            path: path.to_path_buf(),
            source,
        })?
        .uid();
    if uid == 0 || uid == me {
        Ok(())
    } else {
        Err(ConnectError::UntrustedServer {
            path: path.to_path_buf(),
            uid,
            me,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_parse() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().expect("addr"))
        );
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().expect("addr"))
        );
        assert_eq!(parse_proc_addr("zz:1"), None);
    }

    #[test]
    fn a_listener_on_loopback_is_found_with_its_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(listener_owner(addr), Some(nix::unistd::geteuid().as_raw()));
        drop(listener);
        assert_eq!(listener_owner(addr), None);
    }

    #[test]
    fn an_explicit_path_wins() {
        assert_eq!(
            socket_path(Some(Path::new("/x.sock"))),
            PathBuf::from("/x.sock")
        );
    }
}
