//! The admin surface under `/_emulator/`: the ledger, reset, the clock, key states, quota
//! group usage. It never serves a key's secret.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::api::{AppState, json_response};
use crate::config::KeyState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_emulator/ledger", get(ledger))
        .route("/_emulator/reset", post(reset))
        .route("/_emulator/clock", get(clock).post(set_clock))
        .route("/_emulator/keys", get(keys))
        .route("/_emulator/keys/{name}/state", post(set_key_state))
        .route("/_emulator/quota/{project}/{model}", get(quota))
}

fn bad_request(message: String) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}}),
    )
}

async fn ledger(State(engine): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!(engine.ledger()))
}

async fn reset(State(engine): State<AppState>) -> Response {
    engine.reset();
    json_response(StatusCode::OK, &json!({"reset": true}))
}

fn clock_json(engine: &AppState) -> serde_json::Value {
    json!({
        "now": engine.clock.now().to_rfc3339(),
        "offset_seconds": engine.clock.offset().num_milliseconds() as f64 / 1000.0,
    })
}

async fn clock(State(engine): State<AppState>) -> Response {
    json_response(StatusCode::OK, &clock_json(&engine))
}

/// `{"offset_seconds": N}` sets the offset from real time; `{"now": "RFC 3339"}` sets the time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    offset_seconds: Option<f64>,
    now: Option<DateTime<Utc>>,
}

async fn set_clock(State(engine): State<AppState>, body: Bytes) -> Response {
    let request: ClockRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return bad_request(format!(
                "expected {{\"offset_seconds\": N}} or {{\"now\": \"RFC 3339\"}}: {e}"
            ));
        }
    };
    match (request.offset_seconds, request.now) {
        (Some(s), None) if s.is_finite() && s.abs() < 1e11 => {
            engine
                .clock
                .set_offset(chrono::Duration::milliseconds((s * 1000.0) as i64));
        }
        // Far-away years would overflow time arithmetic; no test needs them.
        (None, Some(at)) if (2000..=9000).contains(&at.year()) => engine.clock.set_now(at),
        _ => {
            return bad_request(
                "give exactly one of offset_seconds (|N| < 1e11) or now (RFC 3339, years \
                 2000-9000)"
                    .into(),
            );
        }
    }
    json_response(StatusCode::OK, &clock_json(&engine))
}

async fn keys(State(engine): State<AppState>) -> Response {
    json_response(StatusCode::OK, &json!({"keys": engine.keys()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyStateRequest {
    state: KeyState,
}

async fn set_key_state(
    State(engine): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let request: KeyStateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("expected {{\"state\": \"invalid\"}}: {e}")),
    };
    match engine.set_key_state(&name, request.state) {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({"name": name, "state": request.state}),
        ),
        Err(e) => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"code": 404, "status": "NOT_FOUND", "message": e.to_string()}}),
        ),
    }
}

async fn quota(
    State(engine): State<AppState>,
    Path((project, model)): Path<(String, String)>,
) -> Response {
    let usage = engine.group_usage(&project, &model);
    json_response(
        StatusCode::OK,
        &json!({"project": project, "model": model, "usage": usage}),
    )
}
