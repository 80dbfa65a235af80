//! A whole fleet for one test: a private mosquitto, a fresh PostgreSQL database, the recorder
//! and the emulator in-process, agent daemons in-process or as child processes, and the real
//! Gemini CLI through `gemfleet-agent run`.

use base64::Engine;
use gemfleet_agent::daemon::{self, RunningDaemon};
use gemfleet_agent::settings::Settings as AgentSettings;
use gemfleet_emulator::{
    Config as EmuConfig, Emulator, KeyConfig, KeyState, Limits as EmuLimits, ProjectConfig,
    RunningEmulator,
};
use gemfleet_gemini::Tier;
use gemfleet_protocol::{KeyName, ModelName, ProjectId, Secret, TaskId};
use gemfleet_recorder::arbiter::ledger::Limits;
use gemfleet_recorder::crypto::MasterKey;
use gemfleet_recorder::{Recorder, RunningRecorder};
use gemfleet_testkit::{Broker, TestDb};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

pub const MODEL: &str = "gemini-2.5-flash";

pub struct KeySpec {
    pub name: &'static str,
    pub project: &'static str,
}

pub struct Stack {
    pub broker: Broker,
    pub db: TestDb,
    /// Kept alive for the test's duration.
    pub _recorder: RunningRecorder,
    pub emulator: RunningEmulator,
    pub dir: tempfile::TempDir,
    pub secrets: BTreeMap<String, String>,
}

fn secret_for(name: &str) -> String {
    let r: [u8; 16] = rand_bytes();
    format!("AIzaTEST{}{}", name.replace('-', ""), hex::encode(r))
}

fn rand_bytes() -> [u8; 16] {
    let u = uuid::Uuid::new_v4();
    *u.as_bytes()
}

impl Stack {
    /// One or more projects with `rpm` requests per (compressed) minute for [`MODEL`], and
    /// the given keys, known to both the emulator and the recorder.
    pub async fn start(
        rpm: u64,
        minute_seconds: f64,
        projects: &[&str],
        keys: &[KeySpec],
    ) -> Stack {
        Self::start_with(rpm, minute_seconds, projects, keys, |_| {}).await
    }

    /// [`Stack::start`] with a last change to the emulator's configuration.
    pub async fn start_with(
        rpm: u64,
        minute_seconds: f64,
        projects: &[&str],
        keys: &[KeySpec],
        tweak: impl FnOnce(&mut EmuConfig),
    ) -> Stack {
        gemfleet_testkit::init_crypto();
        let broker = Broker::start().await.expect("broker");
        let db = TestDb::migrated().await.expect("database");
        let secrets: BTreeMap<String, String> = keys
            .iter()
            .map(|k| (k.name.to_string(), secret_for(k.name)))
            .collect();

        let mut emu = EmuConfig {
            minute_seconds,
            ..EmuConfig::default()
        };
        for (i, p) in projects.iter().enumerate() {
            emu.projects.push(ProjectConfig {
                name: p.to_string(),
                number: 100_000_000_001 + i as u64,
                tier: Tier::Free,
                default_limits: EmuLimits {
                    requests_per_minute: Some(rpm),
                    ..EmuLimits::default()
                },
                ..ProjectConfig::default()
            });
        }
        for k in keys {
            emu.keys.push(KeyConfig {
                name: k.name.into(),
                secret: secrets[k.name].clone(),
                project: k.project.into(),
                state: KeyState::Valid,
            });
        }
        tweak(&mut emu);
        let emulator = Emulator::start(emu).await.expect("emulator");

        let master_b64 = base64::engine::general_purpose::STANDARD.encode(rand_bytes().repeat(2));
        let master = MasterKey::from_base64(&master_b64).expect("master key");
        for p in projects {
            let pid = ProjectId::parse(*p).unwrap();
            gemfleet_recorder::admin::add_project(&db.pool, &pid, Tier::Free)
                .await
                .unwrap();
            let l = Limits {
                rpm: Some(rpm),
                tpm: None,
                rpd: None,
                tpd: None,
            };
            gemfleet_recorder::admin::set_limits(
                &db.pool,
                &pid,
                &ModelName::parse(MODEL).unwrap(),
                l,
            )
            .await
            .unwrap();
        }
        for k in keys {
            gemfleet_recorder::admin::add_key(
                &db.pool,
                &master,
                &KeyName::parse(k.name).unwrap(),
                &ProjectId::parse(k.project).unwrap(),
                &Secret::new(secrets[k.name].clone()),
            )
            .await
            .unwrap();
        }
        let mut rs = gemfleet_recorder::Settings::default();
        rs.database_url = db.url.clone();
        rs.broker.host = broker.host().to_string();
        rs.broker.port = broker.port();
        rs.master_key = Some(master_b64);
        rs.minute_seconds = minute_seconds;
        rs.lease_seconds = 30.0;
        rs.http_listen = "127.0.0.1:0".parse().unwrap();
        let recorder = Recorder::start(rs).await.expect("recorder");
        let dir = tempfile::tempdir().unwrap();
        Stack {
            broker,
            db,
            _recorder: recorder,
            emulator,
            dir,
            secrets,
        }
    }

