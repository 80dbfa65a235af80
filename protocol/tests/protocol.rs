#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Round trips, hostile names, unknown versions and size limits of protocol v1.

use chrono::{TimeZone, Utc};
use gemfleet_gemini::{Classification, Dimension, FailureClass, Scope, Tier};
use gemfleet_protocol::*;
use proptest::prelude::*;
use uuid::Uuid;

fn agent() -> AgentId {
    AgentId::parse("edge-1").unwrap()
}

fn samples() -> Vec<Payload> {
    let claim_id = Uuid::now_v7();
    let grant_id = Uuid::now_v7();
    let key = KeyName::parse("k1").unwrap();
    let project = ProjectId::parse("proj-a").unwrap();
    let model = ModelName::parse("gemini-2.5-flash").unwrap();
    let task = TaskId::parse("edge-1-2026-12-03").unwrap();
    let until = Utc.with_ymd_and_hms(2026, 12, 4, 8, 0, 0).unwrap();
    vec![
        Payload::Claim(Claim {
            claim_id,
            model: model.clone(),
            est_input_tokens: 12000,
            task_id: Some(task.clone()),
            avoid_keys: vec![key.clone()],
            max_wait_ms: 30000,
            request_type: RequestType::Stream,
        }),
        Payload::Release(Release {
            claim_id,
            grant_id: Some(grant_id),
            reason: "client gone".into(),
        }),
        Payload::Usage(Usage {
            claim_id,
            grant_id,
            key: key.clone(),
            project: project.clone(),
            model: model.clone(),
            task_id: Some(task.clone()),
            request_type: RequestType::Stream,
            http_status: 200,
            tokens: Tokens {
                prompt: 10,
                cached: 2,
                candidates: 5,
                thoughts: 1,
                tool_prompt: 0,
                total: 16,
            },
            complete: true,
            latency_ms: 840,
        }),
        Payload::Throttle(Throttle {
            claim_id,
            grant_id,
            key: key.clone(),
            project: project.clone(),
            model: model.clone(),
            task_id: None,
            http_status: 429,
            classification: Classification {
                class: FailureClass::Daily,
                scope: Scope::ProjectModel,
                dimension: Some(Dimension::RequestsPerDay),
                retry_after_ms: Some(51_000),
                until: Some(until),
                limit: Some(20),
                tier: Some(Tier::Free),
                in_stream: false,
                reason: "per-day quota exhausted".into(),
                quota_id: Some("GenerateRequestsPerDayPerProjectPerModel-FreeTier".into()),
            },
            absorbed: true,
        }),
        Payload::Task(TaskEvent {
            task_id: task.clone(),
            status: TaskStatus::Succeeded,
            session_id: Some("s1".into()),
            requests: 3,
            input_tokens: 100,
            output_tokens: 20,
            total_tokens: 120,
            duration_ms: 5000,
            exit_code: Some(0),
        }),
        Payload::Status(AgentStatus {
            state: Presence::Online,
            version: "0.1.0".into(),
            capabilities: vec!["proxy".into()],
            outbox_floor: Some(43),
        }),
        Payload::Grant(Grant {
            claim_id,
            grant_id,
            key: key.clone(),
            fingerprint: "a1b2c3d4".into(),
            secret: Secret::new("AIza-test-secret"),
            project: project.clone(),
            model: model.clone(),
            lease_expires: until,
        }),
        Payload::Denial(Denial {
            claim_id,
            reason: DenialReason::Exhausted,
            message: "all keys exhausted".into(),
            retry_at: Some(until),
        }),
        Payload::Context(Context::Load {
            request_id: claim_id,
            task_id: task.clone(),
        }),
        Payload::Context(Context::SaveChunk {
            request_id: claim_id,
            task_id: task.clone(),
            session_id: "s1".into(),
            index: 0,
            total: 1,
            sha256: "00".into(),
            data: "aGVsbG8=".into(),
        }),
        Payload::Ack(Ack { watermark: 42 }),
        Payload::KeyState(KeyState {
            key: key.clone(),
            fingerprint: "a1b2c3d4".into(),
            project: project.clone(),
            state: KeyCondition::Disabled,
            reason: Some("API_KEY_INVALID".into()),
            until: None,
        }),
        Payload::QuotaState(QuotaState {
            project: project.clone(),
            model: model.clone(),
            state: GroupCondition::Exhausted,
            until: Some(until),
            dimension: Some(Dimension::RequestsPerDay),
            reason: None,
        }),
        Payload::Alert(Alert {
            severity: Severity::Security,
            code: "key_leaked".into(),
            text: "key k1 reported as leaked".into(),
            key: Some(key),
            project: Some(project),
            model: None,
            agent: None,
            until: None,
        }),
    ]
}

