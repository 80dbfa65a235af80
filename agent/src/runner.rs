//! `gemfleet-agent run`: one Gemini CLI task through the daemon. Restores the task's session
//! from the recorder into an isolated CLI home, runs the real `gemini` against the proxy,
//! saves the session back, reports the run and exits with gemini's code.

use crate::control::StatusReport;
use crate::stats::TaskStats;
use anyhow::{Context as _, bail};
use gemfleet_protocol::{ModelName, TaskEvent, TaskId, TaskStatus};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The CLI's project slug in every task home: `run` registers it itself (projects.json and
/// the ownership marker), so a restored session lands where the CLI will look.
pub const SLUG: &str = "task";
/// What the CLI gets as its key: the proxy replaces it; never a real secret.
pub const PLACEHOLDER_KEY: &str = "gemfleet-placeholder-key";

/// The default task id: `{hostname}-{YYYY-MM-DD}` (local date).
pub fn default_task_id() -> Result<TaskId, gemfleet_protocol::NameError> {
    let host = crate::settings::sanitize_name(&crate::settings::hostname());
    let date = chrono::Local::now().format("%Y-%m-%d");
    let mut base = host;
    base.truncate(64 - 11);
    TaskId::parse(format!("{base}-{date}"))
}

/// The CLI session id of a task: UUID-shaped, derived from the task id, so every machine
/// resumes the same session.
pub fn session_id(task: &TaskId) -> String {
    let d = Sha256::digest(task.as_str().as_bytes());
    let h = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Where the Gemini CLI is: `--gemini`, `GEMFLEET_GEMINI`, a `node_modules/.bin/gemini` above
/// the current directory or the executable, then `PATH`.
pub fn find_gemini(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--gemini {}: no such file", p.display());
    }
    if let Some(p) = std::env::var_os("GEMFLEET_GEMINI").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("GEMFLEET_GEMINI={}: no such file", p.display());
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(d) = std::env::current_dir() {
        starts.push(d);
    }
    if let Ok(e) = std::env::current_exe() {
        starts.push(e);
    }
    for s in starts {
        for dir in s.ancestors() {
            let c = dir.join("node_modules/.bin/gemini");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let c = dir.join("gemini");
            if c.is_file() {
                return Ok(c);
            }
        }
    }
    bail!(
        "Gemini CLI not found: install it (`npm install @google/gemini-cli@0.61.0`), or pass --gemini PATH, or set GEMFLEET_GEMINI"
    )
}

/// Prepares a task's isolated CLI home: settings.json, the project registration for `cwd`.
/// Returns the chats directory.
pub fn prepare_home(home: &Path, cwd: &Path) -> anyhow::Result<PathBuf> {
    let gem = home.join(".gemini");
    let chats = gem.join("tmp").join(SLUG).join("chats");
    std::fs::create_dir_all(&chats).with_context(|| format!("creating {}", chats.display()))?;
    std::fs::create_dir_all(home.join("tmp"))?;
    let settings = serde_json::json!({
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": false},
        // The proxy absorbs throttles on other keys; the CLI need not stack its own retries.
        "general": {"maxAttempts": 2, "disableAutoUpdate": true, "disableUpdateNag": true}
    });
    std::fs::write(
        gem.join("settings.json"),
        serde_json::to_vec_pretty(&settings)?,
    )?;
    let cwd_s = cwd.to_string_lossy().to_string();
    let registry = serde_json::json!({"projects": {cwd_s.clone(): SLUG}});
    std::fs::write(
        gem.join("projects.json"),
        serde_json::to_vec_pretty(&registry)?,
    )?;
    std::fs::write(gem.join("tmp").join(SLUG).join(".project_root"), &cwd_s)?;
    let history = gem.join("history").join(SLUG);
    if history.join(".project_root").exists() {
        std::fs::write(history.join(".project_root"), &cwd_s)?;
    }
    Ok(chats)
}

/// The session file of `session` in `chats`, if any (the CLI names it
/// `session-<time>-<first 8 of id>.jsonl`; the id inside decides).
pub fn find_session_file(chats: &Path, session: &str) -> Option<PathBuf> {
    let short = session.get(..8)?;
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in std::fs::read_dir(chats).ok()?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !(name.starts_with("session-")
            && (name.ends_with(&format!("-{short}.jsonl"))
                || name.ends_with(&format!("-{short}.json"))))
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        if !text.lines().take(3).any(|l| l.contains(session)) {
            continue;
        }
        let modified = e
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        found.push((modified, e.path()));
    }
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Puts a restored session file into `chats`, replacing any local copy of that session.
pub fn install_session_file(chats: &Path, session: &str, file: &[u8]) -> anyhow::Result<PathBuf> {
    while let Some(old) = find_session_file(chats, session) {
        std::fs::remove_file(&old)?;
    }
    let short = session.get(..8).unwrap_or(session);
    let p = chats.join(format!("session-gemfleet-{short}.jsonl"));
    std::fs::write(&p, file)?;
    Ok(p)
}

