//! Server-Sent Events. A job stream subscribes to job events *before* it reads the
//! backlog, so no line falls between the two; event ids are log seqs and
//! `Last-Event-ID` resumes after one. Lines a slow client missed are refilled from
//! the job's buffer; a `lagged` event says which seqs are gone for good.
//!
//! May import: `auth`, `command`, `jobs` (events and log buffers).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{bearer, error, AppState};
use crate::auth::Role;
use crate::command::{ApiError, ErrorCode, JobId};
use crate::jobs::{JobEngine, JobEvent, JobState, PublishedLine};

/// Events buffered per client before the client counts as slow (and lines it
/// misses are refilled from the job's buffer).
const CLIENT_BUFFER: usize = 256;

/// A live line, reusing the JSON the engine rendered once for every listener.
fn published_event(l: &PublishedLine) -> Event {
    Event::default()
        .event("log")
        .id(l.line.seq.to_string())
        .data(String::from_utf8_lossy(&l.json))
}

/// A slot for one more event stream, or the answer for a client over the cap.
fn stream_slot(st: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    st.streams.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("bmqtt_http_streams_refused_total").increment(1);
        ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "too many event streams are open (http.max_event_streams = {}); retry later",
                st.settings.http.max_event_streams
            ),
        )
    })
}

/// Which kinds of event a job stream carries (`?kinds=log,state,result`; all by
/// default). `lagged` belongs to `log`. The stream still ends after the result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kinds {
    log: bool,
    state: bool,
    result: bool,
}

impl Kinds {
    const ALL: Kinds = Kinds {
        log: true,
        state: true,
        result: true,
    };

    /// Parses the `kinds` query value: a comma-separated, non-empty subset.
    pub fn parse(v: Option<&str>) -> Result<Kinds, ApiError> {
        let Some(v) = v else {
            return Ok(Kinds::ALL);
        };
        let mut k = Kinds {
            log: false,
            state: false,
            result: false,
        };
        for part in v.split(',').map(str::trim) {
            match part {
                "log" => k.log = true,
                "state" => k.state = true,
                "result" => k.result = true,
                other => {
                    return Err(ApiError::invalid(format!(
                        "kinds: {} is not one of log, state, result",
                        crate::command::shorten(other)
                    )))
                }
            }
        }
        Ok(k)
    }
}

/// The query of a job's event stream.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    kinds: Option<String>,
}

fn keep_alive() -> KeepAlive {
    KeepAlive::new()
        .interval(Duration::from_secs(15))
        .text("keep-alive")
}

pub async fn job_events(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> HttpResponse {
    if let Err(e) = st.service.authorize(bearer(&headers), Role::Read) {
        return error(e);
    }
    let kinds = match query
        .map_err(|_| ApiError::invalid("the query may only hold kinds=log,state,result"))
        .and_then(|Query(q)| Kinds::parse(q.kinds.as_deref()))
    {
        Ok(k) => k,
        Err(e) => return error(e),
    };
    let id = match JobId::parse(&job_id) {
        Ok(id) => id,
        Err(e) => return error(ApiError::invalid(e.0)),
    };
    let engine = st.service.engine().clone();
    // Subscribe first, then look: whatever happens in between is in the channel.
    let events = engine.subscribe();
    let Some(record) = engine.get(id) else {
        return error(ApiError::new(ErrorCode::NotFound, format!("no job {id}")));
    };
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let slot = match stream_slot(&st) {
        Ok(slot) => slot,
        Err(e) => return error(e),
    };
    let (tx, rx) = mpsc::channel::<Event>(CLIENT_BUFFER);
    let shutdown = st.shutdown.clone();
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            _ = stream_job(engine, id, kinds, (record.state.is_final(), after), events, &tx) => {}
            _ = shutdown.cancelled() => {}
            _ = tx.closed() => {}
        }
    });
    let stream = ReceiverStream::new(rx);
    Sse::new(futures_util::StreamExt::map(stream, Ok::<_, Infallible>))
        .keep_alive(keep_alive())
        .into_response()
}

