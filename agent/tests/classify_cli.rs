#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `gemfleet-agent classify`, run as a person runs it: the real binary, files and stdin.

use gemfleet_gemini::FailureClass;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gemfleet-agent"))
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gemini/tests/fixtures")
        .join(name)
}

/// The `body` of a case file, written alone to a temp file (what an operator would paste).
fn body_file(case: &str) -> tempfile::NamedTempFile {
    let case: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(case)).unwrap()).unwrap();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(
        serde_json::to_string_pretty(&case["body"])
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    f
}

fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading (bad arguments): a broken pipe is fine here.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn record(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one JSON object on one line: {stdout}"
    );
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn per_day_429_is_daily_until_the_first_pacific_midnight_after_dst_start() {
    let body = body_file("c03-rpd-free-tier.json");
    let out = bin()
        .args([
            "classify",
            "--status",
            "429",
            "--now",
            "2026-03-08T09:30:00Z",
        ])
        .arg(body.path())
        .output()
        .unwrap();
    let r = record(&out);
    assert_eq!(r["class"], "daily");
    assert_eq!(r["until"], "2026-03-09T07:00:00Z");
    assert_eq!(r["dimension"], "requests_per_day");
    assert_eq!(r["limit"], 20);
    assert_eq!(r["tier"], "free");
    let class: FailureClass = serde_json::from_value(r["class"].clone()).unwrap();
    assert!(
        !class.penalises_key(),
        "a quota 429 is never the key's fault"
    );
}

#[test]
fn prints_exactly_the_contract_fields_in_order() {
    let body = body_file("c02-tpm-input-free-tier.json");
    let out = bin()
        .args(["classify", "--now", "2026-03-08T09:30:00Z"])
        .arg(body.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let want = [
        "class",
        "scope",
        "dimension",
        "retry_after_ms",
        "until",
        "limit",
        "tier",
        "in_stream",
        "reason",
    ];
    let map: serde_json::Map<String, Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(map.len(), want.len(), "no extra fields: {stdout}");
    let positions: Vec<usize> = want
        .iter()
        .map(|k| {
            stdout
                .find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} missing: {stdout}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "contract order: {stdout}"
    );
    assert_eq!(
        map["until"],
        Value::Null,
        "unknown fields are null, not missing"
    );
    assert_eq!(map["retry_after_ms"], 26000);
    assert_eq!(map["class"], "cooldown");
}

#[test]
fn reads_stdin_when_given_dash_or_nothing_and_infers_the_status() {
    let body = std::fs::read(body_file("c23-400-api-key-invalid.json").path()).unwrap();
    for args in [vec!["classify", "-"], vec!["classify"]] {
        let r = record(&run_with_stdin(&args, &body));
        assert_eq!(r["class"], "key_dead", "{args:?}");
        assert_eq!(r["scope"], "key");
    }
}

#[test]
fn an_error_inside_a_200_stream_is_a_failure_in_stream() {
    let out = bin()
        .args(["classify", "--status", "200", "--model", "gemini-2.5-pro"])
        .arg(fixture("c13-gemini-503-in-stream.http200.txt"))
        .output()
        .unwrap();
    let r = record(&out);
    assert_eq!(r["class"], "transient");
    assert_eq!(r["in_stream"], true);
}

#[test]
fn printed_cli_text_is_classified() {
    let out = bin()
        .arg("classify")
        .arg(fixture("c37-cli-daily-quota-autoswitch.txt"))
        .output()
        .unwrap();
    assert_eq!(record(&out)["class"], "daily");
}

#[test]
fn a_missing_file_fails_with_a_message_naming_it() {
    let out = bin()
        .args(["classify", "/nonexistent/gemfleet-body.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/gemfleet-body.json"), "{err}");
}

#[test]
fn input_that_is_not_utf8_fails_clearly() {
    let out = run_with_stdin(&["classify", "-"], b"{\"error\": \xff\xfe}");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not UTF-8"), "{err}");
}

#[test]
fn empty_input_fails_clearly() {
    let out = run_with_stdin(&["classify"], b"  \n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}

#[test]
fn a_bad_now_or_status_is_a_usage_error() {
    let out = run_with_stdin(&["classify", "--now", "yesterday"], b"{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RFC 3339"));
    let out = run_with_stdin(&["classify", "--status", "99"], b"{}");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_explains_input_output_and_exit_status() {
    let out = bin().args(["classify", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--status",
        "--now",
        "--model",
        "retry_after_ms",
        "Exit status",
        "stdin",
    ] {
        assert!(help.contains(word), "help lacks {word}:\n{help}");
    }
}
