//! A complete local fleet: a private broker, the emulator as upstream, the recorder with its
//! projects and keys, and N agent daemons — each a real process of its own binary, so that an
//! agent can be killed like a machine that loses power.

use crate::procs::{self, Proc};
use anyhow::{Context, bail};
use base64::Engine as _;
use gemfleet_testkit::Broker;
use rand::RngCore;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// One project of the plan and its limits for the plan's model.
#[derive(Debug, Clone)]
pub struct ProjectPlan {
    pub name: String,
    pub tier: &'static str,
    pub rpm: u64,
    pub tpm: u64,
    pub rpd: u64,
}

/// One key: its name and project. The secret is generated at start and never printed.
#[derive(Debug, Clone)]
pub struct KeyPlan {
    pub name: String,
    pub project: String,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Logs, configs and the agents' data live under it.
    pub work_dir: PathBuf,
    /// The PostgreSQL server (a database named `database` is created on it, replacing one of
    /// that name).
    pub server_url: String,
    pub database: String,
    /// Length of the quota minute, the same for the emulator and the recorder.
    pub minute_seconds: f64,
    pub model: String,
    pub projects: Vec<ProjectPlan>,
    pub keys: Vec<KeyPlan>,
    pub agents: Vec<String>,
}

/// A running fleet. Dropping it kills every process.
pub struct Stack {
    pub plan: Plan,
    pub broker: Broker,
    pub emulator: Proc,
    pub emulator_url: String,
    pub recorder: Proc,
    pub recorder_config: PathBuf,
    pub recorder_http: String,
    pub agents: Vec<AgentProc>,
    pub database_url: String,
    pub pool: sqlx::PgPool,
}

/// One agent daemon and how to reach it.
pub struct AgentProc {
    pub id: String,
    pub data_dir: PathBuf,
    pub proc: Proc,
}

/// A random secret for a demo or benchmark key (never printed).
pub fn random_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "demo-{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

