//! The barrier algorithm and its plain async API.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dtmcli::{BranchInfo, DtmResult, Op, TransType, QUERY_PREPARED_BRANCH_ID};
use sqlx::{Pool, Transaction};

use crate::dialect::{BarrierDatabase, Dialect, Row, TableName};
use crate::Error;

/// What the barrier decided for one call (the algorithm of the reference client's
/// [`barrier.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/barrier.go)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// First arrival of this operation: run the business code.
    Proceed,
    /// A compensation whose forward operation never ran: do nothing (and block a late forward
    /// operation, which is now recorded as done).
    NullCompensation,
    /// This operation already ran (a duplicate), or it is a forward operation arriving after
    /// its compensation (hanging): do nothing.
    Duplicate,
}

impl Decision {
    /// Whether business code should run.
    pub fn proceeds(self) -> bool {
        self == Decision::Proceed
    }
}

/// The reason written by a message query that found no committed local transaction.
const REASON_ROLLBACK: &str = "rollback";

/// The sub-transaction barrier of one service: a pool and a validated table.
///
/// Cheap to clone. Build one per service and share it (the tower layer takes one too).
///
/// ```no_run
/// # async fn demo(pool: sqlx::SqlitePool, info: dtmcli::BranchInfo) -> Result<(), dtm_barrier::Error> {
/// use dtm_barrier::Barrier;
/// let barrier = Barrier::new(pool);
/// barrier.create_table().await?; // once, at start-up
/// let applied = barrier
///     .branch(info)
///     .call(async |conn| {
///         sqlx::query("update account set balance = balance - 30 where id = 1")
///             .execute(&mut *conn)
///             .await?;
///         Ok::<_, dtm_barrier::Error>(())
///     })
///     .await?;
/// // applied is None when the barrier skipped the business code.
/// # Ok(()) }
/// ```
pub struct Barrier<DB: BarrierDatabase> {
    pool: Pool<DB>,
    table: Arc<Table>,
}

struct Table {
    name: TableName,
    insert_sql: String,
    select_sql: String,
}

impl<DB: BarrierDatabase> Clone for Barrier<DB> {
    fn clone(&self) -> Self {
        Barrier {
            pool: self.pool.clone(),
            table: Arc::clone(&self.table),
        }
    }
}

impl<DB: BarrierDatabase> fmt::Debug for Barrier<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("dialect", &DB::DIALECT)
            .field("table", &self.table.name.as_str())
            .finish_non_exhaustive()
    }
}

impl<DB: BarrierDatabase> Barrier<DB> {
    /// A barrier on the dialect's default table (`dtm_barrier.barrier`; `dtm_barrier` on
    /// SQLite).
    pub fn new(pool: Pool<DB>) -> Self {
        Self::with_table(pool, DB::DIALECT.default_table()).expect("default table names are valid")
    }

    /// A barrier on another table; the name is validated here, once, against the database's
    /// limits ([`TableName::for_dialect`]).
    pub fn with_table(pool: Pool<DB>, table: &str) -> Result<Self, Error> {
        let name = TableName::for_dialect(table, DB::DIALECT)?;
        Ok(Barrier {
            pool,
            table: Arc::new(Table {
                insert_sql: DB::DIALECT.insert_sql(&name),
                select_sql: DB::DIALECT.select_reason_sql(&name),
                name,
            }),
        })
    }

    /// The pool local transactions are taken from.
    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// The table name.
    pub fn table(&self) -> &str {
        self.table.name.as_str()
    }

    /// The insert statement of this barrier's table.
    #[cfg(any(feature = "mysql", feature = "postgres"))]
    pub(crate) fn insert_sql(&self) -> &str {
        &self.table.insert_sql
    }

