//! Test support: the same suites run on SQLite (the default) and, with
//! `TG_TEST_STORE=postgres`, on PostgreSQL, each test in a database of its own.
//!
//! `TG_TEST_POSTGRES_URL` names the server and an existing database to connect
//! to first (default `postgres://postgres@127.0.0.1:5432/test`). Test databases
//! are named `tg_t_<unix seconds>_<random>`; each new one drops those older
//! than [`TEST_DATABASE_TTL_SECS`], so a machine that runs CI again and again
//! does not fill up.

use std::path::Path;
use std::time::Duration;

use sqlx::Connection;

use crate::{Store, StoreError, StoreOptions};

/// The default server of `TG_TEST_POSTGRES_URL`.
pub const DEFAULT_TEST_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Test databases older than this are dropped when a new one is made.
pub const TEST_DATABASE_TTL_SECS: u64 = 2 * 3_600;

/// Whether this test process runs its suites on PostgreSQL.
pub fn postgres_selected() -> bool {
    std::env::var("TG_TEST_STORE").is_ok_and(|v| v == "postgres")
}

fn server_url() -> String {
    std::env::var("TG_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_TEST_POSTGRES_URL.to_owned())
}

/// Creates an empty database and returns its URL.
pub async fn fresh_postgres_database() -> Result<String, StoreError> {
    sqlx::any::install_default_drivers();
    let base = server_url();
    let mut conn = sqlx::AnyConnection::connect(&base).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let old: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE 'tg\\_t\\_%'")
            .fetch_all(&mut conn)
            .await?;
    for name in old {
        let born = name
            .split('_')
            .nth(2)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(born) > TEST_DATABASE_TTL_SECS {
            // Another CI run may be using a young one; only old ones go.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("tg_t_{now}_{}", suffix.get(..12).unwrap_or("0"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await?;
    let mut url = url::Url::parse(&base).map_err(|e| StoreError::Config(e.to_string()))?;
    url.set_path(&format!("/{name}"));
    Ok(url.to_string())
}

/// Options for a PostgreSQL test store at `url`.
pub fn test_options(url: &str) -> StoreOptions {
    StoreOptions {
        url: url.to_owned(),
        password: None,
        pool_max: 8,
        acquire_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        tls_mode: None,
        tls_ca_file: None,
    }
}

/// The store a test uses: SQLite in `dir`, or a fresh PostgreSQL database.
pub async fn open_for_tests(dir: &Path) -> Result<Store, StoreError> {
    if postgres_selected() {
        let url = fresh_postgres_database().await?;
        Store::connect(&test_options(&url)).await
    } else {
        Store::open(&dir.join("store.sqlite")).await
    }
}

/// Every row of every table of the PostgreSQL database at `url`, as text
/// (a leak search reads what the database holds, like the SQLite file's bytes).
pub async fn dump_postgres_text(url: &str) -> Result<String, StoreError> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut out = String::new();
    for t in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{t}\" t"))
            .fetch_all(&mut conn)
            .await?;
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Whether the test PostgreSQL server answers. Under `CI=true` it must: a
/// test that needs it fails rather than skips.
pub async fn postgres_available() -> bool {
    sqlx::any::install_default_drivers();
    let up = sqlx::AnyConnection::connect(&server_url()).await.is_ok();
    #[expect(
        clippy::panic,
        reason = "test support: under CI a missing database fails the test"
    )]
    if !up && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL at {} is down, and CI needs it", server_url());
    }
    up
}
