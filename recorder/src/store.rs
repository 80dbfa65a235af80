//! Every SQL statement the running recorder uses: loading the fleet's configuration and the
//! arbiter's state at start, and writing one ingest batch in one transaction (multi-row
//! `UNNEST` inserts, idempotent by event id).

use crate::arbiter::ledger::Limits;
use crate::arbiter::{FleetConfig, GroupConfig, GroupId, KeyConfig, PendingClaim, StoredGrant};
use crate::crypto::MasterKey;
use crate::dead_letter::DeadLetter;
use crate::watermark::Watermark;
use chrono::{DateTime, Utc};
use gemfleet_gemini::Tier;
use gemfleet_protocol::{
    AgentId, GroupCondition, KeyName, ModelName, ProjectId, RequestType, Secret, TaskId,
};
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A key's public facts and its decrypted secret, for grants and key-state notices.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub project: ProjectId,
    pub fingerprint: String,
    pub secret: Secret,
    pub active: bool,
    pub reason: Option<String>,
}

/// Everything configured, as loaded.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub arbiter: FleetConfig,
    pub keys: HashMap<KeyName, KeyRecord>,
    pub tiers: HashMap<ProjectId, Tier>,
    /// Quota group reasons/dimensions for notices.
    pub group_notes: HashMap<GroupId, (Option<String>, Option<String>)>,
}

pub fn condition_from_str(s: &str) -> GroupCondition {
    match s {
        "cooling" => GroupCondition::Cooling,
        "exhausted" => GroupCondition::Exhausted,
        "no_quota" => GroupCondition::NoQuota,
        _ => GroupCondition::Open,
    }
}

pub fn condition_str(c: GroupCondition) -> &'static str {
    match c {
        GroupCondition::Open => "open",
        GroupCondition::Cooling => "cooling",
        GroupCondition::Exhausted => "exhausted",
        GroupCondition::NoQuota => "no_quota",
    }
}

/// Loads projects, limits, group states and keys (secrets decrypted with `master`). A key whose
/// secret cannot be decrypted is loaded as inactive, with the reason, rather than failing all.
pub async fn load_fleet(pool: &PgPool, master: &MasterKey) -> Result<Fleet, sqlx::Error> {
    let mut fleet = Fleet::default();
    for r in sqlx::query("SELECT project_id, tier, state FROM projects")
        .fetch_all(pool)
        .await?
    {
        let p: String = r.try_get("project_id")?;
        let Ok(p) = ProjectId::parse(p) else { continue };
        let tier: String = r.try_get("tier")?;
        fleet.tiers.insert(
            p.clone(),
            if tier == "paid" {
                Tier::Paid
            } else {
                Tier::Free
            },
        );
        let state: String = r.try_get("state")?;
        if state != "active" {
            fleet.arbiter.unusable_projects.push(p);
        }
    }
    let rows = sqlx::query(
        "SELECT l.project_id, l.model, l.rpm, l.tpm, l.rpd, l.tpd,
                coalesce(g.state, 'open') AS state, g.until, g.reason, g.dimension
         FROM model_limits l LEFT JOIN quota_groups g USING (project_id, model)",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        let (Ok(project), Ok(model)) = (
            ProjectId::parse(r.try_get::<String, _>("project_id")?),
            ModelName::parse(r.try_get::<String, _>("model")?),
        ) else {
            continue;
        };
        let lim = |c: &str| -> Result<Option<u64>, sqlx::Error> {
            Ok(r.try_get::<Option<i64>, _>(c)?.map(to_u64))
        };
        let group = GroupId { project, model };
        fleet.group_notes.insert(
            group.clone(),
            (r.try_get("reason")?, r.try_get("dimension")?),
        );
        fleet.arbiter.groups.push(GroupConfig {
            group,
            limits: Limits {
                rpm: lim("rpm")?,
                tpm: lim("tpm")?,
                rpd: lim("rpd")?,
                tpd: lim("tpd")?,
            },
            condition: condition_from_str(&r.try_get::<String, _>("state")?),
            until: r.try_get("until")?,
        });
    }
    let rows = sqlx::query(
        "SELECT key_name, project_id, fingerprint, secret_nonce, secret_ciphertext, state,
                disabled_reason, last_used FROM api_keys",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        let (Ok(key), Ok(project)) = (
            KeyName::parse(r.try_get::<String, _>("key_name")?),
            ProjectId::parse(r.try_get::<String, _>("project_id")?),
        ) else {
            continue;
        };
        let nonce: Vec<u8> = r.try_get("secret_nonce")?;
        let ct: Vec<u8> = r.try_get("secret_ciphertext")?;
        let state: String = r.try_get("state")?;
        let mut reason: Option<String> = r.try_get("disabled_reason")?;
        let (secret, mut active) = match master.open(key.as_str(), &nonce, &ct) {
            Ok(s) => (s, state == "active"),
            Err(e) => {
                tracing::error!(key = %key, "{e}");
                reason = Some(e.to_string());
                (Secret::new(String::new()), false)
            }
        };
        if fleet.arbiter.unusable_projects.contains(&project) {
            active = false;
        }
        fleet.arbiter.keys.push(KeyConfig {
            key: key.clone(),
            project: project.clone(),
            active,
            last_used: r.try_get("last_used")?,
        });
        fleet.keys.insert(
            key,
            KeyRecord {
                project,
                fingerprint: r.try_get("fingerprint")?,
                secret,
                active,
                reason,
            },
        );
    }
    Ok(fleet)
}

