//! The HTTP sidecar (axum): the same commands as MQTT at
//! `POST /api/v1/cmd/<group>/<action>`, job views, Server-Sent Events, health,
//! readiness, Prometheus metrics and the OpenAPI document.
//!
//! Like the MQTT adapter it only translates: every command goes through
//! [`Service::handle`], so roles, rate limits, deduplication and the audit trail are
//! the same on both transports.
//!
//! May import: `service`, `command`, `auth`, `config`, `jobs`, `metrics`, `exec`
//! (the readiness probe) and `mqtt` (the link's state).

mod conn;
mod health;
pub mod openapi;
mod sse;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

use crate::auth::Role;
use crate::command::{ApiError, CommandName, ErrorCode, JobId, Kind, Response};
use crate::config::Settings;
use crate::mqtt::MqttStatus;
use crate::service::{Request, Service, Transport};

/// Every route, as the router and the OpenAPI document name them.
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/cmd/{group}/{action}"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{job_id}"),
    ("get", "/api/v1/jobs/{job_id}/log"),
    ("get", "/api/v1/jobs/{job_id}/events"),
    ("get", "/api/v1/events"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
];

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The request pipeline every API route ends in.
    pub service: Arc<Service>,
    /// The worker's settings (`[http]` above all).
    pub settings: Arc<Settings>,
    /// The MQTT link's state, for `/readyz`; `None` counts as not connected.
    pub mqtt: Option<Arc<MqttStatus>>,
    /// The Prometheus recorder `/metrics` renders; `None` answers 503.
    pub metrics: Option<PrometheusHandle>,
    /// Fires when the worker shuts down: event streams end, the server stops.
    pub shutdown: CancellationToken,
    readiness: Arc<health::Readiness>,
    /// One permit per open event stream (`http.max_event_streams`).
    streams: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    /// The shared state; the event-stream permits come from `http.max_event_streams`.
    pub fn new(
        service: Arc<Service>,
        settings: Arc<Settings>,
        mqtt: Option<Arc<MqttStatus>>,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            service,
            mqtt,
            metrics,
            streams: Arc::new(tokio::sync::Semaphore::new(settings.http.max_event_streams)),
            settings,
            shutdown,
            readiness: Arc::default(),
        }
    }
}

/// The router (exposed for tests that compare it with the OpenAPI document).
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.settings.http.request_timeout_secs.max(1));
    let api = Router::new()
        .route(ROUTES[0].1, post(command))
        .route(ROUTES[1].1, get(jobs))
        .route(ROUTES[2].1, get(job))
        .route(ROUTES[3].1, get(job_log))
        .route(ROUTES[4].1, get(sse::job_events))
        .route(ROUTES[5].1, get(sse::all_events))
        .layer(middleware::from_fn_with_state(state.clone(), from_header));
    Router::new()
        .merge(api)
        .route(ROUTES[6].1, get(openapi_json))
        .route(ROUTES[7].1, get(health::healthz))
        .route(ROUTES[8].1, get(health::readyz))
        .route(ROUTES[9].1, get(health::metrics))
        .layer(DefaultBodyLimit::max(state.settings.http.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        .with_state(state)
}

pub use conn::connection_cap;

/// Serves until `state.shutdown` fires; in-flight requests finish, streams end.
/// `max_connections` comes from [`connection_cap`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    max_connections: usize,
) -> std::io::Result<()> {
    let shutdown = state.shutdown.clone();
    let limits = conn::ConnLimits::new(&state.settings.http, max_connections);
    conn::serve(listener, router(state), limits, shutdown).await
}

/// Renders a wire response with the status code of its error code.
pub(crate) fn respond(resp: Response, kind: Kind) -> HttpResponse {
    let status = match resp.error_code() {
        Some(code) => {
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        None if kind == Kind::Job && resp.job_id.is_some() => StatusCode::ACCEPTED,
        None => StatusCode::OK,
    };
    let retry = resp
        .data
        .as_ref()
        .and_then(|d| d.get("retry_after_secs"))
        .and_then(Value::as_u64)
        .filter(|_| status == StatusCode::TOO_MANY_REQUESTS);
    let mut out = (status, Json(resp)).into_response();
    if let Some(secs) = retry {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            out.headers_mut().insert("retry-after", v);
        }
    }
    out
}

