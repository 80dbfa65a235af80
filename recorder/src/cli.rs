//! The `gemfleet-recorder` command line: the service (`serve`) and the admin commands.
//! Secrets never come from argv (visible in `ps` and shell history): stdin or a named
//! environment variable.

use crate::admin::{self, UsageBy};
use crate::settings::{LogFormat, Settings};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use gemfleet_gemini::Tier;
use gemfleet_protocol::{KeyName, ModelName, ProjectId, Secret};
use std::io::Read;

#[derive(Debug, Parser)]
#[command(
    name = "gemfleet-recorder",
    version,
    about = "gemfleet's recorder: ingests agents' events into PostgreSQL, arbitrates key claims, \
             publishes key and quota states, and administers keys, projects and limits.",
    after_help = "Settings: --config FILE (TOML) and GEMFLEET_RECORDER_* environment variables \
                  (e.g. GEMFLEET_RECORDER_BROKER__HOST); DATABASE_URL; GEMFLEET_MASTER_KEY \
                  (base64 of 32 bytes). See docs/recorder.md."
)]
pub struct Cli {
    /// TOML settings file (see recorder/recorder.example.toml).
    #[arg(long, global = true, env = "GEMFLEET_RECORDER_CONFIG")]
    pub config: Option<String>,
    /// Log format.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the recorder service (applies migrations first). Stops gracefully on SIGTERM.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage projects, tiers and per-model limits.
    #[command(subcommand)]
    Projects(ProjectsCommand),
    /// Requests and tokens used, grouped, over a time range.
    Usage(UsageArgs),
    /// Tasks and their context.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Agents online, quota groups and their state, cold keys, open grants.
    Status(JsonFlag),
    /// Post alerts from the broker to a Slack incoming webhook (durable spool, batching, retries).
    SlackBridge(crate::slack_bridge::SlackBridgeArgs),
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a key. The secret is read from stdin, or from the variable named by --secret-env.
    Add {
        name: String,
        #[arg(long)]
        project: String,
        /// Name of an environment variable holding the secret (never the secret itself).
        #[arg(long)]
        secret_env: Option<String>,
    },
    /// List keys: project, fingerprint, state, today's requests and tokens (never the secret).
    List(JsonFlag),
    /// Stop granting a key.
    Disable {
        name: String,
        #[arg(long)]
        reason: String,
    },
    /// Grant a key again.
    Enable { name: String },
    /// Delete a key and its encrypted secret.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Create or update a project: tier and limits per model.
    ///
    /// Example: projects set my-proj --tier paid --limit gemini-2.5-flash rpm=1000,tpm=1000000,rpd=10000
    Set {
        /// Google Cloud project id.
        project: String,
        /// The project's tier; a new project defaults to free, an existing one keeps its tier.
        #[arg(long, value_parser = ["free", "paid"])]
        tier: Option<String>,
        /// MODEL LIMITS, repeatable; LIMITS like rpm=15,tpm=250000,rpd=1000,tpd=none
        /// (missing or none = unlimited, 0 = no quota).
        #[arg(long, num_args = 2, value_names = ["MODEL", "LIMITS"], action = clap::ArgAction::Append)]
        limit: Vec<String>,
    },
    /// List projects with their limits and quota-group states.
    List(JsonFlag),
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[arg(long, value_enum, default_value = "key")]
    pub by: UsageBy,
    /// Start: RFC 3339 time, or a duration ago such as `24h`.
    #[arg(long)]
    pub since: Option<String>,
    /// End (exclusive): RFC 3339 time, or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Recent tasks.
    List(JsonFlag),
    /// One task, with its context metadata.
    Show { id: String },
}

/// `2026-12-03T00:00:00Z`, `2026-12-03`, or `24h` (that long ago).
pub fn parse_time(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = s.parse::<chrono::NaiveDate>()
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(now - chrono::Duration::from_std(d)?);
    }
    bail!(
        "cannot read time {s:?}: use RFC 3339 (2026-12-03T10:00:00Z), a date, or a duration ago (24h)"
    )
}

