//! Write transactions that end for certain.
//!
//! sqlx's `Transaction` counts nesting itself and turns a `BEGIN` on a
//! connection it believes is inside a transaction into a `SAVEPOINT`. After a
//! failed `COMMIT` (SQLITE_FULL) SQLite may already have rolled back, so the
//! `ROLLBACK` on drop fails, the count stays at one, and from then on every
//! "transaction" on that connection is a savepoint inside a transaction that is
//! never committed: each commit reports success and writes nothing (issue 28:
//! 497 events answered 202 and lost).
//!
//! [`WriteTx`] issues `BEGIN`, `COMMIT` and `ROLLBACK` itself and keeps no
//! count. INVARIANT: a connection whose `COMMIT` or `ROLLBACK` failed is
//! closed, never used again (closing rolls back whatever the database still
//! holds open); the pool opens a fresh one for the next transaction. A failed
//! commit marks the store failing (`health.rs`).

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Executor};

use crate::StoreError;
use crate::health::HealthCell;

/// A write transaction on a pooled connection: `&mut *tx` is the executor.
/// Dropped without [`WriteTx::commit`], it is rolled back before the
/// connection serves anyone else.
pub(crate) struct WriteTx {
    conn: Option<PoolConnection<Any>>,
    health: Arc<HealthCell>,
}

impl std::fmt::Debug for WriteTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteTx")
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl WriteTx {
    /// Takes a connection from `pool` and begins a transaction on it.
    pub(crate) async fn begin(
        pool: &AnyPool,
        health: &Arc<HealthCell>,
    ) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        // SQLite: IMMEDIATE takes the write lock now, under the busy timeout.
        // A deferred BEGIN that reads first and then writes fails at once with
        // SQLITE_BUSY (no busy wait) when another process (a second replica on
        // the same file) committed in between.
        let begin = if crate::db::backend_of(&conn) == crate::db::Backend::Sqlite {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        if let Err(e) = conn.execute(begin).await {
            // A connection that cannot begin is in a state we do not know.
            conn.close_on_drop();
            if let Some(cause) = crate::health::sqlx_storage_failure(&e) {
                health.commit_failed(&cause);
            }
            return Err(e.into());
        }
        Ok(WriteTx {
            conn: Some(conn),
            health: Arc::clone(health),
        })
    }

    /// Commits. On failure the transaction is gone for certain (the
    /// connection is closed, which rolls back anything still open), the store
    /// is marked failing with the cause, and the error is
    /// [`StoreError::Commit`]: the caller must not report success.
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Err(StoreError::Commit(
                "the transaction had already ended".into(),
            ));
        };
        match conn.execute("COMMIT").await {
            Ok(_) => Ok(()),
            Err(e) => {
                let cause = e.to_string();
                // INVARIANT: never reused after a failed COMMIT.
                discard(conn).await;
                self.health.commit_failed(&cause);
                Err(StoreError::Commit(cause))
            }
        }
    }
}

/// Closes a connection whose state is unknown; closing rolls back.
async fn discard(conn: PoolConnection<Any>) {
    if let Err(e) = conn.close().await {
        tracing::warn!(error = %e, "closing a failed store connection");
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let health = Arc::clone(&self.health);
                // The connection goes back to the pool only after the rollback:
                // whoever takes it next starts from a clean slate.
                rt.spawn(async move {
                    if let Err(e) = conn.execute("ROLLBACK").await {
                        if let Some(cause) = crate::health::sqlx_storage_failure(&e) {
                            health.commit_failed(&cause);
                        }
                        discard(conn).await;
                    }
                });
            }
            // No runtime to roll back on: close instead (closing rolls back).
            Err(_) => conn.close_on_drop(),
        }
    }
}

#[expect(
    clippy::expect_used,
    reason = "the connection is taken only by commit and drop, which consume the transaction"
)]
impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.conn
            .as_deref()
            .expect("an open transaction has its connection")
    }
}

#[expect(
    clippy::expect_used,
    reason = "the connection is taken only by commit and drop, which consume the transaction"
)]
impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.conn
            .as_deref_mut()
            .expect("an open transaction has its connection")
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    /// Two replicas on one SQLite file: a write transaction that reads before
    /// it writes must not fail because the other committed in between (with a
    /// deferred `BEGIN` SQLite answers SQLITE_BUSY at once, without waiting,
    /// and the gate marked the store failing: a 503 for a healthy store).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_that_reads_first_survives_another_replicas_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db");
        let a = crate::Store::open(&path).await.unwrap();
        let b = crate::Store::open(&path).await.unwrap();
        let now = Utc.with_ymd_and_hms(2026, 12, 7, 5, 0, 0).unwrap();
        let mut tx = a.begin_write().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM store_probe")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let other = tokio::spawn(async move { b.probe_write(now).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        sqlx::query(
            "INSERT INTO store_probe (id, probed_at) VALUES (1, 1) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        other.await.unwrap().unwrap();
        assert!(a.health().accepts(), "{:?}", a.health());
    }
}
