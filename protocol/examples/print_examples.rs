//! Prints one real message of every payload kind, with its topic and whether it is retained,
//! as Markdown for docs/protocol.md:
//!
//!     cargo run -q -p gemfleet-protocol --example print_examples
//!
//! The ids and times are fixed so the output is stable across runs; everything else is built
//! with the crate's own types and encoder, so the JSON is exactly what goes on the wire (the
//! wire form is compact; it is pretty-printed here for people).

use chrono::{DateTime, TimeZone, Utc};
use gemfleet_gemini::{Classification, Dimension, FailureClass, Scope, Tier};
use gemfleet_protocol::*;
use std::process::ExitCode;
use uuid::Uuid;

struct Example {
    title: &'static str,
    topic: Topic,
    envelope: Envelope,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("print_examples: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    for example in examples()? {
        let wire = example.envelope.encode()?;
        // Each example must survive the decoder the recorder and agents use.
        let decoded = Envelope::decode(&wire)?;
        if decoded != example.envelope {
            return Err(format!("{} does not round-trip", example.title).into());
        }
        println!("#### {}\n", example.title);
        println!(
            "Topic `{}` · {} · QoS 1\n",
            example.topic,
            if example.topic.retained() {
                "retained"
            } else {
                "not retained"
            }
        );
        println!(
            "```json\n{}\n```\n",
            serde_json::to_string_pretty(&example.envelope)?
        );
    }
    Ok(())
}

fn id(n: u16) -> Result<Uuid, uuid::Error> {
    // UUID v7 layout with a fixed time (2026-12-03T18:00:00Z) and counter `n`.
    Uuid::parse_str(&format!("01a23d10-2d00-7{n:03x}-8000-000000000000"))
}

fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, h, m, s)
        .single()
        .unwrap_or_default()
}

fn envelope(
    id: Uuid,
    agent: &AgentId,
    seq: Option<u64>,
    ts: DateTime<Utc>,
    p: Payload,
) -> Envelope {
    Envelope {
        v: PROTOCOL_VERSION,
        id,
        agent: agent.clone(),
        seq,
        ts,
        payload: p,
    }
}