#[test]
fn every_payload_round_trips() {
    for p in samples() {
        let env = Envelope::new(agent(), Some(7), p.clone());
        let bytes = env.encode().unwrap();
        let back = Envelope::decode(&bytes).unwrap();
        assert_eq!(back, env, "round trip of {}", p.kind());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["kind"], p.kind());
        assert_eq!(v["v"], 1);
        assert_eq!(back.id.get_version_num(), 7, "event ids are UUID v7");
    }
}

#[test]
fn unknown_version_is_rejected_clearly() {
    let env = Envelope::new(agent(), None, Payload::Ack(Ack { watermark: 1 }));
    let mut v: serde_json::Value = serde_json::to_value(&env).unwrap();
    v["v"] = 2.into();
    let err = Envelope::decode(v.to_string().as_bytes()).unwrap_err();
    assert_eq!(err, DecodeError::UnsupportedVersion("2".into()));
    assert!(err.to_string().contains("unsupported protocol version 2"));
    v["v"] = "1".into();
    assert!(matches!(
        Envelope::decode(v.to_string().as_bytes()),
        Err(DecodeError::UnsupportedVersion(_))
    ));
    v.as_object_mut().unwrap().remove("v");
    assert_eq!(
        Envelope::decode(v.to_string().as_bytes()),
        Err(DecodeError::MissingVersion)
    );
}

#[test]
fn malformed_and_oversized_payloads_are_rejected() {
    assert!(matches!(
        Envelope::decode(b"{not json"),
        Err(DecodeError::NotJson(_))
    ));
    let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert!(matches!(
        Envelope::decode(&big),
        Err(DecodeError::TooLarge { .. })
    ));
    let unknown_kind = r#"{"v":1,"id":"0190a0a0-0000-7000-8000-000000000000","agent":"a","ts":"2026-01-01T00:00:00Z","kind":"nope","body":{}}"#;
    assert!(matches!(
        Envelope::decode(unknown_kind.as_bytes()),
        Err(DecodeError::Invalid(_))
    ));
    let hostile_agent = r#"{"v":1,"id":"0190a0a0-0000-7000-8000-000000000000","agent":"a/+","ts":"2026-01-01T00:00:00Z","kind":"ack","body":{"watermark":1}}"#;
    assert!(matches!(
        Envelope::decode(hostile_agent.as_bytes()),
        Err(DecodeError::Invalid(_))
    ));
    let huge_context = Envelope::new(
        agent(),
        None,
        Payload::Context(Context::Chunk {
            request_id: Uuid::now_v7(),
            task_id: TaskId::parse("t").unwrap(),
            session_id: "s".into(),
            index: 0,
            total: 1,
            sha256: String::new(),
            data: "x".repeat(MAX_PAYLOAD_BYTES),
        }),
    );
    assert!(matches!(
        huge_context.encode(),
        Err(EncodeError::TooLarge { .. })
    ));
}

#[test]
fn a_full_context_chunk_fits_the_limit() {
    let env = Envelope::new(
        agent(),
        None,
        Payload::Context(Context::Chunk {
            request_id: Uuid::now_v7(),
            task_id: TaskId::parse("a-rather-long-task-id-2026-12-03").unwrap(),
            session_id: "session-with-a-long-name-0123456789".into(),
            index: 9999,
            total: 9999,
            sha256: "f".repeat(64),
            data: "A".repeat(CONTEXT_CHUNK_BYTES.div_ceil(3) * 4),
        }),
    );
    assert!(env.encode().is_ok());
}

