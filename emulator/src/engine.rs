//! The emulator's decisions for one API call, independent of HTTP: who the key is, whether
//! the model exists, whether quota admits the request, which fault (if any) strikes, what the
//! answer is, and what the ledger records. One mutex guards the mutable state; it is never
//! held across an await.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::answer::{self, Reply};
use crate::clock::Clock;
use crate::config::{
    Config, KeyState, ProjectState, ScriptFault, ScriptResponse, StreamErrorFormat,
};
use crate::counting::{Prompt, output_tokens};
use crate::google_error::{self, GoogleError};
use crate::ledger::{Book, Ledger};
use crate::quota::{GroupUsage, QuotaGroup};
use crate::response::Usage;

/// Model name the ledger uses for requests naming a model the emulator does not serve (so
/// junk names cannot grow the ledger without bound).
pub const UNKNOWN_MODEL: &str = "<unknown>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    GenerateContent,
    StreamGenerateContent,
    CountTokens,
}

impl Method {
    pub fn parse(s: &str) -> Option<Method> {
        match s {
            "generateContent" => Some(Method::GenerateContent),
            "streamGenerateContent" => Some(Method::StreamGenerateContent),
            "countTokens" => Some(Method::CountTokens),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::GenerateContent => "generateContent",
            Method::StreamGenerateContent => "streamGenerateContent",
            Method::CountTokens => "countTokens",
        }
    }
}

/// One API call as the HTTP layer saw it.
pub struct Call<'a> {
    pub version: &'a str,
    pub model: &'a str,
    pub method: Method,
    /// The key from `x-goog-api-key` or `?key=`; None when absent or empty.
    pub key: Option<&'a str>,
    pub body: &'a [u8],
}

/// How an admitted request goes wrong, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An error event in a 200 stream after `after` chunks.
    StreamError {
        format: StreamErrorFormat,
        after: u32,
    },
    /// The connection is cut after `after` chunks.
    Drop { after: u32 },
    /// The answer is fine but its first byte comes late.
    SlowFirstByte { ms: u64 },
}

/// A successful (or mid-stream failing) answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub reply: Reply,
    pub usage: Usage,
    pub model: String,
    pub response_id: String,
    pub fault: Option<Fault>,
}

pub enum Outcome {
    Error(GoogleError),
    CountTokens(Value),
    Answer(Answer),
}

struct Group {
    quota: QuotaGroup,
    last_prompt: Vec<u64>,
}

struct Inner {
    key_states: Vec<KeyState>,
    groups: HashMap<(usize, String), Group>,
    book: Book,
    rng: StdRng,
    script_used: Vec<u64>,
    admitted: u64,
}

impl Inner {
    fn fresh(config: &Config) -> Inner {
        Inner {
            key_states: config.keys.iter().map(|k| k.state).collect(),
            groups: HashMap::new(),
            book: Book::default(),
            rng: StdRng::seed_from_u64(config.seed),
            script_used: vec![0; config.script.len()],
            admitted: 0,
        }
    }
}

pub struct Engine {
    config: Config,
    secrets: HashMap<String, usize>,
    projects: HashMap<String, usize>,
    models: HashSet<String>,
    pub clock: Clock,
    inner: Mutex<Inner>,
}