/// Sends the job's state, its lines after `after`, live lines, and the result.
async fn stream_job(
    engine: JobEngine,
    id: JobId,
    kinds: Kinds,
    (already_final, after): (bool, u64),
    mut events: broadcast::Receiver<JobEvent>,
    tx: &mpsc::Sender<Event>,
) {
    // Without `log`, lines are neither sent nor refilled: `last` stays ahead of them.
    let mut last = if kinds.log { after } else { u64::MAX };
    let send_result = |engine, id, tx| async move {
        if kinds.result {
            send_result(engine, id, tx).await;
        }
    };
    if let Some(rec) = engine.get(id).filter(|_| kinds.state) {
        let _ = tx
            .send(
                Event::default()
                    .event("state")
                    .json_data(&rec)
                    .unwrap_or_default(),
            )
            .await;
    }
    if refill(&engine, id, &mut last, tx).await.is_err() {
        return;
    }
    if already_final {
        send_result(&engine, id, tx).await;
        return;
    }
    loop {
        match events.recv().await {
            Ok(JobEvent::Log(l)) if l.job_id == id => {
                let line = &l.line;
                if line.seq <= last {
                    continue;
                }
                if line.seq > last + 1 && refill(&engine, id, &mut last, tx).await.is_err() {
                    return;
                }
                if line.seq > last {
                    last = line.seq;
                    if tx.send(published_event(&l)).await.is_err() {
                        return;
                    }
                }
            }
            Ok(JobEvent::State(rec)) if rec.job_id == id && kinds.state => {
                let ev = Event::default()
                    .event("state")
                    .json_data(&*rec)
                    .unwrap_or_default();
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            Ok(JobEvent::Result(r)) if r.record.job_id == id => {
                // Lines that raced the result are still in the store or buffer.
                let _ = refill(&engine, id, &mut last, tx).await;
                send_result(&engine, id, tx).await;
                return;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                if refill(&engine, id, &mut last, tx).await.is_err() {
                    return;
                }
                if engine.get(id).is_some_and(|r| r.state.is_final()) {
                    send_result(&engine, id, tx).await;
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Lines sent per refill step: a client far behind never makes the worker copy
/// the whole buffer at once (a thousand lagging clients would hold a thousand
/// copies).
const REFILL_PAGE: usize = 256;

/// Sends every line after `last` still kept, and a `lagged` event for seqs that
/// are gone. `Err` when the client went away.
async fn refill(
    engine: &JobEngine,
    id: JobId,
    last: &mut u64,
    tx: &mpsc::Sender<Event>,
) -> Result<(), ()> {
    loop {
        let lines = engine
            .log_shared(id, *last, REFILL_PAGE)
            .unwrap_or_default();
        let Some(first) = lines.first() else {
            return announce_unkept(engine, id, last, tx).await;
        };
        if first.line.seq > *last + 1 {
            let ev = Event::default()
                .event("lagged")
                .json_data(json!({ "missed_from": *last + 1, "missed_to": first.line.seq - 1 }))
                .unwrap_or_default();
            tx.send(ev).await.map_err(|_| ())?;
        }
        let full = lines.len() == REFILL_PAGE;
        for line in lines {
            *last = line.line.seq;
            tx.send(published_event(&line)).await.map_err(|_| ())?;
        }
        if !full {
            return Ok(());
        }
    }
}

/// A finished job whose last lines are no longer kept (more than
/// `jobs.stored_lines`): the seqs up to its line count are announced as `lagged`,
/// so a stream never ends short without saying so.
async fn announce_unkept(
    engine: &JobEngine,
    id: JobId,
    last: &mut u64,
    tx: &mpsc::Sender<Event>,
) -> Result<(), ()> {
    let Some(total) = engine
        .get(id)
        .filter(|r| r.state.is_final())
        .map(|r| r.lines)
    else {
        return Ok(());
    };
    if total > *last && *last != u64::MAX {
        let ev = Event::default()
            .event("lagged")
            .json_data(json!({ "missed_from": *last + 1, "missed_to": total }))
            .unwrap_or_default();
        tx.send(ev).await.map_err(|_| ())?;
        *last = total;
    }
    Ok(())
}

async fn send_result(engine: &JobEngine, id: JobId, tx: &mpsc::Sender<Event>) {
    if let Some(result) = engine.result(id) {
        let _ = tx
            .send(
                Event::default()
                    .event("result")
                    .json_data(&result)
                    .unwrap_or_default(),
            )
            .await;
    }
}

/// Every job state change, for dashboards.
pub async fn all_events(State(st): State<AppState>, headers: HeaderMap) -> HttpResponse {
    if let Err(e) = st.service.authorize(bearer(&headers), Role::Read) {
        return error(e);
    }
    let slot = match stream_slot(&st) {
        Ok(slot) => slot,
        Err(e) => return error(e),
    };
    let mut events = st.service.engine().subscribe();
    let (tx, rx) = mpsc::channel::<Event>(CLIENT_BUFFER);
    let shutdown = st.shutdown.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let mut seen: std::collections::HashMap<JobId, JobState> = Default::default();
        loop {
            let ev = tokio::select! {
                e = events.recv() => e,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
            };
            match ev {
                Ok(JobEvent::State(rec)) => {
                    if seen.insert(rec.job_id, rec.state) == Some(rec.state) {
                        continue;
                    }
                    if rec.state.is_final() {
                        seen.remove(&rec.job_id);
                    }
                    let e = Event::default()
                        .event("state")
                        .json_data(&*rec)
                        .unwrap_or_default();
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let e = Event::default()
                        .event("lagged")
                        .json_data(json!({ "missed_events": n }))
                        .unwrap_or_default();
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Sse::new(futures_util::StreamExt::map(
        ReceiverStream::new(rx),
        Ok::<_, Infallible>,
    ))
    .keep_alive(keep_alive())
    .into_response()
}
