//! How to reach a zinit server: where its socket is (`--socket`, else
//! `ZINIT_SOCKET`, else `/run/zinit.sock` as root, `$XDG_RUNTIME_DIR/zinit.sock`
//! otherwise, `/tmp/zinit-$UID.sock` without `XDG_RUNTIME_DIR`), and a
//! `Control` client over that unix socket.

pub mod token;

use std::io;
use std::path::{Path, PathBuf};
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
}

/// Connects to the server on `path`. The connection is made now, so that a
/// missing server or a refused permission is reported here.
pub async fn connect(path: &Path) -> Result<ControlClient<Channel>, ConnectError> {
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
    Ok(ControlClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
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
    fn an_explicit_path_wins() {
        assert_eq!(
            socket_path(Some(Path::new("/x.sock"))),
            PathBuf::from("/x.sock")
        );
    }
}
