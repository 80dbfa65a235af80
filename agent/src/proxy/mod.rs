//! The local Gemini API proxy: claim, wait for the grant, forward with the granted key,
//! stream the answer back while reading its usage, report the outcome; absorb failures on
//! another grant when the class allows and nothing reached the client yet.

pub mod route;
pub mod stop;

use crate::answers::{self, StreamWatch};
use crate::daemon::Shared;
use crate::mesh::ClaimAnswer;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use gemfleet_gemini::Classification;
use gemfleet_protocol::{
    Claim, DenialReason, Grant, KeyName, Payload, Release, RequestType, TaskId, Throttle, Tokens,
    Usage,
};
use route::ApiCall;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Largest error body read from upstream (errors are small; this bounds a hostile one).
const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Largest non-streamed answer passed through.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// How many times a grant for a key known to be cold is handed back and claimed again.
const MAX_COLD_RECLAIMS: usize = 8;

fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": status.as_u16(), "message": message, "status": status.canonical_reason().unwrap_or("ERROR")}
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Why no grant could be had for a request.
struct NoGrant {
    why: String,
    until: Option<DateTime<Utc>>,
}

/// The fallback handler: every Gemini API path.
pub async fn handle(
    State(sh): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = match route::parse(uri.path()) {
        Ok(c) => c,
        Err(e @ route::RouteError::NotFound(_)) => {
            return json_error(StatusCode::NOT_FOUND, &e.to_string());
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if method != Method::POST {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the Gemini API proxy takes POST requests",
        );
    }
    let query = route::forward_query(uri.query());
    let content_type = headers.get(header::CONTENT_TYPE).cloned();
    forward(&sh, &call, &query, content_type, body).await
}

async fn forward(
    sh: &Arc<Shared>,
    call: &ApiCall,
    query: &str,
    content_type: Option<HeaderValue>,
    body: Bytes,
) -> Response {
    let est = gemfleet_gemini::tokens::estimate_input_tokens(&body);
    let task = call.task.as_ref().map(TaskId::as_str);
    let mut failed_keys: Vec<KeyName> = Vec::new();
    let attempts = sh.settings.max_attempts.max(1);
    let url = format!("{}{}{}", sh.upstream, call.upstream_path(), query);
    for attempt in 1..=attempts {
        let claim_started = Instant::now();
        let grant = match obtain_grant(sh, call, est, &failed_keys).await {
            Ok(g) => g,
            Err(n) => {
                sh.stats_mut(|s| s.stopped(task));
                tracing::warn!(model = %call.model, why = %n.why, "no grant: telling the client to stop");
                let body = stop::body(call.model.as_str(), &n.why, n.until);
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
                    .into_response();
            }
        };
        let claim_time = claim_started.elapsed();
        let started = Instant::now();
        let mut req = sh
            .http
            .post(&url)
            .header("x-goog-api-key", grant.secret.expose())
            .body(body.clone());
        req = req.header(
            header::CONTENT_TYPE,
            content_type
                .clone()
                .unwrap_or(HeaderValue::from_static("application/json")),
        );
        let last = attempt == attempts;
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                // Never include the URL's query or headers: reqwest's Display has neither
                // the key (it is a header) nor more than the URL.
                let connect = e.is_connect();
                let why = format!("upstream request failed: {}", e.without_url());
                tracing::warn!(model = %call.model, key = %grant.key, "{why}");
                if connect {
                    // Nothing reached Google: hand the grant back unused.
                    release(sh, &grant, &why).await;
                } else {
                    let c = transient(&why);
                    report_failure(sh, call, &grant, 502, c, !last).await;
                }
                if last {
                    return json_error(StatusCode::BAD_GATEWAY, &format!("gemfleet: {why}"));
                }
                continue;
            }
        };
        let status = resp.status();
        if status.is_success() && call.request_type == RequestType::Stream {
            match stream_through(sh, call, &grant, resp, started, last).await {
                Streamed::Response(mut r) => {
                    timing(&mut r, claim_time, started.elapsed());
                    return r;
                }
                Streamed::FailedBeforeFirstByte {
                    body,
                    classification,
                } => {
                    let retry = classification.class.retry_elsewhere() && !last;
                    report_failure(sh, call, &grant, 200, classification, retry).await;
                    if retry {
                        failed_keys.push(grant.key.clone());
                        continue;
                    }
                    return (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        body,
                    )
                        .into_response();
                }
            }
        }
        let resp_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        let upstream_time_start = started;
        let limit = if status.is_success() {
            MAX_BODY
        } else {
            MAX_ERROR_BODY
        };
        let bytes = match read_bounded(resp, limit).await {
            Ok(b) => b,
            Err(why) => {
                let c = transient(&why);
                report_failure(sh, call, &grant, status.as_u16(), c, !last).await;
                if last {
                    return json_error(StatusCode::BAD_GATEWAY, &format!("gemfleet: {why}"));
                }
                continue;
            }
        };
        let upstream_time = upstream_time_start.elapsed();
        if status.is_success() {
            let (tokens, complete) = answers::usage_of_body(&bytes);
            // Off the response path: the answer need not wait for the outbox's fsync.
            let (sh2, call2, grant2) = (sh.clone(), call.clone(), grant.clone());
            let (code, latency) = (status.as_u16(), started.elapsed());
            tokio::spawn(async move {
                report_usage(&sh2, &call2, &grant2, code, tokens, complete, latency).await;
            });
            let mut r = Response::new(Body::from(bytes));
            *r.status_mut() = status;
            timing(&mut r, claim_time, upstream_time);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                resp_type.unwrap_or(HeaderValue::from_static("application/json")),
            );
            return r;
        }
        let classification =
            answers::classify(status.as_u16(), &bytes, call.model.as_str(), Utc::now());
        let retry = classification.class.retry_elsewhere() && !last;
        tracing::info!(
            model = %call.model, key = %grant.key, status = status.as_u16(),
            class = classification.class.as_str(), absorbed = retry, "upstream failure"
        );
        report_failure(sh, call, &grant, status.as_u16(), classification, retry).await;
        if retry {
            failed_keys.push(grant.key.clone());
            continue;
        }
        // Errors go back as JSON so the CLI keeps their details.
        return (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    }
    json_error(StatusCode::BAD_GATEWAY, "gemfleet: every attempt failed")
}

