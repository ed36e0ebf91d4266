//! The one link to zinit_server that every open page shares: it connects
//! through `zinit-client` (and reconnects when the server goes and comes
//! back), keeps the units table (ListUnits once per connection, then the
//! `StreamEvents` stream), refreshes CPU and memory every few seconds, and
//! watches a running shutdown (its own, or one started by the CLI or a
//! signal, which it joins with `join_only`). Pages get a snapshot, then
//! every change, through a broadcast of server-sent-event messages.

use crate::convert;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};
use zinit_client::ConnectError;
use zinit_proto::v1 as pb;
use zinit_proto::v1::control_client::ControlClient;
use zinit_proto::v1::stream_events_response::Kind as EventKind;

/// A gRPC client of the `Control` service.
pub type Client = ControlClient<Channel>;

/// How often CPU and memory are refreshed.
const STATS_EVERY: Duration = Duration::from_secs(2);
/// How long to wait between connection attempts.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// The bound on each call made while connecting.
const CALL_BOUND: Duration = Duration::from_secs(5);
/// More touched units than this in one batch of events: re-list them all.
const RELIST_ABOVE: usize = 32;
/// How many messages a slow page may fall behind before it gets a new snapshot.
const BROADCAST_DEPTH: usize = 1024;

/// One message to the pages: a server-sent event's name and JSON data.
#[derive(Debug)]
pub struct Msg {
    /// The event name.
    pub event: &'static str,
    /// The JSON text.
    pub data: String,
}

/// A shutdown as the pages see it: the events so far.
#[derive(Debug)]
struct ShutdownView {
    id: u64,
    /// "ui" when this page started it, "joined" otherwise.
    origin: &'static str,
    /// The server it belongs to.
    server_pid: u32,
    events: Vec<Value>,
    done: bool,
    cut: Option<String>,
}

impl ShutdownView {
    fn json(&self) -> Value {
        json!({"id": self.id, "origin": self.origin, "server_pid": self.server_pid,
               "events": self.events, "done": self.done, "cut": self.cut})
    }
}

#[derive(Debug)]
struct State {
    conn: Value,
    client: Option<Client>,
    server_pid: u32,
    units: BTreeMap<String, Value>,
    stats: Value,
    shutdown: Option<ShutdownView>,
    /// A watcher streams the running shutdown.
    watching: bool,
    /// A join_only call is on its way.
    joining: bool,
    /// The server (by pid) whose shutdown this process started.
    started_for: Option<u32>,
    next_id: u64,
}

/// The shared link to the server.
#[derive(Debug)]
pub struct Hub {
    /// Random per process: a page that sees another one reloads (its CSRF
    /// token and session belong to the old process).
    instance: String,
    socket: PathBuf,
    state: Mutex<State>,
    tx: broadcast::Sender<Arc<Msg>>,
}

/// Why a connection ended.
enum Lost {
    Connect(ConnectError),
    Rpc(Status),
    Closed,
}

impl Lost {
    fn describe(&self, socket: &Path) -> (String, bool) {
        let denied = || {
            format!(
                "cannot reach the zinit socket {}: permission denied (run zinit_ui as a user that can use the socket)",
                socket.display()
            )
        };
        match self {
            Lost::Connect(ConnectError::PermissionDenied(_)) => (denied(), true),
            Lost::Connect(e) => (e.to_string(), false),
            Lost::Rpc(s) if s.code() == Code::PermissionDenied => (denied(), true),
            Lost::Rpc(s) => (
                format!("lost the connection to zinit_server: {}", s.message()),
                false,
            ),
            Lost::Closed => (
                "zinit_server closed the connection (it is shutting down or gone)".into(),
                false,
            ),
        }
    }
}

impl From<Status> for Lost {
    fn from(status: Status) -> Self {
        Lost::Rpc(status)
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_millis() as f64)
}

async fn bounded<T>(call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    tokio::time::timeout(CALL_BOUND, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(
                "zinit_server did not answer in 5 s",
            ))
        })
}

