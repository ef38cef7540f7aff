//! Accepting connections and turning each request into a response. Owns the connection
//! limits, request ids, the access log line, and graceful shutdown (stop accepting, let
//! in-flight requests and streams finish within `shutdown_grace`). Dispatch is one
//! `match` on [`Route`]. Every connection is served by hyper ([`conn`]).

use crate::admin;
use crate::app::AppState;
use crate::body::{Body, ReqBody};
use crate::error::{ApiError, Shape};
use crate::gate::{Gate, Slot};
use crate::keys::unix_ms;
use crate::logs::{LogLane, Trace};
use crate::proxy;
use crate::router::{self, Auth, GeminiCall, OpenAiCall, Route, RouteError};
use crate::ui;
use crate::upstream::Lane;
use http::{HeaderName, HeaderValue, Request, Response, header};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod accept;
mod conn;
mod own;

use accept::Next;
use own::{health, hsts, metrics, metrics_refusal};

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything (one listener).
    All,
    /// Proxy routes and `/healthz` (with a separate admin listener).
    Proxy,
    /// Admin API, admin page, `/metrics` and `/healthz`.
    Admin,
}

/// Serves `listener` until `shutdown`, then drains. Several serving threads may accept on
/// the same socket; `gate` (the connection caps) is shared by all of them. A serving
/// thread passes its `lane` (0-based): it then takes connections other threads hand it
/// and hands some of its own on, so open connections stay even (see `spread`).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    role: Role,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    lane: Option<usize>,
) {
    let thread = Thread {
        server: conn::Server::new(&state.config.server),
        // This thread's connections wait on a token of their own: the shared one's lock
        // would be taken by every serving thread for every connection.
        stopping: shutdown.child_token(),
        role,
        lane,
        upstream: lane.map_or(Lane::SHARED, Lane::serving),
        logs: LogLane::new(state.logs.clone(), lane),
        sessions: Arc::new(crate::live::Sessions::default()),
        state,
    };
    let connections = TaskTracker::new();
    let mut inbox = lane.and_then(|n| thread.state.spread.take_inbox(n));
    loop {
        let next = accept::next(&listener, &gate, &thread.state, lane, &mut inbox, &shutdown);
        match next.await {
            Next::Serve(tcp, peer, slot) => thread.spawn(&connections, tcp, peer, slot),
            Next::Again => {}
            Next::Stop => break,
        }
    }
    drop(listener);
    thread.drain(connections).await;
}

/// What a serving thread hands each of its connections.
struct Thread {
    state: Arc<AppState>,
    server: conn::Server,
    stopping: CancellationToken,
    role: Role,
    lane: Option<usize>,
    /// The thread's own upstream connections, named in each request it serves.
    upstream: Lane,
    /// This thread's side of the request log, named in each request it serves.
    logs: Arc<LogLane>,
    /// This thread's Live sessions: they outlive the requests that opened them.
    sessions: Arc<crate::live::Sessions>,
}

