//! The Gemini API surface over HTTP: `/{v1,v1beta}/models`, `/{v1,v1beta}/models/{model}`,
//! `…/models/{model}:{generateContent,streamGenerateContent,countTokens}`. Parses the URL
//! itself (no extractor rejections: every bad input gets a Google-shaped JSON error) and turns
//! the engine's outcome into a response, streaming with the configured latency and faults.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::config::StreamErrorFormat;
use crate::engine::{Answer, Call, Engine, Fault, Method, Outcome};
use crate::google_error::{self, GoogleError};
use crate::response;

/// Bodies above this are refused like Google refuses them (it allows 20 MB inline data).
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

pub type AppState = Arc<Engine>;

/// Everything that is not the admin surface lands here.
pub async fn dispatch(
    State(engine): State<AppState>,
    method: HttpMethod,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [version @ ("v1" | "v1beta"), "models"] if method == HttpMethod::GET => {
            list_models(&engine, version)
        }
        [version @ ("v1" | "v1beta"), "models", target] => match target.split_once(':') {
            Some((model, action)) if method == HttpMethod::POST => match Method::parse(action) {
                Some(m) => generate(&engine, version, model, m, &uri, &headers, body).await,
                None => error_response(&google_error::not_found(path)),
            },
            Some(_) => error_response(&google_error::method_not_allowed()),
            None if method == HttpMethod::GET => get_model(&engine, version, target),
            None => error_response(&google_error::method_not_allowed()),
        },
        _ => error_response(&google_error::not_found(path)),
    }
}

fn model_json(name: &str) -> Value {
    json!({
        "name": format!("models/{name}"),
        "version": "emulated",
        "displayName": name,
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
    })
}

fn list_models(engine: &Engine, _version: &str) -> Response {
    let models: Vec<Value> = engine.models().iter().map(|m| model_json(m)).collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

fn get_model(engine: &Engine, version: &str, model: &str) -> Response {
    if engine.serves_model(model) {
        json_response(StatusCode::OK, &model_json(model))
    } else {
        error_response(&google_error::unknown_model(
            model,
            version,
            "generateContent",
        ))
    }
}

/// The API key as Google accepts it: `x-goog-api-key`, else `?key=`. Empty means none.
fn api_key<'a>(headers: &'a HeaderMap, query: &'a [(String, String)]) -> Option<&'a str> {
    let from_header = headers
        .get("x-goog-api-key")
        // A header that is not visible ASCII cannot be a key we issued; keep it as "some key"
        // so it is refused as invalid rather than as missing.
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let key = from_header.or_else(|| {
        query
            .iter()
            .find(|(k, _)| k == "key")
            .map(|(_, v)| v.as_str())
    });
    key.filter(|k| !k.is_empty())
}

async fn generate(
    engine: &Engine,
    version: &str,
    model: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let query: Vec<(String, String)> =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map(|q| q.0)
            .unwrap_or_default();
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&google_error::invalid_argument(&format!(
                "Request payload size exceeds the limit: {MAX_BODY_BYTES} bytes."
            )));
        }
    };
    let call = Call {
        version,
        model,
        method,
        key: api_key(headers, &query),
        body: &body,
    };
    let outcome = engine.handle(&call);
    let sse = query.iter().any(|(k, v)| k == "alt" && v == "sse");
    match outcome {
        Outcome::Error(e) => {
            tracing::debug!(
                model,
                method = method.name(),
                status = e.status,
                "error answer"
            );
            error_response(&e)
        }
        Outcome::CountTokens(v) => json_response(StatusCode::OK, &v),
        Outcome::Answer(answer) => {
            tracing::debug!(
                model,
                method = method.name(),
                prompt_tokens = answer.usage.prompt,
                fault = ?answer.fault,
                "answer"
            );
            let latency = &engine.config().latency;
            let first_byte = Duration::from_millis(latency.first_byte_ms)
                + match answer.fault {
                    Some(Fault::SlowFirstByte { ms }) => Duration::from_millis(ms),
                    _ => Duration::ZERO,
                };
            let per_token = latency.per_token_ms;
            if method == Method::StreamGenerateContent {
                stream_answer(answer, sse, first_byte, per_token)
            } else {
                let wait = first_byte + token_delay(per_token, answer.usage.candidates);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                let body = response::unary(
                    &answer.reply,
                    &answer.usage,
                    &answer.model,
                    &answer.response_id,
                );
                json_response(StatusCode::OK, &body)
            }
        }
    }
}

