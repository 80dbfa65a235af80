//! The demo's closing report: the recorder's books next to the emulator's ledger, what Gemini
//! CLI saw, the revoked key's fate and the tasks that moved between agents. `problems()` lists
//! every way the run fell short, so the demo (and its test) can fail on them.

use crate::demo::workload::Job;
use crate::procs::Finished;
use crate::watch::View;
use anyhow::Context;
use serde_json::Value;
use sqlx::Row;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One `gemfleet-agent run` and what it said.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub task: String,
    pub follow_up: bool,
    pub agent: String,
    pub exit_code: i32,
    /// The run was killed on purpose (its machine "lost power").
    pub killed: bool,
    /// API errors Gemini CLI counted (its `-o json` stats), and how many were 429s.
    pub cli_api_errors: u64,
    pub cli_429s: u64,
    pub cli_requests: u64,
    pub response: String,
    pub took: Duration,
    pub error: Option<String>,
}

impl RunRecord {
    pub fn from_output(
        job: &Job,
        agent: String,
        out: anyhow::Result<Finished>,
        took: Duration,
        killed: bool,
    ) -> Self {
        let mut r = RunRecord {
            task: job.task.clone(),
            follow_up: job.follow_up,
            agent,
            exit_code: -1,
            killed,
            cli_api_errors: 0,
            cli_429s: 0,
            cli_requests: 0,
            response: String::new(),
            took,
            error: None,
        };
        match out {
            Err(e) => r.error = Some(format!("{e:#}")),
            Ok(f) => {
                r.exit_code = f.code;
                match json_object(&f.stdout) {
                    Some(v) => {
                        r.response = v["response"].as_str().unwrap_or_default().to_string();
                        if let Some(models) = v["stats"]["models"].as_object() {
                            for m in models.values() {
                                let api = &m["api"];
                                r.cli_requests += api["totalRequests"].as_u64().unwrap_or(0);
                                r.cli_api_errors += api["totalErrors"].as_u64().unwrap_or(0);
                                if let Some(by) = api["errorsByType"].as_object() {
                                    r.cli_429s += by
                                        .iter()
                                        .filter(|(k, _)| {
                                            k.contains("429") || k.contains("RESOURCE_EXHAUSTED")
                                        })
                                        .map(|(_, n)| n.as_u64().unwrap_or(0))
                                        .sum::<u64>();
                                }
                            }
                        }
                    }
                    None if f.code != 0 => {
                        let tail: Vec<&str> = f.stderr.lines().rev().take(3).collect();
                        r.error = Some(tail.into_iter().rev().collect::<Vec<_>>().join(" | "));
                        // Gemini CLI exits with the HTTP status modulo 256 on API failures.
                        if f.code == 173 {
                            r.cli_429s += 1;
                        }
                    }
                    None => {}
                }
            }
        }
        r
    }
}