impl Thread {
    /// Serves one accepted connection on a task of `connections`, over TLS when configured.
    fn spawn(&self, connections: &TaskTracker, tcp: TcpStream, peer: SocketAddr, slot: Slot) {
        let _ = tcp.set_nodelay(true);
        let (st, server) = (self.state.clone(), self.server.clone());
        let (stopping, role, upstream_lane) = (self.stopping.clone(), self.role, self.upstream);
        let log_lane = self.logs.clone();
        let counted = self.lane.map(|n| Counted(self.state.clone(), n));
        // The connection's place and count, handed to a Live session if it upgrades.
        let live = Arc::new(crate::live::Upgrades::new(
            self.sessions.clone(),
            Box::new((slot, counted)),
        ));
        connections.spawn(async move {
            let tls = st.tls.clone();
            let svc = move |tls_on: bool| {
                move |req: Request<ReqBody>| {
                    let (st, live) = (st.clone(), live.clone());
                    let to = Serving {
                        peer,
                        role,
                        upstream: upstream_lane,
                        logs: log_lane.clone(),
                        tls: tls_on,
                    };
                    async move { handle(&st, req, to, &live).await }
                }
            };
            match tls {
                None => {
                    let proto = conn::Proto::sniff(&tcp, server.handshake_timeout()).await;
                    server.serve(tcp, proto, svc(false), &stopping).await
                }
                // Boxed: a plain connection's task is then the size of the plain arm,
                // not of the TLS handshake and stream.
                Some(tls) => {
                    Box::pin(async move {
                        let handshake = server.handshake_timeout();
                        match tokio::time::timeout(handshake, tls.acceptor.accept(tcp)).await {
                            // A CA's TLS-ALPN-01 check ends with the handshake.
                            Ok(Ok(stream)) if crate::tls::is_challenge(&stream) => {}
                            Ok(Ok(stream)) => {
                                let proto = match stream.get_ref().1.alpn_protocol() {
                                    Some(b"h2") => conn::Proto::Either,
                                    _ => conn::Proto::Http1,
                                };
                                server.serve(stream, proto, svc(true), &stopping).await
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    })
                    .await
                }
            }
        });
    }

    /// Lets the open connections finish within `shutdown_grace`, then the Live sessions
    /// within what is left of it.
    async fn drain(self, connections: TaskTracker) {
        let grace = self.state.config.server.shutdown_grace;
        tracing::info!(?grace, "draining connections");
        let deadline = tokio::time::Instant::now() + grace;
        connections.close();
        tokio::select! {
            _ = connections.wait() => tracing::info!("all connections closed"),
            _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace period over; closing the rest"),
        }
        self.sessions
            .drain(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
    }
}

/// Where a request came in: the connection's peer and TLS, the listener's role, the
/// serving thread's upstream lane and its side of the request log.
struct Serving {
    peer: SocketAddr,
    role: Role,
    upstream: Lane,
    logs: Arc<LogLane>,
    tls: bool,
}

/// One open connection on a serving thread's lane, while it lives.
struct Counted(Arc<AppState>, usize);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.spread.closed(self.1);
    }
}

async fn handle(
    state: &Arc<AppState>,
    mut req: Request<ReqBody>,
    to: Serving,
    conn: &crate::live::Upgrades,
) -> Response<Body> {
    let Serving {
        peer,
        role,
        upstream,
        logs,
        tls,
    } = to;
    req.extensions_mut().insert(upstream);
    crate::router::clean_uri(req.uri_mut());
    req.extensions_mut().insert(crate::client_addr::Conn {
        peer: peer.ip(),
        tls,
    });
    let now = unix_ms();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut trace = Trace::new(crate::store::new_request_id(now), now);
    let mut resp = dispatch(state, req, &path, (peer.ip(), role, conn), &mut trace).await;
    if let Ok(v) = HeaderValue::from_str(&trace.request_id) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    if tls {
        hsts(state, &mut resp);
    }
    let status = resp.status().as_u16();
    // Its own target, so `log_level = "info,access=off"` silences just this line.
    tracing::info!(
        target: "access",
        request_id = trace.request_id,
        %peer,
        %method,
        path = shown_path(&path),
        status,
        latency_ms = trace.started.elapsed().as_secs_f64() * 1000.0,
        user = trace.user.as_deref().unwrap_or("-"),
        key = trace.attempts.last().map_or("-", |a| a.key.brief.as_str()),
        attempts = trace.attempts.len(),
        "request"
    );
    if trace.route.is_some() {
        log_when_done(&logs, trace, &mut resp, status);
    }
    resp
}

/// Writes the request's log record now, or when a relayed answer's last byte has gone.
fn log_when_done(logs: &Arc<LogLane>, trace: Trace, resp: &mut Response<Body>, status: u16) {
    match resp.body_mut() {
        Body::Relay(relay) => {
            let logs = logs.clone();
            relay.on_finish(Box::new(move |f| {
                let relayed = crate::logs::Relayed {
                    truncated: f.truncated.is_some(),
                    cancelled: f.cancelled,
                    first_byte: f.first_byte,
                    tokens: f.tokens,
                    bytes_down: f.bytes,
                };
                logs.record(trace.finish_relay(status, relayed));
            }));
        }
        body => {
            let bytes_down = http_body::Body::size_hint(body).exact().unwrap_or(0);
            logs.record(trace.finish_now(status, bytes_down))
        }
    }
}

async fn dispatch(
    state: &Arc<AppState>,
    req: Request<ReqBody>,
    path: &str,
    (peer, role, conn): (std::net::IpAddr, Role, &crate::live::Upgrades),
    trace: &mut Trace,
) -> Response<Body> {
    let parsed = Route::parse(req.method(), path);
    let shape = parsed
        .as_ref()
        .map_or_else(|_| router::shape_of(path), Route::shape);
    if !one_host(&req) {
        let msg = "An HTTP/1.1 request needs exactly one Host header.";
        return ApiError::BadRequest(msg.into()).into_response(shape);
    }
    let route = match parsed {
        Ok(route) if serves(role, &route) => route,
        Ok(_) => return ApiError::NotFound.into_response(shape),
        Err(RouteError::NotFound) => return ApiError::NotFound.into_response(shape),
        Err(RouteError::MethodNotAllowed) => {
            return ApiError::MethodNotAllowed.into_response(shape);
        }
    };
    // The proxy checks user keys and `admin` its session; the metrics token is checked here.
    if route.auth() == Auth::MetricsToken {
        if let Some(refused) = metrics_refusal(state, &req, role) {
            return refused;
        }
    }
    match route {
        Route::Healthz => health(state),
        Route::Metrics => metrics(state),
        Route::Gemini { call, model } if wants_openai_models(&req, call) => {
            let model = model.map(str::to_owned);
            proxy::openai::handle(state, req, OpenAiCall::Models, model, trace)
                .await
                .unwrap_or_else(|e| e.into_response(Shape::OpenAi))
        }
        Route::Gemini { call, model } => {
            let model = model.unwrap_or("").to_owned();
            proxy::gemini(state, req, call, model, trace)
                .await
                .unwrap_or_else(|e| e.into_response(shape))
        }
        Route::OpenAi(call) => proxy::openai::handle(state, req, call, None, trace)
            .await
            .unwrap_or_else(|e| e.into_response(shape)),
        Route::Live(call) => crate::live::handle(state, req, call, trace, conn).await,
        Route::Admin(route) => admin::handle(state, req, route, peer).await,
        Route::Ui(path) => ui::serve(path, req.headers()),
    }
}

/// RFC 9112: an HTTP/1.1 request without a `Host`, or with two, is answered 400.
fn one_host(req: &Request<ReqBody>) -> bool {
    req.version() != http::Version::HTTP_11
        || req.headers().get_all(header::HOST).iter().count() == 1
}

fn serves(role: Role, route: &Route<'_>) -> bool {
    let admin_side = matches!(route, Route::Admin(_) | Route::Ui(_) | Route::Metrics);
    match role {
        Role::All => true,
        Role::Proxy => !admin_side,
        Role::Admin => admin_side || *route == Route::Healthz,
    }
}

/// `GET /v1/models[/{id}]` is shared: a Bearer caller is an OpenAI client and gets
/// OpenAI's list shape; a caller using `x-goog-api-key` or `?key=` (google-genai) gets
/// Gemini's.
fn wants_openai_models(req: &Request<ReqBody>, call: GeminiCall) -> bool {
    matches!(call, GeminiCall::ListModels | GeminiCall::GetModel)
        && router::shared_models(req.uri().path())
        && !req.headers().contains_key("x-goog-api-key")
        && !req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")))
        && crate::auth::bearer(req.headers()).is_some()
}

/// The path as the access line shows it: at most [`SHOWN_PATH`] bytes, so a client
/// cannot write a 60 KB model name into the journal with every request.
fn shown_path(path: &str) -> &str {
    let mut end = path.len().min(SHOWN_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

const SHOWN_PATH: usize = 256;