fn token_delay(per_token_ms: f64, tokens: u64) -> Duration {
    Duration::from_secs_f64((per_token_ms * tokens as f64 / 1000.0).clamp(0.0, 3600.0))
}

/// One piece of a streamed body and the pause before it.
struct Frame {
    delay: Duration,
    data: Result<Bytes, std::io::Error>,
}

fn stream_answer(answer: Answer, sse: bool, first_byte: Duration, per_token_ms: f64) -> Response {
    let chunks = response::stream_chunks(
        &answer.reply,
        &answer.usage,
        &answer.model,
        &answer.response_id,
    );
    let (cut, fault) = match answer.fault {
        Some(Fault::StreamError { after, .. }) | Some(Fault::Drop { after }) => (
            Some((after as usize).min(chunks.len().saturating_sub(1))),
            answer.fault,
        ),
        _ => (None, None),
    };
    let mut frames = Vec::new();
    let mut previous_tokens = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        if cut == Some(i) {
            break;
        }
        let so_far = chunk["usageMetadata"]["candidatesTokenCount"]
            .as_u64()
            .unwrap_or(0);
        let delay = if i == 0 {
            first_byte + token_delay(per_token_ms, so_far)
        } else {
            token_delay(per_token_ms, so_far.saturating_sub(previous_tokens))
        };
        previous_tokens = so_far;
        let text = if sse {
            format!("data: {chunk}\r\n\r\n")
        } else if i == 0 {
            format!("[{chunk}")
        } else {
            format!(",\r\n{chunk}")
        };
        frames.push(Frame {
            delay,
            data: Ok(Bytes::from(text)),
        });
    }
    let first_delay = if frames.is_empty() {
        first_byte
    } else {
        Duration::ZERO
    };
    match fault {
        Some(Fault::StreamError { format, .. }) => {
            let error = google_error::high_demand().body;
            let text = match (format, sse) {
                (StreamErrorFormat::Data, true) => format!("data: {error}\r\n\r\n"),
                // Raw multi-line JSON, as Google sometimes writes it into a 200 stream.
                _ => {
                    let pretty = serde_json::to_string_pretty(&error).unwrap_or_default();
                    if sse || frames.is_empty() {
                        format!("{pretty}\n")
                    } else {
                        format!(",\r\n{pretty}\n]")
                    }
                }
            };
            frames.push(Frame {
                delay: first_delay,
                data: Ok(Bytes::from(text)),
            });
        }
        Some(Fault::Drop { .. }) => frames.push(Frame {
            // Pause so that hyper flushes the chunks already sent: a client must see them
            // arrive before the cut, as with a real connection dropped mid-stream.
            delay: first_delay.max(Duration::from_millis(20)),
            data: Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "emulated dropped connection",
            )),
        }),
        _ => {
            if !sse {
                frames.push(Frame {
                    delay: Duration::ZERO,
                    data: Ok(Bytes::from_static(b"]")),
                });
            }
        }
    }
    let stream = futures::stream::iter(frames).then(|frame| async move {
        if !frame.delay.is_zero() {
            tokio::time::sleep(frame.delay).await;
        }
        frame.data
    });
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/json; charset=UTF-8"
    };
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Admin URLs used with the wrong HTTP method.
pub async fn method_not_allowed() -> Response {
    error_response(&google_error::method_not_allowed())
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    response
}

pub fn error_response(e: &GoogleError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &e.body)
}
