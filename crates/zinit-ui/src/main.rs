//! `zinit_ui`: one web page for a zinit server — units, live logs, start,
//! stop and restart, and the shutdown with its live timeline. It is a gRPC
//! client of zinit_server on its unix socket like any other (the server
//! knows nothing of HTTP), and serves the page on loopback; any other
//! address needs `--token-file`.

mod auth;
mod convert;
mod hub;
mod web;

use anyhow::{Context, Result, bail};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Serves zinit's web page: units, logs, actions and the shutdown timeline.
#[derive(Debug, Parser)]
#[command(name = "zinit_ui", version)]
struct Args {
    /// Where to serve the page (port 0 picks a free port; the address is
    /// printed on stdout). Addresses other than loopback need --token-file.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The zinit socket (else ZINIT_SOCKET, else /run/zinit.sock as root,
    /// $XDG_RUNTIME_DIR/zinit.sock, /tmp/zinit-$UID.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// A file (mode 0600 or stricter, at least 16 bytes) holding the token a
    /// browser must give once (`/?token=TOKEN` or the login form).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Lines a log pane may fall behind before lines are dropped (and the
    /// page is told how many).
    #[arg(long, default_value_t = 1000)]
    log_buffer: usize,
    /// error, warn, info, debug or trace (or a tracing filter).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("zinit_ui: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("invalid --log-level {:?}", args.log_level))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let token = args
        .token_file
        .as_deref()
        .map(zinit_client::token::read_token_file)
        .transpose()?
        .map(|token| token.as_bytes().to_vec());
    if token.is_none() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to serve on {}: addresses other than loopback need --token-file \
             (a file of mode 0600 holding at least 16 bytes)",
            args.listen
        );
    }
    let socket = zinit_client::socket_path(args.socket.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args.listen, socket, token, args.log_buffer))
}

async fn serve(
    listen: SocketAddr,
    socket: PathBuf,
    token: Option<Vec<u8>>,
    log_buffer: usize,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let secrets = std::sync::Arc::new(auth::Secrets::new(token, addr)?);
    let login = if secrets.needs_login() {
        " (give the token once: /?token=TOKEN or the login form)"
    } else {
        ""
    };
    // The first line on stdout is the page's address (tests and scripts read it).
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "zinit_ui: serving http://{addr}/ for the zinit socket {}{login}",
        socket.display()
    )?;
    stdout.flush()?;
    let hub = hub::Hub::new(socket);
    tokio::spawn(hub.clone().run());
    let app = web::App::new(hub, secrets, log_buffer);
    let server = axum::serve(
        listener,
        web::router(app).into_make_service_with_connect_info::<SocketAddr>(),
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("handling SIGTERM")?;
    tokio::select! {
        served = server => served.context("serving the page")?,
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: exiting"),
        _ = terminate.recv() => tracing::info!("SIGTERM: exiting"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README: `--listen` defaults to `127.0.0.1:8090`, loopback.
    #[test]
    fn the_page_is_served_on_loopback_port_8090_by_default() {
        let args = Args::try_parse_from(["zinit_ui"]).expect("no flags needed");
        assert_eq!(
            args.listen,
            "127.0.0.1:8090".parse::<SocketAddr>().expect("addr")
        );
        assert!(args.token_file.is_none(), "no token by default");
    }
}