/// A client of the daemon's control API.
pub struct Control {
    base: String,
    http: reqwest::Client,
}

impl Control {
    pub fn new(base: String) -> anyhow::Result<Control> {
        let http = reqwest::Client::builder().build()?;
        Ok(Control { base, http })
    }
    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn status(&self, timeout: Duration) -> anyhow::Result<StatusReport> {
        let r = self
            .http
            .get(format!("{}/_agent/status", self.base))
            .timeout(timeout)
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }
    pub async fn stats(&self, task: &TaskId) -> anyhow::Result<TaskStats> {
        let r = self
            .http
            .get(format!("{}/_agent/tasks/{task}/stats", self.base))
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }
    pub async fn event(&self, ev: &TaskEvent) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/_agent/tasks/{}/event", self.base, ev.task_id))
            .json(ev)
            .send()
            .await?;
        check(r).await.map(|_| ())
    }
    /// `Ok(None)` when the task has no stored context.
    pub async fn load_context(&self, task: &TaskId) -> anyhow::Result<Option<Vec<u8>>> {
        let r = self
            .http
            .get(format!("{}/_agent/tasks/{task}/context", self.base))
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(check(r).await?.to_vec()))
    }
    pub async fn save_context(
        &self,
        task: &TaskId,
        session: &str,
        file: Vec<u8>,
    ) -> anyhow::Result<()> {
        let r = self
            .http
            // The session id is CLI-safe ([A-Za-z0-9_-]): no escaping needed.
            .put(format!(
                "{}/_agent/tasks/{task}/context?session_id={session}",
                self.base
            ))
            .body(file)
            .send()
            .await?;
        check(r).await.map(|_| ())
    }
    pub async fn flush(&self, timeout: Duration) -> anyhow::Result<u64> {
        let r = self
            .http
            .post(format!(
                "{}/_agent/flush?timeout_ms={}",
                self.base,
                timeout.as_millis()
            ))
            .send()
            .await?;
        let v: serde_json::Value = check(r)
            .await
            .and_then(|b| Ok(serde_json::from_slice(&b)?))?;
        Ok(v.get("depth")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0))
    }
}

async fn check(r: reqwest::Response) -> anyhow::Result<bytes::Bytes> {
    let status = r.status();
    let body = r.bytes().await?;
    if status.is_success() {
        return Ok(body);
    }
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str().map(String::from)))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
    bail!("{msg}")
}

/// What `run` was asked to do.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub task: TaskId,
    pub model: Option<ModelName>,
    pub cwd: PathBuf,
    pub gemini: PathBuf,
    pub gemini_args: Vec<String>,
    pub data_dir: PathBuf,
    pub flush_timeout: Duration,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub exit_code: i32,
    pub session_id: String,
    pub resumed: bool,
    pub stats: TaskStats,
    pub duration: Duration,
    pub context_saved: Result<u64, String>,
    pub unflushed: u64,
}

