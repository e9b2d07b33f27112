//! The HTTP API (actix-web): routes over the partition layer, JWT scopes, limits,
//! RFC 9457 problems, Prometheus metrics and an OpenAPI document with an offline UI.
//!
//! # Layout
//!
//! * [`routes`] — the handlers and the OpenAPI document generated from them.
//! * [`decision`] — the decision point on Altinn's paths (XACML in XML or JSON).
//! * [`a2`] — the Altinn 2 cut-off report (`/v1/a2-impact`).
//! * [`auth`] — bearer JWT validation and scopes.
//! * [`limits`] — body size, batch sizes, JSON depth, request time; guarded parsing.
//! * [`problem`] — problem+json answers, one status per code.
//! * [`metrics`] — request counts and latency histograms.
//! * [`client`] — a blocking HTTP client that runs scenario files against a server.
//!
//! A request passes the metrics-and-timeout middleware, then its handler checks the
//! token's scope before reading the body, parses the body within the limits, and goes
//! to the store: reads directly on the worker thread, writes through the partitions.

pub mod a2;
pub mod actor;
pub mod auth;
pub mod client;
pub mod decision;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod problem;
pub mod routes;
pub mod strict;
pub mod supplier;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};

use crate::partition::journal::Journal;
use crate::partition::{Partitions, Store};
use crate::world::World;
use auth::Auth;
use limits::Limits;
use metrics::Metrics;
use problem::{Problem, ProblemCode};

/// What a server is started with.
#[derive(Clone)]
pub struct ServerConfig {
    /// Number of partition actors owning the write path (at least 1).
    pub partitions: usize,
    pub limits: Limits,
    pub auth: Auth,
    /// Whether `POST /v1/admin/reset` may empty the world (for `delegraph test --server`).
    pub allow_reset: bool,
    /// HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Each HTTP worker keeps to one core of those the process may use, in turn
    /// ([`pin_to_core`]), so that two workers never queue behind each other on one core
    /// while the other runs something else.
    pub pin_workers: bool,
    /// How often the engine clock follows the wall clock (a `clock` event through the
    /// log, never backwards); `None` leaves the clock to the events sent.
    pub clock_interval: Option<std::time::Duration>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            partitions: 1,
            limits: Limits::default(),
            auth: Auth::Disabled,
            allow_reset: false,
            workers: None,
            pin_workers: false,
            clock_interval: None,
        }
    }
}

/// Shared by every worker.
pub struct AppState {
    pub partitions: Arc<Partitions>,
    pub limits: Limits,
    pub auth: Auth,
    pub metrics: Metrics,
    pub allow_reset: bool,
    /// Background work: simulate, a2-impact, checkpoints ([`crate::background`]).
    pub jobs: Arc<crate::background::Jobs>,
}

/// Which part of the request's address holds bytes that are not UTF-8 once
/// percent-decoded (`%FF`): refused, rather than read with a replacement character into
/// an id that then names nobody (or someone else).
fn not_utf8(req: &ServiceRequest) -> Option<&'static str> {
    // Without a `%` the text is the `&str` it is already (the common case: no copy).
    let bad = |s: &str| s.contains('%') && std::str::from_utf8(&percent_decoded(s)).is_err();
    if bad(req.uri().path()) {
        Some("path")
    } else if bad(req.query_string()) {
        Some("query string")
    } else {
        None
    }
}