    /// Creates the schema (MySQL database / PostgreSQL schema) and the table if missing, then
    /// runs [`check_table`](Self::check_table) and logs a warning if it finds a problem.
    ///
    /// A new table compares its key columns byte for byte (on MySQL/MariaDB through the
    /// collation of [`Dialect::MYSQL_EXACT_COLLATIONS`]). On PostgreSQL its unique constraint
    /// is named `uniq_barrier`, which the Go client's insert names; constraint names are
    /// unique within a schema, so creating a second barrier table in a schema that already
    /// has one fails with [`Error::UnsafeTable`]: give each barrier table a schema of its own.
    pub async fn create_table(&self) -> Result<(), Error> {
        let name = &self.table.name;
        let mut conn = self.pool.acquire().await?;
        let mut collation = "utf8mb4_bin";
        match DB::DIALECT {
            Dialect::MySql => {
                let have = DB::fetch_strings(&mut conn, &Dialect::mysql_collations_sql()).await?;
                collation = Dialect::MYSQL_EXACT_COLLATIONS
                    .into_iter()
                    .find(|c| have.iter().any(|h| h == c))
                    .unwrap_or(collation);
            }
            Dialect::Postgres => {
                let exists =
                    DB::fetch_strings(&mut conn, &DB::DIALECT.table_exists_sql(name)).await?;
                let owners =
                    DB::fetch_strings(&mut conn, &Dialect::uniq_barrier_owners_sql(name)).await?;
                if exists.is_empty() && !owners.is_empty() {
                    return Err(Error::UnsafeTable {
                        table: name.to_string(),
                        problem: format!(
                            "its schema already has a constraint named uniq_barrier (on table \
                             {}), and PostgreSQL constraint names are unique per schema; Go \
                             services insert with `on conflict on constraint uniq_barrier`, so \
                             a barrier table they can share needs that name: put this table in \
                             a schema of its own",
                            owners[0]
                        ),
                    });
                }
            }
            Dialect::Sqlite => {}
        }
        for stmt in DB::DIALECT.create_table_sql(name, collation) {
            DB::execute_raw(&mut conn, &stmt).await?;
        }
        drop(conn);
        if let Err(e) = self.check_table().await {
            tracing::warn!(error = %e, "the barrier table can merge distinct transactions");
        }
        Ok(())
    }

    /// Checks that the table exists and compares gid, branch_id, op and barrier_id byte for
    /// byte. A table made with a case- or accent-insensitive collation (MySQL's default for
    /// a table created by hand or by older code), or one that ignores trailing spaces, would
    /// take `Order-1` and `order-1` for the same transaction: the second one's business code
    /// would never run. Run it at start-up; the error says how to fix the table.
    pub async fn check_table(&self) -> Result<(), Error> {
        let name = &self.table.name;
        let unsafe_table = |problem: String| Error::UnsafeTable {
            table: name.to_string(),
            problem,
        };
        let mut conn = self.pool.acquire().await?;
        if DB::fetch_strings(&mut conn, &DB::DIALECT.table_exists_sql(name))
            .await?
            .is_empty()
        {
            return Err(unsafe_table(
                "does not exist; create it with Barrier::create_table".into(),
            ));
        }
        let rows = DB::fetch_strings(&mut conn, &DB::DIALECT.inexact_columns_sql(name)).await?;
        let problem = match DB::DIALECT {
            Dialect::MySql if !rows.is_empty() => Some(format!(
                "key columns compare case-, accent- or trailing-space-insensitively ({}); \
                 fix with `{}` (`{}` instead of `{}` on MySQL 8)",
                rows.join(", "),
                Dialect::mysql_fix_sql(name, Dialect::MYSQL_EXACT_COLLATIONS[0]),
                Dialect::MYSQL_EXACT_COLLATIONS[1],
                Dialect::MYSQL_EXACT_COLLATIONS[0],
            )),
            Dialect::Postgres if !rows.is_empty() => Some(format!(
                "key columns use non-deterministic collations ({}); recreate them with the \
                 default collation",
                rows.join(", ")
            )),
            Dialect::Sqlite => rows
                .first()
                .map(|ddl| ddl.to_ascii_lowercase())
                .filter(|ddl| ddl.contains("nocase") || ddl.contains("rtrim"))
                .map(|_| "its columns use the NOCASE or RTRIM collation; recreate it".to_owned()),
            _ => None,
        };
        problem.map_or(Ok(()), |p| Err(unsafe_table(p)))
    }