/// Runs one task through the daemon at `control`.
pub async fn run(control: &Control, req: &RunRequest) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let home = req
        .data_dir
        .join("tasks")
        .join(req.task.as_str())
        .join("home");
    let chats = prepare_home(&home, &req.cwd)?;
    let session = session_id(&req.task);
    let resumed = match control.load_context(&req.task).await {
        Ok(Some(file)) => {
            install_session_file(&chats, &session, &file)?;
            true
        }
        Ok(None) => find_session_file(&chats, &session).is_some(),
        Err(e) => {
            if find_session_file(&chats, &session).is_some() {
                tracing::warn!(
                    "could not load the task's context from the recorder ({e}); resuming the local copy"
                );
                true
            } else {
                bail!(
                    "could not load the context of task {} from the recorder: {e}",
                    req.task
                );
            }
        }
    };
    let before = control.stats(&req.task).await.unwrap_or_default();
    let running = TaskEvent {
        task_id: req.task.clone(),
        status: TaskStatus::Running,
        session_id: Some(session.clone()),
        requests: 0,
        input_tokens: 0,
        output_tokens: 0,
        total_tokens: 0,
        duration_ms: 0,
        exit_code: None,
    };
    control
        .event(&running)
        .await
        .context("recording the task start")?;

    let mut cmd = tokio::process::Command::new(&req.gemini);
    if resumed {
        cmd.arg("--resume").arg(&session);
    } else {
        cmd.arg("--session-id").arg(&session);
    }
    cmd.args(&req.gemini_args).current_dir(&req.cwd);
    // Whatever the caller's environment says about Google credentials must not reach the
    // CLI: the proxy holds the keys.
    for k in [
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GOOGLE_GENAI_USE_VERTEXAI",
        "GOOGLE_GENAI_USE_GCA",
        "GOOGLE_CLOUD_PROJECT",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GEMINI_MODEL",
    ] {
        cmd.env_remove(k);
    }
    cmd.env("GEMINI_CLI_HOME", &home)
        .env("GEMINI_API_KEY", PLACEHOLDER_KEY)
        .env(
            "GOOGLE_GEMINI_BASE_URL",
            format!("{}/t/{}", control.base(), req.task),
        )
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
        .env("GEMINI_CLI_NO_RELAUNCH", "true")
        .env("TMPDIR", home.join("tmp"));
    if let Some(m) = &req.model {
        cmd.env("GEMINI_MODEL", m.as_str());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", req.gemini.display()))?;
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.context("waiting for gemini")?,
            // Ctrl-C reaches gemini too (same process group): let it finish and save.
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let exit_code = status.code().unwrap_or(128 + 9);

    let context_saved = match find_session_file(&chats, &session) {
        Some(p) => match std::fs::read(&p) {
            Ok(bytes) => {
                let n = bytes.len() as u64;
                control
                    .save_context(&req.task, &session, bytes)
                    .await
                    .map(|_| n)
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(format!("reading {}: {e}", p.display())),
        },
        None => Err("gemini wrote no session file".into()),
    };
    let after = control.stats(&req.task).await.unwrap_or_default();
    let stats = after.since(&before);
    let duration = started.elapsed();
    let done = TaskEvent {
        task_id: req.task.clone(),
        status: if exit_code == 0 {
            TaskStatus::Succeeded
        } else {
            TaskStatus::Failed
        },
        session_id: Some(session.clone()),
        requests: stats.requests,
        input_tokens: stats.input_tokens,
        output_tokens: stats.output_tokens,
        total_tokens: stats.total_tokens,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        exit_code: Some(exit_code),
    };
    if let Err(e) = control.event(&done).await {
        tracing::warn!("recording the task end failed: {e}");
    }
    let unflushed = control.flush(req.flush_timeout).await.unwrap_or(u64::MAX);
    Ok(RunOutcome {
        exit_code,
        session_id: session,
        resumed,
        stats,
        duration,
        context_saved,
        unflushed,
    })
}

/// The short summary printed after a run.
pub fn summary(task: &TaskId, o: &RunOutcome) -> String {
    let keys: Vec<&str> = o.stats.keys.iter().map(String::as_str).collect();
    let ctx = match &o.context_saved {
        Ok(n) => format!("context saved ({n} bytes)"),
        Err(e) => format!("context NOT saved: {e}"),
    };
    let mut s = format!(
        "gemfleet: task {task} {} session {}: exit {}, {} requests, {} input / {} output tokens, {:.1} s, keys [{}], {ctx}",
        if o.resumed { "resumed" } else { "started" },
        o.session_id,
        o.exit_code,
        o.stats.requests,
        o.stats.input_tokens,
        o.stats.output_tokens,
        o.duration.as_secs_f64(),
        keys.join(", "),
    );
    if o.stats.absorbed > 0 {
        s.push_str(&format!(
            ", {} upstream failures absorbed",
            o.stats.absorbed
        ));
    }
    if o.stats.stopped > 0 {
        s.push_str(&format!(
            ", {} requests refused (no grant)",
            o.stats.stopped
        ));
    }
    if o.unflushed > 0 {
        s.push_str(&format!(
            ", {} events still in the outbox (sent later)",
            o.unflushed
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_stable_uuid_shaped_and_cli_safe() {
        let t = TaskId::parse("box-2026-12-03").unwrap();
        let a = session_id(&t);
        assert_eq!(a, session_id(&t));
        assert_eq!(a.len(), 36);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
        assert_ne!(a, session_id(&TaskId::parse("other").unwrap()));
    }

    #[test]
    fn the_default_task_id_is_valid() {
        assert!(default_task_id().is_ok());
    }

    #[test]
    fn a_session_file_is_found_by_its_id_and_replaced_on_install() {
        let d = tempfile::tempdir().unwrap();
        let id = "0123abcd-0000-0000-0000-000000000000";
        std::fs::write(
            d.path().join("session-2026-01-01T00-00-0123abcd.jsonl"),
            format!("{{\"sessionId\":\"{id}\"}}\n"),
        )
        .unwrap();
        std::fs::write(
            d.path().join("session-2026-01-01T00-00-0123abcd.json"),
            "{\"sessionId\":\"other\"}",
        )
        .unwrap();
        assert!(
            find_session_file(d.path(), id)
                .unwrap()
                .ends_with("session-2026-01-01T00-00-0123abcd.jsonl")
        );
        let p = install_session_file(
            d.path(),
            id,
            format!("{{\"sessionId\":\"{id}\",\"x\":1}}\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(find_session_file(d.path(), id).unwrap(), p);
        assert!(
            !d.path()
                .join("session-2026-01-01T00-00-0123abcd.jsonl")
                .exists()
        );
    }
}
