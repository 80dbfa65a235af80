//! Operator functions over a `PgPool`: projects and limits, keys, usage, tasks, status.
//! The CLI calls them, and so do other crates' tests. Every change NOTIFYs the running
//! recorder (channel [`crate::service::CONFIG_CHANNEL`]), which re-reads and republishes.

use crate::arbiter::ledger::Limits;
use crate::crypto::{CryptoError, MasterKey, fingerprint};
use crate::service::CONFIG_CHANNEL;
use crate::store::to_i64;
use chrono::{DateTime, Utc};
use gemfleet_gemini::Tier;
use gemfleet_protocol::{KeyName, ModelName, ProjectId, Secret};
use serde::Serialize;
use sqlx::{PgPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "unknown project {0}: create it first with `gemfleet-recorder projects set {0} --tier free|paid`"
    )]
    UnknownProject(String),
    #[error("unknown key {0} (see `gemfleet-recorder keys list`)")]
    UnknownKey(String),
    #[error("key {0} already exists; remove it first to replace its secret")]
    DuplicateKey(String),
    #[error("the secret is empty")]
    EmptySecret,
    #[error("bad limit {spec:?}: {why} (expected e.g. rpm=15,tpm=250000,rpd=1000,tpd=none)")]
    BadLimit { spec: String, why: String },
    #[error("unknown task {0}")]
    UnknownTask(String),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

fn from_i64(v: Option<i64>) -> Option<u64> {
    v.map(|v| u64::try_from(v).unwrap_or(0))
}

async fn notify(pool: &PgPool) -> Result<(), AdminError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CONFIG_CHANNEL)
        .execute(pool)
        .await?;
    Ok(())
}

/// Parses `rpm=15,tpm=250000,rpd=1000,tpd=none` (missing or `none` = unlimited; 0 = no quota).
pub fn parse_limits(spec: &str) -> Result<Limits, AdminError> {
    let bad = |why: String| AdminError::BadLimit {
        spec: spec.to_string(),
        why,
    };
    let mut l = Limits::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} has no '='")))?;
        let v = match v.trim() {
            "none" | "unlimited" | "-" => None,
            n => Some(
                n.replace('_', "")
                    .parse::<u64>()
                    .map_err(|_| bad(format!("{n:?} is not a whole number")))?,
            ),
        };
        let slot = match k.trim() {
            "rpm" => &mut l.rpm,
            "tpm" => &mut l.tpm,
            "rpd" => &mut l.rpd,
            "tpd" => &mut l.tpd,
            other => {
                return Err(bad(format!(
                    "unknown dimension {other:?}; use rpm, tpm, rpd, tpd"
                )));
            }
        };
        *slot = v;
    }
    Ok(l)
}

/// Creates a project or changes its tier.
pub async fn add_project(pool: &PgPool, project: &ProjectId, tier: Tier) -> Result<(), AdminError> {
    let tier = if tier == Tier::Paid { "paid" } else { "free" };
    sqlx::query(
        "INSERT INTO projects (project_id, tier) VALUES ($1, $2)
         ON CONFLICT (project_id) DO UPDATE SET tier = EXCLUDED.tier, updated_at = now()",
    )
    .bind(project.as_str())
    .bind(tier)
    .execute(pool)
    .await?;
    notify(pool).await
}

/// Sets a project's limits for a model (configured and effective). A group that was
/// `no_quota` opens again: the operator has spoken.
pub async fn set_limits(
    pool: &PgPool,
    project: &ProjectId,
    model: &ModelName,
    l: Limits,
) -> Result<(), AdminError> {
    ensure_project(pool, project).await?;
    let v = |x: Option<u64>| x.map(to_i64);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO model_limits (project_id, model, rpm, tpm, rpd, tpd, configured_rpm,
           configured_tpm, configured_rpd, configured_tpd, source)
         VALUES ($1, $2, $3, $4, $5, $6, $3, $4, $5, $6, 'configured')
         ON CONFLICT (project_id, model) DO UPDATE SET rpm = $3, tpm = $4, rpd = $5, tpd = $6,
           configured_rpm = $3, configured_tpm = $4, configured_rpd = $5, configured_tpd = $6,
           source = 'configured', updated_at = now()",
    )
    .bind(project.as_str())
    .bind(model.as_str())
    .bind(v(l.rpm))
    .bind(v(l.tpm))
    .bind(v(l.rpd))
    .bind(v(l.tpd))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE quota_groups SET state = 'open', until = NULL, reason = NULL, updated_at = now()
         WHERE project_id = $1 AND model = $2 AND state = 'no_quota'",
    )
    .bind(project.as_str())
    .bind(model.as_str())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    notify(pool).await
}