fn examples() -> Result<Vec<Example>, Box<dyn std::error::Error>> {
    let agent = AgentId::parse("edge-1")?;
    let recorder = AgentId::parse("recorder")?;
    let key = KeyName::parse("team-a-1")?;
    let other_key = KeyName::parse("team-a-2")?;
    let project = ProjectId::parse("team-a-prod")?;
    let model = ModelName::parse("gemini-2.5-flash")?;
    let task = TaskId::parse("nightly-report-2026-12-03")?;
    let claim_id = id(1)?;
    let grant_id = id(2)?;
    let context_request = id(3)?;
    let fingerprint = "3f9a1c7e".to_owned();
    let t0 = at(18, 0, 0);
    // A real (tiny) context: a session file, zstd-compressed and base64-encoded in one chunk.
    let session_file = br#"{"sessionId":"5c1d7f0e-2b8a-4f61-9d3e-8a0c4b7e2f19","messages":[]}"#;
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(session_file))
    };
    let data = {
        use base64::Engine;
        let compressed = zstd::encode_all(&session_file[..], 3)?;
        base64::engine::general_purpose::STANDARD.encode(compressed)
    };

    let event = |kind, n: u16, seq, ts, p| -> Result<Example, uuid::Error> {
        Ok(Example {
            title: kind,
            topic: Topic::AgentEvent(agent.clone(), event_kind(kind)),
            envelope: envelope(id(n)?, &agent, Some(seq), ts, p),
        })
    };

    Ok(vec![
        Example {
            title: "status (online)",
            topic: Topic::AgentStatus(agent.clone()),
            envelope: envelope(
                id(10)?,
                &agent,
                None,
                t0,
                Payload::Status(AgentStatus {
                    state: Presence::Online,
                    version: "0.1.0".into(),
                    capabilities: vec!["proxy".into(), "run".into(), "context".into()],
                    outbox_floor: Some(41),
                }),
            ),
        },
        Example {
            title: "status (offline, the last will)",
            topic: Topic::AgentStatus(agent.clone()),
            envelope: envelope(
                id(11)?,
                &agent,
                None,
                t0,
                Payload::Status(AgentStatus {
                    state: Presence::Offline,
                    version: "0.1.0".into(),
                    capabilities: vec![],
                    outbox_floor: None,
                }),
            ),
        },
        event(
            "claim",
            12,
            41,
            t0,
            Payload::Claim(Claim {
                claim_id,
                model: model.clone(),
                est_input_tokens: 12_400,
                task_id: Some(task.clone()),
                avoid_keys: vec![other_key.clone()],
                max_wait_ms: 30_000,
                request_type: RequestType::Stream,
            }),
        )?,
        Example {
            title: "grant",
            topic: Topic::Inbox(agent.clone()),
            envelope: envelope(
                id(13)?,
                &recorder,
                None,
                at(18, 0, 1),
                Payload::Grant(Grant {
                    claim_id,
                    grant_id,
                    key: key.clone(),
                    fingerprint: fingerprint.clone(),
                    secret: Secret::new("AIzaSy-EXAMPLE-NOT-A-REAL-KEY"),
                    project: project.clone(),
                    model: model.clone(),
                    lease_expires: at(18, 5, 1),
                }),
            ),
        },
        Example {
            title: "denial",
            topic: Topic::Inbox(agent.clone()),
            envelope: envelope(
                id(14)?,
                &recorder,
                None,
                at(18, 0, 1),
                Payload::Denial(Denial {
                    claim_id: id(4)?,
                    reason: DenialReason::WaitTooLong,
                    message: "every group serving gemini-2.5-flash is cooling; room frees in 48s, \
                              the claim waits at most 30s"
                        .into(),
                    retry_at: Some(at(18, 0, 49)),
                }),
            ),
        },
        event(
            "usage",
            15,
            42,
            at(18, 0, 3),
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
                    prompt: 12_385,
                    cached: 8_192,
                    candidates: 412,
                    thoughts: 230,
                    tool_prompt: 0,
                    total: 13_027,
                },
                complete: true,
                latency_ms: 2_140,
            }),
        )?,
        event(
            "throttle",
            16,
            43,
            at(18, 0, 5),
            Payload::Throttle(Throttle {
                claim_id: id(5)?,
                grant_id: id(6)?,
                key: other_key.clone(),
                project: project.clone(),
                model: model.clone(),
                task_id: Some(task.clone()),
                http_status: 429,
                classification: Classification {
                    class: FailureClass::Daily,
                    scope: Scope::ProjectModel,
                    dimension: Some(Dimension::RequestsPerDay),
                    retry_after_ms: Some(21_000),
                    until: Some(at(8, 0, 0) + chrono::Duration::days(1)),
                    limit: Some(250),
                    tier: Some(Tier::Free),
                    in_stream: false,
                    reason: "429 RESOURCE_EXHAUSTED, quota GenerateRequestsPerDayPerProjectPerModel-FreeTier: \
                             per-day quota, resets at midnight Pacific"
                        .into(),
                    quota_id: Some("GenerateRequestsPerDayPerProjectPerModel-FreeTier".into()),
                },
                absorbed: true,
            }),
        )?,
        event(
            "release",
            17,
            44,
            at(18, 0, 6),
            Payload::Release(Release {
                claim_id: id(7)?,
                grant_id: Some(id(8)?),
                reason: "client disconnected before the request was sent".into(),
            }),
        )?,
        event(
            "task",
            18,
            45,
            at(18, 4, 0),
            Payload::Task(TaskEvent {
                task_id: task.clone(),
                status: TaskStatus::Succeeded,
                session_id: Some("5c1d7f0e-2b8a-4f61-9d3e-8a0c4b7e2f19".into()),
                requests: 7,
                input_tokens: 61_220,
                output_tokens: 2_904,
                total_tokens: 64_124,
                duration_ms: 240_000,
                exit_code: Some(0),
            }),
        )?,
        Example {
            title: "ack (the outbox watermark)",
            topic: Topic::Ack(agent.clone()),
            envelope: envelope(
                id(19)?,
                &recorder,
                None,
                at(18, 4, 0),
                Payload::Ack(Ack { watermark: 45 }),
            ),
        },
        Example {
            title: "context: save_chunk (agent → recorder)",
            topic: Topic::AgentContext(agent.clone()),
            envelope: envelope(
                id(20)?,
                &agent,
                None,
                at(18, 4, 1),
                Payload::Context(Context::SaveChunk {
                    request_id: context_request,
                    task_id: task.clone(),
                    session_id: "5c1d7f0e-2b8a-4f61-9d3e-8a0c4b7e2f19".into(),
                    index: 0,
                    total: 1,
                    sha256: sha.clone(),
                    data: data.clone(),
                }),
            ),
        },
        Example {
            title: "context: saved (recorder → inbox)",
            topic: Topic::Inbox(agent.clone()),
            envelope: envelope(
                id(21)?,
                &recorder,
                None,
                at(18, 4, 1),
                Payload::Context(Context::Saved {
                    request_id: context_request,
                    task_id: task.clone(),
                    error: None,
                }),
            ),
        },
        Example {
            title: "context: load (agent → recorder)",
            topic: Topic::AgentContext(agent.clone()),
            envelope: envelope(
                id(22)?,
                &agent,
                None,
                at(18, 30, 0),
                Payload::Context(Context::Load { request_id: id(9)?, task_id: task.clone() }),
            ),
        },
        Example {
            title: "context: chunk (recorder → inbox)",
            topic: Topic::Inbox(agent.clone()),
            envelope: envelope(
                id(23)?,
                &recorder,
                None,
                at(18, 30, 0),
                Payload::Context(Context::Chunk {
                    request_id: id(9)?,
                    task_id: task.clone(),
                    session_id: "5c1d7f0e-2b8a-4f61-9d3e-8a0c4b7e2f19".into(),
                    index: 0,
                    total: 1,
                    sha256: sha.clone(),
                    data: data.clone(),
                }),
            ),
        },
        Example {
            title: "context: not_found (recorder → inbox)",
            topic: Topic::Inbox(agent.clone()),
            envelope: envelope(
                id(24)?,
                &recorder,
                None,
                at(18, 30, 0),
                Payload::Context(Context::NotFound {
                    request_id: id(25)?,
                    task_id: TaskId::parse("never-saved")?,
                }),
            ),
        },
        Example {
            title: "key_state",
            topic: Topic::KeyState(other_key.clone()),
            envelope: envelope(
                id(26)?,
                &recorder,
                None,
                at(18, 0, 5),
                Payload::KeyState(KeyState {
                    key: other_key.clone(),
                    fingerprint: "b02d4e61".into(),
                    project: project.clone(),
                    state: KeyCondition::Disabled,
                    reason: Some("API key expired. Please renew the API key.".into()),
                    until: None,
                }),
            ),
        },
        Example {
            title: "quota_state",
            topic: Topic::QuotaState(project.clone(), model.clone()),
            envelope: envelope(
                id(27)?,
                &recorder,
                None,
                at(18, 0, 5),
                Payload::QuotaState(QuotaState {
                    project: project.clone(),
                    model: model.clone(),
                    state: GroupCondition::Exhausted,
                    until: Some(at(8, 0, 0) + chrono::Duration::days(1)),
                    dimension: Some(Dimension::RequestsPerDay),
                    reason: Some("free-tier requests per day (250) used up".into()),
                }),
            ),
        },
        Example {
            title: "alert",
            topic: Topic::Alert(Severity::Warning),
            envelope: envelope(
                id(28)?,
                &recorder,
                None,
                at(18, 0, 5),
                Payload::Alert(Alert {
                    severity: Severity::Warning,
                    code: "limit_corrected".into(),
                    text: "Google states RequestsPerDay = 250 for project team-a-prod model \
                           gemini-2.5-flash (configured 1000); the fleet now uses 250"
                        .into(),
                    key: None,
                    project: Some(project.clone()),
                    model: Some(model.clone()),
                    agent: None,
                    until: None,
                }),
            ),
        },
    ])
}

fn event_kind(kind: &str) -> EventKind {
    EventKind::parse(kind).unwrap_or(EventKind::Task)
}