/// Grants that still count (granted since `since`, not released), to rebuild the ledgers.
pub async fn load_grants(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> Result<Vec<StoredGrant>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT claim_id, agent_id, project_id, model, key_name, granted_at, lease_expires,
                charged_input_tokens, outcome
         FROM claims WHERE state = 'granted' AND granted_at >= $1
           AND coalesce(outcome, 'open') <> 'released' AND request_type <> 'count_tokens'
         ORDER BY granted_at",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let parsed = (
            AgentId::parse(r.try_get::<String, _>("agent_id")?),
            ProjectId::parse(
                r.try_get::<Option<String>, _>("project_id")?
                    .unwrap_or_default(),
            ),
            ModelName::parse(r.try_get::<String, _>("model")?),
            KeyName::parse(
                r.try_get::<Option<String>, _>("key_name")?
                    .unwrap_or_default(),
            ),
        );
        let (Ok(agent), Ok(project), Ok(model), Ok(key)) = parsed else {
            continue;
        };
        let (Some(granted_at), Some(lease_expires)) = (
            r.try_get::<Option<DateTime<Utc>>, _>("granted_at")?,
            r.try_get("lease_expires")?,
        ) else {
            continue;
        };
        out.push(StoredGrant {
            claim_id: r.try_get("claim_id")?,
            agent,
            group: GroupId { project, model },
            key,
            granted_at,
            lease_expires,
            charged: to_u64(r.try_get("charged_input_tokens")?),
            open: r.try_get::<Option<String>, _>("outcome")?.as_deref() == Some("open"),
        });
    }
    Ok(out)
}

/// Claims still waiting, in arrival order.
pub async fn load_queued(pool: &PgPool) -> Result<Vec<PendingClaim>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT claim_id, agent_id, model, task_id, est_input_tokens, received_at, deadline,
                array_to_string(avoid_keys, ',') AS avoid, request_type, claimed_at
         FROM claims WHERE state = 'queued' ORDER BY received_at, claim_id",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let (Ok(agent), Ok(model)) = (
            AgentId::parse(r.try_get::<String, _>("agent_id")?),
            ModelName::parse(r.try_get::<String, _>("model")?),
        ) else {
            continue;
        };
        let received_at: DateTime<Utc> = r.try_get("received_at")?;
        let avoid: String = r.try_get("avoid")?;
        out.push(PendingClaim {
            claim_id: r.try_get("claim_id")?,
            agent,
            model,
            est_input_tokens: to_u64(r.try_get("est_input_tokens")?),
            task_id: r
                .try_get::<Option<String>, _>("task_id")?
                .and_then(|t| TaskId::parse(t).ok()),
            avoid_keys: avoid
                .split(',')
                .filter_map(|k| KeyName::parse(k).ok())
                .collect(),
            request_type: request_type_from_str(&r.try_get::<String, _>("request_type")?),
            claimed_at: r
                .try_get::<Option<DateTime<Utc>>, _>("claimed_at")?
                .unwrap_or(received_at),
            deadline: r
                .try_get::<Option<DateTime<Utc>>, _>("deadline")?
                .unwrap_or(received_at),
            received_at,
        });
    }
    Ok(out)
}