/// Whether the project is known.
pub async fn project_exists(pool: &PgPool, project: &ProjectId) -> Result<bool, AdminError> {
    match ensure_project(pool, project).await {
        Ok(()) => Ok(true),
        Err(AdminError::UnknownProject(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

async fn ensure_project(pool: &PgPool, project: &ProjectId) -> Result<(), AdminError> {
    let n: Option<String> =
        sqlx::query_scalar("SELECT project_id FROM projects WHERE project_id = $1")
            .bind(project.as_str())
            .fetch_optional(pool)
            .await?;
    n.map(|_| ())
        .ok_or_else(|| AdminError::UnknownProject(project.to_string()))
}

/// Stores a key, its secret encrypted with `master`. Returns its fingerprint.
pub async fn add_key(
    pool: &PgPool,
    master: &MasterKey,
    name: &KeyName,
    project: &ProjectId,
    secret: &Secret,
) -> Result<String, AdminError> {
    if secret.expose().trim().is_empty() {
        return Err(AdminError::EmptySecret);
    }
    ensure_project(pool, project).await?;
    let fp = fingerprint(secret);
    let (nonce, ct) = master.seal(name.as_str(), secret)?;
    let r = sqlx::query(
        "INSERT INTO api_keys (key_name, project_id, fingerprint, secret_nonce, secret_ciphertext)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_name) DO NOTHING",
    )
    .bind(name.as_str())
    .bind(project.as_str())
    .bind(&fp)
    .bind(&nonce)
    .bind(&ct)
    .execute(pool)
    .await?;
    if r.rows_affected() == 0 {
        return Err(AdminError::DuplicateKey(name.to_string()));
    }
    notify(pool).await?;
    Ok(fp)
}

pub async fn disable_key(pool: &PgPool, name: &KeyName, reason: &str) -> Result<(), AdminError> {
    let r = sqlx::query(
        "UPDATE api_keys SET state = 'disabled', disabled_reason = $2, disabled_until = NULL
         WHERE key_name = $1",
    )
    .bind(name.as_str())
    .bind(reason)
    .execute(pool)
    .await?;
    if r.rows_affected() == 0 {
        return Err(AdminError::UnknownKey(name.to_string()));
    }
    notify(pool).await
}

pub async fn enable_key(pool: &PgPool, name: &KeyName) -> Result<(), AdminError> {
    let r = sqlx::query(
        "UPDATE api_keys SET state = 'active', disabled_reason = NULL, disabled_until = NULL
         WHERE key_name = $1",
    )
    .bind(name.as_str())
    .execute(pool)
    .await?;
    if r.rows_affected() == 0 {
        return Err(AdminError::UnknownKey(name.to_string()));
    }
    notify(pool).await
}

pub async fn remove_key(pool: &PgPool, name: &KeyName) -> Result<(), AdminError> {
    let r = sqlx::query("DELETE FROM api_keys WHERE key_name = $1")
        .bind(name.as_str())
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(AdminError::UnknownKey(name.to_string()));
    }
    notify(pool).await
}

/// A key as `keys list` shows it: never the secret.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub project: String,
    pub fingerprint: String,
    pub state: String,
    pub reason: Option<String>,
    pub quota_exhausted: bool,
    pub requests_today: i64,
    pub tokens_today: i64,
    /// The project's smallest per-day request limit over its models, if any.
    pub rpd_limit: Option<u64>,
    pub tpd_limit: Option<u64>,
    pub last_used: Option<DateTime<Utc>>,
}

pub async fn list_keys(pool: &PgPool) -> Result<Vec<KeyInfo>, AdminError> {
    let rows = sqlx::query(
        "SELECT k.key_name, k.project_id, k.fingerprint, k.state, k.disabled_reason,
                k.quota_exhausted, k.daily_request_count, k.daily_token_total, k.last_used,
                (SELECT min(rpd) FROM model_limits l WHERE l.project_id = k.project_id) AS rpd,
                (SELECT min(tpd) FROM model_limits l WHERE l.project_id = k.project_id) AS tpd
         FROM api_keys k ORDER BY k.project_id, k.key_name",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(KeyInfo {
                name: r.try_get("key_name")?,
                project: r.try_get("project_id")?,
                fingerprint: r.try_get("fingerprint")?,
                state: r.try_get("state")?,
                reason: r.try_get("disabled_reason")?,
                quota_exhausted: r.try_get("quota_exhausted")?,
                requests_today: r.try_get("daily_request_count")?,
                tokens_today: r.try_get("daily_token_total")?,
                rpd_limit: from_i64(r.try_get("rpd")?),
                tpd_limit: from_i64(r.try_get("tpd")?),
                last_used: r.try_get("last_used")?,
            })
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelLimitInfo {
    pub model: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpd: Option<u64>,
    pub source: String,
    pub state: String,
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectInfo {
    pub project: String,
    pub tier: String,
    pub state: String,
    pub reason: Option<String>,
    pub keys: i64,
    pub models: Vec<ModelLimitInfo>,
}

pub async fn list_projects(pool: &PgPool) -> Result<Vec<ProjectInfo>, AdminError> {
    let rows = sqlx::query(
        "SELECT p.project_id, p.tier, p.state, p.state_reason,
                (SELECT count(*) FROM api_keys k WHERE k.project_id = p.project_id) AS keys
         FROM projects p ORDER BY p.project_id",
    )
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let project: String = r.try_get("project_id")?;
        let models = sqlx::query(
            "SELECT l.model, l.rpm, l.tpm, l.rpd, l.tpd, l.source,
                    coalesce(g.state, 'open') AS state, g.until
             FROM model_limits l LEFT JOIN quota_groups g USING (project_id, model)
             WHERE l.project_id = $1 ORDER BY l.model",
        )
        .bind(&project)
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|m| {
            Ok(ModelLimitInfo {
                model: m.try_get("model")?,
                rpm: from_i64(m.try_get("rpm")?),
                tpm: from_i64(m.try_get("tpm")?),
                rpd: from_i64(m.try_get("rpd")?),
                tpd: from_i64(m.try_get("tpd")?),
                source: m.try_get("source")?,
                state: m.try_get("state")?,
                until: m.try_get("until")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        out.push(ProjectInfo {
            project,
            tier: r.try_get("tier")?,
            state: r.try_get("state")?,
            reason: r.try_get("state_reason")?,
            keys: r.try_get("keys")?,
            models,
        });
    }
    Ok(out)
}

/// What `usage` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageBy {
    Key,
    Project,
    Model,
    Agent,
    Task,
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageLine {
    pub group: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
}

pub async fn usage(
    pool: &PgPool,
    by: UsageBy,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<UsageLine>, AdminError> {
    // The column comes from a closed enum, never from user text.
    let col = match by {
        UsageBy::Key => "key_name",
        UsageBy::Project => "project_id",
        UsageBy::Model => "model",
        UsageBy::Agent => "agent_id",
        UsageBy::Task => "coalesce(task_id, '-')",
    };
    let sql = format!(
        "SELECT {col} AS grp, count(*) AS requests, coalesce(sum(prompt_tokens), 0)::int8 AS input,
                coalesce(sum(candidates_tokens + thoughts_tokens), 0)::int8 AS output,
                coalesce(sum(token_count), 0)::int8 AS total
         FROM usage_log
         WHERE ($1::timestamptz IS NULL OR request_timestamp >= $1)
           AND ($2::timestamptz IS NULL OR request_timestamp < $2)
         GROUP BY 1 ORDER BY 1"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(since)
        .bind(until)
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(UsageLine {
                group: r.try_get("grp")?,
                requests: r.try_get("requests")?,
                input_tokens: r.try_get("input")?,
                output_tokens: r.try_get("output")?,
                total_tokens: r.try_get("total")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskInfo {
    pub id: String,
    pub status: String,
    pub owner_agent: Option<String>,
    pub attempts: i32,
    pub session_id: Option<String>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub last_updated: DateTime<Utc>,
    pub context: Option<serde_json::Value>,
}

fn task_from_row(r: &sqlx::postgres::PgRow) -> Result<TaskInfo, sqlx::Error> {
    Ok(TaskInfo {
        id: r.try_get("id")?,
        status: r.try_get("status")?,
        owner_agent: r.try_get("owner_agent")?,
        attempts: r.try_get("attempts")?,
        session_id: r.try_get("session_id")?,
        requests: r.try_get("requests")?,
        input_tokens: r.try_get("input_tokens")?,
        output_tokens: r.try_get("output_tokens")?,
        total_tokens: r.try_get("total_tokens")?,
        last_updated: r.try_get("last_updated")?,
        context: r.try_get("context")?,
    })
}

macro_rules! task_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, status, owner_agent, attempts, session_id, requests, input_tokens, \
             output_tokens, total_tokens, last_updated, context FROM tasks ",
            $rest
        )
    };
}

pub async fn list_tasks(pool: &PgPool) -> Result<Vec<TaskInfo>, AdminError> {
    let rows = sqlx::query(task_select!("ORDER BY last_updated DESC LIMIT 500"))
        .fetch_all(pool)
        .await?;
    Ok(rows.iter().map(task_from_row).collect::<Result<_, _>>()?)
}

pub async fn show_task(pool: &PgPool, id: &str) -> Result<TaskInfo, AdminError> {
    let row = sqlx::query(task_select!("WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| AdminError::UnknownTask(id.to_string()))?;
    Ok(task_from_row(&row)?)
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub agents_online: Vec<String>,
    pub agents_offline: Vec<String>,
    pub groups: Vec<GroupStatus>,
    pub cold_keys: Vec<(String, String)>,
    pub open_grants: i64,
    pub queued_claims: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub project: String,
    pub model: String,
    pub state: String,
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

pub async fn status(pool: &PgPool) -> Result<Status, AdminError> {
    let agents: Vec<(String, String)> =
        sqlx::query_as("SELECT agent_id, state FROM agents ORDER BY agent_id")
            .fetch_all(pool)
            .await?;
    let groups = sqlx::query(
        "SELECT l.project_id, l.model, coalesce(g.state, 'open') AS state, g.until, g.reason
         FROM model_limits l LEFT JOIN quota_groups g USING (project_id, model)
         ORDER BY l.project_id, l.model",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| {
        Ok(GroupStatus {
            project: r.try_get("project_id")?,
            model: r.try_get("model")?,
            state: r.try_get("state")?,
            until: r.try_get("until")?,
            reason: r.try_get("reason")?,
        })
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let cold_keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT key_name, CASE WHEN state = 'disabled' THEN 'disabled: ' || coalesce(disabled_reason, '')
                ELSE 'quota exhausted today' END
         FROM api_keys WHERE state = 'disabled' OR quota_exhausted ORDER BY key_name",
    )
    .fetch_all(pool)
    .await?;
    let open_grants: i64 = sqlx::query_scalar("SELECT count(*) FROM claims WHERE outcome = 'open'")
        .fetch_one(pool)
        .await?;
    let queued_claims: i64 =
        sqlx::query_scalar("SELECT count(*) FROM claims WHERE state = 'queued'")
            .fetch_one(pool)
            .await?;
    Ok(Status {
        agents_online: agents
            .iter()
            .filter(|a| a.1 == "online")
            .map(|a| a.0.clone())
            .collect(),
        agents_offline: agents
            .iter()
            .filter(|a| a.1 != "online")
            .map(|a| a.0.clone())
            .collect(),
        groups,
        cold_keys,
        open_grants,
        queued_claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_syntax() {
        let l = parse_limits("rpm=15,tpm=250_000,rpd=none").unwrap();
        assert_eq!(
            l,
            Limits {
                rpm: Some(15),
                tpm: Some(250_000),
                rpd: None,
                tpd: None
            }
        );
        assert!(
            parse_limits("rpm=x")
                .unwrap_err()
                .to_string()
                .contains("not a whole number")
        );
        assert!(
            parse_limits("qps=1")
                .unwrap_err()
                .to_string()
                .contains("unknown dimension")
        );
        assert!(
            parse_limits("rpm")
                .unwrap_err()
                .to_string()
                .contains("has no '='")
        );
        assert_eq!(parse_limits("rpm=0").unwrap().rpm, Some(0));
    }
}