    /// The barrier of one branch call; its calls get barrier ids `01`, `02`, ...
    pub fn branch(&self, info: BranchInfo) -> BranchBarrier<DB> {
        BranchBarrier {
            barrier: self.clone(),
            info,
            calls: AtomicU32::new(0),
        }
    }

    /// Inserts the barrier rows of one call inside the caller's open transaction and decides
    /// (as the reference client's [`barrier.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/barrier.go)). Commit the transaction whatever the decision, unless
    /// business code that ran on [`Decision::Proceed`] failed.
    ///
    /// For op `msg` (the local transaction of a two-phase message) an existing row means the
    /// server's query got there first: [`dtmcli::Error::Duplicated`], and the transaction must
    /// be rolled back.
    ///
    /// Branch info that does not fit the table (a gid or branch id over
    /// [`dtmcli::MAX_ID_CHARS`] characters, a barrier id over 45, control characters) is
    /// refused with [`dtmcli::Error::InvalidField`] before anything is written, so that no
    /// value is ever truncated into another one.
    pub async fn check(
        &self,
        conn: &mut DB::Connection,
        info: &BranchInfo,
        barrier_id: &str,
    ) -> Result<Decision, Error> {
        check_key("gid", &info.gid, dtmcli::MAX_ID_CHARS)?;
        check_key("branch_id", &info.branch_id, dtmcli::MAX_ID_CHARS)?;
        check_key("barrier_id", barrier_id, MAX_SHORT_CHARS)?;
        let row = |op: Op, reason: Op| Row {
            trans_type: info.trans_type.as_str(),
            gid: &info.gid,
            branch_id: &info.branch_id,
            op: op.as_str(),
            barrier_id,
            reason: reason.as_str(),
        };
        let sql = &self.table.insert_sql;
        let origin_affected = match info.op.origin() {
            Some(origin) => DB::insert_row(conn, sql, row(origin, info.op)).await?,
            None => 0,
        };
        let current_affected = DB::insert_row(conn, sql, row(info.op, info.op)).await?;
        tracing::debug!(
            gid = %info.gid, branch_id = %info.branch_id, op = %info.op, barrier_id,
            origin_affected, current_affected, "barrier"
        );
        if info.op == Op::Msg && current_affected == 0 {
            return Err(Error::Dtm(dtmcli::Error::Duplicated));
        }
        if info.op.is_compensation() && origin_affected > 0 {
            return Ok(Decision::NullCompensation);
        }
        if current_affected == 0 {
            return Ok(Decision::Duplicate);
        }
        Ok(Decision::Proceed)
    }

    /// Answers the server's query of a prepared two-phase message (`op=msg`, branch `00`):
    /// [`DtmResult::Failure`] if the local transaction never committed — and from now on it
    /// cannot, as this inserts its barrier row first — else [`DtmResult::Success`].
    ///
    /// Use it in the `query_prepared` handler and return the result (409 / 200).
    pub async fn query_prepared(&self, gid: &str) -> Result<DtmResult, Error> {
        check_key("gid", gid, dtmcli::MAX_ID_CHARS)?;
        let mut conn = self.pool.acquire().await?;
        let barrier_id = "01";
        DB::insert_row(
            &mut conn,
            &self.table.insert_sql,
            Row {
                trans_type: TransType::Msg.as_str(),
                gid,
                branch_id: QUERY_PREPARED_BRANCH_ID,
                op: Op::Msg.as_str(),
                barrier_id,
                reason: REASON_ROLLBACK,
            },
        )
        .await?;
        let reason = DB::select_reason(
            &mut conn,
            &self.table.select_sql,
            [gid, QUERY_PREPARED_BRANCH_ID, Op::Msg.as_str(), barrier_id],
        )
        .await?;
        Ok(match reason.as_deref() {
            Some(REASON_ROLLBACK) => DtmResult::Failure,
            _ => DtmResult::Success,
        })
    }

