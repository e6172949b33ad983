//! `/healthz` (alive), `/readyz` (each part that must work) and `/metrics`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::Json;
use serde_json::json;

use super::{bearer, error, AppState};
use crate::auth::Role;

/// How long a borgmatic check result is reused.
const BORGMATIC_CHECK_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Readiness {
    borgmatic: Mutex<Option<(Instant, Result<String, String>)>>,
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(st): State<AppState>) -> HttpResponse {
    let mqtt = st.mqtt.as_ref().is_some_and(|m| m.connected());
    let borgmatic = borgmatic_runnable(&st).await;
    let store = st.service.engine().store_writable();
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
        json!({ "ok": store, "detail": if store { "writable" } else { "the job store refuses writes" } }),
    );
    let mut ready = mqtt && borgmatic.is_ok() && store;
    if st.settings.docker.enabled {
        let docker = tokio::time::timeout(Duration::from_secs(5), st.service.docker().ping()).await;
        let part = match docker {
            Ok(Ok(v)) => json!({ "ok": true, "detail": format!("engine {v}") }),
            Ok(Err(e)) => json!({ "ok": false, "detail": e.to_string() }),
            Err(_) => json!({ "ok": false, "detail": "no answer within 5s" }),
        };
        ready &= part["ok"] == true;
        parts.insert("docker".into(), part);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready, "parts": parts }))).into_response()
}

async fn borgmatic_runnable(st: &AppState) -> Result<String, String> {
    if let Ok(guard) = st.readiness.borgmatic.lock() {
        if let Some((at, r)) = guard.as_ref() {
            if at.elapsed() < BORGMATIC_CHECK_TTL {
                return r.clone();
            }
        }
    }
    let r = crate::exec::borgmatic::check_version(&st.settings.borgmatic.binary)
        .await
        .map(|v| v.to_string())
        .map_err(|e| e.to_string());
    if let Ok(mut guard) = st.readiness.borgmatic.lock() {
        *guard = Some((Instant::now(), r.clone()));
    }
    r
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
    let text = crate::metrics::render(handle, st.service.engine(), st.mqtt.as_deref());
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}
