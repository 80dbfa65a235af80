//! The control API under `/_agent/` on the proxy's loopback listener: what `run` and
//! `status` use. Loopback only, like the proxy; it never returns a secret.

// Handlers return ready responses as errors: their size does not matter on this path.
#![allow(clippy::result_large_err)]

use crate::cold::ColdEntry;
use crate::context::{self, Assembler};
use crate::daemon::Shared;
use crate::mesh::Connection;
use crate::outbox::OutboxStatus;
use crate::stats::TaskStats;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use gemfleet_protocol::{Context, Payload, TaskEvent, TaskId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub agent_id: String,
    pub version: String,
    pub pid: u32,
    pub proxy: String,
    pub upstream: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub broker: ConnectionReport,
    pub outbox: Option<OutboxReport>,
    pub cold_keys: Vec<ColdReport>,
    pub cold_groups: Vec<ColdReport>,
    pub totals: TaskStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionReport {
    pub broker: String,
    pub connected: bool,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
    pub bad_messages: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxReport {
    pub depth: usize,
    pub pending_bytes: u64,
    pub max_bytes: u64,
    pub oldest_seq: Option<u64>,
    pub oldest_ts: Option<chrono::DateTime<chrono::Utc>>,
    pub watermark: u64,
    pub next_seq: u64,
    pub near_full: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColdReport {
    pub what: String,
    pub state: String,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    pub reason: Option<String>,
}

impl From<ColdEntry> for ColdReport {
    fn from(c: ColdEntry) -> Self {
        ColdReport {
            what: c.what,
            state: c.state,
            until: c.until,
            reason: c.reason,
        }
    }
}
impl From<Connection> for ConnectionReport {
    fn from(c: Connection) -> Self {
        ConnectionReport {
            broker: c.broker,
            connected: c.connected,
            since: c.since,
            last_error: c.last_error,
            bad_messages: c.bad_messages,
        }
    }
}
impl From<OutboxStatus> for OutboxReport {
    fn from(o: OutboxStatus) -> Self {
        OutboxReport {
            depth: o.depth,
            pending_bytes: o.pending_bytes,
            max_bytes: o.max_bytes,
            oldest_seq: o.oldest_seq,
            oldest_ts: o.oldest_ts,
            watermark: o.watermark,
            next_seq: o.next_seq,
            near_full: o.near_full,
        }
    }
}

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_agent/status", get(status))
        .route("/_agent/flush", post(flush))
        .route("/_agent/tasks/{task}/stats", get(task_stats))
        .route("/_agent/tasks/{task}/event", post(task_event))
        .route(
            "/_agent/tasks/{task}/context",
            get(load_context).put(save_context),
        )
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": msg.into()}))).into_response()
}

fn parse_task(t: &str) -> Result<TaskId, Response> {
    TaskId::parse(t).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))
}

pub fn report(sh: &Shared) -> StatusReport {
    let now = chrono::Utc::now();
    let (keys, groups) = sh
        .mesh
        .with_cold(|c| (c.cold_keys(now), c.cold_groups(now)))
        .unwrap_or_default();
    StatusReport {
        agent_id: sh.mesh.agent().to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        proxy: format!("http://{}", sh.addr),
        upstream: sh.upstream.clone(),
        started: sh.started,
        broker: sh.mesh.connection().into(),
        outbox: sh.mesh.outbox().status().map(Into::into),
        cold_keys: keys.into_iter().map(Into::into).collect(),
        cold_groups: groups.into_iter().map(Into::into).collect(),
        totals: sh.stats_mut(|s| s.all()).unwrap_or_default(),
    }
}

async fn status(State(sh): State<Arc<Shared>>) -> Json<StatusReport> {
    Json(report(&sh))
}

#[derive(Deserialize)]
struct FlushQuery {
    timeout_ms: Option<u64>,
}

async fn flush(State(sh): State<Arc<Shared>>, Query(q): Query<FlushQuery>) -> Response {
    let t = Duration::from_millis(
        q.timeout_ms
            .unwrap_or(sh.settings.flush_timeout_ms)
            .min(600_000),
    );
    let left = sh.mesh.flush(t).await;
    Json(serde_json::json!({"depth": left})).into_response()
}

async fn task_stats(State(sh): State<Arc<Shared>>, Path(task): Path<String>) -> Response {
    let task = match parse_task(&task) {
        Ok(t) => t,
        Err(r) => return r,
    };
    Json(sh.stats_mut(|s| s.get(task.as_str())).unwrap_or_default()).into_response()
}

