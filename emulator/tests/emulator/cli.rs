//! The real Gemini CLI (pinned npm package) against the emulator: `-m`, auto mode (router call
//! answered with schema-valid JSON), and a scripted tool call in yolo mode. Each run exits 0
//! and its `-o json` stats equal the emulator's ledger.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use gemfleet_emulator::{Config, Limits, RunningEmulator, ScriptResponse, ScriptRule, Tier};
use serde_json::{Value, json};

use crate::common::*;

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

async fn gemini(emu: &RunningEmulator, dir: &Path, args: &[&str]) -> Run {
    let cli = gemfleet_testkit::gemini_cli().expect("pinned Gemini CLI (run `npm ci`)");
    let home = dir.join("home");
    let tmp = dir.join("tmp");
    let cwd = dir.join("work");
    for d in [&home.join(".gemini"), &tmp, &cwd] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        home.join(".gemini/settings.json"),
        json!({"security": {"auth": {"selectedType": "gemini-api-key"}},
               "privacy": {"usageStatisticsEnabled": false}})
        .to_string(),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(cli);
    cmd.args(args)
        .current_dir(&cwd)
        .env("GEMINI_CLI_HOME", &home)
        .env("GEMINI_API_KEY", secret("k1"))
        .env("GOOGLE_GEMINI_BASE_URL", emu.base_url())
        .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
        .env("GEMINI_CLI_NO_RELAUNCH", "true")
        .env("TMPDIR", &tmp)
        .env_remove("GEMINI_MODEL")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("GOOGLE_CLOUD_PROJECT")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("gemini finished within 3 minutes")
        .expect("gemini ran");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn config() -> Config {
    let mut config = simple(Limits {
        requests_per_minute: Some(100),
        ..Limits::default()
    });
    config.projects[0].tier = Tier::Paid;
    config
}

/// Every model in the CLI's stats has exactly the ledger's numbers, and vice versa.
fn assert_stats_match_ledger(run: &Run, emu: &RunningEmulator) -> Value {
    assert_eq!(
        run.status, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let out: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("-o json output ({e}): {}", run.stdout));
    let ledger = emu.ledger();
    let models = out["stats"]["models"].as_object().unwrap();
    let in_stats: BTreeSet<&str> = models.keys().map(String::as_str).collect();
    let in_ledger: BTreeSet<&str> = ledger.entries.iter().map(|e| e.model.as_str()).collect();
    assert_eq!(in_stats, in_ledger);
    for (model, s) in models {
        let e = ledger.for_model(model);
        let tokens = &s["tokens"];
        assert_eq!(s["api"]["totalErrors"], 0, "{model}");
        assert_eq!(s["api"]["totalRequests"], json!(e.requests), "{model}");
        assert_eq!(e.requests, e.succeeded, "{model}");
        assert_eq!(tokens["prompt"], json!(e.input_tokens), "{model}");
        assert_eq!(tokens["candidates"], json!(e.output_tokens), "{model}");
        assert_eq!(tokens["cached"], json!(e.cached_tokens), "{model}");
        assert_eq!(tokens["thoughts"], json!(e.thoughts_tokens), "{model}");
        assert_eq!(
            tokens["input"],
            json!(e.input_tokens - e.cached_tokens),
            "{model}"
        );
    }
    assert_eq!(ledger.totals().rate_limited_requests, 0);
    out
}

#[tokio::test]
async fn cli_with_a_model_set() {
    let emu = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = gemini(
        &emu,
        dir.path(),
        &["-p", "say hello", "-m", MODEL, "-o", "json"],
    )
    .await;
    let out = assert_stats_match_ledger(&run, &emu);
    assert!(out["response"].as_str().unwrap().contains("say hello"));
    assert_eq!(emu.ledger().entries.len(), 1);
    assert_eq!(emu.ledger().entries[0].model, MODEL);
}

#[tokio::test]
async fn cli_in_auto_mode_gets_a_valid_router_answer() {
    let emu = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = gemini(&emu, dir.path(), &["-p", "say hello", "-o", "json"]).await;
    assert_stats_match_ledger(&run, &emu);
    let ledger = emu.ledger();
    // The router call plus the main turn, each against its own model.
    let router = ledger
        .entry("k1", "gemini-3.5-flash-lite")
        .expect("router call");
    assert_eq!(router.succeeded, 1);
    assert!(ledger.entries.len() >= 2, "{ledger:?}");
}

#[tokio::test]
async fn cli_runs_a_scripted_tool_call_in_yolo_mode() {
    let mut config = config();
    config.script.push(ScriptRule {
        prompt_contains: Some("create hello.txt".into()),
        times: Some(1),
        respond: ScriptResponse::FunctionCall {
            name: "write_file".into(),
            args: json!({"file_path": "hello.txt", "content": "written by a scripted call\n"}),
        },
        ..ScriptRule::default()
    });
    let emu = start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let run = gemini(
        &emu,
        dir.path(),
        &[
            "-p",
            "please create hello.txt",
            "-m",
            MODEL,
            "--approval-mode",
            "yolo",
            "-o",
            "json",
        ],
    )
    .await;
    let out = assert_stats_match_ledger(&run, &emu);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("work/hello.txt")).unwrap(),
        "written by a scripted call\n"
    );
    assert_eq!(out["stats"]["tools"]["byName"]["write_file"]["success"], 1);
    // The functionCall turn and the turn carrying its result.
    assert_eq!(emu.ledger().entry("k1", MODEL).unwrap().requests, 2);
}

#[tokio::test]
async fn cli_stops_at_once_on_a_per_day_429() {
    // GEMINI-CLI.md: a PerDay quota id makes the CLI fail without retrying. The emulator's
    // body must be shaped so that the real CLI reads it that way.
    let mut config = config();
    config.projects[0].default_limits.requests_per_day = Some(1);
    let emu = start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["-p", "say hello", "-m", MODEL, "-o", "json"];
    let first = gemini(&emu, dir.path(), &args).await;
    assert_stats_match_ledger(&first, &emu);
    let second = gemini(&emu, dir.path(), &args).await;
    assert_eq!(second.status, 429 % 256, "stderr: {}", second.stderr);
    let e = emu.ledger().entry("k1", MODEL).cloned().unwrap();
    assert_eq!(e.requests, 1);
    assert_eq!(
        e.rate_limited.requests_per_day, 1,
        "exactly one attempt: no CLI retries"
    );
}