pub fn request_type_from_str(s: &str) -> RequestType {
    match s {
        "generate" => RequestType::Generate,
        "count_tokens" => RequestType::CountTokens,
        _ => RequestType::Stream,
    }
}

/// Each known agent's watermark, with the committed sequences above it.
pub async fn load_watermarks(pool: &PgPool) -> Result<HashMap<AgentId, Watermark>, sqlx::Error> {
    let mut out = HashMap::new();
    for r in sqlx::query("SELECT agent_id, watermark FROM agents")
        .fetch_all(pool)
        .await?
    {
        if let Ok(a) = AgentId::parse(r.try_get::<String, _>("agent_id")?) {
            out.insert(a, Watermark::new(to_u64(r.try_get("watermark")?)));
        }
    }
    let rows = sqlx::query(
        "SELECT e.agent_id, e.seq FROM events e JOIN agents a USING (agent_id)
         WHERE e.seq > a.watermark",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        if let Ok(a) = AgentId::parse(r.try_get::<String, _>("agent_id")?) {
            let seq: i64 = r.try_get("seq")?;
            out.entry(a)
                .or_insert_with(|| Watermark::new(0))
                .committed(to_u64(seq));
        }
    }
    Ok(out)
}

/// The last Pacific day the daily counters were reset for.
pub async fn last_reset_day(pool: &PgPool) -> Result<Option<chrono::NaiveDate>, sqlx::Error> {
    let v: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT value FROM recorder_state WHERE name = 'last_reset_day'")
            .fetch_optional(pool)
            .await?;
    Ok(v.and_then(|v| v.as_str().and_then(|s| s.parse().ok())))
}

/// Zeroes the daily counters and clears exhausted states for Pacific day `day`.
pub async fn daily_reset(
    tx: &mut Transaction<'_, Postgres>,
    day: chrono::NaiveDate,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET daily_request_count = 0, daily_token_total = 0, quota_exhausted = false",
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "UPDATE quota_groups SET state = 'open', until = NULL, reason = NULL, dimension = NULL,
         updated_at = now() WHERE state = 'exhausted'",
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO recorder_state (name, value) VALUES ('last_reset_day', $1)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
    )
    .bind(serde_json::Value::String(day.to_string()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One event row.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event_id: Uuid,
    pub agent: String,
    pub seq: Option<i64>,
    pub kind: &'static str,
    pub ts: DateTime<Utc>,
    /// The envelope's JSON text.
    pub body: String,
}

/// Inserts events; returns the ids that were new (duplicates are stored once).
pub async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[EventRow],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.event_id).collect();
    let agents: Vec<&str> = rows.iter().map(|r| r.agent.as_str()).collect();
    let seqs: Vec<Option<i64>> = rows.iter().map(|r| r.seq).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind).collect();
    let ts: Vec<DateTime<Utc>> = rows.iter().map(|r| r.ts).collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let new: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO events (event_id, agent_id, seq, kind, ts, body)
         SELECT u.id, u.agent, u.seq, u.kind, u.ts, u.body::jsonb
         FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::text[], $5::timestamptz[], $6::text[])
              AS u(id, agent, seq, kind, ts, body)
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind(&ids)
    .bind(&agents)
    .bind(&seqs)
    .bind(&kinds)
    .bind(&ts)
    .bind(&bodies)
    .fetch_all(&mut **tx)
    .await?;
    Ok(new.into_iter().collect())
}

/// The stored decision for claims seen before (redelivered claim events).
#[derive(Debug, Clone)]
pub struct StoredClaim {
    pub claim_id: Uuid,
    pub agent_id: String,
    pub model: String,
    pub state: String,
    pub outcome: Option<String>,
    pub grant_id: Option<Uuid>,
    pub key_name: Option<String>,
    pub project_id: Option<String>,
    pub lease_expires: Option<DateTime<Utc>>,
    pub denial_reason: Option<String>,
}