/// A pool on the recorder's database. Only `migrate` changes the schema: an admin command
/// pointed at the wrong database (say, the server's `postgres` one) must not quietly create
/// gemfleet's tables there.
async fn pool(settings: &Settings, migrate: bool) -> anyhow::Result<sqlx::PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&settings.database_url)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {} (set DATABASE_URL or database_url)",
                crate::service::redact_url(&settings.database_url)
            )
        })?;
    if migrate {
        crate::MIGRATOR
            .run(&pool)
            .await
            .context("cannot apply migrations")?;
    } else {
        let schema: Option<String> = sqlx::query_scalar("SELECT to_regclass('api_keys')::text")
            .fetch_one(&pool)
            .await
            .context("cannot read the database schema")?;
        if schema.is_none() {
            bail!(
                "the database at {} has no gemfleet schema: check DATABASE_URL, or run \
                 `gemfleet-recorder migrate` once to create it",
                crate::service::redact_url(&settings.database_url)
            );
        }
    }
    Ok(pool)
}

fn read_secret(secret_env: Option<&str>) -> anyhow::Result<Secret> {
    let raw = match secret_env {
        Some(var) => {
            std::env::var(var).with_context(|| format!("environment variable {var} is not set"))?
        }
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the secret from stdin")?;
            s
        }
    };
    Ok(Secret::new(raw.trim().to_string()))
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn lim(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// Runs an admin command (everything but `serve`).
pub async fn run_admin(cmd: Command, settings: &Settings) -> anyhow::Result<()> {
    let now = Utc::now();
    match cmd {
        Command::Serve | Command::SlackBridge(_) => {
            bail!("not an admin command")
        }
        Command::Migrate => {
            pool(settings, true).await?;
            println!("migrations applied");
        }
        Command::Keys(k) => {
            let pool = pool(settings, false).await?;
            match k {
                KeysCommand::Add {
                    name,
                    project,
                    secret_env,
                } => {
                    let name = KeyName::parse(name)?;
                    let project = ProjectId::parse(project)?;
                    let master = settings.master_key()?;
                    let secret = read_secret(secret_env.as_deref())?;
                    let fp = admin::add_key(&pool, &master, &name, &project, &secret).await?;
                    println!("added key {name} (project {project}, fingerprint {fp})");
                }
                KeysCommand::List(f) => {
                    let keys = admin::list_keys(&pool).await?;
                    if f.json {
                        return print_json(&keys);
                    }
                    println!(
                        "{:<20} {:<20} {:<9} {:<9} {:>14} {:>20}  REASON",
                        "KEY", "PROJECT", "FPR", "STATE", "REQ TODAY/RPD", "TOKENS TODAY/TPD"
                    );
                    for k in keys {
                        let state = if k.quota_exhausted && k.state == "active" {
                            "exhausted"
                        } else {
                            &k.state
                        };
                        println!(
                            "{:<20} {:<20} {:<9} {:<9} {:>14} {:>20}  {}",
                            k.name,
                            k.project,
                            k.fingerprint,
                            state,
                            format!("{}/{}", k.requests_today, lim(k.rpd_limit)),
                            format!("{}/{}", k.tokens_today, lim(k.tpd_limit)),
                            k.reason.unwrap_or_default()
                        );
                    }
                }
                KeysCommand::Disable { name, reason } => {
                    admin::disable_key(&pool, &KeyName::parse(name.clone())?, &reason).await?;
                    println!("disabled key {name}");
                }
                KeysCommand::Enable { name } => {
                    admin::enable_key(&pool, &KeyName::parse(name.clone())?).await?;
                    println!("enabled key {name}");
                }
                KeysCommand::Remove { name } => {
                    admin::remove_key(&pool, &KeyName::parse(name.clone())?).await?;
                    println!("removed key {name}");
                }
            }
        }
        Command::Projects(p) => {
            let pool = pool(settings, false).await?;
            match p {
                ProjectsCommand::Set {
                    project,
                    tier,
                    limit,
                } => {
                    let project = ProjectId::parse(project)?;
                    // Validate everything before changing anything.
                    let mut parsed = Vec::new();
                    for pair in limit.chunks(2) {
                        let [model, spec] = pair else {
                            bail!("--limit needs MODEL and LIMITS")
                        };
                        parsed.push((ModelName::parse_api(model)?, admin::parse_limits(spec)?));
                    }
                    match tier.as_deref() {
                        Some(t) => {
                            let tier = if t == "paid" { Tier::Paid } else { Tier::Free };
                            admin::add_project(&pool, &project, tier).await?;
                        }
                        None if !admin::project_exists(&pool, &project).await? => {
                            admin::add_project(&pool, &project, Tier::Free).await?;
                        }
                        None => {}
                    }
                    for (model, l) in parsed {
                        admin::set_limits(&pool, &project, &model, l).await?;
                        println!(
                            "{project} {model}: rpm={} tpm={} rpd={} tpd={}",
                            lim(l.rpm),
                            lim(l.tpm),
                            lim(l.rpd),
                            lim(l.tpd)
                        );
                    }
                    println!("project {project} saved");
                }
                ProjectsCommand::List(f) => {
                    let ps = admin::list_projects(&pool).await?;
                    if f.json {
                        return print_json(&ps);
                    }
                    for p in ps {
                        println!(
                            "{} tier={} state={} keys={}{}",
                            p.project,
                            p.tier,
                            p.state,
                            p.keys,
                            p.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                        );
                        for m in p.models {
                            println!(
                                "  {:<28} rpm={:<8} tpm={:<10} rpd={:<8} tpd={:<10} {} {}{}",
                                m.model,
                                lim(m.rpm),
                                lim(m.tpm),
                                lim(m.rpd),
                                lim(m.tpd),
                                m.source,
                                m.state,
                                m.until
                                    .map(|u| format!(" until {}", u.to_rfc3339()))
                                    .unwrap_or_default()
                            );
                        }
                    }
                }
            }
        }
        Command::Usage(u) => {
            let pool = pool(settings, false).await?;
            let since = u.since.as_deref().map(|s| parse_time(s, now)).transpose()?;
            let until = u.until.as_deref().map(|s| parse_time(s, now)).transpose()?;
            let lines = admin::usage(&pool, u.by, since, until).await?;
            if u.json {
                return print_json(&lines);
            }
            println!(
                "{:<30} {:>10} {:>14} {:>14} {:>14}",
                format!("{:?}", u.by).to_uppercase(),
                "REQUESTS",
                "INPUT",
                "OUTPUT",
                "TOTAL"
            );
            for l in lines {
                println!(
                    "{:<30} {:>10} {:>14} {:>14} {:>14}",
                    l.group, l.requests, l.input_tokens, l.output_tokens, l.total_tokens
                );
            }
        }
        Command::Tasks(t) => {
            let pool = pool(settings, false).await?;
            match t {
                TasksCommand::List(f) => {
                    let tasks = admin::list_tasks(&pool).await?;
                    if f.json {
                        return print_json(&tasks);
                    }
                    println!(
                        "{:<24} {:<12} {:<16} {:>8} {:>9} {:>12}  LAST UPDATE",
                        "TASK", "STATUS", "OWNER", "ATTEMPTS", "REQUESTS", "TOKENS"
                    );
                    for t in tasks {
                        println!(
                            "{:<24} {:<12} {:<16} {:>8} {:>9} {:>12}  {}",
                            t.id,
                            t.status,
                            t.owner_agent.unwrap_or_default(),
                            t.attempts,
                            t.requests,
                            t.total_tokens,
                            t.last_updated.to_rfc3339()
                        );
                    }
                }
                TasksCommand::Show { id } => print_json(&admin::show_task(&pool, &id).await?)?,
            }
        }
        Command::Status(f) => {
            let pool = pool(settings, false).await?;
            let s = admin::status(&pool).await?;
            if f.json {
                return print_json(&s);
            }
            println!(
                "agents online: {}",
                if s.agents_online.is_empty() {
                    "-".into()
                } else {
                    s.agents_online.join(", ")
                }
            );
            println!(
                "agents offline: {}",
                if s.agents_offline.is_empty() {
                    "-".into()
                } else {
                    s.agents_offline.join(", ")
                }
            );
            println!(
                "open grants: {}   queued claims: {}",
                s.open_grants, s.queued_claims
            );
            println!("quota groups:");
            for g in s.groups {
                println!(
                    "  {:<20} {:<28} {}{}{}",
                    g.project,
                    g.model,
                    g.state,
                    g.until
                        .map(|u| format!(" until {}", u.to_rfc3339()))
                        .unwrap_or_default(),
                    g.reason.map(|r| format!(" ({r})")).unwrap_or_default()
                );
            }
            println!("cold keys:");
            for (k, why) in s.cold_keys {
                println!("  {k}: {why}");
            }
        }
    }
    Ok(())
}
