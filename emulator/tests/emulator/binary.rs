//! The `gemfleet-emulator` binary: the example config, config errors, serving, JSON logs.

use std::process::Stdio;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_gemfleet-emulator");

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/emulator.toml")
}

#[test]
fn the_example_config_is_valid_and_bad_configs_are_explained() {
    let out = std::process::Command::new(BIN)
        .args(["--check", "--config"])
        .arg(example())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok: 2 projects, 4 keys"));

    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        ("minute_seconds = \"fast\"", "not valid TOML"),
        (
            "[[keys]]\nname = \"a\"\nsecret = \"s3cr3t-value\"\nproject = \"nope\"",
            "unknown project",
        ),
        ("[faults]\noverloaded_503 = 2.0", "probability"),
        ("unknown_setting = 1", "unknown field"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["--check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(
            !stderr.contains("s3cr3t-value"),
            "a secret in an error: {stderr}"
        );
    }
    let out = std::process::Command::new(BIN)
        .args(["--config", "/nonexistent/emulator.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[tokio::test]
async fn the_binary_serves_the_api_and_logs_json() {
    gemfleet_testkit::init_crypto();
    let port = gemfleet_testkit::free_port();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(example())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(format!(
                "{base}/v1beta/models/gemini-2.5-flash:generateContent"
            ))
            .header("x-goog-api-key", "demo-secret-1")
            .body(r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#)
            .send()
            .await
        {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = answer.expect("the binary listens");
    assert_eq!(answer.status(), 200);
    let ledger: serde_json::Value = client
        .get(format!("{base}/_emulator/ledger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ledger["entries"][0]["key"], "demo-1");
    assert_eq!(ledger["entries"][0]["succeeded"], 1);
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let logs = String::from_utf8_lossy(&out.stdout);
    let first = logs.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first).expect("JSON log lines");
    assert!(line["fields"]["message"].is_string(), "{first}");
    assert!(!logs.contains("demo-secret"), "{logs}");
}
