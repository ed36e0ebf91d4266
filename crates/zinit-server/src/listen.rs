//! The listeners: the unix socket (mode 0600, peer credentials checked,
//! a live server refused, a stale file replaced) and the optional loopback
//! TCP port with a token; gRPC health and reflection on both.

use crate::control::ControlService;
use crate::convert;
use anyhow::{Context, Result, bail};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};
use zinit_proto::v1::control_server::ControlServer;

/// Unix socket paths are limited to 108 bytes.
const MAX_SOCKET_PATH: usize = 107;

/// Binds the socket: refuses when a server answers on it, replaces a stale file.
pub async fn bind_unix(path: &Path) -> Result<UnixListener> {
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        bail!(
            "the socket path {} is {} bytes long; unix sockets allow at most {MAX_SOCKET_PATH}",
            path.display(),
            path.as_os_str().len()
        );
    }
    if path.exists() {
        match tokio::net::UnixStream::connect(path).await {
            Ok(_) => bail!(
                "another zinit_server is already listening on {}; stop it first or use --socket",
                path.display()
            ),
            Err(_) => {
                tracing::warn!("removing the stale socket {}", path.display());
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
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
    tcp: Option<(tokio::net::TcpListener, String)>,
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

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopping = stop_tx.clone();
    tokio::spawn(async move {
        stop.await;
        let _ = stopping.send(());
    });
    let signal = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };

    // Health goes NOT_SERVING as soon as a shutdown begins.
    let began = service.shutdown.began();
    let reporter = health.clone();
    tokio::spawn(async move {
        began.await;
        reporter
            .set_not_serving::<ControlServer<ControlService>>()
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
        let expected = format!("Bearer {token}");
        let check_token = move |request: Request<()>| -> Result<Request<()>, Status> {
            match request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
            {
                Some(value) if same(value.as_bytes(), expected.as_bytes()) => Ok(request),
                _ => Err(convert::unauthenticated(
                    "this TCP listener needs `authorization: Bearer TOKEN`",
                )),
            }
        };
        let tcp_server = Server::builder()
            .layer(tonic::service::InterceptorLayer::new(check_token))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ControlServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal(&stop_tx));
        servers.push(tokio::spawn(tcp_server));
    }

    let mut stopped = stop_tx.subscribe();
    let all = futures_join(servers);
    tokio::pin!(all);
    tokio::select! {
        result = &mut all => result,
        _ = stopped.recv() => {
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

/// Equality that takes the same time wherever the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
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