impl Hub {
    /// A hub for the server on `socket`; [`Hub::run`] connects it.
    pub fn new(socket: PathBuf) -> Arc<Self> {
        let conn = json!({"up": false, "message": "connecting…", "denied": false,
                          "socket": socket.display().to_string()});
        Arc::new(Self {
            instance: crate::auth::random_hex(8).unwrap_or_default(),
            socket,
            state: Mutex::new(State {
                conn,
                client: None,
                server_pid: 0,
                units: BTreeMap::new(),
                stats: json!({}),
                shutdown: None,
                watching: false,
                joining: false,
                started_for: None,
                next_id: 0,
            }),
            tx: broadcast::channel(BROADCAST_DEPTH).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a message to every page. Called with the state locked, so that
    /// a page's snapshot and its subscription see the same order.
    fn send(&self, _locked: &State, event: &'static str, data: Value) {
        let _ = self.tx.send(Arc::new(Msg {
            event,
            data: data.to_string(),
        }));
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Everything a page shows now, and the changes from here on.
    pub fn subscribe(&self) -> (Msg, broadcast::Receiver<Arc<Msg>>) {
        let st = self.lock();
        let snapshot = json!({
            "conn": st.conn,
            "units": st.units.values().collect::<Vec<_>>(),
            "stats": st.stats,
            "shutdown": st.shutdown.as_ref().map(ShutdownView::json),
            "now": now_ms(),
            "instance": self.instance,
        });
        let rx = self.tx.subscribe();
        (
            Msg {
                event: "snapshot",
                data: snapshot.to_string(),
            },
            rx,
        )
    }

    /// The connected client, or UNAVAILABLE saying why there is none.
    pub fn client(&self) -> Result<Client, Status> {
        let st = self.lock();
        match &st.client {
            Some(client) => Ok(client.clone()),
            None => {
                let message = st.conn["message"].as_str().unwrap_or("not connected");
                if st.conn["denied"] == true {
                    Err(Status::permission_denied(message))
                } else {
                    Err(Status::unavailable(message))
                }
            }
        }
    }

    /// Connects, follows the server, and reconnects when it is lost; never
    /// returns.
    pub async fn run(self: Arc<Self>) {
        let mut last_said: Option<String> = None;
        loop {
            let lost = self.session(&mut last_said).await;
            let (message, denied) = lost.describe(&self.socket);
            {
                let mut st = self.lock();
                st.client = None;
                st.conn = json!({"up": false, "message": message, "denied": denied,
                                 "socket": self.socket.display().to_string(), "since": now_ms()});
                self.send(&st, "connection", st.conn.clone());
            }
            if last_said.as_deref() != Some(message.as_str()) {
                tracing::warn!("{message}");
                last_said = Some(message);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// One connection, from connect to loss.
    async fn session(self: &Arc<Self>, last_said: &mut Option<String>) -> Lost {
        match self.follow(last_said).await {
            Ok(never) => match never {},
            Err(lost) => lost,
        }
    }

    async fn follow(
        self: &Arc<Self>,
        last_said: &mut Option<String>,
    ) -> Result<std::convert::Infallible, Lost> {
        let mut client = zinit_client::connect(&self.socket)
            .await
            .map_err(Lost::Connect)?;
        let info = bounded(client.server_info(pb::ServerInfoRequest {}))
            .await?
            .into_inner();
        // Subscribe first, so that no change between the list and the
        // subscription is lost (one seen twice does no harm).
        let mut events = bounded(client.stream_events(pb::StreamEventsRequest {}))
            .await?
            .into_inner();
        let list = bounded(client.list_units(pb::ListUnitsRequest {}))
            .await?
            .into_inner();
        {
            let mut st = self.lock();
            st.units = list
                .units
                .iter()
                .map(|u| (u.name.clone(), convert::unit(u)))
                .collect();
            st.server_pid = info.pid;
            st.client = Some(client.clone());
            st.conn = json!({"up": true, "server": convert::server_info(&info),
                             "socket": self.socket.display().to_string(), "since": now_ms()});
            self.send(&st, "connection", st.conn.clone());
            self.send(&st, "units", json!(st.units.values().collect::<Vec<_>>()));
        }
        let said = format!(
            "connected to zinit_server {} (pid {}) on {}",
            info.version,
            info.pid,
            self.socket.display()
        );
        tracing::info!("{said}");
        *last_said = Some(said);
        // A shutdown may be running already (started by the CLI or a signal).
        self.join_shutdown(&client);
        let _stats = AbortOnDrop(tokio::spawn(self.clone().stats_loop(client.clone())));
        loop {
            let mut batch = match events.message().await {
                Ok(Some(event)) => vec![event],
                Ok(None) => return Err(Lost::Closed),
                Err(status) => return Err(Lost::Rpc(status)),
            };
            // Take what else is ready, to refresh each touched unit once.
            while batch.len() < 256 {
                match tokio::time::timeout(Duration::ZERO, events.message()).await {
                    Ok(Ok(Some(event))) => batch.push(event),
                    Ok(Ok(None)) => return Err(Lost::Closed),
                    Ok(Err(status)) => return Err(Lost::Rpc(status)),
                    Err(_) => break,
                }
            }
            self.apply(&mut client, batch).await?;
        }
    }

    /// Applies a batch of events: each state change to its row at once, then
    /// the rest of each touched row (pid, restarts, last exit) from GetUnit.
    async fn apply(
        self: &Arc<Self>,
        client: &mut Client,
        batch: Vec<pb::StreamEventsResponse>,
    ) -> Result<(), Lost> {
        let mut touched = BTreeSet::new();
        let mut relist = false;
        let mut stopping = false;
        {
            let mut st = self.lock();
            for event in batch {
                match event.kind {
                    Some(EventKind::StateChanged(change)) => {
                        if change.to == pb::UnitState::Stopping as i32 {
                            stopping = true;
                        }
                        if let Some(row) = st.units.get_mut(&event.unit) {
                            row["state"] = json!(convert::state_name(change.to));
                            row["reason"] = json!(change.reason);
                            row["since"] = convert::millis(event.time.as_ref());
                        }
                        touched.insert(event.unit);
                    }
                    Some(EventKind::Restarting(_)) | Some(EventKind::JobFinished(_)) => {
                        touched.insert(event.unit);
                    }
                    Some(EventKind::Warning(text)) => {
                        self.send(&st, "warning", json!({"unit": event.unit, "text": text}));
                    }
                    Some(EventKind::Missed(_)) => relist = true,
                    None => {}
                }
            }
        }
        if relist || touched.len() > RELIST_ABOVE {
            let list = bounded(client.list_units(pb::ListUnitsRequest {}))
                .await?
                .into_inner();
            let mut st = self.lock();
            st.units = list
                .units
                .iter()
                .map(|u| (u.name.clone(), convert::unit(u)))
                .collect();
            self.send(&st, "units", json!(st.units.values().collect::<Vec<_>>()));
        } else {
            for name in touched {
                let found =
                    bounded(client.get_unit(pb::GetUnitRequest { name: name.clone() })).await;
                let mut st = self.lock();
                match found {
                    Ok(response) => {
                        let Some(unit) = response.into_inner().unit else {
                            continue;
                        };
                        let mut row = convert::unit(&unit);
                        // The state is the events' (a newer one is on its way).
                        if let Some(old) = st.units.get(&name) {
                            for key in ["state", "reason", "since"] {
                                row[key] = old[key].clone();
                            }
                        }
                        st.units.insert(name, row.clone());
                        self.send(&st, "unit", row);
                    }
                    Err(status) if status.code() == Code::NotFound => {
                        if st.units.remove(&name).is_some() {
                            self.send(&st, "unit_removed", json!({ "name": name }));
                        }
                    }
                    Err(status) => return Err(Lost::Rpc(status)),
                }
            }
        }
        if stopping {
            self.join_shutdown(client);
        }
        Ok(())
    }

    /// Refreshes CPU and memory; also notices a shutdown that began without
    /// any unit changing state (nothing was running).
    async fn stats_loop(self: Arc<Self>, mut client: Client) {
        loop {
            if let Ok(Ok(stats)) = tokio::time::timeout(
                CALL_BOUND,
                client.get_stats(pb::GetStatsRequest {
                    name: String::new(),
                }),
            )
            .await
            {
                let mut st = self.lock();
                st.stats = convert::stats(&stats.into_inner().stats);
                self.send(&st, "stats", st.stats.clone());
            }
            self.join_shutdown(&client);
            tokio::time::sleep(STATS_EVERY).await;
        }
    }

    /// Joins a running shutdown (join_only: it never starts one) unless one
    /// is watched already or this server's was seen to its end.
    fn join_shutdown(self: &Arc<Self>, client: &Client) {
        {
            let mut st = self.lock();
            let seen_to_end = st
                .shutdown
                .as_ref()
                .is_some_and(|s| s.done && s.server_pid == st.server_pid);
            if st.watching || st.joining || seen_to_end {
                return;
            }
            st.joining = true;
        }
        let hub = self.clone();
        let mut client = client.clone();
        tokio::spawn(async move {
            let request = pb::ShutdownRequest {
                join_only: true,
                ..Default::default()
            };
            let joined = client.shutdown(request).await;
            hub.lock().joining = false;
            match joined {
                Ok(stream) => hub.watch(stream.into_inner(), "joined").await,
                Err(status) if status.code() == Code::FailedPrecondition => {}
                Err(status) => tracing::debug!("joining the shutdown: {}", status.message()),
            }
        });
    }

    /// Starts a shutdown (or, when one runs, joins it: `force` then skips
    /// its remaining grace). Its events reach the pages.
    pub async fn start_shutdown(
        self: &Arc<Self>,
        force: bool,
        timeout: Option<Duration>,
    ) -> Result<(), Status> {
        let mut client = self.client()?;
        let request = pb::ShutdownRequest {
            timeout: timeout.map(duration),
            force,
            ..Default::default()
        };
        let stream = client.shutdown(request).await?.into_inner();
        if !force {
            // Whichever stream of it is watched, the pages learn who started
            // it (a force only hurries a running one).
            let mut st = self.lock();
            let pid = st.server_pid;
            st.started_for = Some(pid);
            if let Some(view) = st
                .shutdown
                .as_mut()
                .filter(|v| !v.done && v.server_pid == pid)
            {
                view.origin = "ui";
                let json = view.json();
                self.send(&st, "shutdown_begin", json);
            }
        }
        let hub = self.clone();
        tokio::spawn(async move { hub.watch(stream, "ui").await });
        Ok(())
    }

    /// The plan of a shutdown and what the sweep would target now; stops nothing.
    pub async fn dry_run(&self, timeout: Option<Duration>) -> Result<Value, Status> {
        let mut client = self.client()?;
        let request = pb::ShutdownRequest {
            timeout: timeout.map(duration),
            dry_run: true,
            ..Default::default()
        };
        let mut stream = client.shutdown(request).await?.into_inner();
        while let Some(response) = stream.message().await? {
            if let Some(event) = response.event
                && matches!(event.kind, Some(pb::shutdown_event::Kind::Plan(_)))
            {
                return Ok(convert::shutdown_event(&event));
            }
        }
        Err(Status::internal("the dry run sent no plan"))
    }

    /// Streams a shutdown's events to the pages, unless another stream of it
    /// is being watched already (then this one is dropped).
    async fn watch(
        self: Arc<Self>,
        mut stream: Streaming<pb::ShutdownResponse>,
        origin: &'static str,
    ) {
        let id = {
            let mut st = self.lock();
            if st.watching {
                return;
            }
            st.watching = true;
            st.next_id += 1;
            let origin = if st.started_for == Some(st.server_pid) {
                "ui"
            } else {
                origin
            };
            let view = ShutdownView {
                id: st.next_id,
                origin,
                server_pid: st.server_pid,
                events: Vec::new(),
                done: false,
                cut: None,
            };
            self.send(&st, "shutdown_begin", view.json());
            st.shutdown = Some(view);
            st.next_id
        };
        tracing::info!("following the shutdown ({origin})");
        let mut summary = false;
        let cut = loop {
            match stream.message().await {
                Ok(Some(response)) => {
                    let Some(event) = response.event else {
                        continue;
                    };
                    summary |= matches!(event.kind, Some(pb::shutdown_event::Kind::Summary(_)));
                    let event = convert::shutdown_event(&event);
                    let mut st = self.lock();
                    if let Some(view) = st.shutdown.as_mut().filter(|v| v.id == id) {
                        view.events.push(event.clone());
                    }
                    self.send(&st, "shutdown_event", json!({"id": id, "event": event}));
                }
                Ok(None) if summary => break None,
                Ok(None) => {
                    break Some(
                        "the server closed the stream before the summary; the outcome is unknown"
                            .to_string(),
                    );
                }
                Err(status) => {
                    break Some(format!(
                        "the shutdown stream was cut: {} (the outcome is unknown)",
                        status.message()
                    ));
                }
            }
        };
        let mut st = self.lock();
        st.watching = false;
        if let Some(view) = st.shutdown.as_mut().filter(|v| v.id == id) {
            view.done = true;
            view.cut.clone_from(&cut);
        }
        self.send(&st, "shutdown_end", json!({"id": id, "cut": cut}));
    }
}

#[cfg(test)]
impl Hub {
    /// New CPU and memory figures, as the stats loop sets them (tests).
    pub fn set_stats(&self, stats: Value) {
        let mut st = self.lock();
        st.stats = stats;
        self.send(&st, "stats", st.stats.clone());
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}
