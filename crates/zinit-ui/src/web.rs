//! The HTTP side: the page and its files (embedded), the two server-sent
//! event streams that bridge the gRPC streams (`/api/stream`: units, stats,
//! connection and shutdown; `/api/logs`: one unit's output, followed), and
//! the POST actions (unit start/stop/restart, shutdown and its dry run,
//! login). GET routes change nothing; every route passes [`auth::guard`].

use crate::auth::{self, Secrets};
use crate::convert;
use crate::hub::Hub;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use zinit_proto::v1 as pb;

const INDEX_HTML: &str = include_str!("static/index.html");
const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");
const FAVICON_SVG: &str = include_str!("static/favicon.svg");

/// How many kept lines a log pane starts with, unless it asks.
const DEFAULT_LAST: u32 = 200;
/// The most kept lines a log pane may ask for.
const MAX_LAST: u32 = 5000;
/// Open `/api/stream` connections at most (each page has one).
const MAX_PAGE_STREAMS: usize = 32;
/// Open `/api/logs` connections at most (each holds a gRPC log stream).
const MAX_LOG_STREAMS: usize = 16;

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// The link to the server.
    pub hub: Arc<Hub>,
    /// Tokens and the session.
    pub secrets: Arc<Secrets>,
    /// Lines a log stream may queue for a slow page before it drops some
    /// (and says how many).
    pub log_buffer: usize,
    page_streams: Arc<Semaphore>,
    log_streams: Arc<Semaphore>,
}

impl App {
    /// The shared state of the routes.
    pub fn new(hub: Arc<Hub>, secrets: Arc<Secrets>, log_buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            hub,
            secrets,
            log_buffer: log_buffer.max(1),
            page_streams: Arc::new(Semaphore::new(MAX_PAGE_STREAMS)),
            log_streams: Arc::new(Semaphore::new(MAX_LOG_STREAMS)),
        })
    }
}

/// Every route of the page.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| file("text/javascript; charset=utf-8", APP_JS)),
        )
        .route("/app.css", get(|| file("text/css; charset=utf-8", APP_CSS)))
        .route("/favicon.svg", get(|| file("image/svg+xml", FAVICON_SVG)))
        .route("/login", post(login))
        .route("/api/stream", get(page_stream))
        .route("/api/logs", get(log_stream))
        .route("/api/units/{name}/{action}", post(unit_action))
        .route("/api/shutdown", post(shutdown))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .layer(middleware::from_fn_with_state(
            app.secrets.clone(),
            auth::guard,
        ))
        .with_state(app)
}

async fn file(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// An error as the page shows it: `{"error": "..."}` with a fitting status.
fn failure(status: &Status) -> Response {
    let code = match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    (code, Json(json!({"error": status.message()}))).into_response()
}

fn too_many(what: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": format!("too many open {what} streams")})),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct IndexQuery {
    token: Option<String>,
}

/// The page; without a session (when a token guards the page) the same page
/// shows its login form. `?token=` logs in and redirects to `/`, so the
/// token leaves the address bar.
async fn index(
    State(app): State<Arc<App>>,
    Query(query): Query<IndexQuery>,
    headers: HeaderMap,
) -> Response {
    let secrets = &app.secrets;
    if let Some(token) = query.token.filter(|_| secrets.needs_login()) {
        if secrets.token_matches(&token) {
            let mut response = Redirect::to("/").into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, secrets.session_cookie());
            return response;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        return (StatusCode::UNAUTHORIZED, page(&app, true, "wrong token")).into_response();
    }
    let login = !secrets.logged_in(&headers);
    page(&app, login, "").into_response()
}

fn page(app: &App, login: bool, error: &str) -> Html<String> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('"', "&quot;")
            .replace('<', "&lt;")
    };
    Html(
        INDEX_HTML
            .replace("{{CSRF}}", &escape(&app.secrets.csrf))
            .replace("{{INSTANCE}}", &escape(app.hub.instance()))
            .replace("{{LOGIN}}", if login { "1" } else { "0" })
            .replace("{{LOGIN_ERROR}}", &escape(error)),
    )
}

#[derive(Debug, Deserialize)]
struct LoginBody {
    token: String,
}

