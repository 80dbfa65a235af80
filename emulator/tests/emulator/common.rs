//! Helpers: configs, a small HTTP client that returns status + parsed body.

use gemfleet_emulator::{
    Config, Emulator, KeyConfig, KeyState, Limits, ProjectConfig, RunningEmulator, Tier,
};
use serde_json::{Value, json};

pub const MODEL: &str = "gemini-2.5-flash";

pub fn key(name: &str, project: &str) -> KeyConfig {
    KeyConfig {
        name: name.into(),
        secret: secret(name),
        project: project.into(),
        state: KeyState::Valid,
    }
}

/// The secret of a test key: long and recognisable, so leak checks can search for it.
pub fn secret(name: &str) -> String {
    format!("AIzaTEST-{name}-0123456789abcdef")
}

pub fn project(name: &str, tier: Tier, limits: Limits) -> ProjectConfig {
    ProjectConfig {
        name: name.into(),
        tier,
        default_limits: limits,
        ..ProjectConfig::default()
    }
}

/// One free project "p1" with key "k1" and the given limits; a 60 s minute.
pub fn simple(limits: Limits) -> Config {
    Config {
        projects: vec![project("p1", Tier::Free, limits)],
        keys: vec![key("k1", "p1")],
        ..Config::default()
    }
}

pub async fn start(config: Config) -> RunningEmulator {
    gemfleet_testkit::init_crypto();
    Emulator::start(config).await.expect("emulator starts")
}

pub fn prompt(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// The `data:` events of an SSE body, parsed.
    pub fn events(&self) -> Vec<Value> {
        self.text
            .split("\r\n\r\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }
}

impl Client {
    pub fn new(emulator: &RunningEmulator) -> Client {
        gemfleet_testkit::init_crypto();
        Client {
            http: reqwest::Client::new(),
            base: emulator.base_url(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.expect("body read");
        Answer {
            status,
            content_type,
            text,
        }
    }

    pub async fn generate(&self, key: &str, model: &str, body: &Value) -> Answer {
        let url = format!("{}/v1beta/models/{model}:generateContent", self.base);
        self.send(
            self.http
                .post(url)
                .header("x-goog-api-key", secret(key))
                .json(body),
        )
        .await
    }

    pub async fn stream(&self, key: &str, model: &str, body: &Value) -> Answer {
        let url = format!(
            "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
            self.base
        );
        self.send(
            self.http
                .post(url)
                .header("x-goog-api-key", secret(key))
                .json(body),
        )
        .await
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("{}/_emulator/{path}", self.base)))
            .await
            .json()
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> Answer {
        self.send(
            self.http
                .post(format!("{}/_emulator/{path}", self.base))
                .json(body),
        )
        .await
    }
}

/// The `error` object of a Google error body.
pub fn error_of(answer: &Answer) -> Value {
    answer.json()["error"].clone()
}

/// The detail of a given @type suffix (e.g. "QuotaFailure").
pub fn detail(error: &Value, kind: &str) -> Option<Value> {
    error["details"]
        .as_array()?
        .iter()
        .find(|d| d["@type"].as_str().is_some_and(|t| t.ends_with(kind)))
        .cloned()
}
