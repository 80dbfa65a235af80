//! The admin CLI and `serve` as a user runs them: the real binary.

use crate::support::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin(env: &Env) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gemfleet-recorder"));
    c.env("DATABASE_URL", &env.db.url)
        .env("GEMFLEET_MASTER_KEY", env.master.to_base64())
        .env_remove("GEMFLEET_RECORDER_CONFIG")
        .env("RUST_LOG", "warn");
    c
}

fn run(env: &Env, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = bin(env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_work_and_fail_clearly() {
    let env = env().await;
    let (ok, out, err) = run(
        &env,
        &[
            "projects",
            "set",
            "p1",
            "--tier",
            "paid",
            "--limit",
            MODEL,
            "rpm=5,tpm=1000",
            "--limit",
            "gemini-2.5-pro",
            "rpm=0",
        ],
        None,
    );
    assert!(ok, "{out}{err}");
    let secret = "AIzaSy-cli-secret-5551234";
    let (ok, out, err) = run(
        &env,
        &["keys", "add", "k1", "--project", "p1"],
        Some(&format!("{secret}\n")),
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("fingerprint"), "{out}");
    let (ok, out, _) = run(&env, &["keys", "list"], None);
    assert!(ok);
    assert!(
        out.contains("k1") && out.contains("p1") && out.contains("0/-"),
        "{out}"
    );
    assert!(!out.contains(secret));
    let (ok, out, _) = run(&env, &["keys", "list", "--json"], None);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["state"], "active");
    assert!(!out.contains(secret));
    let (ok, _, _) = run(
        &env,
        &["keys", "disable", "k1", "--reason", "rotating"],
        None,
    );
    assert!(ok);
    assert_eq!(
        env.count("SELECT count(*) FROM api_keys WHERE state = 'disabled'")
            .await,
        1
    );
    let (ok, _, _) = run(&env, &["keys", "enable", "k1"], None);
    assert!(ok);
    // Adding a model's limits later keeps the project's tier.
    let (ok, _, err) = run(
        &env,
        &[
            "projects",
            "set",
            "p1",
            "--limit",
            "gemini-2.0-flash",
            "rpm=7",
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, _) = run(&env, &["projects", "list"], None);
    assert!(
        ok && out.contains("tier=paid") && out.contains("rpm=5") && out.contains("rpm=7"),
        "{out}"
    );
    let (ok, out, _) = run(
        &env,
        &["usage", "--by", "model", "--since", "24h", "--json"],
        None,
    );
    assert!(ok, "{out}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .is_array()
    );
    let (ok, out, _) = run(&env, &["status"], None);
    assert!(ok && out.contains("quota groups"), "{out}");
    let (ok, _, _) = run(&env, &["tasks", "list"], None);
    assert!(ok);

    // Clear errors.
    let (ok, _, err) = run(
        &env,
        &["projects", "set", "p1", "--limit", MODEL, "rpm=lots"],
        None,
    );
    assert!(!ok && err.contains("not a whole number"), "{err}");
    let (ok, _, err) = run(&env, &["keys", "disable", "nope", "--reason", "x"], None);
    assert!(!ok && err.contains("unknown key nope"), "{err}");
    let (ok, _, err) = run(
        &env,
        &["keys", "add", "k2", "--project", "ghost"],
        Some("s3cret"),
    );
    assert!(!ok && err.contains("unknown project ghost"), "{err}");
    let (ok, _, err) = run(&env, &["tasks", "show", "t-404"], None);
    assert!(!ok && err.contains("unknown task"), "{err}");
    let mut c = bin(&env);
    let out = c
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .args(["keys", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to PostgreSQL"));
    let (ok, _, err) = run(
        &env,
        &[
            "keys",
            "add",
            "k3",
            "--project",
            "p1",
            "--secret-env",
            "NOT_SET_VAR_X",
        ],
        None,
    );
    assert!(!ok && err.contains("NOT_SET_VAR_X"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_gracefully_on_sigterm() {
    let env = env().await;
    let port = gemfleet_testkit::free_port();
    let mut child = bin(&env)
        .args(["serve", "--log-format", "json"])
        .env("GEMFLEET_RECORDER_BROKER__HOST", env.broker.host())
        .env(
            "GEMFLEET_RECORDER_BROKER__PORT",
            env.broker.port().to_string(),
        )
        .env("GEMFLEET_RECORDER_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        .env("GEMFLEET_RECORDER_RECORDER_ID", "recorder-sigterm")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut healthy = false;
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "serve became healthy");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = status.expect("exited within 10 s");
    assert!(status.success(), "exit status {status:?}");
}
