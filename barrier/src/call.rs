//! The barrier algorithm and its plain async API.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use dtmcli::{BranchInfo, DtmResult, Op, TransType, QUERY_PREPARED_BRANCH_ID};
use futures_util::future::BoxFuture;
use sqlx::{Pool, Transaction};

use crate::dialect::{BarrierDatabase, Row, TableName};
use crate::Error;

/// What the barrier decided for one call (`../shared/PROTOCOL.md` §8.3).
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
///     .call(|tx| Box::pin(async move {
///         sqlx::query("update account set balance = balance - 30 where id = 1")
///             .execute(&mut **tx)
///             .await?;
///         Ok::<_, dtm_barrier::Error>(())
///     }))
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

    /// A barrier on another table; the name is validated here, once.
    pub fn with_table(pool: Pool<DB>, table: &str) -> Result<Self, Error> {
        let name = TableName::new(table)?;
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

    /// Creates the schema (MySQL database / PostgreSQL schema) and the table if missing.
    pub async fn create_table(&self) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await?;
        for stmt in DB::DIALECT.create_table_sql(&self.table.name) {
            DB::execute_raw(&mut conn, &stmt).await?;
        }
        Ok(())
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
    /// (`../shared/PROTOCOL.md` §8.3). Commit the transaction whatever the decision, unless
    /// business code that ran on [`Decision::Proceed`] failed.
    ///
    /// For op `msg` (the local transaction of a two-phase message) an existing row means the
    /// server's query got there first: [`dtmcli::Error::Duplicated`], and the transaction must
    /// be rolled back.
    pub async fn check(
        &self,
        conn: &mut DB::Connection,
        info: &BranchInfo,
        barrier_id: &str,
    ) -> Result<Decision, Error> {
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

/// A business closure run inside the barrier's local transaction.
pub type Business<'c, T, E> = BoxFuture<'c, Result<T, E>>;

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
    /// Returns `Ok(Some(value))` when the business code ran and the transaction committed,
    /// `Ok(None)` when the barrier skipped it (duplicate, null compensation, hanging; the
    /// barrier rows are committed). A business error rolls back and is returned as is; a
    /// database error rolls back and is returned through `E: From<Error>`.
    pub async fn call<T, E, F>(&self, business: F) -> Result<Option<T>, E>
    where
        F: for<'c> FnOnce(&'c mut Transaction<'static, DB>) -> Business<'c, T, E>,
        E: From<Error>,
    {
        let mut tx = self.barrier.pool.begin().await.map_err(Error::from)?;
        let id = self.next_barrier_id();
        let decision = self.barrier.check(&mut tx, &self.info, &id).await?;
        if !decision.proceeds() {
            tx.commit().await.map_err(Error::from)?;
            return Ok(None);
        }
        let value = business(&mut tx).await?; // an error drops `tx`: rollback
        tx.commit().await.map_err(Error::from)?;
        Ok(Some(value))
    }
}