/// Logs a browser in with the token: sets the session cookie.
async fn login(State(app): State<Arc<App>>, Json(body): Json<LoginBody>) -> Response {
    if !app.secrets.needs_login() {
        return StatusCode::NO_CONTENT.into_response();
    }
    if app.secrets.token_matches(&body.token) {
        let mut response = StatusCode::NO_CONTENT.into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, app.secrets.session_cookie());
        return response;
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "wrong token"})),
    )
        .into_response()
}

fn sse(rx: mpsc::Receiver<Event>) -> Response {
    Sse::new(ReceiverStream::new(rx).map(Ok::<_, Infallible>))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The page's live state: a `snapshot`, then `connection`, `units`, `unit`,
/// `unit_removed`, `stats`, `warning`, `shutdown_begin`, `shutdown_event`
/// and `shutdown_end` events. A page that falls behind gets a new snapshot.
async fn page_stream(State(app): State<Arc<App>>) -> Response {
    let Ok(permit) = app.page_streams.clone().try_acquire_owned() else {
        return too_many("page");
    };
    let (tx, rx) = mpsc::channel::<Event>(64);
    let hub = app.hub.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let (snapshot, mut changes) = hub.subscribe();
        let first = Event::default()
            .event(snapshot.event)
            .data(snapshot.data)
            .retry(Duration::from_secs(1));
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                next = changes.recv() => next,
                _ = tx.closed() => return,
            };
            let event = match next {
                Ok(msg) => Event::default().event(msg.event).data(&msg.data),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let (snapshot, fresh) = hub.subscribe();
                    changes = fresh;
                    Event::default().event(snapshot.event).data(snapshot.data)
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    sse(rx)
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    /// The unit; empty or absent for every unit.
    unit: Option<String>,
    /// Kept lines to send first.
    last: Option<u32>,
}

/// One unit's output (or every unit's), followed: `line` events, `missed`
/// notices (lines the server or this process dropped for a slow reader),
/// then `end` when the server closes the stream, or `failure` when it cannot
/// be opened.
async fn log_stream(State(app): State<Arc<App>>, Query(query): Query<LogQuery>) -> Response {
    let Ok(permit) = app.log_streams.clone().try_acquire_owned() else {
        return too_many("log");
    };
    let (tx, rx) = mpsc::channel::<Event>(app.log_buffer);
    let hub = app.hub.clone();
    let request = pb::StreamLogsRequest {
        name: query.unit.unwrap_or_default(),
        last: Some(query.last.unwrap_or(DEFAULT_LAST).min(MAX_LAST)),
        follow: true,
    };
    tokio::spawn(async move {
        let _permit = permit;
        let opened = match hub.client() {
            Ok(mut client) => client.stream_logs(request).await,
            Err(status) => Err(status),
        };
        let mut stream = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let event = Event::default()
                    .event("failure")
                    .data(json!({"error": status.message()}).to_string());
                let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(event)).await;
                return;
            }
        };
        // Never wait for the page: what does not fit is counted and told.
        let mut dropped: u64 = 0;
        let end = loop {
            let next = tokio::select! {
                next = stream.message() => next,
                _ = tx.closed() => return,
            };
            let line = match next {
                Ok(Some(line)) => line,
                Ok(None) => break "the server closed the log stream".to_string(),
                Err(status) => break format!("the log stream was cut: {}", status.message()),
            };
            if dropped > 0 {
                let notice = json!({"missed": dropped, "by": "ui"}).to_string();
                if tx
                    .try_send(Event::default().event("missed").data(notice))
                    .is_ok()
                {
                    dropped = 0;
                }
            }
            let value = convert::log_line(&line);
            let kind = if line.missed > 0 { "missed" } else { "line" };
            let event = Event::default().event(kind).data(value.to_string());
            if dropped > 0 || tx.try_send(event).is_err() {
                dropped += line.missed.max(1);
            }
        };
        let mut last = Vec::new();
        if dropped > 0 {
            last.push(
                Event::default()
                    .event("missed")
                    .data(json!({"missed": dropped, "by": "ui"}).to_string()),
            );
        }
        last.push(
            Event::default()
                .event("end")
                .data(json!({ "message": end }).to_string()),
        );
        for event in last {
            if tokio::time::timeout(Duration::from_secs(5), tx.send(event))
                .await
                .map_or(true, |sent| sent.is_err())
            {
                return;
            }
        }
    });
    sse(rx)
}

