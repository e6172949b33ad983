//! `/healthz` (alive), `/readyz` (each part that must work) and `/metrics`.
//!
//! All three answer without a token, so none may do work per request that a flood
//! could multiply: every probe behind them runs once at a time, and callers that
//! arrive meanwhile share its answer (single-flight); a probe's answer is then
//! reused for a while. Sixty concurrent `/readyz` used to start sixty
//! `borgmatic --version`.
//!
//! May import: `auth`, `exec::borgmatic` (the version probe), `metrics` (rendering).

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde_json::json;

use super::{bearer, error, AppState};
use crate::auth::Role;

/// How long a borgmatic check result is reused.
const BORGMATIC_CHECK_TTL: Duration = Duration::from_secs(30);
/// How long the store's write check is reused (it takes the store's write lock).
const STORE_CHECK_TTL: Duration = Duration::from_secs(2);
/// How long the Docker engine's answer is reused.
const DOCKER_CHECK_TTL: Duration = Duration::from_secs(5);

type Probed = Result<String, String>;

/// One probe's last answer and the probe in flight, if any.
#[derive(Default)]
pub(super) struct Probe {
    state: Mutex<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    last: Option<(Instant, Probed)>,
    running: Option<Shared<BoxFuture<'static, Probed>>>,
}

impl Probe {
    /// The answer of `probe`, reused for `ttl` (zero: only shared while it runs).
    /// The probe runs as its own task: a caller that gives up does not cancel it,
    /// and the next caller joins it instead of starting another.
    async fn get<F>(&self, ttl: Duration, probe: impl FnOnce() -> F) -> Probed
    where
        F: Future<Output = Probed> + Send + 'static,
    {
        let running = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, answer)) = &st.last {
                if at.elapsed() < ttl {
                    return answer.clone();
                }
            }
            match &st.running {
                Some(r) => r.clone(),
                None => {
                    let task = tokio::spawn(probe());
                    let r = async move { task.await.unwrap_or_else(|e| Err(e.to_string())) }
                        .boxed()
                        .shared();
                    st.running = Some(r.clone());
                    r
                }
            }
        };
        let answer = running.clone().await;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.running.as_ref().is_some_and(|r| r.ptr_eq(&running)) {
            st.running = None;
            st.last = Some((Instant::now(), answer.clone()));
        }
        answer
    }
}

#[derive(Default)]
pub(super) struct Readiness {
    borgmatic: Probe,
    store: Probe,
    docker: Probe,
    metrics: Probe,
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(st): State<AppState>) -> HttpResponse {
    let mqtt = st.mqtt.as_ref().is_some_and(|m| m.connected());
    let binary = st.settings.borgmatic.binary.clone();
    let borgmatic = st
        .readiness
        .borgmatic
        .get(BORGMATIC_CHECK_TTL, || async move {
            crate::exec::borgmatic::check_version(&binary)
                .await
                .map(|v| v.to_string())
                .map_err(|e| e.to_string())
        })
        .await;
    let engine = st.service.engine().clone();
    let store = st
        .readiness
        .store
        .get(STORE_CHECK_TTL, || async move {
            // The probe writes (a row and a synced file): a full or read-only disk
            // fails it, named as such.
            match tokio::task::spawn_blocking(move || engine.store_check()).await {
                Ok(Ok(())) => Ok("writable".to_string()),
                Ok(Err(why)) => Err(format!("the job store refuses writes: {why}")),
                Err(_) => Err("the job store probe failed".to_string()),
            }
        })
        .await;
    let mut parts = serde_json::Map::new();
    parts.insert(
        "mqtt".into(),
        json!({ "ok": mqtt, "detail": if mqtt { "connected" } else { "not connected to the broker" } }),
    );
    parts.insert(
        "borgmatic".into(),
        match &borgmatic {
            Ok(v) => json!({ "ok": true, "detail": format!("borgmatic {v}") }),
            Err(e) => json!({ "ok": false, "detail": e }),
        },
    );
    parts.insert(
        "store".into(),
        match &store {
            Ok(d) | Err(d) => json!({ "ok": store.is_ok(), "detail": d }),
        },
    );
    let mut ready = mqtt && borgmatic.is_ok() && store.is_ok();
    if st.settings.docker.enabled {
        let service = st.service.clone();
        let docker = st
            .readiness
            .docker
            .get(DOCKER_CHECK_TTL, || async move {
                match tokio::time::timeout(Duration::from_secs(5), service.docker().ping()).await {
                    Ok(Ok(v)) => Ok(format!("engine {v}")),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 5s".to_string()),
                }
            })
            .await;
        ready &= docker.is_ok();
        let part = match &docker {
            Ok(d) | Err(d) => json!({ "ok": docker.is_ok(), "detail": d }),
        };
        parts.insert("docker".into(), part);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "parts": parts }))).into_response()
}

pub async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> HttpResponse {
    if st.settings.http.metrics_require_token {
        if let Err(e) = st.service.authorize(bearer(&headers), Role::Read) {
            return error(e);
        }
    }
    let Some(handle) = &st.metrics else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response();
    };
    // Scrapes that arrive while one renders share its text.
    let (handle, engine, mqtt) = (handle.clone(), st.service.engine().clone(), st.mqtt.clone());
    let text = st
        .readiness
        .metrics
        .get(Duration::ZERO, || async move {
            let link = mqtt.as_deref().map(|m| crate::metrics::LinkStatus {
                connected: m.connected(),
                reconnects: m.reconnects(),
            });
            Ok(crate::metrics::render(&handle, &engine, link))
        })
        .await
        .unwrap_or_default();
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}