/// The first JSON object in `text` (Gemini CLI's `-o json` output).
fn json_object(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// Requests and tokens of one key, from both sides.
#[derive(Debug, Clone, Default)]
pub struct KeyBooks {
    pub key: String,
    pub project: String,
    pub recorder_requests: u64,
    pub recorder_input: u64,
    pub recorder_output: u64,
    pub recorder_abandoned: u64,
    pub emulator_requests: u64,
    pub emulator_input: u64,
    pub emulator_output: u64,
    pub emulator_429s: u64,
    pub emulator_errors: u64,
    pub state: String,
    pub state_reason: String,
}

impl KeyBooks {
    /// Requests and tokens agree exactly.
    pub fn exact(&self) -> bool {
        self.recorder_requests == self.emulator_requests
            && self.recorder_input == self.emulator_input
            && self.recorder_output == self.emulator_output
    }
}

#[derive(Debug, Clone)]
pub struct Report {
    pub runs: Vec<RunRecord>,
    pub keys: Vec<KeyBooks>,
    pub revoked_key: String,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Requests the emulator admitted with the revoked key after it was revoked (must be 0:
    /// it rejects them) and rejections it answered for it.
    pub revoked_rejections: u64,
    pub killed: Option<(String, String)>,
    /// Tasks that ran on more than one agent: (task, agents in order).
    pub moved_tasks: Vec<(String, Vec<String>)>,
    pub tasks_in_recorder: Vec<(String, String, i64)>,
    pub alerts: Vec<String>,
    pub took: Duration,
}

/// Reads the recorder's database and the emulator's ledger into a report.
#[allow(clippy::too_many_arguments)]
pub async fn gather(
    pool: &sqlx::PgPool,
    ledger: &Value,
    runs: Vec<RunRecord>,
    revoked_key: &str,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    killed: Option<(String, String)>,
    view: View,
    took: Duration,
) -> anyhow::Result<Report> {
    let mut books: BTreeMap<String, KeyBooks> = BTreeMap::new();
    for row in sqlx::query("SELECT key_name, project_id, state, coalesce(disabled_reason, '') AS reason FROM api_keys ORDER BY key_name")
        .fetch_all(pool)
        .await
        .context("reading api_keys")?
    {
        let key: String = row.try_get("key_name")?;
        books.insert(
            key.clone(),
            KeyBooks {
                key,
                project: row.try_get("project_id")?,
                state: row.try_get("state")?,
                state_reason: row.try_get("reason")?,
                ..KeyBooks::default()
            },
        );
    }
    for row in sqlx::query(
        "SELECT key_name, count(*)::BIGINT AS n, coalesce(sum(prompt_tokens),0)::BIGINT AS input, \
         coalesce(sum(candidates_tokens),0)::BIGINT AS output FROM usage_log GROUP BY key_name",
    )
    .fetch_all(pool)
    .await
    .context("reading usage_log")?
    {
        let key: String = row.try_get("key_name")?;
        let b = books.entry(key.clone()).or_insert_with(|| KeyBooks {
            key,
            ..KeyBooks::default()
        });
        b.recorder_requests = row.try_get::<i64, _>("n")?.max(0) as u64;
        b.recorder_input = row.try_get::<i64, _>("input")?.max(0) as u64;
        b.recorder_output = row.try_get::<i64, _>("output")?.max(0) as u64;
    }
    for row in sqlx::query("SELECT key_name, count(*)::BIGINT AS n FROM claims WHERE outcome = 'abandoned' AND key_name IS NOT NULL GROUP BY key_name")
        .fetch_all(pool)
        .await
        .context("reading abandoned grants")?
    {
        let key: String = row.try_get("key_name")?;
        if let Some(b) = books.get_mut(&key) {
            b.recorder_abandoned = row.try_get::<i64, _>("n")?.max(0) as u64;
        }
    }
    let mut revoked_rejections = 0;
    for e in ledger["entries"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default().to_string();
        let b = books.entry(key.clone()).or_insert_with(|| KeyBooks {
            key: key.clone(),
            ..KeyBooks::default()
        });
        let n = |f: &str| e[f].as_u64().unwrap_or(0);
        b.emulator_requests += n("requests");
        b.emulator_input += n("input_tokens");
        b.emulator_output += n("output_tokens");
        b.emulator_429s += n("rate_limited_requests");
        let errors: u64 = e["errors"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, v)| v.as_u64().unwrap_or(0))
            .sum();
        b.emulator_errors += errors;
        if key == revoked_key {
            revoked_rejections += errors;
        }
    }
    let mut agents_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &runs {
        // A killed run counts as where the task was; the run that finished it shows where it went.
        if r.exit_code == 0 || r.killed {
            agents_of
                .entry(r.task.clone())
                .or_default()
                .push(r.agent.clone());
        }
    }
    let moved_tasks = agents_of
        .into_iter()
        .filter(|(_, a)| a.windows(2).any(|w| w[0] != w[1]))
        .collect();
    let mut tasks_in_recorder = Vec::new();
    for row in sqlx::query("SELECT id, status, attempts::BIGINT AS attempts FROM tasks ORDER BY id")
        .fetch_all(pool)
        .await
        .context("reading tasks")?
    {
        tasks_in_recorder.push((
            row.try_get("id")?,
            row.try_get("status")?,
            row.try_get("attempts")?,
        ));
    }
    Ok(Report {
        runs,
        keys: books.into_values().collect(),
        revoked_key: revoked_key.to_string(),
        revoked_at,
        revoked_rejections,
        killed,
        moved_tasks,
        tasks_in_recorder,
        alerts: view.alerts,
        took,
    })
}

impl Report {
    /// Everything that falls short of the main job's promises.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let finished: Vec<&RunRecord> = self.runs.iter().filter(|r| !r.killed).collect();
        for r in &finished {
            if r.exit_code != 0 {
                p.push(format!(
                    "run of task {} on {} exited {}: {}",
                    r.task,
                    r.agent,
                    r.exit_code,
                    r.error.clone().unwrap_or_default()
                ));
            }
        }
        let cli_429: u64 = finished.iter().map(|r| r.cli_429s).sum();
        if cli_429 > 0 {
            p.push(format!("Gemini CLI saw {cli_429} 429 answers (must be 0)"));
        }
        let cli_errors: u64 = finished.iter().map(|r| r.cli_api_errors).sum();
        if cli_errors > 0 {
            p.push(format!(
                "Gemini CLI counted {cli_errors} API errors (must be 0)"
            ));
        }
        for k in &self.keys {
            if k.emulator_429s > 0 {
                p.push(format!(
                    "the emulator answered {} 429s to key {}",
                    k.emulator_429s, k.key
                ));
            }
            // A request in flight when its agent was killed is admitted upstream, but its usage
            // never reached the recorder: the recorder holds it as an abandoned grant instead.
            let short = k.emulator_requests.saturating_sub(k.recorder_requests);
            if k.recorder_requests > k.emulator_requests || short > k.recorder_abandoned {
                p.push(format!(
                    "key {}: the recorder has {} requests, the emulator {} (abandoned grants {})",
                    k.key, k.recorder_requests, k.emulator_requests, k.recorder_abandoned
                ));
            } else if short == 0 && !k.exact() {
                p.push(format!(
                    "key {}: tokens differ (recorder in/out {}/{}, emulator {}/{})",
                    k.key, k.recorder_input, k.recorder_output, k.emulator_input, k.emulator_output
                ));
            }
        }
        if self.revoked_at.is_some() && self.revoked_rejections > 0 {
            match self.keys.iter().find(|k| k.key == self.revoked_key) {
                Some(k) if k.state == "disabled" => {}
                Some(k) => p.push(format!(
                    "revoked key {} is still {} in the recorder",
                    k.key, k.state
                )),
                None => p.push(format!(
                    "revoked key {} is unknown to the recorder",
                    self.revoked_key
                )),
            }
        }
        if self.killed.is_some() && self.moved_tasks.is_empty() {
            p.push("no task moved to another agent".into());
        }
        let succeeded = finished.iter().filter(|r| r.exit_code == 0).count();
        if succeeded == 0 {
            p.push("no run succeeded".into());
        }
        p
    }

    /// The report as people read it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let finished: Vec<&RunRecord> = self.runs.iter().filter(|r| !r.killed).collect();
        let ok = finished.iter().filter(|r| r.exit_code == 0).count();
        let tasks: std::collections::BTreeSet<&str> =
            self.runs.iter().map(|r| r.task.as_str()).collect();
        let _ = writeln!(
            s,
            "\n══ gemfleet demo report ({:.0} s) ══",
            self.took.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "tasks: {}  runs: {} finished ({} succeeded), {} killed on purpose",
            tasks.len(),
            finished.len(),
            ok,
            self.runs.len() - finished.len()
        );
        let _ = writeln!(
            s,
            "Gemini CLI: {} model requests, {} API errors, {} 429s",
            finished.iter().map(|r| r.cli_requests).sum::<u64>(),
            finished.iter().map(|r| r.cli_api_errors).sum::<u64>(),
            finished.iter().map(|r| r.cli_429s).sum::<u64>()
        );
        let _ = writeln!(
            s,
            "\nper key            recorder: requests  input  output | emulator: requests  input  output  429s errors | state\n  (input = promptTokenCount, output = candidatesTokenCount)"
        );
        let mut by_project: BTreeMap<&str, [u64; 6]> = BTreeMap::new();
        for k in &self.keys {
            let _ = writeln!(
                s,
                "  {:<10} {:<12} {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7} {:>5} {:>6} | {}{}{}",
                k.key,
                k.project,
                k.recorder_requests,
                k.recorder_input,
                k.recorder_output,
                k.emulator_requests,
                k.emulator_input,
                k.emulator_output,
                k.emulator_429s,
                k.emulator_errors,
                k.state,
                if k.state_reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", k.state_reason)
                },
                if k.exact() {
                    "  ✓ exact"
                } else if k.recorder_abandoned > 0 {
                    "  (abandoned grant)"
                } else {
                    "  ✗"
                },
            );
            let e = by_project.entry(k.project.as_str()).or_default();
            for (i, v) in [
                k.recorder_requests,
                k.recorder_input,
                k.recorder_output,
                k.emulator_requests,
                k.emulator_input,
                k.emulator_output,
            ]
            .into_iter()
            .enumerate()
            {
                e[i] += v;
            }
        }
        let _ = writeln!(s, "per project");
        for (p, v) in &by_project {
            let _ = writeln!(
                s,
                "  {:<23} {:>8} {:>8} {:>7} | {:>8} {:>8} {:>7}",
                p, v[0], v[1], v[2], v[3], v[4], v[5]
            );
        }
        if let Some(at) = self.revoked_at {
            let k = self.keys.iter().find(|k| k.key == self.revoked_key);
            let _ = writeln!(
                s,
                "\nrevoked key {} (at {}): the emulator rejected it {} time(s); the recorder holds it {}{}",
                self.revoked_key,
                at.format("%H:%M:%S"),
                self.revoked_rejections,
                k.map(|k| k.state.as_str()).unwrap_or("unknown"),
                k.filter(|k| !k.state_reason.is_empty())
                    .map(|k| format!(" ({})", k.state_reason))
                    .unwrap_or_default()
            );
        }
        if let Some((agent, task)) = &self.killed {
            let _ = writeln!(s, "killed agent {agent} during task {task}");
        }
        for (task, agents) in &self.moved_tasks {
            let _ = writeln!(s, "resumed task {task}: ran on {}", agents.join(" → "));
        }
        if !self.alerts.is_empty() {
            let _ = writeln!(s, "alerts raised:");
            for a in &self.alerts {
                let _ = writeln!(s, "  {a}");
            }
        }
        let problems = self.problems();
        if problems.is_empty() {
            let _ = writeln!(
                s,
                "\nresult: OK — no quota tripped, every token accounted for, the killed agent's task finished elsewhere"
            );
        } else {
            let _ = writeln!(s, "\nresult: {} problem(s):", problems.len());
            for p in problems {
                let _ = writeln!(s, "  ✗ {p}");
            }
        }
        s
    }
}