pub(crate) fn error(err: ApiError) -> HttpResponse {
    respond(Response::error(None, err), Kind::Immediate)
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer)
}

/// The predecessor's second factor: `X-From-NodeRed` must match when configured.
async fn from_header(State(st): State<AppState>, req: HttpRequest, next: Next) -> HttpResponse {
    if let Some(expected) = &st.settings.http.from_header {
        let got = req
            .headers()
            .get("x-from-nodered")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let ok: bool = got.ct_eq(expected.expose().as_bytes()).into();
        if !ok {
            return error(ApiError::new(
                ErrorCode::Forbidden,
                "missing or wrong X-From-NodeRed header",
            ));
        }
    }
    next.run(req).await
}

async fn command(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((group, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let name = format!("{group}/{action}");
    let kind = CommandName::parse(&name).map_or(Kind::Immediate, CommandName::kind);
    let client = peer.ip().to_string();
    let resp = st
        .service
        .handle(Request {
            transport: Transport::Http,
            client: Some(&client),
            command: &name,
            body: &body,
            retained: false,
            bearer: bearer(&headers),
            trusted: None,
        })
        .await;
    respond(resp, kind)
}

/// A GET view answered by an immediate command, so it shares its checks.
async fn as_command(
    st: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    command: &str,
    fields: Map<String, Value>,
) -> HttpResponse {
    let body = serde_json::to_vec(&Value::Object(fields)).unwrap_or_default();
    let client = peer.ip().to_string();
    let resp = st
        .service
        .handle(Request {
            transport: Transport::Http,
            client: Some(&client),
            command,
            body: &body,
            retained: false,
            bearer: bearer(headers),
            trusted: None,
        })
        .await;
    respond(resp, Kind::Immediate)
}

/// Query values as JSON: numbers where they parse, strings otherwise (the command
/// then refuses a wrong type with a clear message).
fn query_fields(q: HashMap<String, String>) -> Map<String, Value> {
    q.into_iter()
        .map(|(k, v)| {
            let value = v
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or(Value::String(v));
            (k, value)
        })
        .collect()
}

async fn jobs(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResponse {
    as_command(&st, peer, &headers, "job/list", query_fields(q)).await
}

async fn job(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> HttpResponse {
    let mut fields = Map::new();
    fields.insert("job_id".into(), Value::String(job_id));
    as_command(&st, peer, &headers, "job/get", fields).await
}

/// Most lines one poll returns.
const LOG_LIMIT_MAX: usize = 10_000;

async fn job_log(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResponse {
    if let Err(e) = st.service.authorize(bearer(&headers), Role::Read) {
        return error(e);
    }
    let id = match JobId::parse(&job_id) {
        Ok(id) => id,
        Err(e) => return error(ApiError::invalid(e.0)),
    };
    let number = |k: &str| -> Result<Option<u64>, ApiError> {
        q.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| ApiError::invalid(format!("{k} must be a non-negative integer")))
            })
            .transpose()
    };
    let (after, limit) = match (number("after"), number("limit")) {
        (Ok(a), Ok(l)) => (
            a.unwrap_or(0),
            l.map_or(1000, |l| l as usize).min(LOG_LIMIT_MAX),
        ),
        (Err(e), _) | (_, Err(e)) => return error(e),
    };
    if let Some(unknown) = q.keys().find(|k| !["after", "limit"].contains(&k.as_str())) {
        return error(ApiError::invalid(format!("unknown parameter {unknown}")));
    }
    let Some(lines) = st.service.engine().log(id, after, limit) else {
        return error(ApiError::new(ErrorCode::NotFound, format!("no job {id}")));
    };
    let next = lines.last().map_or(after, |l| l.seq);
    (
        StatusCode::OK,
        Json(json!({ "job_id": id, "lines": lines, "next_after": next })),
    )
        .into_response()
}

async fn openapi_json() -> HttpResponse {
    Json(openapi::document()).into_response()
}
