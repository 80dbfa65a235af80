//! A fresh PostgreSQL database per test on the machine's server, dropped afterwards.
//!
//! Databases are named `gemfleet_t_<uuid v7>`. The UUID carries its creation time, so a later
//! run can recognise and drop databases left behind by killed test processes (older than
//! [`STALE_AFTER`]) without any bookkeeping table.

use std::sync::Once;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Executor};
use url::Url;
use uuid::Uuid;

/// The machine's PostgreSQL, used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const NAME_PREFIX: &str = "gemfleet_t_";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-test pool size: enough for concurrent queries in one test, small enough that many tests
/// in parallel stay far below the server's `max_connections` (100 by default).
const POOL_SIZE: u32 = 5;
/// Test databases older than this are assumed abandoned and dropped by the next `TestDb::new`.
pub const STALE_AFTER: Duration = Duration::from_secs(3600);
/// Set to keep every test database (their names are printed).
const KEEP_ENV: &str = "GEMFLEET_KEEP_TEST_DB";

static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The workspace migrations (../migrations), embedded at compile time.
pub fn migrator() -> &'static Migrator {
    &MIGRATOR
}

/// A fresh, uniquely named database. Dropping it drops the database (best effort); a failing
/// (panicking) test keeps it for inspection and says so on stderr.
#[derive(Debug)]
pub struct TestDb {
    /// Connection URL of this database (same server and credentials as `DATABASE_URL`).
    pub url: String,
    /// A small pool on this database.
    pub pool: PgPool,
    /// The database name, `gemfleet_t_<uuid>`.
    pub name: String,
    admin_url: Url,
    dropped: bool,
}

impl TestDb {
    /// An empty database on `DATABASE_URL`'s server (default [`DEFAULT_DATABASE_URL`]).
    pub async fn new() -> anyhow::Result<TestDb> {
        let server =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        Self::new_at(&server).await
    }

    /// An empty database on the server `server_url` points at (its database is only used to
    /// connect and issue CREATE DATABASE).
    pub async fn new_at(server_url: &str) -> anyhow::Result<TestDb> {
        let admin_url = parse_server_url(server_url)?;
        let mut admin = connect_admin(&admin_url).await?;

        static CLEANUP: Once = Once::new();
        let mut first = false;
        CLEANUP.call_once(|| first = true);
        if first {
            drop_stale_databases(&mut admin).await;
        }

        let name = format!("{NAME_PREFIX}{}", Uuid::now_v7().simple());
        admin
            .execute(ddl(format!(r#"CREATE DATABASE "{name}""#), &name)?)
            .await
            .with_context(|| {
                format!("creating test database {name} on {}", redacted(&admin_url))
            })?;
        let _ = admin.close().await;

        let mut url = admin_url.clone();
        url.set_path(&name);
        let url = url.to_string();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .with_context(|| format!("connecting to test database {name}"))?;
        Ok(TestDb {
            url,
            pool,
            name,
            admin_url,
            dropped: false,
        })
    }

    /// A fresh database with the workspace migrations applied.
    pub async fn migrated() -> anyhow::Result<TestDb> {
        let db = Self::new().await?;
        migrator()
            .run(&db.pool)
            .await
            .with_context(|| format!("applying migrations to {}", db.name))?;
        Ok(db)
    }

    /// Closes the pool and drops the database now, reporting errors (Drop only tries).
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.pool.close().await;
        self.dropped = true;
        let mut admin = connect_admin(&self.admin_url).await?;
        drop_database(&mut admin, &self.name).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        if std::thread::panicking() || std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "gemfleet-testkit: kept test database {} (dropped by a test run after {} min)",
                self.name,
                STALE_AFTER.as_secs() / 60
            );
            return;
        }
        // Drop cannot await, and blocking on the test's own runtime could deadlock it; a helper
        // thread with its own small runtime does the work. Waiting for it (bounded) keeps the
        // database count flat even when the test process exits right after.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let (done_tx, done_rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("testdb-drop".to_owned())
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|rt| {
                        rt.block_on(async {
                            let mut admin = connect_admin(&admin_url).await?;
                            drop_database(&mut admin, &name).await
                        })
                    });
                if let Err(e) = result {
                    eprintln!("gemfleet-testkit: could not drop test database {name}: {e:#}");
                }
                let _ = done_tx.send(());
            });
        if spawned.is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(10));
        }
    }
}

