//! The `Control` gRPC service: validates requests, calls the supervisor,
//! and answers in proto types (through `convert`).

use crate::convert;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use zinit_proto::v1 as pb;
use zinit_proto::v1::control_server::Control;
use zinit_supervisor::logs::Followed;
use zinit_supervisor::stopping::StopProgress;
use zinit_supervisor::{JobSpec, Supervisor, SupervisorError, UnitKind};

type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The most lines a log request may ask for.
const MAX_LAST: u32 = 1_000_000;
/// The largest service file `AddService` accepts.
const MAX_FILE: usize = 1024 * 1024;

/// What `ServerInfo` reports.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub start_time: SystemTime,
    pub config_dir: PathBuf,
    pub socket: PathBuf,
}

/// The service.
#[derive(Debug, Clone)]
pub struct ControlService {
    pub sup: Supervisor,
    pub info: ServerInfo,
    /// Becomes true when the server is closing: open streams end.
    pub closing: watch::Receiver<bool>,
    /// Runs a shutdown request (the shutdown module).
    pub shutdown: crate::shutdown::ShutdownController,
    /// Log and event streams open now.
    pub streams: Arc<AtomicUsize>,
}

fn check_name(name: &str) -> Result<(), Status> {
    if zinit_supervisor::config::valid_name(name) {
        return Ok(());
    }
    // Repeat at most a little of it: the answer must fit a gRPC header.
    let shown: String = name.chars().take(64).collect();
    let more = if shown.len() < name.len() {
        format!("… ({} bytes)", name.len())
    } else {
        String::new()
    };
    Err(convert::invalid_argument(format!(
        "{shown:?}{more} is not a valid service or job name (letters, digits, '.', '_', '-', '@'; at most 128)"
    )))
}

/// Open log and event streams a server serves at once.
const MAX_STREAMS: usize = 64;
/// Messages a stream may have waiting for its client, besides what HTTP/2
/// buffers for it (log lines are at most 64 KiB each: a follower of a flood
/// holds about 1 MiB in all, and all of them together at most `MAX_STREAMS`
/// times that; the memory goes back to the system when they end).
const STREAM_BUFFER: usize = 1;
/// A client that reads nothing for this long is dropped.
const STALL: Duration = Duration::from_secs(10);

/// A slot among the open streams, given back when the stream ends.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        // A stream that ended may have carried a flood: what its buffers
        // held goes back to the system.
        zinit_supervisor::Host::give_back_memory();
    }
}

/// The sending side of a bounded stream: one slot is always kept free for
/// the message that ends it.
struct Sender<T> {
    tx: mpsc::Sender<Result<T, Status>>,
    _slot: StreamSlot,
}

impl<T> Sender<T> {
    /// Sends `item`; `false` when the stream is over (the client left, or it
    /// stalled for too long and was told so).
    async fn send(&self, item: T) -> bool {
        match tokio::time::timeout(STALL, self.tx.reserve_many(2)).await {
            Ok(Ok(mut permits)) => {
                if let Some(permit) = permits.next() {
                    permit.send(Ok(item));
                }
                true
            }
            Ok(Err(_)) => false,
            Err(_) => {
                let _ = self.tx.try_send(Err(convert::resource_exhausted(format!(
                    "this stream was dropped: its client read nothing for {} s; reconnect to go on",
                    STALL.as_secs()
                ))));
                false
            }
        }
    }

    /// Sends the stream's last message: an item, or the error that ends it.
    async fn end(&self, last: Result<T, Status>) {
        let _ = tokio::time::timeout(STALL, self.tx.send(last)).await;
    }

    async fn closed(&self) {
        self.tx.closed().await;
    }
}