    pub fn data_dir(&self, agent: &str) -> PathBuf {
        self.dir.path().join("agents").join(agent)
    }

    pub fn workdir(&self) -> PathBuf {
        let p = self.dir.path().join("work");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn agent_settings(&self, agent: &str) -> AgentSettings {
        let mut s = AgentSettings::default();
        s.agent_id = Some(agent.into());
        s.data_dir = Some(self.data_dir(agent));
        s.broker.host = self.broker.host().to_string();
        s.broker.port = self.broker.port();
        s.broker.keep_alive_secs = 5;
        s.listen = "127.0.0.1:0".parse().unwrap();
        s.upstream_base_url = self.emulator.base_url();
        s.claim_max_wait_ms = 30_000;
        s.resend_after_ms = 3_000;
        s
    }

    /// An in-process daemon that advertises itself in its data dir (so `run` finds it).
    pub async fn start_agent(&self, agent: &str) -> RunningDaemon {
        let d = daemon::start(self.agent_settings(agent), true)
            .await
            .expect("agent daemon");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !d.shared.mesh.is_connected() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent did not connect"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        d
    }

    /// The daemon flags for the `gemfleet-agent` binary.
    pub fn agent_args(&self, agent: &str) -> Vec<String> {
        vec![
            "--agent-id".into(),
            agent.into(),
            "--data-dir".into(),
            self.data_dir(agent).display().to_string(),
            "--broker".into(),
            format!("{}:{}", self.broker.host(), self.broker.port()),
            "--upstream".into(),
            self.emulator.base_url(),
        ]
    }

    /// `gemfleet-agent run` with the real Gemini CLI, headless, JSON output.
    pub async fn run(&self, agent: &str, task: &TaskId, prompt: &str) -> Output {
        self.run_via(agent, task, prompt, None).await
    }

    /// [`Stack::run`] with another `gemini` (e.g. a wrapper that records its environment).
    pub async fn run_via(
        &self,
        agent: &str,
        task: &TaskId,
        prompt: &str,
        gemini: Option<&Path>,
    ) -> Output {
        let gemini = match gemini {
            Some(g) => g.to_path_buf(),
            None => gemfleet_testkit::gemini_cli().expect("gemini cli"),
        };
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemfleet-agent"));
        cmd.arg("run")
            .args(self.agent_args(agent))
            .arg("--task")
            .arg(task.as_str())
            .arg("--model")
            .arg(MODEL)
            .arg("--cwd")
            .arg(self.workdir())
            .arg("--gemini")
            .arg(gemini)
            .arg("--")
            .arg("-p")
            .arg(prompt)
            .arg("-o")
            .arg("json")
            .env("GEMFLEET_AGENT_CLAIM_MAX_WAIT_MS", "30000")
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), cmd.output())
            .await
            .expect("run timed out")
            .expect("run")
    }

    /// Recorder usage per key: (requests, input tokens, output tokens).
    pub async fn recorder_usage(&self) -> BTreeMap<String, (i64, i64)> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT key_name, count(*)::int8, coalesce(sum(prompt_tokens),0)::int8 FROM usage_log GROUP BY key_name",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        rows.into_iter().map(|(k, r, i)| (k, (r, i))).collect()
    }

    /// Emulator ledger per key: (admitted requests, input tokens).
    pub fn emulator_usage(&self) -> BTreeMap<String, (i64, i64)> {
        let mut m: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for e in self.emulator.ledger().entries {
            if e.requests == 0 {
                continue;
            }
            let x = m.entry(e.key.clone()).or_default();
            x.0 += e.requests as i64;
            x.1 += e.input_tokens as i64;
        }
        m
    }

    pub fn emulator_429s(&self) -> u64 {
        self.emulator
            .ledger()
            .entries
            .iter()
            .map(|e| e.rate_limited_requests)
            .sum()
    }
}

/// The `-o json` output of a successful Gemini CLI run.
pub fn cli_json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "run failed ({:?})\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let start = stdout
        .find('{')
        .unwrap_or_else(|| panic!("no JSON on stdout: {stdout}\nstderr: {stderr}"));
    serde_json::from_str(&stdout[start..]).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

