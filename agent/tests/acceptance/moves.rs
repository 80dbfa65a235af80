//! A task moves between agents; no secret leaks anywhere but the agent's own inbox.

use crate::stack::{KeySpec, Relay, Sniffer, Stack, cli_json, env_dumping_gemini, files_under};
use gemfleet_protocol::TaskId;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_moves_from_agent_a_to_b_with_its_history_and_no_secret_leaks() {
    let stack = Stack::start(
        20,
        2.0,
        &["proj-a"],
        &[
            KeySpec {
                name: "key-a1",
                project: "proj-a",
            },
            KeySpec {
                name: "key-a2",
                project: "proj-a",
            },
        ],
    )
    .await;
    let sniffer = Sniffer::start(&stack.broker).await;
    let relay = Relay::start(stack.emulator.base_url()).await;
    let a = stack.spawn_agent("edge-a", None).await;
    let b = stack.spawn_agent("edge-b", Some(&relay.base_url)).await;
    let dumps = stack.dir.path().join("env-dumps");
    let gemini = env_dumping_gemini(stack.dir.path(), &dumps);
    let task = TaskId::parse("moving-task").unwrap();

    let first = stack
        .run_via(
            "edge-a",
            &task,
            "Remember the codeword PAPAYA-7731 for later.",
            Some(&gemini),
        )
        .await;
    let v1 = cli_json(&first);
    let second = stack
        .run_via(
            "edge-b",
            &task,
            "What was the codeword I gave you?",
            Some(&gemini),
        )
        .await;
    let v2 = cli_json(&second);
    assert_eq!(
        v1["session_id"], v2["session_id"],
        "both runs continue one session"
    );
    let summary = String::from_utf8_lossy(&second.stderr);
    assert!(
        summary.contains("resumed"),
        "second run did not resume: {summary}"
    );

    // What agent B sent upstream carries the first turn.
    let seen = relay.seen.lock().unwrap().clone();
    let turn2: Vec<_> = seen
        .iter()
        .filter(|s| String::from_utf8_lossy(&s.body).contains("What was the codeword"))
        .collect();
    assert!(
        !turn2.is_empty(),
        "agent B sent no request for the second prompt"
    );
    for s in &turn2 {
        let body = String::from_utf8_lossy(&s.body);
        assert!(
            body.contains("PAPAYA-7731"),
            "the second prompt's request lacks the first turn"
        );
        assert!(
            !s.path.contains("key="),
            "a key travelled in the URL: {}",
            s.path
        );
        let k = s.api_key_header.as_deref().unwrap_or_default();
        assert!(
            stack.secrets.values().any(|x| x == k),
            "the upstream request did not carry a fleet key"
        );
    }

    a.terminate().await;
    b.terminate().await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The secret scan: files of both agents (outbox, state, task homes with session files),
    // daemon logs, `run` output, the CLI's environment, every MQTT payload but inboxes.
    let mut texts: Vec<(String, Vec<u8>)> = Vec::new();
    for dir in [
        stack.data_dir("edge-a"),
        stack.data_dir("edge-b"),
        dumps.clone(),
    ] {
        for f in files_under(&dir) {
            texts.push((
                f.display().to_string(),
                std::fs::read(&f).unwrap_or_default(),
            ));
        }
    }
    for f in files_under(stack.dir.path())
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        texts.push((
            f.display().to_string(),
            std::fs::read(&f).unwrap_or_default(),
        ));
    }
    for (name, o) in [("run 1", &first), ("run 2", &second)] {
        texts.push((format!("{name} stdout"), o.stdout.clone()));
        texts.push((format!("{name} stderr"), o.stderr.clone()));
    }
    let mqtt = sniffer.seen.lock().unwrap().clone();
    let mut inbox_had_secret = false;
    for (topic, payload) in &mqtt {
        if topic.ends_with("/inbox") {
            inbox_had_secret |= stack.secrets.values().any(|s| contains(payload, s));
            continue;
        }
        texts.push((format!("mqtt {topic}"), payload.clone()));
    }
    assert!(
        inbox_had_secret,
        "control: grants on the inbox should carry a secret (is the sniffer working?)"
    );
    assert!(
        files_under(&dumps).len() >= 2,
        "the CLI environment was not recorded"
    );
    assert!(
        texts.iter().any(|(n, _)| n.contains("outbox.log")),
        "no outbox file scanned"
    );
    assert!(
        texts.iter().any(|(n, _)| n.contains("/chats/session-")),
        "no session file scanned"
    );
    for (name, bytes) in &texts {
        for (key, secret) in &stack.secrets {
            assert!(
                !contains(bytes, secret),
                "the secret of {key} appears in {name}"
            );
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}