impl ControlService {
    /// A bounded stream fed by `produce`, which ends when the client goes
    /// away or the server closes; refused when too many streams are open.
    fn stream<T: Send + 'static>(
        &self,
        produce: impl FnOnce(Sender<T>, watch::Receiver<bool>) -> tokio::task::JoinHandle<()>,
    ) -> Result<Streamed<T>, Status> {
        if self.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
            self.streams.fetch_sub(1, Ordering::SeqCst);
            return Err(convert::resource_exhausted(format!(
                "this server already serves {MAX_STREAMS} log and event streams"
            )));
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER + 1);
        let sender = Sender {
            tx,
            _slot: StreamSlot(self.streams.clone()),
        };
        produce(sender, self.closing.clone());
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Streams a watched stop: `work` gets the progress sender and does the
    /// stop; each step goes out as it comes (wrapped by `step`), then the
    /// result (wrapped by `result`), or the error as the stream's status.
    fn watched_stop<T, R, W>(
        &self,
        unit: String,
        work: impl FnOnce(mpsc::UnboundedSender<StopProgress>) -> W,
        step: fn(pb::StopProgress) -> T,
        result: fn(R) -> T,
    ) -> Result<Streamed<T>, Status>
    where
        T: Send + 'static,
        R: Send + 'static,
        W: Future<Output = Result<R, SupervisorError>> + Send + 'static,
    {
        let (progress_tx, mut progress) = mpsc::unbounded_channel::<StopProgress>();
        let work = work(progress_tx);
        self.stream(move |tx, _| {
            tokio::spawn(async move {
                let mut work = tokio::spawn(work);
                let mut budget = Duration::ZERO;
                let mut open = true;
                let done = loop {
                    tokio::select! {
                        next = progress.recv(), if open => match next {
                            Some(p) => {
                                let p = convert::stop_progress(&unit, p, &mut budget);
                                let _ = tx.send(step(p)).await;
                            }
                            None => open = false,
                        },
                        done = &mut work => break done.unwrap_or(Err(SupervisorError::Gone)),
                    }
                };
                // The stop's last steps come before its result.
                while open {
                    match tokio::time::timeout(Duration::from_secs(1), progress.recv()).await {
                        Ok(Some(p)) => {
                            let p = convert::stop_progress(&unit, p, &mut budget);
                            let _ = tx.send(step(p)).await;
                        }
                        _ => open = false,
                    }
                }
                tx.end(done.map(result).map_err(convert::status)).await;
            })
        })
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn server_info(
        &self,
        _: Request<pb::ServerInfoRequest>,
    ) -> Result<Response<pb::ServerInfoResponse>, Status> {
        Ok(Response::new(pb::ServerInfoResponse {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            start_time: Some(convert::timestamp(self.info.start_time)),
            config_dir: self.info.config_dir.display().to_string(),
            cgroups: self.sup.cgroup_root().is_some(),
            socket: self.info.socket.display().to_string(),
            takeover: Some(convert::takeover(self.sup.takeover())),
        }))
    }

    async fn list_units(
        &self,
        _: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        let units = self.sup.list().await.map_err(convert::status)?;
        Ok(Response::new(pb::ListUnitsResponse {
            units: units.into_iter().map(convert::unit).collect(),
        }))
    }

    async fn get_unit(
        &self,
        request: Request<pb::GetUnitRequest>,
    ) -> Result<Response<pb::GetUnitResponse>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let unit = self.sup.status(&name).await.map_err(convert::status)?;
        Ok(Response::new(pb::GetUnitResponse {
            unit: Some(convert::unit(unit)),
        }))
    }

    async fn start_unit(
        &self,
        request: Request<pb::StartUnitRequest>,
    ) -> Result<Response<pb::StartUnitResponse>, Status> {
        let request = request.into_inner();
        check_name(&request.name)?;
        let unit = self
            .sup
            .start_unit(&request.name, !request.no_wait)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::StartUnitResponse {
            unit: Some(convert::unit(unit)),
        }))
    }

    async fn stop_unit(
        &self,
        request: Request<pb::StopUnitRequest>,
    ) -> Result<Response<pb::StopUnitResponse>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let result = self.sup.stop_unit(&name).await.map_err(convert::status)?;
        Ok(Response::new(convert::stop_response(
            result.status,
            result.report,
            result.running_dependents,
        )))
    }

    type StopUnitStreamStream = Streamed<pb::StopUnitStreamResponse>;

    async fn stop_unit_stream(
        &self,
        request: Request<pb::StopUnitRequest>,
    ) -> Result<Response<Self::StopUnitStreamStream>, Status> {
        use pb::stop_unit_stream_response::Kind;
        let name = request.into_inner().name;
        check_name(&name)?;
        let sup = self.sup.clone();
        let unit = name.clone();
        Ok(Response::new(self.watched_stop(
            name,
            move |progress| async move { sup.stop_unit_watched(&unit, progress).await },
            |p| pb::StopUnitStreamResponse {
                kind: Some(Kind::Progress(p)),
            },
            |r| pb::StopUnitStreamResponse {
                kind: Some(Kind::Result(convert::stop_response(
                    r.status,
                    r.report,
                    r.running_dependents,
                ))),
            },
        )?))
    }

    async fn restart_unit(
        &self,
        request: Request<pb::RestartUnitRequest>,
    ) -> Result<Response<pb::RestartUnitResponse>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let unit = self
            .sup
            .restart_unit(&name)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::RestartUnitResponse {
            unit: Some(convert::unit(unit)),
        }))
    }

    async fn add_service(
        &self,
        request: Request<pb::AddServiceRequest>,
    ) -> Result<Response<pb::AddServiceResponse>, Status> {
        let request = request.into_inner();
        if request.content.len() > MAX_FILE {
            return Err(convert::invalid_argument(
                "a service file may be at most 1 MiB",
            ));
        }
        if request.file_name.is_empty() || request.file_name.contains('/') {
            return Err(convert::invalid_argument(format!(
                "{:?} is not a file name such as web.yaml",
                request.file_name
            )));
        }
        let source = if request.source_path.is_empty() {
            PathBuf::from(&request.file_name)
        } else {
            PathBuf::from(&request.source_path)
        };
        let added = self
            .sup
            .add_text(&source, &request.file_name, &request.content)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::AddServiceResponse {
            name: added.name,
            unit: Some(convert::unit(added.status)),
            warnings: added.warnings,
        }))
    }

    async fn remove_service(
        &self,
        request: Request<pb::RemoveServiceRequest>,
    ) -> Result<Response<pb::RemoveServiceResponse>, Status> {
        let name = request.into_inner().name;
        check_name(&name)?;
        let report = self.sup.remove(&name).await.map_err(convert::status)?;
        Ok(Response::new(convert::remove_response(report)))
    }

    type RemoveServiceStreamStream = Streamed<pb::RemoveServiceStreamResponse>;

    async fn remove_service_stream(
        &self,
        request: Request<pb::RemoveServiceRequest>,
    ) -> Result<Response<Self::RemoveServiceStreamStream>, Status> {
        use pb::remove_service_stream_response::Kind;
        let name = request.into_inner().name;
        check_name(&name)?;
        let sup = self.sup.clone();
        let unit = name.clone();
        Ok(Response::new(self.watched_stop(
            name,
            move |progress| async move {
                let report = sup.remove_watched(&unit, progress).await?;
                Ok(convert::remove_response(report))
            },
            |p| pb::RemoveServiceStreamResponse {
                kind: Some(Kind::Progress(p)),
            },
            |r| pb::RemoveServiceStreamResponse {
                kind: Some(Kind::Result(r)),
            },
        )?))
    }

    async fn reload(
        &self,
        request: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let dry_run = request.into_inner().dry_run;
        let summary = self.sup.reload(dry_run).await.map_err(convert::status)?;
        Ok(Response::new(convert::reload(summary)))
    }

    async fn signal_unit(
        &self,
        request: Request<pb::SignalUnitRequest>,
    ) -> Result<Response<pb::SignalUnitResponse>, Status> {
        let request = request.into_inner();
        check_name(&request.name)?;
        let signal = if request.signal.is_empty() {
            zinit_supervisor::Signal::SIGTERM
        } else {
            zinit_supervisor::parse_signal(&request.signal)
                .map_err(|e| convert::invalid_argument(e.to_string()))?
        };
        let pids = self
            .sup
            .signal(&request.name, signal, request.all)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::SignalUnitResponse {
            pids: pids.into_iter().map(|p| p as u32).collect(),
        }))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let name = request.into_inner().name;
        let name = (!name.is_empty()).then_some(name);
        if let Some(name) = &name {
            check_name(name)?;
        }
        let stats = self
            .sup
            .stats(name.as_deref())
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::GetStatsResponse {
            stats: stats
                .into_iter()
                .map(|s| pb::UnitStats {
                    name: s.name,
                    processes: s.processes as u32,
                    cpu_percent: s.cpu_percent,
                    memory_bytes: s.memory_bytes,
                })
                .collect(),
        }))
    }

    type StreamLogsStream = Streamed<pb::StreamLogsResponse>;

    async fn stream_logs(
        &self,
        request: Request<pb::StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let request = request.into_inner();
        let name = (!request.name.is_empty()).then_some(request.name);
        if let Some(name) = &name {
            check_name(name)?;
        }
        if request.last.is_some_and(|n| n > MAX_LAST) {
            return Err(convert::invalid_argument(format!(
                "last may be at most {MAX_LAST}"
            )));
        }
        // Unset: every kept line; 0: none (a follow then sends only new ones).
        let last = request.last.map(|n| n as usize);
        let (lines, follower) = if request.follow {
            let (lines, follower) = self
                .sup
                .follow_logs(name.as_deref(), last)
                .await
                .map_err(convert::status)?;
            (lines, Some(follower))
        } else {
            (
                self.sup
                    .logs(name.as_deref(), last)
                    .await
                    .map_err(convert::status)?,
                None,
            )
        };
        Ok(Response::new(self.stream(move |tx, mut closing| {
            tokio::spawn(async move {
                for line in lines {
                    if !tx.send(convert::log_line(&line)).await {
                        return;
                    }
                }
                let Some(mut follower) = follower else { return };
                loop {
                    let next = tokio::select! {
                        next = follower.next() => next,
                        _ = closing.wait_for(|c| *c) => return,
                        _ = tx.closed() => return,
                    };
                    let item = match next {
                        Some(Followed::Line(line)) => convert::log_line(&line),
                        Some(Followed::Missed(n)) => pb::StreamLogsResponse {
                            missed: n,
                            ..Default::default()
                        },
                        None => return,
                    };
                    if !tx.send(item).await {
                        return;
                    }
                }
            })
        })?))
    }

    type StreamEventsStream = Streamed<pb::StreamEventsResponse>;

    async fn stream_events(
        &self,
        _: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let mut events = self.sup.events();
        Ok(Response::new(self.stream(move |tx, mut closing| {
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        next = events.recv() => next,
                        _ = closing.wait_for(|c| *c) => return,
                        _ = tx.closed() => return,
                    };
                    let item = match next {
                        Ok(event) => convert::event(event),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            pb::StreamEventsResponse {
                                kind: Some(pb::stream_events_response::Kind::Missed(n)),
                                ..Default::default()
                            }
                        }
                        Err(_) => return,
                    };
                    if !tx.send(item).await {
                        return;
                    }
                }
            })
        })?))
    }

    async fn run_job(
        &self,
        request: Request<pb::RunJobRequest>,
    ) -> Result<Response<pb::RunJobResponse>, Status> {
        let spec = match request.into_inner().what {
            Some(pb::run_job_request::What::Service(name)) => {
                check_name(&name)?;
                JobSpec::Named(name)
            }
            Some(pb::run_job_request::What::Command(command)) => {
                if command.argv.is_empty() || command.argv[0].is_empty() {
                    return Err(convert::invalid_argument("a job command needs a program"));
                }
                JobSpec::Command(command.argv)
            }
            None => {
                return Err(convert::invalid_argument(
                    "say what to run: a service or a command",
                ));
            }
        };
        let name = self.sup.run_job(spec).await.map_err(convert::status)?;
        Ok(Response::new(pb::RunJobResponse { name }))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self.sup.jobs().await.map_err(convert::status)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.into_iter().map(convert::unit).collect(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let name = request.into_inner().name;
        let job = self.job(&name).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(convert::unit(job)),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let name = request.into_inner().name;
        self.job(&name).await?;
        let result = self.sup.stop_unit(&name).await.map_err(convert::status)?;
        let outcome = match &result.report {
            Some(report) => convert::outcome(report.outcome),
            None => pb::StopOutcome::NothingRunning,
        };
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(convert::unit(result.status)),
            outcome: outcome as i32,
        }))
    }

    type ShutdownStream = Streamed<pb::ShutdownResponse>;

    async fn shutdown(
        &self,
        request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<Self::ShutdownStream>, Status> {
        let peer = request
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|info| info.peer_cred)
            .and_then(|cred| cred.pid());
        let stream = self.shutdown.request(request.into_inner(), peer).await?;
        Ok(Response::new(stream))
    }
}

impl ControlService {
    async fn job(&self, name: &str) -> Result<zinit_supervisor::UnitStatus, Status> {
        check_name(name)?;
        let unit = self.sup.status(name).await.map_err(convert::status)?;
        if !matches!(unit.kind, UnitKind::Job { .. }) {
            return Err(convert::not_found(format!("no job named {name:?}")));
        }
        Ok(unit)
    }
}