#[test]
fn hostile_names_are_rejected() {
    for bad in [
        "",
        "a/b",
        "a+b",
        "#",
        "a#",
        "a\0b",
        "$SYS",
        ".hidden",
        "-x",
        "a b",
        "ü",
        "a:b",
        &"x".repeat(65),
    ] {
        assert!(AgentId::parse(bad).is_err(), "{bad:?} accepted as agent");
        assert!(KeyName::parse(bad).is_err(), "{bad:?} accepted as key");
        assert!(
            ProjectId::parse(bad).is_err(),
            "{bad:?} accepted as project"
        );
        assert!(ModelName::parse(bad).is_err(), "{bad:?} accepted as model");
    }
    let e = TaskId::parse("..").unwrap_err().to_string();
    assert!(e.contains("must start with a letter or a digit"), "{e}");
    let e = KeyName::parse("a/b").unwrap_err().to_string();
    assert!(e.contains("key name") && e.contains('/'), "{e}");
    assert_eq!(
        ModelName::parse_api("models/gemini-2.5-pro")
            .unwrap()
            .as_str(),
        "gemini-2.5-pro"
    );
}

#[test]
fn topics_build_and_parse() {
    let a = agent();
    let cases = vec![
        (
            Topic::AgentStatus(a.clone()),
            "gemfleet/v1/agents/edge-1/status",
            true,
        ),
        (
            Topic::AgentEvent(a.clone(), EventKind::Claim),
            "gemfleet/v1/agents/edge-1/events/claim",
            false,
        ),
        (
            Topic::AgentEvent(a.clone(), EventKind::Throttle),
            "gemfleet/v1/agents/edge-1/events/throttle",
            false,
        ),
        (
            Topic::AgentContext(a.clone()),
            "gemfleet/v1/agents/edge-1/context",
            false,
        ),
        (
            Topic::Inbox(a.clone()),
            "gemfleet/v1/agents/edge-1/inbox",
            false,
        ),
        (Topic::Ack(a.clone()), "gemfleet/v1/agents/edge-1/ack", true),
        (
            Topic::KeyState(KeyName::parse("k1").unwrap()),
            "gemfleet/v1/keys/k1/state",
            true,
        ),
        (
            Topic::QuotaState(
                ProjectId::parse("p").unwrap(),
                ModelName::parse("gemini-2.5-flash").unwrap(),
            ),
            "gemfleet/v1/quota/p/gemini-2.5-flash/state",
            true,
        ),
        (
            Topic::Alert(Severity::Critical),
            "gemfleet/v1/alerts/critical",
            false,
        ),
    ];
    for (t, s, retained) in cases {
        assert_eq!(t.to_string(), s);
        assert_eq!(Topic::parse(s).unwrap(), t);
        assert_eq!(t.retained(), retained, "{s}");
    }
    for bad in [
        "gemfleet/v2/agents/a/status",
        "gemfleet/v1/agents/a/events/bogus",
        "gemfleet/v1/agents/+/inbox",
        "gemfleet/v1/agents/a/b/inbox",
        "gemfleet/v1/alerts/loud",
        "other",
        "gemfleet/v1",
    ] {
        assert!(Topic::parse(bad).is_err(), "{bad} parsed");
    }
}

#[test]
fn secrets_do_not_debug_print() {
    let s = Secret::new("AIza-super-secret");
    assert!(!format!("{s:?} {s}").contains("super-secret"));
}

proptest! {
    #[test]
    fn valid_names_round_trip_through_topics(name in "[A-Za-z0-9][A-Za-z0-9._-]{0,63}") {
        let a = AgentId::parse(name.clone()).unwrap();
        let t = Topic::Inbox(a.clone());
        prop_assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
        let k = KeyName::parse(name.clone()).unwrap();
        let t = Topic::KeyState(k);
        prop_assert_eq!(Topic::parse(&t.to_string()).unwrap(), t);
    }

    #[test]
    fn names_with_topic_metacharacters_are_rejected(pre in "[a-z]{0,5}", bad in "[/+#\0 ]", post in "[a-z]{0,5}") {
        let name = format!("{pre}{bad}{post}");
        prop_assert!(AgentId::parse(name.clone()).is_err());
        prop_assert!(ModelName::parse(name).is_err());
    }

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn topic_parse_never_panics(s in ".{0,200}") {
        let _ = Topic::parse(&s);
    }

    #[test]
    fn claims_round_trip(tokens in any::<u64>(), wait in any::<u64>(), seq in any::<u64>()) {
        let env = Envelope::new(agent(), Some(seq), Payload::Claim(Claim {
            claim_id: Uuid::now_v7(),
            model: ModelName::parse("m").unwrap(),
            est_input_tokens: tokens,
            task_id: None,
            avoid_keys: vec![],
            max_wait_ms: wait,
            request_type: RequestType::Generate,
        }));
        prop_assert_eq!(Envelope::decode(&env.encode().unwrap()).unwrap(), env);
    }
}
