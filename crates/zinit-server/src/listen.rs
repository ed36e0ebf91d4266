//! The listeners: the unix socket (mode 0600, peer credentials checked,
//! a live server refused, a stale file replaced) and the optional loopback
//! TCP port with a token; gRPC health and reflection on both.

use crate::control::ControlService;
use crate::convert;
use anyhow::{Context, Result, bail};
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use zinit_proto::v1::control_server::ControlServer;

/// Unix socket paths are limited to 108 bytes.
const MAX_SOCKET_PATH: usize = 107;

/// Binds the socket: refuses a directory another user could replace it in,
/// refuses when a server answers on it, and removes only a stale socket
/// (never a file of another kind).
pub async fn bind_unix(path: &Path) -> Result<UnixListener> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "the socket path {} is {} bytes long; unix sockets allow at most {MAX_SOCKET_PATH}",
            path.display(),
            path.as_os_str().len()
        );
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        check_socket_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
        Ok(meta) if !meta.file_type().is_socket() => bail!(
            "{} exists and is not a socket; not removing it (choose another --socket)",
            path.display()
        ),
        Ok(_) => match tokio::net::UnixStream::connect(path).await {
            Ok(_) => bail!(
                "another zinit_server is already listening on {}; stop it first or use --socket",
                path.display()
            ),
            Err(_) => {
                tracing::warn!("removing the stale socket {}", path.display());
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
        },
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// A socket's directory must belong to root or this user, and others must
/// not be able to replace what is in it: not writable by group or others,
/// unless it is sticky (as `/tmp` is: there, nobody but its owner can
/// remove or rename the socket).
fn check_socket_dir(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).with_context(|| format!("checking {}", dir.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "the socket directory {} belongs to uid {}, neither root nor this server's user;              another user could replace the socket (choose another --socket)",
            dir.display(),
            meta.uid()
        );
    }
    let writable_by_others = meta.mode() & 0o022 != 0;
    let sticky = meta.mode() & 0o1000 != 0;
    if writable_by_others && !sticky {
        bail!(
            "the socket directory {} may be written by group or others (mode {:o}) and is not sticky;              another user could replace the socket (choose another --socket)",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Only root and the server's own user may use the unix socket.
#[allow(clippy::result_large_err)]
fn check_peer(request: Request<()>) -> Result<Request<()>, Status> {
    let me = nix::unistd::geteuid().as_raw();
    let uid = request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid());
    match uid {
        Some(uid) if uid == 0 || uid == me => Ok(request),
        Some(uid) => Err(convert::permission_denied(format!(
            "uid {uid} may not use this zinit server (only root and uid {me})"
        ))),
        None => Err(convert::permission_denied(
            "cannot check the caller's credentials",
        )),
    }
}

/// Serves until `stop` resolves; then open streams get about a second to end.
pub async fn serve(
    unix: UnixListener,
    tcp: Option<(tokio::net::TcpListener, zinit_client::token::Token)>,
    service: ControlService,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ControlServer<ControlService>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(zinit_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("reflection")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("reflection")?;

    // A watch, not a broadcast: a shutdown that finishes before the
    // listeners below subscribe (a SIGTERM right at the start, nothing to
    // stop) must still end them.
    let (stop_tx, _) = tokio::sync::watch::channel(false);
    let stopping = stop_tx.clone();
    tokio::spawn(async move {
        stop.await;
        stopping.send_replace(true);
    });
    let signal = |tx: &tokio::sync::watch::Sender<bool>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };

    // Health goes NOT_SERVING as soon as a shutdown begins: the Control
    // service and the server as a whole (the empty name, which probes such
    // as Kubernetes' ask by default).
    let began = service.shutdown.began();
    let reporter = health.clone();
    tokio::spawn(async move {
        began.await;
        reporter
            .set_not_serving::<ControlServer<ControlService>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    });

    // The access checks cover every service on a listener, reflection included.
    let unix_server = Server::builder()
        .layer(tonic::service::InterceptorLayer::new(check_peer))
        .add_service(health_service.clone())
        .add_service(reflection_v1.clone())
        .add_service(reflection_v1alpha.clone())
        .add_service(ControlServer::new(service.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(unix), signal(&stop_tx));
    let mut servers = vec![tokio::spawn(unix_server)];

    if let Some((listener, token)) = tcp {
        let check_token = move |request: Request<()>| -> Result<Request<()>, Status> {
            let given = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if given.is_some_and(|given| token.matches(given.as_bytes())) {
                Ok(request)
            } else {
                Err(convert::unauthenticated(
                    "this TCP listener needs `authorization: Bearer TOKEN`",
                ))
            }
        };
        let tcp_server = Server::builder()
            // Pings keep a live client's connection busy; one that answers
            // nothing is dropped when it stays idle (`Guarded`).
            .http2_keepalive_interval(Some(TCP_IDLE / 3))
            .http2_keepalive_timeout(Some(TCP_IDLE / 3))
            .layer(tonic::service::InterceptorLayer::new(check_token))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ControlServer::new(service))
            .serve_with_incoming_shutdown(bounded_tcp(listener), signal(&stop_tx));
        servers.push(tokio::spawn(tcp_server));
    }

    let all = futures_join(servers);
    tokio::pin!(all);
    tokio::select! {
        result = &mut all => result,
        () = signal(&stop_tx) => {
            // Streams end on the closing signal; give the drain a bound.
            match tokio::time::timeout(Duration::from_millis(1500), &mut all).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("open streams did not end in time; closing anyway");
                    Ok(())
                }
            }
        }
    }
}

async fn futures_join(
    servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
) -> Result<()> {
    for server in servers {
        server
            .await
            .context("server task")?
            .context("gRPC server")?;
    }
    Ok(())
}

/// TCP connections served at once; more are closed as they arrive, so a
/// flood of connections cannot take the descriptors the unix socket and
/// spawning need.
const MAX_TCP_CONNECTIONS: usize = 64;
/// A TCP connection that sends nothing (not even an answer to a ping) for
/// this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(30);

/// Accepted TCP connections, at most `MAX_TCP_CONNECTIONS` at a time.
fn bounded_tcp(listener: tokio::net::TcpListener) -> ReceiverStream<std::io::Result<Guarded>> {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection that died at once.
                    tracing::warn!("TCP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let guarded = Guarded {
                stream,
                _slot: slot,
                idle: Box::pin(tokio::time::sleep(TCP_IDLE)),
            };
            if tx.send(Ok(guarded)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// A TCP connection holding one of the slots, closed when it stays idle.
struct Guarded {
    stream: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
    idle: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl tokio::io::AsyncRead for Guarded {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let next = tokio::time::Instant::now() + TCP_IDLE;
                self.idle.as_mut().reset(next);
                Poll::Ready(result)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "idle TCP connection closed",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl tokio::io::AsyncWrite for Guarded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