pub async fn stored_claims(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StoredClaim>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query(
        "SELECT claim_id, agent_id, model, state, outcome, grant_id, key_name, project_id, lease_expires,
                denial_reason FROM claims WHERE claim_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut out = HashMap::new();
    for r in rows {
        let c = StoredClaim {
            claim_id: r.try_get("claim_id")?,
            agent_id: r.try_get("agent_id")?,
            model: r.try_get("model")?,
            state: r.try_get("state")?,
            outcome: r.try_get("outcome")?,
            grant_id: r.try_get("grant_id")?,
            key_name: r.try_get("key_name")?,
            project_id: r.try_get("project_id")?,
            lease_expires: r.try_get("lease_expires")?,
            denial_reason: r.try_get("denial_reason")?,
        };
        out.insert(c.claim_id, c);
    }
    Ok(out)
}

/// A claim's full row (inserted or updated as a whole).
#[derive(Debug, Clone)]
pub struct ClaimRow {
    pub claim: PendingClaim,
    pub state: &'static str,
    pub denial_reason: Option<String>,
    pub grant_id: Option<Uuid>,
    pub key_name: Option<String>,
    pub project_id: Option<String>,
    pub granted_at: Option<DateTime<Utc>>,
    pub lease_expires: Option<DateTime<Utc>>,
    pub charged: i64,
    pub outcome: Option<&'static str>,
}

/// A granted claim's end.
#[derive(Debug, Clone)]
pub struct CloseRow {
    pub claim_id: Uuid,
    pub outcome: &'static str,
    pub charged: Option<i64>,
    pub closed_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct UsageRow {
    pub event_id: Uuid,
    pub key_name: String,
    pub task_id: Option<String>,
    pub ts: DateTime<Utc>,
    pub token_count: i64,
    pub request_type: &'static str,
    pub agent_id: String,
    pub project_id: String,
    pub model: String,
    pub claim_id: Uuid,
    pub grant_id: Uuid,
    pub http_status: i32,
    pub prompt: i64,
    pub cached: i64,
    pub candidates: i64,
    pub thoughts: i64,
    pub tool_prompt: i64,
    pub complete: bool,
    pub latency_ms: i64,
}

#[derive(Debug, Clone)]
pub struct ThrottleRow {
    pub event_id: Uuid,
    pub ts: DateTime<Utc>,
    pub agent_id: String,
    pub throttle: gemfleet_protocol::Throttle,
}

#[derive(Debug, Clone)]
pub struct TaskRow {
    pub agent_id: String,
    pub ts: DateTime<Utc>,
    pub event: gemfleet_protocol::TaskEvent,
}

#[derive(Debug, Clone)]
pub struct AlertRow {
    pub event_id: Uuid,
    pub alert: gemfleet_protocol::Alert,
}

#[derive(Debug, Clone)]
pub struct GroupStateRow {
    pub group: GroupId,
    pub condition: GroupCondition,
    pub until: Option<DateTime<Utc>>,
    pub dimension: Option<String>,
    pub reason: Option<String>,
}

/// Everything one batch writes besides the events themselves.
#[derive(Debug, Default)]
pub struct BatchWrite {
    claims: Vec<ClaimRow>,
    claim_index: HashMap<Uuid, usize>,
    closes: HashMap<Uuid, CloseRow>,
    pub usage: Vec<UsageRow>,
    pub throttles: Vec<ThrottleRow>,
    /// Per key: requests, tokens, last use.
    pub key_use: HashMap<String, (i64, i64, Option<DateTime<Utc>>)>,
    pub tasks: Vec<TaskRow>,
    pub dead_letters: Vec<DeadLetter>,
    pub alerts: Vec<AlertRow>,
    /// agent → (presence, version)
    pub presence: HashMap<String, (&'static str, Option<String>)>,
    pub watermarks: HashMap<String, i64>,
    pub group_states: Vec<GroupStateRow>,
    pub key_disables: Vec<(String, String)>,
    pub project_states: Vec<(String, &'static str, String)>,
    pub keys_exhausted: Vec<String>,
    pub limits: Vec<(GroupId, Limits)>,
    pub tiers: Vec<(String, &'static str)>,
    pub daily_reset: Option<chrono::NaiveDate>,
}

impl BatchWrite {
    pub fn claim(&mut self, row: ClaimRow) {
        match self.claim_index.get(&row.claim.claim_id) {
            Some(i) => self.claims[*i] = row,
            None => {
                self.claim_index
                    .insert(row.claim.claim_id, self.claims.len());
                self.claims.push(row);
            }
        }
    }
    pub fn close(&mut self, row: CloseRow) {
        self.closes.insert(row.claim_id, row);
    }
    pub fn key_used(&mut self, key: &str, requests: i64, tokens: i64, at: DateTime<Utc>) {
        let e = self.key_use.entry(key.to_string()).or_insert((0, 0, None));
        e.0 = e.0.saturating_add(requests);
        e.1 = e.1.saturating_add(tokens);
        e.2 = e.2.max(Some(at));
    }
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
            && self.closes.is_empty()
            && self.usage.is_empty()
            && self.throttles.is_empty()
            && self.key_use.is_empty()
            && self.tasks.is_empty()
            && self.dead_letters.is_empty()
            && self.alerts.is_empty()
            && self.presence.is_empty()
            && self.watermarks.is_empty()
            && self.group_states.is_empty()
            && self.key_disables.is_empty()
            && self.project_states.is_empty()
            && self.keys_exhausted.is_empty()
            && self.limits.is_empty()
            && self.tiers.is_empty()
            && self.daily_reset.is_none()
    }

    /// Writes everything inside `tx` (the caller commits).
    pub async fn write(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if let Some(day) = self.daily_reset {
            daily_reset(tx, day).await?;
        }
        self.write_claims(tx).await?;
        self.write_closes(tx).await?;
        self.write_usage(tx).await?;
        self.write_key_use(tx).await?;
        for t in &self.throttles {
            write_throttle(tx, t).await?;
        }
        for t in &self.tasks {
            write_task(tx, t).await?;
        }
        for d in &self.dead_letters {
            sqlx::query(
                "INSERT INTO dead_letters (topic, agent_id, reason, detail, payload_size,
                 payload_sha256, excerpt) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&d.topic)
            .bind(&d.agent_id)
            .bind(d.reason)
            .bind(&d.detail)
            .bind(d.payload_size)
            .bind(&d.payload_sha256)
            .bind(&d.excerpt)
            .execute(&mut **tx)
            .await?;
        }
        for (agent, (state, version)) in &self.presence {
            sqlx::query(
                "INSERT INTO agents (agent_id, state, version) VALUES ($1, $2, $3)
                 ON CONFLICT (agent_id) DO UPDATE SET state = EXCLUDED.state,
                 version = coalesce(EXCLUDED.version, agents.version), last_seen = now()",
            )
            .bind(agent)
            .bind(*state)
            .bind(version)
            .execute(&mut **tx)
            .await?;
        }
        if !self.watermarks.is_empty() {
            let agents: Vec<&str> = self.watermarks.keys().map(String::as_str).collect();
            let marks: Vec<i64> = self.watermarks.values().copied().collect();
            sqlx::query(
                "INSERT INTO agents (agent_id, watermark)
                 SELECT * FROM UNNEST($1::text[], $2::int8[])
                 ON CONFLICT (agent_id) DO UPDATE SET
                   watermark = greatest(agents.watermark, EXCLUDED.watermark), last_seen = now()",
            )
            .bind(&agents)
            .bind(&marks)
            .execute(&mut **tx)
            .await?;
        }
        for g in &self.group_states {
            sqlx::query(
                "INSERT INTO quota_groups (project_id, model, state, until, dimension, reason)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (project_id, model) DO UPDATE SET state = EXCLUDED.state,
                   until = EXCLUDED.until, dimension = EXCLUDED.dimension,
                   reason = EXCLUDED.reason, updated_at = now()",
            )
            .bind(g.group.project.as_str())
            .bind(g.group.model.as_str())
            .bind(condition_str(g.condition))
            .bind(g.until)
            .bind(&g.dimension)
            .bind(&g.reason)
            .execute(&mut **tx)
            .await?;
        }
        for (key, reason) in &self.key_disables {
            sqlx::query(
                "UPDATE api_keys SET state = 'disabled', disabled_reason = $2, disabled_until = NULL
                 WHERE key_name = $1",
            )
            .bind(key)
            .bind(reason)
            .execute(&mut **tx)
            .await?;
        }
        for (project, state, reason) in &self.project_states {
            sqlx::query(
                "UPDATE projects SET state = $2, state_reason = $3, updated_at = now()
                 WHERE project_id = $1",
            )
            .bind(project)
            .bind(*state)
            .bind(reason)
            .execute(&mut **tx)
            .await?;
            if *state == "dead" {
                sqlx::query(
                    "UPDATE api_keys SET state = 'disabled', disabled_reason = $2
                     WHERE project_id = $1 AND state = 'active'",
                )
                .bind(project)
                .bind(format!("project dead: {reason}"))
                .execute(&mut **tx)
                .await?;
            }
        }
        for project in &self.keys_exhausted {
            sqlx::query("UPDATE api_keys SET quota_exhausted = true WHERE project_id = $1")
                .bind(project)
                .execute(&mut **tx)
                .await?;
        }
        for (g, l) in &self.limits {
            sqlx::query(
                "UPDATE model_limits SET rpm = $3, tpm = $4, rpd = $5, tpd = $6,
                 source = 'learned', updated_at = now() WHERE project_id = $1 AND model = $2",
            )
            .bind(g.project.as_str())
            .bind(g.model.as_str())
            .bind(l.rpm.map(to_i64))
            .bind(l.tpm.map(to_i64))
            .bind(l.rpd.map(to_i64))
            .bind(l.tpd.map(to_i64))
            .execute(&mut **tx)
            .await?;
        }
        for (project, tier) in &self.tiers {
            sqlx::query("UPDATE projects SET tier = $2, updated_at = now() WHERE project_id = $1")
                .bind(project)
                .bind(*tier)
                .execute(&mut **tx)
                .await?;
        }
        for a in &self.alerts {
            let al = &a.alert;
            sqlx::query(
                "INSERT INTO alerts (event_id, severity, code, text, key_name, project_id, model,
                 agent_id, until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(a.event_id)
            .bind(al.severity.as_str())
            .bind(&al.code)
            .bind(&al.text)
            .bind(al.key.as_ref().map(|k| k.to_string()))
            .bind(al.project.as_ref().map(|k| k.to_string()))
            .bind(al.model.as_ref().map(|k| k.to_string()))
            .bind(al.agent.as_ref().map(|k| k.to_string()))
            .bind(al.until)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    async fn write_claims(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.claims.is_empty() {
            return Ok(());
        }
        let c = &self.claims;
        let ids: Vec<Uuid> = c.iter().map(|r| r.claim.claim_id).collect();
        let agents: Vec<&str> = c.iter().map(|r| r.claim.agent.as_str()).collect();
        let models: Vec<&str> = c.iter().map(|r| r.claim.model.as_str()).collect();
        let tasks: Vec<Option<&str>> = c
            .iter()
            .map(|r| r.claim.task_id.as_ref().map(|t| t.as_str()))
            .collect();
        let est: Vec<i64> = c.iter().map(|r| to_i64(r.claim.est_input_tokens)).collect();
        let received: Vec<DateTime<Utc>> = c.iter().map(|r| r.claim.received_at).collect();
        let states: Vec<&str> = c.iter().map(|r| r.state).collect();
        let denial: Vec<Option<&str>> = c.iter().map(|r| r.denial_reason.as_deref()).collect();
        let grant_ids: Vec<Option<Uuid>> = c.iter().map(|r| r.grant_id).collect();
        let keys: Vec<Option<&str>> = c.iter().map(|r| r.key_name.as_deref()).collect();
        let projects: Vec<Option<&str>> = c.iter().map(|r| r.project_id.as_deref()).collect();
        let granted: Vec<Option<DateTime<Utc>>> = c.iter().map(|r| r.granted_at).collect();
        let leases: Vec<Option<DateTime<Utc>>> = c.iter().map(|r| r.lease_expires).collect();
        let charged: Vec<i64> = c.iter().map(|r| r.charged).collect();
        let outcomes: Vec<Option<&str>> = c.iter().map(|r| r.outcome).collect();
        let deadlines: Vec<DateTime<Utc>> = c.iter().map(|r| r.claim.deadline).collect();
        // Names never contain ',' (protocol names), so a joined string carries the list
        // through UNNEST, which cannot carry arrays of arrays.
        let avoid: Vec<String> = c
            .iter()
            .map(|r| {
                r.claim
                    .avoid_keys
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let rtypes: Vec<&str> = c.iter().map(|r| r.claim.request_type.as_str()).collect();
        let claimed: Vec<DateTime<Utc>> = c.iter().map(|r| r.claim.claimed_at).collect();
        sqlx::query(
            "INSERT INTO claims (claim_id, agent_id, model, task_id, est_input_tokens, received_at,
               state, denial_reason, grant_id, key_name, project_id, granted_at, lease_expires,
               charged_input_tokens, outcome, deadline, avoid_keys, request_type, claimed_at,
               closed_at)
             SELECT u.id, u.agent, u.model, u.task, u.est, u.received, u.state, u.denial, u.grant_id,
               u.key, u.project, u.granted, u.lease, u.charged, u.outcome, u.deadline,
               string_to_array(u.avoid, ','), u.rtype, u.claimed,
               CASE WHEN u.state IN ('denied', 'withdrawn') THEN u.received END
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int8[],
               $6::timestamptz[], $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[],
               $12::timestamptz[], $13::timestamptz[], $14::int8[], $15::text[],
               $16::timestamptz[], $17::text[], $18::text[], $19::timestamptz[])
               AS u(id, agent, model, task, est, received, state, denial, grant_id, key, project,
                    granted, lease, charged, outcome, deadline, avoid, rtype, claimed)
             ON CONFLICT (claim_id) DO UPDATE SET state = EXCLUDED.state,
               denial_reason = EXCLUDED.denial_reason, grant_id = EXCLUDED.grant_id,
               key_name = EXCLUDED.key_name, project_id = EXCLUDED.project_id,
               granted_at = EXCLUDED.granted_at, lease_expires = EXCLUDED.lease_expires,
               charged_input_tokens = EXCLUDED.charged_input_tokens, outcome = EXCLUDED.outcome,
               closed_at = EXCLUDED.closed_at",
        )
        .bind(&ids)
        .bind(&agents)
        .bind(&models)
        .bind(&tasks)
        .bind(&est)
        .bind(&received)
        .bind(&states)
        .bind(&denial)
        .bind(&grant_ids)
        .bind(&keys)
        .bind(&projects)
        .bind(&granted)
        .bind(&leases)
        .bind(&charged)
        .bind(&outcomes)
        .bind(&deadlines)
        .bind(&avoid)
        .bind(&rtypes)
        .bind(&claimed)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn write_closes(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.closes.is_empty() {
            return Ok(());
        }
        let c: Vec<&CloseRow> = self.closes.values().collect();
        let ids: Vec<Uuid> = c.iter().map(|r| r.claim_id).collect();
        let outcomes: Vec<&str> = c.iter().map(|r| r.outcome).collect();
        let charged: Vec<Option<i64>> = c.iter().map(|r| r.charged).collect();
        let at: Vec<DateTime<Utc>> = c.iter().map(|r| r.closed_at).collect();
        sqlx::query(
            "UPDATE claims c SET outcome = u.outcome,
               charged_input_tokens = coalesce(u.charged, c.charged_input_tokens),
               closed_at = u.at
             FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::timestamptz[])
               AS u(id, outcome, charged, at)
             WHERE c.claim_id = u.id",
        )
        .bind(&ids)
        .bind(&outcomes)
        .bind(&charged)
        .bind(&at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn write_usage(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.usage.is_empty() {
            return Ok(());
        }
        let u = &self.usage;
        macro_rules! col {
            ($f:expr) => {
                u.iter().map($f).collect::<Vec<_>>()
            };
        }
        sqlx::query(
            "INSERT INTO usage_log (event_id, key_name, task_id, request_timestamp, token_count,
               request_type, agent_id, project_id, model, claim_id, grant_id, http_status,
               prompt_tokens, cached_tokens, candidates_tokens, thoughts_tokens,
               tool_prompt_tokens, complete, latency_ms)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
               $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[], $10::uuid[],
               $11::uuid[], $12::int4[], $13::int8[], $14::int8[], $15::int8[], $16::int8[],
               $17::int8[], $18::bool[], $19::int8[])
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(col!(|r| r.event_id))
        .bind(col!(|r| r.key_name.as_str()))
        .bind(col!(|r| r.task_id.as_deref()))
        .bind(col!(|r| r.ts))
        .bind(col!(|r| r.token_count))
        .bind(col!(|r| r.request_type))
        .bind(col!(|r| r.agent_id.as_str()))
        .bind(col!(|r| r.project_id.as_str()))
        .bind(col!(|r| r.model.as_str()))
        .bind(col!(|r| r.claim_id))
        .bind(col!(|r| r.grant_id))
        .bind(col!(|r| r.http_status))
        .bind(col!(|r| r.prompt))
        .bind(col!(|r| r.cached))
        .bind(col!(|r| r.candidates))
        .bind(col!(|r| r.thoughts))
        .bind(col!(|r| r.tool_prompt))
        .bind(col!(|r| r.complete))
        .bind(col!(|r| r.latency_ms))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn write_key_use(&self, tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
        if self.key_use.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = self.key_use.keys().map(String::as_str).collect();
        let reqs: Vec<i64> = self.key_use.values().map(|v| v.0).collect();
        let toks: Vec<i64> = self.key_use.values().map(|v| v.1).collect();
        let last: Vec<Option<DateTime<Utc>>> = self.key_use.values().map(|v| v.2).collect();
        sqlx::query(
            // Clamped in numeric: a hostile token count must not make every later update
            // of this key overflow.
            "UPDATE api_keys k SET
               daily_request_count = least(k.daily_request_count::numeric + u.r, 9223372036854775807)::int8,
               daily_token_total = least(k.daily_token_total::numeric + u.t, 9223372036854775807)::int8,
               last_used = greatest(k.last_used, u.last)
             FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::timestamptz[]) AS u(key, r, t, last)
             WHERE k.key_name = u.key",
        )
        .bind(&keys)
        .bind(&reqs)
        .bind(&toks)
        .bind(&last)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}

async fn write_throttle(
    tx: &mut Transaction<'_, Postgres>,
    t: &ThrottleRow,
) -> Result<(), sqlx::Error> {
    let th = &t.throttle;
    let c = &th.classification;
    let enum_str = |v: serde_json::Result<serde_json::Value>| -> Option<String> {
        v.ok().and_then(|v| v.as_str().map(str::to_string))
    };
    sqlx::query(
        "INSERT INTO throttles (event_id, ts, agent_id, key_name, project_id, model, task_id,
           claim_id, http_status, class, scope, dimension, retry_after_ms, until, quota_limit,
           tier, quota_id, in_stream, absorbed, reason)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(t.event_id)
    .bind(t.ts)
    .bind(&t.agent_id)
    .bind(th.key.as_str())
    .bind(th.project.as_str())
    .bind(th.model.as_str())
    .bind(th.task_id.as_ref().map(|x| x.as_str()))
    .bind(th.claim_id)
    .bind(i32::from(th.http_status))
    .bind(c.class.as_str())
    .bind(enum_str(serde_json::to_value(c.scope)).unwrap_or_default())
    .bind(c.dimension.and_then(|d| enum_str(serde_json::to_value(d))))
    .bind(c.retry_after_ms.map(to_i64))
    .bind(c.until)
    .bind(c.limit.map(to_i64))
    .bind(c.tier.and_then(|d| enum_str(serde_json::to_value(d))))
    .bind(&c.quota_id)
    .bind(c.in_stream)
    .bind(th.absorbed)
    .bind(&c.reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_task(tx: &mut Transaction<'_, Postgres>, t: &TaskRow) -> Result<(), sqlx::Error> {
    let e = &t.event;
    let running = e.status == gemfleet_protocol::TaskStatus::Running;
    // A run's totals are added when it ends; `running` counts an attempt.
    let (r, i, o, tot) = if running {
        (0, 0, 0, 0)
    } else {
        (
            to_i64(e.requests),
            to_i64(e.input_tokens),
            to_i64(e.output_tokens),
            to_i64(e.total_tokens),
        )
    };
    sqlx::query(
        "INSERT INTO tasks (id, status, owner_agent, attempts, session_id, requests, input_tokens,
           output_tokens, total_tokens, last_updated)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status,
           owner_agent = EXCLUDED.owner_agent,
           attempts = tasks.attempts + EXCLUDED.attempts,
           session_id = coalesce(EXCLUDED.session_id, tasks.session_id),
           requests = tasks.requests + EXCLUDED.requests,
           input_tokens = tasks.input_tokens + EXCLUDED.input_tokens,
           output_tokens = tasks.output_tokens + EXCLUDED.output_tokens,
           total_tokens = tasks.total_tokens + EXCLUDED.total_tokens,
           last_updated = greatest(tasks.last_updated, EXCLUDED.last_updated)",
    )
    .bind(e.task_id.as_str())
    .bind(e.status.as_str())
    .bind(&t.agent_id)
    .bind(i32::from(running))
    .bind(&e.session_id)
    .bind(r)
    .bind(i)
    .bind(o)
    .bind(tot)
    .bind(t.ts)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