    /// Begins a local transaction and runs [`check`](Self::check) in it. A deadlock or
    /// serialization failure of the barrier's own inserts (MariaDB/MySQL pick a victim when a
    /// try and its cancel race) is retried a few times in a new transaction before it is
    /// returned: nothing but the barrier rows has been written yet.
    pub(crate) async fn begin_checked(
        &self,
        info: &BranchInfo,
        barrier_id: &str,
    ) -> Result<(Transaction<'static, DB>, Decision), Error> {
        const ATTEMPTS: u32 = 4;
        let mut attempt = 1;
        loop {
            let mut tx = self.pool.begin().await?;
            match self.check(&mut tx, info, barrier_id).await {
                Ok(decision) => return Ok((tx, decision)),
                Err(Error::Database(e)) if attempt < ATTEMPTS && is_retryable(&e) => {
                    drop(tx); // rollback
                    tracing::debug!(gid = %info.gid, branch_id = %info.branch_id, attempt,
                        error = %e, "barrier insert chosen as deadlock victim; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(5 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The size of the barrier table's short columns (`op`, `barrier_id`, ...): `varchar(45)`.
const MAX_SHORT_CHARS: usize = 45;

fn check_key(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    let reason = if value.is_empty() {
        "is empty".to_owned()
    } else if value.chars().count() > max {
        format!("is longer than {max} characters")
    } else if value.chars().any(char::is_control) {
        "contains a control character".to_owned()
    } else {
        return Ok(());
    };
    Err(Error::Dtm(dtmcli::Error::InvalidField { field, reason }))
}

/// Deadlock (MySQL 1213, PostgreSQL 40P01) or serialization failure (SQLSTATE 40001).
fn is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

/// The barrier of one branch call: its info and a counter for barrier ids.
pub struct BranchBarrier<DB: BarrierDatabase> {
    barrier: Barrier<DB>,
    info: BranchInfo,
    calls: AtomicU32,
}

impl<DB: BarrierDatabase> fmt::Debug for BranchBarrier<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BranchBarrier")
            .field("info", &self.info)
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<DB: BarrierDatabase> BranchBarrier<DB> {
    /// The branch info.
    pub fn info(&self) -> &BranchInfo {
        &self.info
    }

    /// The barrier this branch barrier belongs to.
    pub fn barrier(&self) -> &Barrier<DB> {
        &self.barrier
    }

    /// The next barrier id: `01` for the first call, then `02`, ...
    pub fn next_barrier_id(&self) -> String {
        format!("{:02}", self.calls.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Runs `business` in a new local transaction guarded by the barrier.
    ///
    /// `business` is an async closure that gets the transaction's connection (`&mut
    /// DB::Connection`, an sqlx executor as `&mut *conn`) and may borrow from the caller; with
    /// `E` = [`Error`] (or any error type with `From<Error>` and `From<sqlx::Error>`), `?`
    /// works on sqlx calls.
    ///
    /// Returns `Ok(Some(value))` when the business code ran and the transaction committed,
    /// `Ok(None)` when the barrier skipped it (duplicate, null compensation, hanging; the
    /// barrier rows are committed). A business error rolls back and is returned as is; a
    /// database error rolls back and is returned through `E: From<Error>`.
    pub async fn call<T, E>(
        &self,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, E>,
    ) -> Result<Option<T>, E>
    where
        E: From<Error>,
    {
        let id = self.next_barrier_id();
        let (mut tx, decision) = self.barrier.begin_checked(&self.info, &id).await?;
        if !decision.proceeds() {
            tx.commit().await.map_err(Error::from)?;
            return Ok(None);
        }
        let value = business(&mut *tx).await?; // an error drops `tx`: rollback
        tx.commit().await.map_err(Error::from)?;
        Ok(Some(value))
    }
}