/// API errors the CLI counted across models.
pub fn cli_api_errors(v: &serde_json::Value) -> u64 {
    let mut n = 0;
    if let Some(models) = v["stats"]["models"].as_object() {
        for m in models.values() {
            n += m["api"]["totalErrors"].as_u64().unwrap_or(0);
        }
    }
    n
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A recording relay in front of the emulator: forwards every request unchanged and keeps
/// (path, headers, body) so a test can see exactly what reached the Gemini API.
pub struct Relay {
    pub base_url: String,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub api_key_header: Option<String>,
    pub body: Vec<u8>,
}

impl Relay {
    pub async fn start(upstream: String) -> Relay {
        use axum::body::{Body, Bytes};
        use axum::http::{HeaderMap, Uri};
        let seen: std::sync::Arc<std::sync::Mutex<Vec<Seen>>> = Default::default();
        let s2 = seen.clone();
        let http = reqwest::Client::new();
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let seen = s2.clone();
            let http = http.clone();
            let upstream = upstream.clone();
            async move {
                let key = headers
                    .get("x-goog-api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                seen.lock().unwrap().push(Seen {
                    path: uri.to_string(),
                    api_key_header: key.clone(),
                    body: body.to_vec(),
                });
                let mut req = http.post(format!("{upstream}{uri}")).body(body);
                if let Some(k) = key {
                    req = req.header("x-goog-api-key", k);
                }
                req = req.header("content-type", "application/json");
                let r = req.send().await.unwrap();
                let status = r.status();
                let ct = r.headers().get("content-type").cloned();
                let bytes = r.bytes().await.unwrap();
                let mut resp = axum::response::Response::new(Body::from(bytes));
                *resp.status_mut() = status;
                if let Some(ct) = ct {
                    resp.headers_mut().insert("content-type", ct);
                }
                resp
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Relay {
            base_url: format!("http://{addr}"),
            seen,
        }
    }
}

/// Every message on the broker under gemfleet/v1/#, recorded (topic, payload).
/// (topic, payload) of every message seen.
pub type Messages = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

pub struct Sniffer {
    pub seen: Messages,
}

impl Sniffer {
    pub async fn start(broker: &Broker) -> Sniffer {
        let (client, mut el) = rumqttc::AsyncClient::new(broker.mqtt_options("sniffer"), 100);
        client
            .subscribe("gemfleet/v1/#", rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        let seen: Messages = Default::default();
        let s2 = seen.clone();
        tokio::spawn(async move {
            let _client = client;
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        s2.lock()
                            .unwrap()
                            .push((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        Sniffer { seen }
    }
}

/// An agent daemon as a child process (`gemfleet-agent serve`), its log in a file.
pub struct AgentProcess {
    pub child: tokio::process::Child,
    /// The daemon's log (its stderr), scanned for secrets by name (*.log).
    pub _log: PathBuf,
    pub base_url: String,
}

impl Stack {
    pub async fn spawn_agent(&self, agent: &str, upstream: Option<&str>) -> AgentProcess {
        let data_dir = self.data_dir(agent);
        std::fs::create_dir_all(&data_dir).unwrap();
        let state = data_dir.join("agent.json");
        let _ = std::fs::remove_file(&state);
        let log = self
            .dir
            .path()
            .join(format!("{agent}-{}.log", uuid::Uuid::new_v4()));
        let f = std::fs::File::create(&log).unwrap();
        let mut args = self.agent_args(agent);
        if let Some(u) = upstream {
            let i = args.iter().position(|a| a == "--upstream").unwrap();
            args[i + 1] = u.to_string();
        }
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gemfleet-agent"))
            .arg("serve")
            .args(args)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .env("GEMFLEET_LOG", "debug")
            .env("GEMFLEET_AGENT_CLAIM_MAX_WAIT_MS", "30000")
            .env("GEMFLEET_AGENT_RESEND_AFTER_MS", "3000")
            .stdout(std::process::Stdio::null())
            .stderr(f)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let sf = loop {
            if let Some(sf) = gemfleet_agent::daemon::read_state_file(&data_dir) {
                break sf;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent {agent} did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let base_url = format!("http://{}", sf.addr);
        let p = AgentProcess {
            child,
            _log: log,
            base_url,
        };
        // Connected to the broker?
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(st) = p.status().await
                && st.broker.connected
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "agent {agent} did not connect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }
}

impl AgentProcess {
    pub async fn status(&self) -> anyhow::Result<gemfleet_agent::control::StatusReport> {
        gemfleet_agent::runner::Control::new(self.base_url.clone())?
            .status(Duration::from_secs(2))
            .await
    }
    pub fn kill9(&mut self) {
        let pid = self.child.id().unwrap() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
    }
    /// Waits until the daemon's outbox is empty (everything acknowledged).
    pub async fn drained(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Ok(st) = self.status().await
                && st.outbox.as_ref().is_some_and(|o| o.depth == 0)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// A `gemini` wrapper script that writes its environment to `dump_dir` and runs the real CLI.
pub fn env_dumping_gemini(dir: &Path, dump_dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dump_dir).unwrap();
    let real = gemfleet_testkit::gemini_cli().expect("gemini cli");
    let p = dir.join("gemini-env-dump.sh");
    let script = format!(
        "#!/bin/sh\nenv > \"{}/env-$$.txt\"\nexec \"{}\" \"$@\"\n",
        dump_dir.display(),
        real.display()
    );
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Emulator ledger: every request (admitted or refused) that carried `key`.
pub fn emulator_requests_with(stack: &Stack, key: &str) -> u64 {
    stack
        .emulator
        .ledger()
        .entries
        .iter()
        .filter(|e| e.key == key)
        .map(|e| e.requests + e.errors.values().sum::<u64>() + e.rate_limited_requests)
        .sum()
}