impl Stack {
    /// Starts everything and waits until each part answers.
    pub async fn start(plan: Plan, say: &dyn Fn(&str)) -> anyhow::Result<Stack> {
        std::fs::create_dir_all(&plan.work_dir)
            .with_context(|| format!("creating {}", plan.work_dir.display()))?;
        let logs = plan.work_dir.join("logs");
        std::fs::create_dir_all(&logs).context("creating the log folder")?;
        let recorder_bin = procs::bin("gemfleet-recorder")?;
        let emulator_bin = procs::bin("gemfleet-emulator")?;
        let agent_bin = procs::bin("gemfleet-agent")?;

        say("database");
        let database_url = fresh_database(&plan.server_url, &plan.database).await?;
        let pool = sqlx::PgPool::connect(&database_url)
            .await
            .with_context(|| format!("connecting to {}", redact(&database_url)))?;

        say("broker");
        let broker = Broker::start()
            .await
            .context("starting a private mosquitto")?;

        say("emulator");
        let secrets: Vec<String> = plan.keys.iter().map(|_| random_secret()).collect();
        let emulator_config = plan.work_dir.join("emulator.toml");
        write_private(&emulator_config, &emulator_toml(&plan, &secrets))?;
        let emulator_port = gemfleet_testkit::free_port();
        let emulator_url = format!("http://127.0.0.1:{emulator_port}");
        let mut cmd = Command::new(&emulator_bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{emulator_port}"))
            .arg("--config")
            .arg(&emulator_config);
        let mut emulator = Proc::spawn("emulator", cmd, &logs)?;
        procs::wait_http(
            &format!("{emulator_url}/_emulator/ledger"),
            Duration::from_secs(20),
            &mut emulator,
        )
        .await?;

        say("recorder");
        let master_key_file = plan.work_dir.join("master.key");
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        write_private(
            &master_key_file,
            &base64::engine::general_purpose::STANDARD.encode(key),
        )?;
        let http_port = gemfleet_testkit::free_port();
        let recorder_config = plan.work_dir.join("recorder.toml");
        let recorder_toml = format!(
            "database_url = \"{database_url}\"\nrecorder_id = \"recorder\"\nmaster_key_file = \"{}\"\n\
             minute_seconds = {}\nhttp_listen = \"127.0.0.1:{http_port}\"\n\n[broker]\nhost = \"127.0.0.1\"\nport = {}\n",
            master_key_file.display(),
            plan.minute_seconds,
            broker.port()
        );
        write_private(&recorder_config, &recorder_toml)?;
        let admin = |args: &[&str]| {
            let mut c = Command::new(&recorder_bin);
            c.arg("--config")
                .arg(&recorder_config)
                .args(args)
                .env_remove("DATABASE_URL");
            c
        };
        procs::check(admin(&["migrate"]), None, "gemfleet-recorder migrate").await?;
        for p in &plan.projects {
            let limits = format!("rpm={},tpm={},rpd={}", p.rpm, p.tpm, p.rpd);
            procs::check(
                admin(&[
                    "projects",
                    "set",
                    &p.name,
                    "--tier",
                    p.tier,
                    "--limit",
                    &plan.model,
                    &limits,
                ]),
                None,
                "gemfleet-recorder projects set",
            )
            .await?;
        }
        for (k, secret) in plan.keys.iter().zip(&secrets) {
            procs::check(
                admin(&["keys", "add", &k.name, "--project", &k.project]),
                Some(secret),
                "gemfleet-recorder keys add",
            )
            .await?;
        }
        let mut cmd = admin(&["serve"]);
        cmd.env("GEMFLEET_LOG", "info");
        let mut recorder = Proc::spawn("recorder", cmd, &logs)?;
        let recorder_http = format!("http://127.0.0.1:{http_port}");
        procs::wait_http(
            &format!("{recorder_http}/healthz"),
            Duration::from_secs(30),
            &mut recorder,
        )
        .await?;

        say("agents");
        let mut agents = Vec::new();
        for id in &plan.agents {
            agents.push(
                start_agent(
                    &agent_bin,
                    id,
                    &plan.work_dir,
                    broker.port(),
                    &emulator_url,
                    &logs,
                )
                .await?,
            );
        }
        Ok(Stack {
            plan,
            broker,
            emulator,
            emulator_url,
            recorder,
            recorder_config,
            recorder_http,
            agents,
            database_url,
            pool,
        })
    }

    /// The arguments that point an agent command at agent `i`'s daemon (and let `run` start an
    /// equivalent one when the daemon is gone).
    pub fn agent_args(&self, i: usize) -> Vec<String> {
        let a = &self.agents[i];
        agent_args(&a.id, &a.data_dir, self.broker.port(), &self.emulator_url)
    }

    /// Revokes a key upstream: the emulator starts rejecting it as invalid.
    pub async fn revoke_key(&self, name: &str) -> anyhow::Result<()> {
        let url = format!("{}/_emulator/keys/{name}/state", self.emulator_url);
        let resp = reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({"state": "invalid"}))
            .send()
            .await
            .context("asking the emulator to revoke a key")?;
        if !resp.status().is_success() {
            bail!("the emulator refused to revoke {name}: {}", resp.status());
        }
        Ok(())
    }

    /// The emulator's ledger (JSON).
    pub async fn ledger(&self) -> anyhow::Result<serde_json::Value> {
        let url = format!("{}/_emulator/ledger", self.emulator_url);
        let v = reqwest::get(&url)
            .await
            .context("reading the emulator's ledger")?;
        v.json().await.context("decoding the emulator's ledger")
    }

    /// Stops everything politely (agents first, so their last events reach the recorder).
    pub async fn stop(mut self) {
        for a in &mut self.agents {
            a.proc.terminate(Duration::from_secs(10)).await;
        }
        self.recorder.terminate(Duration::from_secs(10)).await;
        self.emulator.terminate(Duration::from_secs(5)).await;
        let _ = self.broker.stop().await;
        self.pool.close().await;
    }
}

