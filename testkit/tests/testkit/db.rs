use gemfleet_testkit::{TestDb, migrator};

async fn columns(db: &TestDb, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn database_exists(db: &TestDb, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn migrations_apply_to_a_fresh_database() {
    let db = TestDb::migrated().await.unwrap();
    assert!(db.name.starts_with("gemfleet_t_"));

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for expected in [
        "api_keys",
        "usage_log",
        "tasks",
        "projects",
        "model_limits",
        "quota_groups",
        "agents",
        "claims",
        "events",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "no table {expected} in {tables:?}"
        );
    }

    // The original design's columns are all still there.
    let api_keys = columns(&db, "api_keys").await;
    for c in [
        "key_name",
        "last_used",
        "quota_exhausted",
        "daily_request_count",
        "daily_token_total",
        "disabled_until",
    ] {
        assert!(
            api_keys.iter().any(|x| x == c),
            "api_keys lacks {c}: {api_keys:?}"
        );
    }
    assert!(
        !api_keys.iter().any(|x| x == "api_key" || x == "secret"),
        "no plaintext key column"
    );
    let usage_log = columns(&db, "usage_log").await;
    for c in [
        "key_name",
        "task_id",
        "request_timestamp",
        "token_count",
        "request_type",
    ] {
        assert!(
            usage_log.iter().any(|x| x == c),
            "usage_log lacks {c}: {usage_log:?}"
        );
    }
    let tasks = columns(&db, "tasks").await;
    for c in ["id", "context", "last_updated", "status"] {
        assert!(tasks.iter().any(|x| x == c), "tasks lacks {c}: {tasks:?}");
    }

    // Every embedded migration is recorded as applied, and running again is a no-op.
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, migrator().iter().count());
    migrator().run(&db.pool).await.unwrap();
}

#[tokio::test]
async fn databases_are_isolated_and_dropped() {
    let a = TestDb::new().await.unwrap();
    let b = TestDb::new().await.unwrap();
    assert_ne!(a.name, b.name);
    assert_ne!(a.url, b.url);

    sqlx::query("CREATE TABLE only_in_a (x int)")
        .execute(&a.pool)
        .await
        .unwrap();
    let in_b: Option<String> = sqlx::query_scalar("SELECT to_regclass('only_in_a')::text")
        .fetch_one(&b.pool)
        .await
        .unwrap();
    assert_eq!(
        in_b, None,
        "a table created in one test database is visible in another"
    );

    let a_name = a.name.clone();
    assert!(database_exists(&b, &a_name).await);
    drop(a);
    assert!(
        !database_exists(&b, &a_name).await,
        "Drop should drop the database"
    );

    let b_name = b.name.clone();
    let c = TestDb::new().await.unwrap();
    b.close().await.unwrap();
    assert!(
        !database_exists(&c, &b_name).await,
        "close() should drop the database"
    );
}

#[tokio::test]
async fn unreachable_server_fails_with_a_clear_message() {
    let port = gemfleet_testkit::free_port();
    let err = TestDb::new_at(&format!(
        "postgres://postgres:hunter2@127.0.0.1:{port}/postgres"
    ))
    .await
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("PostgreSQL not reachable at"), "{text}");
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert!(!text.contains("hunter2"), "the password leaked: {text}");

    let err = TestDb::new_at("mysql://localhost/x").await.unwrap_err();
    assert!(format!("{err:#}").contains("postgres://"), "{err:#}");
}
