//! docs/protocol.md stays true: every example decodes with the real decoder, sits on a topic
//! that carries its kind, and says correctly whether the topic is retained.

use std::collections::BTreeSet;

use gemfleet_protocol::{Context, Envelope, Payload, Topic};
use gemfleet_testkit::workspace_root;

struct DocExample {
    topic: String,
    retained: bool,
    json: String,
}

fn protocol_doc() -> String {
    std::fs::read_to_string(workspace_root().join("docs/protocol.md")).unwrap()
}

/// `Topic `…` · retained · QoS 1` followed by a ```json block.
fn examples(doc: &str) -> Vec<DocExample> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("Topic `") else {
            continue;
        };
        let (topic, flags) = rest.split_once('`').unwrap();
        let retained = match flags {
            " · retained · QoS 1" => true,
            " · not retained · QoS 1" => false,
            other => panic!("unexpected flags {other:?} for {topic}"),
        };
        let json: String = lines
            .by_ref()
            .skip_while(|l| *l != "```json")
            .skip(1)
            .take_while(|l| *l != "```")
            .collect::<Vec<_>>()
            .join("\n");
        out.push(DocExample {
            topic: topic.to_owned(),
            retained,
            json,
        });
    }
    out
}

/// Whether `payload` may travel on `topic`, per the topic table.
fn carries(topic: &Topic, env: &Envelope) -> bool {
    let p = &env.payload;
    match topic {
        Topic::AgentStatus(a) => matches!(p, Payload::Status(_)) && env.agent == *a,
        Topic::AgentEvent(a, kind) => {
            p.kind() == kind.as_str() && env.agent == *a && env.seq.is_some()
        }
        Topic::AgentContext(a) => {
            matches!(
                p,
                Payload::Context(Context::SaveChunk { .. } | Context::Load { .. })
            ) && env.agent == *a
        }
        Topic::Inbox(_) => matches!(
            p,
            Payload::Grant(_)
                | Payload::Denial(_)
                | Payload::Context(
                    Context::Saved { .. } | Context::Chunk { .. } | Context::NotFound { .. }
                )
        ),
        Topic::Ack(_) => matches!(p, Payload::Ack(_)),
        Topic::KeyState(k) => matches!(p, Payload::KeyState(s) if s.key == *k),
        Topic::QuotaState(pr, m) => {
            matches!(p, Payload::QuotaState(s) if s.project == *pr && s.model == *m)
        }
        Topic::Alert(sev) => matches!(p, Payload::Alert(a) if a.severity == *sev),
    }
}

#[test]
fn every_protocol_example_decodes_on_its_topic() {
    let doc = protocol_doc();
    let examples = examples(&doc);
    let mut kinds = BTreeSet::new();
    for ex in &examples {
        let topic = Topic::parse(&ex.topic).unwrap_or_else(|e| panic!("{}: {e}", ex.topic));
        assert_eq!(
            topic.retained(),
            ex.retained,
            "retained flag of {}",
            ex.topic
        );
        let env =
            Envelope::decode(ex.json.as_bytes()).unwrap_or_else(|e| panic!("{}: {e}", ex.topic));
        assert!(
            carries(&topic, &env),
            "{} cannot carry a {} payload",
            ex.topic,
            env.payload.kind()
        );
        if !matches!(topic, Topic::AgentEvent(..)) {
            assert!(
                env.seq.is_none(),
                "only outbox events carry seq ({})",
                ex.topic
            );
        }
        kinds.insert(env.payload.kind());
    }
    let all = [
        "claim",
        "release",
        "usage",
        "throttle",
        "task",
        "status",
        "grant",
        "denial",
        "context",
        "ack",
        "key_state",
        "quota_state",
        "alert",
    ];
    for kind in all {
        assert!(
            kinds.contains(kind),
            "docs/protocol.md has no example of {kind}"
        );
    }
}

#[test]
fn the_mosquitto_sub_sample_line_decodes() {
    let doc = protocol_doc();
    let line = doc
        .lines()
        .find(|l| l.starts_with("gemfleet/v1/") && l.contains(" {"))
        .expect("a sample mosquitto_sub -v line");
    let (topic, json) = line.split_once(' ').unwrap();
    let topic = Topic::parse(topic).unwrap();
    let env = Envelope::decode(json.as_bytes()).unwrap();
    assert!(carries(&topic, &env));
}

/// The doc promises that additive optional fields are compatible within v1.
#[test]
fn unknown_fields_are_ignored_as_documented() {
    let doc = protocol_doc();
    let claim = examples(&doc)
        .into_iter()
        .find(|e| e.topic.ends_with("/events/claim"))
        .unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&claim.json).unwrap();
    value["future_field"] = serde_json::json!("x");
    value["body"]["future_body_field"] = serde_json::json!(1);
    Envelope::decode(&serde_json::to_vec(&value).unwrap()).unwrap();

    value["v"] = serde_json::json!(2);
    let err = Envelope::decode(&serde_json::to_vec(&value).unwrap()).unwrap_err();
    assert!(
        doc.contains(&err.to_string()),
        "the doc quotes the version error: {err}"
    );
}

/// docs/schema.md has a section for every table the migrations create.
#[tokio::test]
async fn schema_doc_covers_every_table() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/schema.md")).unwrap();
    let db = gemfleet_testkit::TestDb::migrated().await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(tables.len() >= 10, "{tables:?}");
    for table in tables {
        assert!(
            doc.contains(&format!("### `{table}`")),
            "docs/schema.md lacks a section on {table}"
        );
    }
    for migration in gemfleet_testkit::migrator().iter() {
        let file = format!(
            "{}_{}.sql",
            migration.version,
            migration.description.replace(' ', "_")
        );
        assert!(
            doc.contains(&file),
            "docs/schema.md does not list migration {file}"
        );
    }
}