/// `POST /api/units/NAME/start|stop|restart`: the result of the action.
async fn unit_action(
    State(app): State<Arc<App>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let mut client = match app.hub.client() {
        Ok(client) => client,
        Err(status) => return failure(&status),
    };
    let result: Result<Value, Status> = match action.as_str() {
        "start" => client
            .start_unit(pb::StartUnitRequest {
                name,
                no_wait: false,
            })
            .await
            .map(|r| json!({"unit": r.into_inner().unit.as_ref().map(convert::unit)})),
        "stop" => client
            .stop_unit(pb::StopUnitRequest { name })
            .await
            .map(|r| convert::stop_result(&r.into_inner())),
        "restart" => client
            .restart_unit(pb::RestartUnitRequest { name })
            .await
            .map(|r| json!({"unit": r.into_inner().unit.as_ref().map(convert::unit)})),
        other => Err(Status::not_found(format!(
            "no action {other:?} (start, stop or restart)"
        ))),
    };
    match result {
        Ok(value) => Json(value).into_response(),
        Err(status) => failure(&status),
    }
}

#[derive(Debug, Deserialize)]
struct ShutdownBody {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    force: bool,
    /// A global deadline below 30 s, in seconds.
    timeout: Option<f64>,
}

/// `POST /api/shutdown`: a dry run answers with the plan; otherwise the
/// shutdown starts (or a running one is joined, and `force` skips its
/// grace) and its events reach the pages through `/api/stream`.
async fn shutdown(State(app): State<Arc<App>>, Json(body): Json<ShutdownBody>) -> Response {
    let timeout = match body.timeout {
        None => None,
        Some(secs) if (0.0..=30.0).contains(&secs) => Some(Duration::from_secs_f64(secs)),
        Some(_) => {
            return failure(&Status::invalid_argument(
                "timeout: seconds between 0 and 30",
            ));
        }
    };
    if body.dry_run {
        return match app.hub.dry_run(timeout).await {
            Ok(plan) => Json(plan).into_response(),
            Err(status) => failure(&status),
        };
    }
    match app.hub.start_shutdown(body.force, timeout).await {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"started": true}))).into_response(),
        Err(status) => failure(&status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the page stream until `text` has arrived (at most 5 s); all
    /// that arrived.
    async fn read_until(body: &mut axum::body::BodyDataStream, text: &str) -> String {
        let mut seen = String::new();
        let reading = async {
            while let Some(Ok(chunk)) = body.next().await {
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if seen.contains(text) {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), reading).await;
        seen
    }

    /// ARCHITECTURE (hub): a page that falls behind the changes (more than
    /// the broadcast keeps) gets a fresh snapshot, the state as it is now,
    /// instead of the changes it missed. (The test's runtime has one
    /// thread: the page's task cannot run while the changes are made.)
    #[tokio::test]
    async fn a_lagging_page_gets_a_fresh_snapshot() {
        let hub = Hub::new("/nonexistent/zinit.sock".into());
        let local = "127.0.0.1:8090".parse().expect("addr");
        let secrets = Arc::new(Secrets::new(None, local).expect("secrets"));
        let app = App::new(hub.clone(), secrets, 100);
        let mut body = page_stream(State(app)).await.into_body().into_data_stream();
        let first = read_until(&mut body, "event: snapshot").await;
        assert!(first.contains("event: snapshot"), "{first}");
        let changes = 5000;
        for n in 0..changes {
            hub.set_stats(json!({ "n": n }));
        }
        let last = format!("\"stats\":{{\"n\":{}}}", changes - 1);
        let next = read_until(&mut body, &last).await;
        assert!(
            next.starts_with("event: snapshot") && next.contains(&last),
            "a fresh snapshot with the latest state, not the stale changes: {}",
            next.chars().take(300).collect::<String>()
        );
    }
}