/// `s` with every `%XX` (two hexadecimal digits) replaced by its byte; anything else,
/// a lone `%` included, is kept as it is.
pub(super) fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Counts and times every request, refuses an oversized query string or an address that
/// is not UTF-8, cuts a request at the request time limit, and makes sure every error is
/// problem+json.
// The request is not cloned here: routing needs the only reference to it.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse, actix_web::Error> {
    // Before this request's clock starts: a yield here is time the worker gave away.
    crate::background::take_turns();
    let start = Instant::now();
    let _serving = crate::background::serving();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().to_string();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let limits = state.as_ref().map_or_else(Limits::default, |s| s.limits.clone());
    let query_len = req.query_string().len();
    let res = if query_len > limits.max_query_bytes {
        let p = Problem::limit(format!(
            "the query string is {query_len} bytes long, more than the limit of {}",
            limits.max_query_bytes
        ));
        Ok(req.into_response(p.error_response()))
    } else if let Err(p) = guard::rebinding(
        req.request(),
        state.as_ref().is_some_and(|s| matches!(s.auth, Auth::Disabled)),
    ) {
        Ok(req.into_response(p.error_response()))
    } else if let Some(part) = not_utf8(&req) {
        let p = Problem::invalid(format!("the {part} is not UTF-8 once percent-decoded"));
        Ok(req.into_response(p.error_response()))
    } else {
        match tokio::time::timeout(limits.request_timeout, next.call(req)).await {
            Ok(Ok(r)) => Ok(as_problem(r.map_into_boxed_body())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Problem::new(
                ProblemCode::Timeout,
                format!(
                    "the request took longer than the limit of {} ms",
                    limits.request_timeout.as_millis()
                ),
            )
            .into()),
        }
    };
    if let Some(s) = state {
        let status = match &res {
            Ok(r) => r.status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        s.metrics.observe(&route, &method, status, start.elapsed());
    }
    res
}

/// An error answer that is not problem+json (one actix-web made inside the app) turned
/// into the problem of its status.
fn as_problem(res: ServiceResponse) -> ServiceResponse {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    if is_problem {
        return res;
    }
    use crate::model::ErrorCode;
    let code = match status.as_u16() {
        404 => ProblemCode::Spec(ErrorCode::NotFound),
        405 => ProblemCode::MethodNotAllowed,
        413 => ProblemCode::LimitExceeded,
        415 => ProblemCode::UnsupportedMediaType,
        503 => ProblemCode::Unavailable,
        _ => ProblemCode::Spec(ErrorCode::InvalidInput),
    };
    let detail = format!(
        "the request was refused ({})",
        status.canonical_reason().unwrap_or("error")
    );
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, Problem::new(code, detail).error_response())
}

async fn no_route(req: actix_web::HttpRequest) -> HttpResponse {
    Problem::new(
        ProblemCode::Spec(crate::model::ErrorCode::NotFound),
        format!("no route `{} {}`", req.method(), crate::model::quote(req.path())),
    )
    .error_response()
}

async fn wrong_method(req: actix_web::HttpRequest) -> HttpResponse {
    Problem::new(
        ProblemCode::MethodNotAllowed,
        format!(
            "`{}` does not take `{}`",
            crate::model::quote(req.path()),
            crate::model::quote(req.method().as_str())
        ),
    )
    .error_response()
}

/// A route whose other methods are answered 405 with a problem.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(wrong_method))
}