async fn task_event(
    State(sh): State<Arc<Shared>>,
    Path(task): Path<String>,
    Json(ev): Json<TaskEvent>,
) -> Response {
    if let Err(r) = parse_task(&task) {
        return r;
    }
    if ev.task_id.as_str() != task {
        return err(
            StatusCode::BAD_REQUEST,
            "task id in the path and the body differ",
        );
    }
    match sh.mesh.emit(Payload::Task(ev)).await {
        Ok(env) => Json(serde_json::json!({"event_id": env.id, "seq": env.seq})).into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Loads the task's stored context from the recorder. 200 with the session file (header
/// `x-gemfleet-session-id`), 404 when the task has none, 504 when the recorder is silent.
async fn load_context(State(sh): State<Arc<Shared>>, Path(task): Path<String>) -> Response {
    let task = match parse_task(&task) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let request_id = Uuid::now_v7();
    let mut rx = sh.mesh.expect_context(request_id);
    let timeout = Duration::from_millis(sh.settings.context_timeout_ms);
    let result = async {
        sh.mesh
            .send_context(Context::Load {
                request_id,
                task_id: task.clone(),
            })
            .await
            .map_err(|e| err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let mut asm = Assembler::default();
        loop {
            let msg = tokio::time::timeout(timeout, rx.recv())
                .await
                .map_err(|_| {
                    err(
                        StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "the recorder did not send the context of task {task} within {} ms",
                            timeout.as_millis()
                        ),
                    )
                })?
                .ok_or_else(|| err(StatusCode::INTERNAL_SERVER_ERROR, "context channel closed"))?;
            match msg {
                Context::NotFound { .. } => {
                    return Err(err(
                        StatusCode::NOT_FOUND,
                        format!("task {task} has no stored context"),
                    ));
                }
                Context::Chunk {
                    session_id,
                    index,
                    total,
                    sha256,
                    data,
                    ..
                } => match asm.add(index, total, &sha256, &data) {
                    Ok(Some(file)) => return Ok((session_id, file)),
                    Ok(None) => {}
                    Err(e) => return Err(err(StatusCode::BAD_GATEWAY, e.to_string())),
                },
                _ => {}
            }
        }
    }
    .await;
    sh.mesh.forget_context(&request_id);
    match result {
        Ok((session_id, file)) => {
            let mut r = Response::new(axum::body::Body::from(file));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = header::HeaderValue::from_str(&session_id) {
                r.headers_mut().insert("x-gemfleet-session-id", v);
            }
            r
        }
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct SaveQuery {
    session_id: String,
}

/// Saves a session file as the task's context and waits for the recorder's `Saved`.
async fn save_context(
    State(sh): State<Arc<Shared>>,
    Path(task): Path<String>,
    Query(q): Query<SaveQuery>,
    body: Bytes,
) -> Response {
    let task = match parse_task(&task) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (sha256, chunks) = match context::encode(&body) {
        Ok(x) => x,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let request_id = Uuid::now_v7();
    let mut rx = sh.mesh.expect_context(request_id);
    let timeout = Duration::from_millis(sh.settings.context_timeout_ms);
    let total = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
    let result = async {
        for (i, data) in chunks.into_iter().enumerate() {
            let c = Context::SaveChunk {
                request_id,
                task_id: task.clone(),
                session_id: q.session_id.clone(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                total,
                sha256: sha256.clone(),
                data,
            };
            sh.mesh.send_context(c).await.map_err(|e| err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        }
        loop {
            let msg = tokio::time::timeout(timeout, rx.recv())
                .await
                .map_err(|_| err(StatusCode::GATEWAY_TIMEOUT, format!("the recorder did not confirm saving the context of task {task} within {} ms", timeout.as_millis())))?
                .ok_or_else(|| err(StatusCode::INTERNAL_SERVER_ERROR, "context channel closed"))?;
            if let Context::Saved { error, .. } = msg {
                return match error {
                    None => Ok(()),
                    Some(e) => Err(err(StatusCode::BAD_GATEWAY, format!("the recorder could not save the context: {e}"))),
                };
            }
        }
    }
    .await;
    sh.mesh.forget_context(&request_id);
    match result {
        Ok(()) => Json(serde_json::json!({"saved": true, "bytes": body.len()})).into_response(),
        Err(r) => r,
    }
}