#[derive(Debug, thiserror::Error)]
#[error("no key named {0:?}")]
pub struct UnknownKey(pub String);

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine {
            secrets: config
                .keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.secret.clone(), i))
                .collect(),
            projects: config
                .projects
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.clone(), i))
                .collect(),
            models: config.models.iter().cloned().collect(),
            clock: Clock::default(),
            inner: Mutex::new(Inner::fresh(&config)),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock must not take the emulator down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ledger(&self) -> Ledger {
        self.lock().book.snapshot()
    }

    /// Back to the configured start: counters, ledger, script uses, key states, clock.
    pub fn reset(&self) {
        *self.lock() = Inner::fresh(&self.config);
        self.clock.set_offset(chrono::Duration::zero());
    }

    pub fn set_key_state(&self, name: &str, state: KeyState) -> Result<(), UnknownKey> {
        let index = self
            .config
            .keys
            .iter()
            .position(|k| k.name == name)
            .ok_or_else(|| UnknownKey(name.to_owned()))?;
        self.lock().key_states[index] = state;
        Ok(())
    }

    /// Keys as the admin surface shows them: name, project, current state (no secrets).
    pub fn keys(&self) -> Vec<Value> {
        let inner = self.lock();
        self.config
            .keys
            .iter()
            .zip(&inner.key_states)
            .map(|(k, s)| json!({"name": k.name, "project": k.project, "state": s}))
            .collect()
    }

    /// Current usage of a quota group (None if it was never used).
    pub fn group_usage(&self, project: &str, model: &str) -> Option<GroupUsage> {
        let p = *self.projects.get(project)?;
        let now = self.clock.now();
        let minute = self.config.minute();
        let mut inner = self.lock();
        let group = inner.groups.get_mut(&(p, model.to_owned()))?;
        Some(group.quota.usage(now, minute))
    }

    pub fn models(&self) -> &[String] {
        &self.config.models
    }

    pub fn serves_model(&self, model: &str) -> bool {
        self.models.contains(model)
    }

    /// Decides one call.
    pub fn handle(&self, call: &Call<'_>) -> Outcome {
        let rpc = google_error::rpc_method(call.version, call.method.name());
        let Some(secret) = call.key else {
            let e = google_error::missing_key();
            self.lock().book.unauthenticated(e.status);
            return Outcome::Error(e);
        };
        let Some(&key_index) = self.secrets.get(secret) else {
            // An unknown secret is what Google calls an invalid key.
            let e = google_error::key_error(KeyState::Invalid, &rpc, 0)
                .unwrap_or_else(google_error::missing_key);
            self.lock().book.unauthenticated(e.status);
            return Outcome::Error(e);
        };
        let key = &self.config.keys[key_index];
        let project_index = self.projects.get(&key.project).copied().unwrap_or(0);
        let Some(project) = self.config.projects.get(project_index) else {
            return Outcome::Error(google_error::internal());
        };
        let model_label = if self.serves_model(call.model) {
            call.model
        } else {
            UNKNOWN_MODEL
        };

        let book_error = |e: GoogleError| {
            self.lock()
                .book
                .entry(&key.name, &project.name, model_label)
                .error(e.status);
            Outcome::Error(e)
        };
        let state = match (self.lock().key_states[key_index], project.state) {
            (KeyState::Valid, ProjectState::Suspended) => KeyState::ProjectSuspended,
            (KeyState::Valid, ProjectState::Denied) => KeyState::ProjectDenied,
            (s, _) => s,
        };
        if let Some(e) = google_error::key_error(state, &rpc, project.number) {
            return book_error(e);
        }
        if model_label == UNKNOWN_MODEL {
            return book_error(google_error::unknown_model(
                call.model,
                call.version,
                call.method.name(),
            ));
        }
        // Parsing, counting and the default answer happen outside the lock: they are the
        // expensive part (a Gemini CLI request is 25-45 KB) and need no shared state.
        let request = match parse_request(call) {
            Ok(r) => r,
            Err(e) => return book_error(e),
        };
        let prompt = Prompt::of_request(&request);
        let tokens = prompt.tokens();
        if call.method == Method::CountTokens {
            self.lock()
                .book
                .entry(&key.name, &project.name, model_label)
                .count_tokens_calls += 1;
            return Outcome::CountTokens(json!({
                "totalTokens": tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
            }));
        }
        let last_text = answer::last_content_text(&request);
        let default_reply = answer::default_reply(call.model, &request);
        let thinking = thinking_enabled(&request);
        let fingerprints = prompt.fingerprints();

        let mut guard = self.lock();
        // Borrow the fields separately (quota group and book at once).
        let inner: &mut Inner = &mut guard;
        // Quota admission.
        let now = self.clock.now();
        let minute = self.config.minute();
        let limits = project.limits_for(call.model);
        let group = inner
            .groups
            .entry((project_index, call.model.to_owned()))
            .or_insert_with(|| Group {
                quota: QuotaGroup::default(),
                last_prompt: Vec::new(),
            });
        if let Err(refusal) = group.quota.admit(now, minute, limits, tokens) {
            let e = google_error::quota_exceeded(call.model, project.tier, &refusal);
            let entry = inner.book.entry(&key.name, &project.name, model_label);
            entry.rate_limited_requests += 1;
            for v in &refusal.violations {
                entry.rate_limited.add(v.dimension);
            }
            return Outcome::Error(e);
        }
        let cached =
            prompt.cached_tokens(&group.last_prompt, self.config.implicit_cache_min_tokens);
        group.last_prompt = fingerprints;

        inner.admitted += 1;
        let nth = inner.admitted;
        let streaming = call.method == Method::StreamGenerateContent;
        let scripted = self.script_match(
            inner,
            last_text.as_deref(),
            call.model,
            &key.name,
            nth,
            streaming,
        );

        let mut fault = None;
        let mut reply = None;
        match scripted {
            Some(ScriptResponse::Text(t)) => reply = Some(Reply::Text(t)),
            Some(ScriptResponse::FunctionCall { name, args }) => {
                reply = Some(Reply::FunctionCall { name, args })
            }
            Some(ScriptResponse::Fault(f)) => fault = Some(f),
            None => fault = self.random_fault(inner, streaming),
        }

        let entry = inner.book.entry(&key.name, &project.name, model_label);
        entry.requests += 1;
        entry.input_tokens += tokens;
        let f = &self.config.faults;
        let answer_fault = match fault {
            Some(ScriptFault::Overloaded) => {
                entry.error(503);
                return Outcome::Error(google_error::overloaded());
            }
            Some(ScriptFault::Internal) => {
                entry.error(500);
                return Outcome::Error(google_error::internal());
            }
            Some(ScriptFault::StreamErrorData) => Some(Fault::StreamError {
                format: StreamErrorFormat::Data,
                after: f.after_chunks,
            }),
            Some(ScriptFault::StreamErrorRaw) => Some(Fault::StreamError {
                format: StreamErrorFormat::Raw,
                after: f.after_chunks,
            }),
            Some(ScriptFault::DropConnection) => Some(Fault::Drop {
                after: f.after_chunks,
            }),
            Some(ScriptFault::SlowFirstByte) => Some(Fault::SlowFirstByte {
                ms: f.slow_first_byte_ms,
            }),
            None => None,
        };

        let reply = reply.unwrap_or(default_reply);
        let candidates = output_tokens(reply.chars());
        let thoughts = if thinking { candidates.div_ceil(2) } else { 0 };
        let usage = Usage {
            prompt: tokens,
            candidates,
            cached: cached.min(tokens),
            thoughts,
        };
        match answer_fault {
            Some(Fault::StreamError { .. }) => entry.stream_errors += 1,
            Some(Fault::Drop { .. }) => entry.dropped_connections += 1,
            Some(Fault::SlowFirstByte { .. }) | None => {
                entry.succeeded += 1;
                entry.cached_tokens += usage.cached;
                entry.output_tokens += usage.candidates;
                entry.thoughts_tokens += usage.thoughts;
            }
        }
        Outcome::Answer(Answer {
            reply,
            usage,
            model: call.model.to_owned(),
            response_id: format!("emu-{nth:08}"),
            fault: answer_fault,
        })
    }

    fn script_match(
        &self,
        inner: &mut Inner,
        last_text: Option<&str>,
        model: &str,
        key: &str,
        nth: u64,
        streaming: bool,
    ) -> Option<ScriptResponse> {
        for (i, rule) in self.config.script.iter().enumerate() {
            if rule.times.is_some_and(|t| inner.script_used[i] >= t)
                || rule.model.as_deref().is_some_and(|m| m != model)
                || rule.key.as_deref().is_some_and(|k| k != key)
                || rule.nth_request.is_some_and(|n| n != nth)
            {
                continue;
            }
            if let Some(needle) = &rule.prompt_contains
                && !last_text.is_some_and(|t| t.contains(needle.as_str()))
            {
                continue;
            }
            if let ScriptResponse::Fault(
                ScriptFault::StreamErrorData
                | ScriptFault::StreamErrorRaw
                | ScriptFault::DropConnection,
            ) = rule.respond
                && !streaming
            {
                // Stream faults only make sense on a stream; a unary call skips the rule.
                continue;
            }
            inner.script_used[i] += 1;
            return Some(rule.respond.clone());
        }
        None
    }

    fn random_fault(&self, inner: &mut Inner, streaming: bool) -> Option<ScriptFault> {
        let f = &self.config.faults;
        let mut roll = |p: f64| p > 0.0 && inner.rng.random::<f64>() < p;
        if roll(f.overloaded_503) {
            return Some(ScriptFault::Overloaded);
        }
        if roll(f.internal_500) {
            return Some(ScriptFault::Internal);
        }
        if streaming && roll(f.stream_error) {
            return Some(match f.stream_error_format {
                StreamErrorFormat::Data => ScriptFault::StreamErrorData,
                StreamErrorFormat::Raw => ScriptFault::StreamErrorRaw,
            });
        }
        if streaming && roll(f.drop_connection) {
            return Some(ScriptFault::DropConnection);
        }
        if roll(f.slow_first_byte) {
            return Some(ScriptFault::SlowFirstByte);
        }
        None
    }
}

/// The request object of a call (for countTokens, the inner generateContentRequest when given).
fn parse_request(call: &Call<'_>) -> Result<Value, GoogleError> {
    let value: Value = serde_json::from_slice(call.body)
        .map_err(|e| google_error::invalid_json(&format!("{e}")))?;
    let Value::Object(_) = value else {
        return Err(google_error::invalid_json(
            "Root element must be a message.",
        ));
    };
    let request = match (call.method, value.get("generateContentRequest")) {
        (Method::CountTokens, Some(inner)) => inner.clone(),
        _ => value,
    };
    let has_contents = request
        .get("contents")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if !has_contents {
        return Err(google_error::invalid_argument(
            "* GenerateContentRequest.contents: contents is not specified\n",
        ));
    }
    Ok(request)
}

/// Thinking is on when the request has a thinkingConfig that does not set a zero budget.
fn thinking_enabled(request: &Value) -> bool {
    let Some(cfg) = request
        .get("generationConfig")
        .and_then(|g| g.get("thinkingConfig"))
    else {
        return false;
    };
    cfg.get("thinkingBudget").and_then(Value::as_i64) != Some(0)
}