/// Registers every route on an app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    use routes::*;
    cfg.service(resource("/v1/events").post(post_events))
        .service(resource("/v1/check/batch").post(check_batch))
        .service(resource("/v1/check").get(check).post(check))
        .service(
            resource("/v1/authorized_parties")
                .get(authorized_parties)
                .post(authorized_parties),
        )
        .service(resource("/v1/rights").get(rights).post(rights))
        .service(resource("/v1/holders").get(holders).post(holders))
        .service(resource("/v1/can_delegate").get(can_delegate).post(can_delegate))
        .service(resource("/v1/explain").get(explain).post(explain))
        .service(resource("/v1/clients").get(clients).post(clients))
        .service(
            resource("/v1/request_status")
                .get(request_status)
                .post(request_status),
        )
        .service(
            resource("/v1/addable_clients")
                .get(addable_clients)
                .post(addable_clients),
        )
        .service(resource("/v1/a2-impact").get(a2::a2_impact).post(a2::a2_impact))
        // Consent (domain.md §9); the lookup before `{id}`.
        .service(
            resource("/v1/consent_status")
                .get(consent_status)
                .post(consent_status),
        )
        .service(
            resource("/v1/consent_check")
                .get(consent_check)
                .post(consent_check),
        )
        .service(
            resource("/v1/consent_events")
                .get(consent_events)
                .post(consent_events),
        )
        .service(resource("/v1/consents").post(consent_post))
        .service(resource("/v1/consents/lookup").get(consent_lookup))
        .service(resource("/v1/consents/{id}").get(consent_get))
        .service(resource("/v1/consents/{id}/events").get(consent_get_events))
        .service(resource("/v1/consents/{id}/accept").post(consent_accept))
        .service(resource("/v1/consents/{id}/reject").post(consent_reject))
        .service(resource("/v1/consents/{id}/revoke").post(consent_revoke))
        .service(resource("/v1/consents/{id}/use").post(consent_use))
        .service(resource("/v1/simulate").post(simulate))
        // §10: Maskinporten scope delegation.
        .service(
            resource("/v1/scope_delegations")
                .get(scope_delegations)
                .post(scope_delegations),
        )
        .service(resource("/v1/suppliers").get(suppliers).post(suppliers))
        .service(resource("/v1/consumers").get(consumers).post(consumers))
        .service(
            resource("/v1/maskinporten/suppliers")
                .post(supplier::add_supplier)
                .delete(supplier::remove_supplier),
        )
        .service(
            resource("/v1/maskinporten/scope-delegations")
                .post(supplier::delegate_scope)
                .delete(supplier::undelegate_scope),
        )
        .service(resource("/v1/maskinporten/delegations").get(supplier::delegations))
        .service(resource(decision::DECISION_PATH).post(decision::decision))
        .service(resource(decision::AUTHORIZE_PATH).post(decision::authorize))
        .service(resource("/v1/admin/reset").post(post_reset))
        .service(resource("/v1/admin/checkpoint").post(routes::post_checkpoint))
        .service(resource("/healthz").get(healthz))
        .service(resource("/readyz").get(readyz))
        .service(resource("/metrics").get(metrics))
        .service(resource("/openapi.json").get(openapi_json))
        .service(resource("/docs").get(docs));
}

/// The application over `state`: every route, the middleware, and the 404 problem; what
/// the HTTP server runs, and what tests can call in process
/// (`actix_web::test::init_service`).
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .wrap(from_fn(observe))
        .configure(configure)
        .default_service(web::to(no_route))
}

/// The state shared by the workers of one server.
pub fn app_state(config: &ServerConfig, partitions: Arc<Partitions>) -> web::Data<AppState> {
    web::Data::new(AppState {
        partitions,
        limits: config.limits.clone(),
        auth: config.auth.clone(),
        metrics: Metrics::default(),
        allow_reset: config.allow_reset,
        jobs: Arc::new(crate::background::Jobs::new(config.limits.background_threads)),
    })
}

/// Builds the HTTP server over `state` on `listener`; starts serving when awaited.
fn http_server(
    state: web::Data<AppState>,
    listener: TcpListener,
    workers: Option<usize>,
    pin_workers: bool,
) -> std::io::Result<actix_web::dev::Server> {
    let limits = state.limits.clone();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut server = HttpServer::new(move || {
        // The application is built once per worker, on the worker's own thread.
        if pin_workers {
            pin_to_core(started.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        }
        app(state.clone())
    })
    // Slow clients: the headers must arrive within this, and a closing connection gets
    // this long to finish.
    .client_request_timeout(limits.request_timeout)
    .client_disconnect_timeout(std::time::Duration::from_secs(1))
    .shutdown_timeout(10)
    .listen(listener)?;
    if let Some(n) = workers {
        server = server.workers(n.max(1));
    }
    Ok(server.run())
}

/// Keeps the calling thread to the `n`-th core (modulo their number) of those the process
/// may use (its main thread's set; Linux; elsewhere, or if the system refuses, nothing
/// changes).
pub fn pin_to_core(n: usize) {
    let cores = crate::background::process_cores();
    if let Some(core) = cores.get(n % cores.len().max(1)) {
        crate::background::keep_thread_to(&[*core]);
    }
}

/// The engine clock follows the wall clock (issue 17 item 5): every `every`, a `clock`
/// event with the wall-clock time goes through the write path like any other event, so
/// it is logged and replay stays deterministic. It moves the clock only forward
/// (`forward_only`: a clock set ahead, e.g. by a scenario, is left alone), so expiry acts
/// within one interval without any client write. Runs on the current actix system until
/// the handle is aborted.
fn start_clock(
    partitions: Arc<Partitions>,
    every: std::time::Duration,
) -> actix_web::rt::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            clock_tick(&partitions).await;
        }
    })
}