fn parse_server_url(text: &str) -> anyhow::Result<Url> {
    // The URL may carry a password: never echo it.
    let url = Url::parse(text).map_err(|e| anyhow!("DATABASE_URL is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!(
            "DATABASE_URL must be a postgres:// URL, got scheme {:?}",
            url.scheme()
        );
    }
    Ok(url)
}

/// The URL without its password, for messages.
fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

async fn connect_admin(url: &Url) -> anyhow::Result<PgConnection> {
    let attempt = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url.as_str())).await;
    let error = match attempt {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
    };
    bail!(
        "PostgreSQL not reachable at {}: {error}. Start it with \
         `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
         (or run .ci/run), or point DATABASE_URL at a server",
        redacted(url)
    )
}

/// CREATE/DROP DATABASE cannot take bind parameters; the statement is only built for names the
/// kit generates (`gemfleet_t_` + hex), which this re-checks before asserting the SQL is safe.
fn ddl(sql: String, name: &str) -> anyhow::Result<sqlx::RawSql> {
    let ours = name.starts_with(NAME_PREFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !ours {
        bail!("refusing to run DDL on database {name:?}: not a gemfleet test database");
    }
    Ok(sqlx::raw_sql(sqlx::AssertSqlSafe(sql)))
}

async fn drop_database(admin: &mut PgConnection, name: &str) -> anyhow::Result<()> {
    // WITH (FORCE) (PostgreSQL 13+) ends sessions still open on it, such as pooled connections
    // the test did not close.
    admin
        .execute(ddl(
            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#),
            name,
        )?)
        .await
        .with_context(|| format!("dropping test database {name}"))?;
    Ok(())
}

/// Drops `gemfleet_t_*` databases created more than [`STALE_AFTER`] ago. Best effort.
async fn drop_stale_databases(admin: &mut PgConnection) {
    let names: Vec<String> =
        match sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(NAME_PREFIX)
            .fetch_all(&mut *admin)
            .await
        {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!("listing stale test databases: {e}");
                return;
            }
        };
    let now = chrono::Utc::now();
    for name in names {
        if is_stale(&name, now)
            && let Err(e) = drop_database(admin, &name).await
        {
            tracing::warn!("{e:#}");
        }
    }
}

/// Whether a test database name's embedded UUID v7 time is older than [`STALE_AFTER`].
/// Names that do not parse are left alone: they are not ours.
fn is_stale(name: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
    let Some(id) = name.strip_prefix(NAME_PREFIX) else {
        return false;
    };
    let Some(created) = Uuid::parse_str(id).ok().and_then(|u| u.get_timestamp()) else {
        return false;
    };
    let (secs, _) = created.to_unix();
    let Ok(secs) = i64::try_from(secs) else {
        return false;
    };
    let age = now.timestamp().saturating_sub(secs);
    age > i64::try_from(STALE_AFTER.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_comes_from_the_uuid_v7_in_the_name() {
        let now = chrono::Utc::now();
        let fresh = format!("{NAME_PREFIX}{}", Uuid::now_v7().simple());
        assert!(!is_stale(&fresh, now));
        assert!(is_stale(&fresh, now + chrono::Duration::hours(2)));
        assert!(!is_stale(
            "gemfleet_t_notauuid",
            now + chrono::Duration::hours(2)
        ));
        assert!(!is_stale("postgres", now + chrono::Duration::hours(2)));
        // A v4 UUID has no timestamp: not ours, never dropped.
        let v4 = format!("{NAME_PREFIX}{}", Uuid::new_v4().simple());
        assert!(!is_stale(&v4, now + chrono::Duration::hours(2)));
    }

    #[test]
    fn redaction_hides_the_password() {
        let url = Url::parse("postgres://u:hunter2@db:5432/x").unwrap();
        let shown = redacted(&url);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("u:***@db"), "{shown}");
    }
}