fn agent_args(id: &str, data_dir: &Path, broker_port: u16, upstream: &str) -> Vec<String> {
    vec![
        "--agent-id".into(),
        id.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--broker".into(),
        format!("127.0.0.1:{broker_port}"),
        "--upstream".into(),
        upstream.into(),
    ]
}

/// Starts (or restarts) agent `id`'s daemon.
pub async fn start_agent(
    bin: &Path,
    id: &str,
    work_dir: &Path,
    broker_port: u16,
    upstream: &str,
    logs: &Path,
) -> anyhow::Result<AgentProc> {
    let data_dir = work_dir.join("agents").join(id);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    // A daemon killed with -9 leaves its state file behind; the new one writes its own.
    let state = data_dir.join("agent.json");
    let _ = std::fs::remove_file(&state);
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .args(agent_args(id, &data_dir, broker_port, upstream))
        .arg("--listen")
        .arg("127.0.0.1:0");
    let mut proc = Proc::spawn(&format!("agent-{id}"), cmd, logs)?;
    // The daemon advertises its proxy address in its data dir once it listens.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !state.exists() {
        if !proc.is_running() {
            bail!(
                "agent {id} exited while starting; its log ends:\n{}",
                proc.log_tail(20)
            );
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "agent {id} did not start within 20 s; its log ends:\n{}",
                proc.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(AgentProc {
        id: id.to_string(),
        data_dir,
        proc,
    })
}

fn emulator_toml(plan: &Plan, secrets: &[String]) -> String {
    emulator_config(plan.minute_seconds, &plan.projects, &plan.keys, secrets)
}

/// The emulator's TOML config for these projects and keys (the same limits the recorder gets).
pub fn emulator_config(
    minute_seconds: f64,
    projects: &[ProjectPlan],
    keys: &[KeyPlan],
    secrets: &[String],
) -> String {
    let mut s = format!("minute_seconds = {minute_seconds}\nseed = 1\n\n");
    for (i, p) in projects.iter().enumerate() {
        let _ = write!(
            s,
            "[[projects]]\nname = \"{}\"\nnumber = {}\ntier = \"{}\"\n[projects.default_limits]\n\
             requests_per_minute = {}\ninput_tokens_per_minute = {}\nrequests_per_day = {}\n\n",
            p.name,
            100_000_000_001u64 + i as u64,
            p.tier,
            p.rpm,
            p.tpm,
            p.rpd
        );
    }
    for (k, secret) in keys.iter().zip(secrets) {
        let _ = write!(
            s,
            "[[keys]]\nname = \"{}\"\nsecret = \"{secret}\"\nproject = \"{}\"\n\n",
            k.name, k.project
        );
    }
    s
}

/// Creates database `name` on the server (dropping an old one) and returns its URL.
async fn fresh_database(server_url: &str, name: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("database name {name:?}: use 1-63 lowercase letters, digits and '_'");
    }
    let admin = sqlx::PgPool::connect(server_url).await.with_context(|| {
        format!(
            "PostgreSQL is not reachable at {}: start it (e.g. `pg_ctlcluster --skip-systemctl-redirect \
             $(ls /etc/postgresql) main start`) or pass --database-url",
            redact(server_url)
        )
    })?;
    // The name was checked above to be a plain identifier.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .with_context(|| format!("dropping the old database {name}"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await
        .with_context(|| format!("creating database {name}"))?;
    admin.close().await;
    let base = match server_url.rfind('/') {
        Some(i) if server_url[..i].contains("://") && !server_url[..i].ends_with('/') => {
            &server_url[..i]
        }
        _ => server_url.trim_end_matches('/'),
    };
    Ok(format!("{base}/{name}"))
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