/// One tick of [`start_clock`]: logs a `clock` event with the wall-clock time unless the
/// engine clock is already there or ahead.
pub async fn clock_tick(partitions: &Partitions) {
    let wall = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now()).fixed_offset();
    if partitions.store().pin().world.now.is_some_and(|t| t >= wall) {
        return;
    }
    let ev = crate::event::Event::Clock(crate::event::ClockEvent {
        now: wall.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        forward_only: Some(true),
    });
    if let Err(e) = partitions.submit(vec![ev]).await {
        tracing::warn!("the clock tick was not logged: {e}");
    }
}

/// Serves until a shutdown signal (SIGINT/SIGTERM: in-flight requests finish, then the
/// partitions stop, the journal is flushed and, if it keeps them, checkpointed). Must run
/// inside an actix system.
pub async fn serve(config: ServerConfig, store: Arc<Store>, listener: TcpListener) -> std::io::Result<()> {
    let partitions = Arc::new(Partitions::start(config.partitions, store.clone()));
    let clock = config.clock_interval.map(|d| start_clock(partitions.clone(), d));
    let state = app_state(&config, partitions.clone());
    let res = http_server(state, listener, config.workers, config.pin_workers)?.await;
    if let Some(c) = clock {
        c.abort();
    }
    partitions.stop();
    if let Err(e) = store.close(true) {
        tracing::error!("flushing the journal at shutdown failed: {e}");
        return Err(std::io::Error::other(e.to_string()));
    }
    res
}

/// A server running on its own thread (tests, benchmarks): stop it with [`Self::stop`].
pub struct RunningServer {
    pub addr: std::net::SocketAddr,
    pub store: Arc<Store>,
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops gracefully and waits for the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let h = self.handle.clone();
        actix_web::rt::System::new().block_on(h.stop(true));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

/// An error starting a server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on `{addr}`: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("the server thread did not start: {0}")]
    Thread(String),
}

/// Starts a server on `bind` (e.g. `127.0.0.1:0`) on a new thread with its own actix
/// system, over `world` and `journal`.
pub fn spawn(
    config: ServerConfig,
    bind: &str,
    world: World,
    journal: Arc<dyn Journal>,
) -> Result<RunningServer, StartError> {
    let listener = TcpListener::bind(bind).map_err(|source| StartError::Bind {
        addr: bind.to_string(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: bind.to_string(),
        source,
    })?;
    let store = Arc::new(Store::new(world, journal));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = store.clone();
    let thread = std::thread::Builder::new()
        .name("delegraph-http".into())
        .spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let partitions = Arc::new(Partitions::start(config.partitions, s.clone()));
                let clock = config.clock_interval.map(|d| start_clock(partitions.clone(), d));
                let state = app_state(&config, partitions.clone());
                let server = match http_server(state, listener, config.workers, config.pin_workers) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return Err(e);
                    }
                };
                let _ = tx.send(Ok(server.handle()));
                let res = server.await;
                if let Some(c) = clock {
                    c.abort();
                }
                partitions.stop();
                // No checkpoint: tests restart on the same directory to exercise replay.
                let _ = s.close(false);
                res
            })
        })
        .map_err(|e| StartError::Thread(e.to_string()))?;
    let handle = match rx.recv() {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(StartError::Thread(e)),
        Err(e) => return Err(StartError::Thread(e.to_string())),
    };
    Ok(RunningServer {
        addr,
        store,
        handle,
        thread: Some(thread),
    })
}