/// `Server-Timing` (a standard header): how long the claim took and how long upstream took
/// (to the first event for streams), so the proxy's own cost can be measured from outside.
fn timing(r: &mut Response, claim: Duration, upstream: Duration) {
    let v = format!(
        "claim;dur={:.3}, upstream;dur={:.3}",
        claim.as_secs_f64() * 1000.0,
        upstream.as_secs_f64() * 1000.0
    );
    if let Ok(v) = HeaderValue::from_str(&v) {
        r.headers_mut().insert("server-timing", v);
    }
}

fn transient(why: &str) -> Classification {
    Classification {
        class: gemfleet_gemini::FailureClass::Transient,
        scope: gemfleet_gemini::Scope::Model,
        dimension: None,
        retry_after_ms: None,
        until: None,
        limit: None,
        tier: None,
        in_stream: false,
        reason: why.to_string(),
        quota_id: None,
    }
}

async fn read_bounded(resp: reqwest::Response, limit: usize) -> Result<Bytes, String> {
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk
            .map_err(|e| format!("reading the upstream answer failed: {}", e.without_url()))?;
        if out.len() + chunk.len() > limit {
            return Err(format!("the upstream answer exceeds {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Claims until a usable grant arrives, or says why none will.
async fn obtain_grant(
    sh: &Arc<Shared>,
    call: &ApiCall,
    est: u64,
    failed: &[KeyName],
) -> Result<Grant, NoGrant> {
    let mut avoid: Vec<KeyName> = failed.to_vec();
    for _ in 0..MAX_COLD_RECLAIMS {
        for k in sh.mesh.avoid_for(&call.model) {
            if !avoid.contains(&k) {
                avoid.push(k);
            }
        }
        let claim_id = Uuid::now_v7();
        let rx = sh.mesh.expect_claim(claim_id);
        let claim = Claim {
            claim_id,
            model: call.model.clone(),
            est_input_tokens: est,
            task_id: call.task.clone(),
            avoid_keys: avoid.clone(),
            max_wait_ms: sh.settings.claim_max_wait_ms,
            request_type: call.request_type,
        };
        if let Err(e) = sh.mesh.emit(Payload::Claim(claim)).await {
            sh.mesh.forget_claim(&claim_id);
            return Err(NoGrant {
                why: format!("cannot record the claim: {e}"),
                until: None,
            });
        }
        let wait = Duration::from_millis(
            sh.settings.claim_max_wait_ms + sh.settings.claim_answer_timeout_ms,
        );
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(ClaimAnswer::Grant(g))) => {
                if sh.mesh.is_cold(&g.key, &g.project, &call.model) {
                    tracing::info!(key = %g.key, "granted a key known to be cold: handing it back");
                    avoid.push(g.key.clone());
                    release(sh, &g, "the key or its quota group is known to be cold").await;
                    continue;
                }
                return Ok(g);
            }
            Ok(Ok(ClaimAnswer::Denial(d))) => {
                let reason = match d.reason {
                    DenialReason::NoKey => {
                        "no active key serves this model (unknown model, or every key disabled)"
                    }
                    DenialReason::Exhausted => {
                        "every quota group for this model is exhausted or has no quota"
                    }
                    DenialReason::WaitTooLong => "room frees later than this request may wait",
                    DenialReason::Invalid => "the request cannot be granted",
                };
                return Err(NoGrant {
                    why: format!("{reason} ({})", d.message),
                    until: d.retry_at,
                });
            }
            Ok(Err(_)) | Err(_) => {
                sh.mesh.forget_claim(&claim_id);
                let r = Release {
                    claim_id,
                    grant_id: None,
                    reason: "no answer in time; claim withdrawn".into(),
                };
                let _ = sh.mesh.emit(Payload::Release(r)).await;
                let conn = if sh.mesh.is_connected() {
                    "the broker is connected, so the recorder may be down".to_string()
                } else {
                    format!(
                        "not connected to the broker at {}",
                        sh.mesh.connection().broker
                    )
                };
                return Err(NoGrant {
                    why: format!(
                        "the recorder did not answer the claim within {} ms ({conn})",
                        wait.as_millis()
                    ),
                    until: None,
                });
            }
        }
    }
    Err(NoGrant {
        why: "every key granted is known to be cold".into(),
        until: None,
    })
}

async fn release(sh: &Arc<Shared>, g: &Grant, why: &str) {
    let r = Release {
        claim_id: g.claim_id,
        grant_id: Some(g.grant_id),
        reason: why.to_string(),
    };
    if let Err(e) = sh.mesh.emit(Payload::Release(r)).await {
        tracing::error!("cannot record a release: {e}");
    }
}

async fn report_usage(
    sh: &Arc<Shared>,
    call: &ApiCall,
    g: &Grant,
    status: u16,
    tokens: Tokens,
    complete: bool,
    latency: Duration,
) {
    sh.stats_mut(|s| {
        s.usage(
            call.task.as_ref().map(TaskId::as_str),
            g.key.as_str(),
            &tokens,
        )
    });
    let u = Usage {
        claim_id: g.claim_id,
        grant_id: g.grant_id,
        key: g.key.clone(),
        project: g.project.clone(),
        model: call.model.clone(),
        task_id: call.task.clone(),
        request_type: call.request_type,
        http_status: status,
        tokens,
        complete,
        latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
    };
    if let Err(e) = sh.mesh.emit(Payload::Usage(u)).await {
        tracing::error!("cannot record usage: {e}");
    }
}

async fn report_failure(
    sh: &Arc<Shared>,
    call: &ApiCall,
    g: &Grant,
    status: u16,
    c: Classification,
    absorbed: bool,
) {
    sh.stats_mut(|s| {
        s.failure(
            call.task.as_ref().map(TaskId::as_str),
            g.key.as_str(),
            absorbed,
        )
    });
    let t = Throttle {
        claim_id: g.claim_id,
        grant_id: g.grant_id,
        key: g.key.clone(),
        project: g.project.clone(),
        model: call.model.clone(),
        task_id: call.task.clone(),
        http_status: status,
        classification: c,
        absorbed,
    };
    if let Err(e) = sh.mesh.emit(Payload::Throttle(t)).await {
        tracing::error!("cannot record a throttle: {e}");
    }
}

enum Streamed {
    Response(Response),
    FailedBeforeFirstByte {
        body: Bytes,
        classification: Classification,
    },
}

/// Passes an SSE answer through chunk by chunk. The first event is read before anything is
/// sent, so an error that opens the stream can still be retried elsewhere; after that the
/// bytes flow as they arrive and the outcome is reported when the stream ends.
async fn stream_through(
    sh: &Arc<Shared>,
    call: &ApiCall,
    g: &Grant,
    resp: reqwest::Response,
    started: Instant,
    _last: bool,
) -> Streamed {
    let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
    let mut upstream = resp.bytes_stream();
    let mut watch = StreamWatch::new();
    let mut head: Vec<Bytes> = Vec::new();
    let mut head_len = 0usize;
    let mut ended = false;
    let mut broken: Option<String> = None;
    loop {
        match upstream.next().await {
            Some(Ok(chunk)) => {
                let closed = watch.feed(&chunk);
                head_len += chunk.len();
                head.push(chunk);
                if closed > 0 || head_len > 1024 * 1024 {
                    break;
                }
            }
            Some(Err(e)) => {
                broken = Some(format!("upstream stream broke: {}", e.without_url()));
                break;
            }
            None => {
                watch.finish();
                ended = true;
                break;
            }
        }
    }
    if let Some(err) = watch.error() {
        let mut c = answers::classify(200, err.as_bytes(), call.model.as_str(), Utc::now());
        c.in_stream = true;
        let body: Vec<u8> = head.iter().flat_map(|b| b.iter().copied()).collect();
        return Streamed::FailedBeforeFirstByte {
            body: Bytes::from(body),
            classification: c,
        };
    }
    if let Some(why) = broken.filter(|_| head.is_empty()) {
        return Streamed::FailedBeforeFirstByte {
            body: Bytes::new(),
            classification: transient(&why),
        };
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(32);
    let sh = sh.clone();
    let call = call.clone();
    let g = g.clone();
    tokio::spawn(async move {
        let mut client_gone = false;
        for chunk in head {
            if !client_gone && tx.send(Ok(chunk)).await.is_err() {
                client_gone = true;
            }
        }
        if !ended {
            // Keep reading even when the client is gone: the request is billed, and its
            // usage must be reported.
            while let Some(item) = upstream.next().await {
                match item {
                    Ok(chunk) => {
                        watch.feed(&chunk);
                        if !client_gone && tx.send(Ok(chunk)).await.is_err() {
                            client_gone = true;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(model = %call.model, "upstream stream broke: {}", e.without_url());
                        let _ = tx
                            .send(Err(std::io::Error::other("upstream stream broke")))
                            .await;
                        break;
                    }
                }
            }
            watch.finish();
        }
        drop(tx);
        if let Some(err) = watch.error() {
            let mut c = answers::classify(200, err.as_bytes(), call.model.as_str(), Utc::now());
            c.in_stream = true;
            report_failure(&sh, &call, &g, 200, c, false).await;
        } else {
            let (tokens, complete) = watch.usage();
            report_usage(&sh, &call, &g, 200, tokens, complete, started.elapsed()).await;
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or(HeaderValue::from_static("text/event-stream")),
    );
    Streamed::Response(r)
}
