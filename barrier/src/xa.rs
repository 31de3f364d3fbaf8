//! XA branches on MySQL/MariaDB and PostgreSQL: the resource manager's local XA transaction
//! (phase 1) and its commit or rollback (phase 2), as in the reference client's
//! [`xa.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/xa.go).
//!
//! The XA id of a branch is `<gid>-<branch_id>`. XA statements take no bind parameters, so the
//! id is written into the statement text; [`Xid::new`] refuses ids that would need escaping.

use std::fmt;
use std::time::Duration;

use dtmcli::{BranchInfo, Op, TransType, XaRegistrar};
use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;

use crate::dialect::Row;
use crate::{Barrier, BarrierDatabase, Error};

/// The barrier id of the row an XA action writes (there is one local transaction per action).
const XA_BARRIER_ID: &str = "01";
/// The reason written by phase-2 rollback: a late action then finds its row taken.
const REASON_ROLLBACK: &str = "rollback";
/// How long the end of phase 1 and phase 2 wait for a prepared MySQL XA transaction to be
/// released by the session that prepared it (see [`XaDatabase::session_alive`]).
const DETACH_WAIT: Duration = Duration::from_secs(5);
/// How often the end of phase 1 looks at the process list (the wait is a few milliseconds).
const DETACH_POLL: Duration = Duration::from_millis(2);
/// How often phase 2 tries again a transaction still held by its session.
const PHASE2_POLL: Duration = Duration::from_millis(20);

/// The XA id of a branch, `<gid>-<branch_id>`, checked to be safe inside a quoted SQL literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Xid(String);

impl Xid {
    /// The XA id of branch `branch_id` of global transaction `gid`.
    ///
    /// XA statements cannot take bind parameters, so the id is written into the statement
    /// text: a gid or branch id containing a quote, a backslash or a NUL character is refused
    /// with [`dtmcli::Error::InvalidArgument`] (a branch handler answers 400).
    ///
    /// ```
    /// use dtm_barrier::Xid;
    /// assert_eq!(Xid::new("gid1", "01").unwrap().as_str(), "gid1-01");
    /// assert!(Xid::new("it's", "01").is_err());
    /// ```
    pub fn new(gid: &str, branch_id: &str) -> Result<Xid, Error> {
        for (field, value) in [("gid", gid), ("branch_id", branch_id)] {
            if value.is_empty() {
                return Err(Error::Dtm(dtmcli::Error::MissingField(field)));
            }
            if let Some(c) = value.chars().find(|c| matches!(c, '\'' | '\\' | '\0')) {
                return Err(Error::Dtm(dtmcli::Error::InvalidArgument(format!(
                    "{field} {value:?} cannot be part of an XA id: it contains {c:?}"
                ))));
            }
        }
        Ok(Xid(format!("{gid}-{branch_id}")))
    }

    /// The id as written in the XA statements.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One step of a branch's local XA transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XaStep {
    /// Phase 1: start the local transaction.
    Start,
    /// Phase 1: end the work of the transaction (MySQL only).
    End,
    /// Phase 1: prepare it, so that it survives until phase 2.
    Prepare,
    /// Phase 1 failed: roll the unprepared transaction back.
    Abort,
    /// Phase 2, forward: commit the prepared transaction.
    Commit,
    /// Phase 2, backward: roll the prepared transaction back.
    Rollback,
}

mod sealed {
    pub trait Sealed {}
}

/// A database that can run XA branches: MySQL/MariaDB and PostgreSQL (by feature).
///
/// | step | MySQL | PostgreSQL |
/// |---|---|---|
/// | start | `xa start '<xid>'` | `begin` |
/// | end | `xa end '<xid>'` | – |
/// | prepare | `xa prepare '<xid>'` | `prepare transaction '<xid>'` |
/// | abort | `xa rollback '<xid>'` | `rollback` |
/// | commit | `xa commit '<xid>'` | `commit prepared '<xid>'` |
/// | rollback | `xa rollback '<xid>'` | `rollback prepared '<xid>'` |
///
/// PostgreSQL needs `max_prepared_transactions > 0`. Sealed: the statements are written for
/// these two.
pub trait XaDatabase: BarrierDatabase + sealed::Sealed {
    /// The statement of `step` for `xid`, or `None` when the database has no such step.
    fn xa_sql(step: XaStep, xid: &Xid) -> Option<String>;

    /// Whether the connection that ran phase 1 may serve other work after preparing.
    ///
    /// A MySQL session keeps its prepared XA transaction attached until it disconnects, so
    /// the connection is closed; a PostgreSQL session is free after `prepare transaction`.
    #[doc(hidden)]
    const REUSE_AFTER_PREPARE: bool;

    /// The server's id of the session of `conn`, when the database needs to know when a
    /// closed session is gone (MySQL, see [`XaDatabase::session_alive`]).
    ///
    /// The default, for databases that detach a transaction when preparing it: none.
    #[doc(hidden)]
    fn session_id(_conn: &mut Self::Connection) -> BoxFuture<'_, Result<Option<u64>, sqlx::Error>> {
        Box::pin(async { Ok(None) })
    }

    /// Whether the session `id` still exists on the server.
    ///
    /// A MySQL/MariaDB session that prepared an XA transaction hands it over only while it
    /// disconnects, after the client has closed it. An `xa commit` from another session in
    /// that moment may answer `XAER_NOTA`, and MariaDB 10.11 has been seen answering OK and
    /// then losing the transaction. The action therefore answers only once its session has
    /// left the process list.
    #[doc(hidden)]
    fn session_alive(
        _conn: &mut Self::Connection,
        _id: u64,
    ) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
        Box::pin(async { Ok(false) })
    }

    /// Whether `xid` is still a prepared transaction although phase 2 was told it does not
    /// exist. MySQL answers `XAER_NOTA` to `xa commit` from another session until the session
    /// that prepared the transaction has disconnected, while `xa recover` already lists it.
    ///
    /// The default, for databases that detach a transaction when preparing it: "does not
    /// exist" is final.
    #[doc(hidden)]
    fn is_prepared<'c>(
        _conn: &'c mut Self::Connection,
        _xid: &'c Xid,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        Box::pin(async { Ok(false) })
    }
}

#[cfg(feature = "mysql")]
impl sealed::Sealed for sqlx::MySql {}

#[cfg(feature = "mysql")]
impl XaDatabase for sqlx::MySql {
    const REUSE_AFTER_PREPARE: bool = false;

    fn xa_sql(step: XaStep, xid: &Xid) -> Option<String> {
        let verb = match step {
            XaStep::Start => "start",
            XaStep::End => "end",
            XaStep::Prepare => "prepare",
            XaStep::Abort | XaStep::Rollback => "rollback",
            XaStep::Commit => "commit",
        };
        Some(format!("xa {verb} '{xid}'"))
    }

    fn session_id(conn: &mut Self::Connection) -> BoxFuture<'_, Result<Option<u64>, sqlx::Error>> {
        Box::pin(async move {
            let id: u64 = sqlx::query_scalar("select connection_id()")
                .fetch_one(&mut *conn)
                .await?;
            Ok(Some(id))
        })
    }

    fn session_alive(
        conn: &mut Self::Connection,
        id: u64,
    ) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
        Box::pin(async move {
            // Every user sees its own sessions, without the PROCESS privilege.
            let n: i64 = sqlx::query_scalar(
                "select count(*) from information_schema.processlist where id = ?",
            )
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            Ok(n > 0)
        })
    }

    fn is_prepared<'c>(
        conn: &'c mut Self::Connection,
        xid: &'c Xid,
    ) -> BoxFuture<'c, Result<bool, sqlx::Error>> {
        use sqlx::Row as _;
        Box::pin(async move {
            // A plain `&str` runs unprepared: `xa recover` is not supported by the
            // prepared-statement protocol.
            let rows = sqlx::Executor::fetch_all(&mut *conn, "xa recover").await?;
            for row in rows {
                let data: Vec<u8> = row.try_get("data")?;
                if data == xid.as_str().as_bytes() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

#[cfg(feature = "postgres")]
impl sealed::Sealed for sqlx::Postgres {}

#[cfg(feature = "postgres")]
impl XaDatabase for sqlx::Postgres {
    const REUSE_AFTER_PREPARE: bool = true;

    fn xa_sql(step: XaStep, xid: &Xid) -> Option<String> {
        match step {
            XaStep::Start => Some("begin".to_owned()),
            XaStep::End => None,
            XaStep::Prepare => Some(format!("prepare transaction '{xid}'")),
            XaStep::Abort => Some("rollback".to_owned()),
            XaStep::Commit => Some(format!("commit prepared '{xid}'")),
            XaStep::Rollback => Some(format!("rollback prepared '{xid}'")),
        }
    }

    // `prepare transaction` detaches the transaction from its session before it returns,
    // so the session defaults hold.
}

/// A connection that holds (or may hold) an XA transaction: unless released explicitly, it is
/// closed instead of going back to the pool, also when the future owning it is dropped.
struct XaConn<DB: sqlx::Database> {
    conn: Option<PoolConnection<DB>>,
}

impl<DB: sqlx::Database> XaConn<DB> {
    fn get(&mut self) -> &mut DB::Connection {
        self.conn.as_mut().expect("the XA connection is open")
    }

    /// Returns the connection to the pool: only when no XA transaction is attached to it.
    fn release(mut self) {
        drop(self.conn.take());
    }

    /// Closes the connection and waits until the server was told.
    async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "closing an XA connection failed");
            }
        }
    }
}

impl<DB: sqlx::Database> Drop for XaConn<DB> {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

async fn run_step<DB: XaDatabase>(
    conn: &mut DB::Connection,
    step: XaStep,
    xid: &Xid,
) -> Result<(), sqlx::Error> {
    match DB::xa_sql(step, xid) {
        Some(sql) => {
            tracing::debug!(%xid, ?step, sql, "xa");
            DB::execute_raw(conn, &sql).await
        }
        None => Ok(()),
    }
}

/// Whether a phase-2 error means the transaction is already committed or rolled back.
fn already_done(e: &sqlx::Error) -> bool {
    let text = e.to_string();
    text.contains("XAER_NOTA") || text.contains("does not exist")
}

fn invalid(message: String) -> Error {
    Error::Dtm(dtmcli::Error::InvalidArgument(message))
}

impl<DB: XaDatabase> Barrier<DB> {
    /// Runs the action (phase 1) of an XA branch: `business` inside a local XA transaction,
    /// which is then registered at the DTM server and prepared.
    ///
    /// `info` is the action call's branch info (`trans_type=xa`, `op=action`, with `dtm` and
    /// `phase2_url`, as the HTTP and gRPC XA clients send them). On one dedicated connection
    /// from the pool: start the XA transaction, insert the barrier row `(xa, gid, branch_id,
    /// action, 01)`, run `business`, register the branch at the server named by `info.dtm`
    /// through `dtm` (the HTTP `DtmClient` or the gRPC `DtmGrpcClient`: any [`XaRegistrar`]),
    /// end and prepare. On any error the local transaction
    /// is rolled back and the error returned: a FAILURE from `business` stays a FAILURE (the
    /// handler answers 409 and the client aborts), and so does the server's refusal to
    /// register a branch of a transaction that is no longer prepared (timed out, aborted).
    /// A barrier row that already exists means the branch was rolled back (or finished)
    /// before this action arrived: the action does not run and FAILURE is returned.
    ///
    /// The connection is never given back to the pool while an XA transaction is attached to
    /// it: on MySQL it is always closed afterwards (the prepared transaction survives), on
    /// PostgreSQL it is closed whenever the cleanup did not succeed. Dropping the future
    /// closes it too. On MySQL the call returns only once the closed session has left the
    /// server's process list (a few milliseconds): until then the prepared transaction is not
    /// reachable by phase 2, and a commit racing the disconnect can be lost.
    ///
    /// Answer the phase-2 calls of the same URL with [`Barrier::xa_phase2`].
    ///
    /// ```no_run
    /// # async fn demo(barrier: dtm_barrier::Barrier<sqlx::MySql>, dtm: dtmcli::DtmClient, info: dtmcli::BranchInfo) -> Result<(), dtm_barrier::Error> {
    /// barrier
    ///     .xa_local(&dtm, &info, async |conn| {
    ///         sqlx::query("update account set balance = balance + 30 where id = 2")
    ///             .execute(&mut *conn)
    ///             .await?;
    ///         Ok::<_, dtm_barrier::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_local<R, T, E>(
        &self,
        dtm: &R,
        info: &BranchInfo,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        R: XaRegistrar,
        E: From<Error>,
    {
        if info.trans_type != TransType::Xa || info.op != Op::Action {
            return Err(invalid(format!(
                "xa_local runs the action of an XA branch, this call is {} {}",
                info.trans_type, info.op
            ))
            .into());
        }
        if info.dtm.is_none() {
            return Err(Error::Dtm(dtmcli::Error::MissingField("dtm")).into());
        }
        if info.phase2_url.is_none() {
            return Err(Error::Dtm(dtmcli::Error::MissingField("phase2_url")).into());
        }
        let xid = Xid::new(&info.gid, &info.branch_id)?;
        self.run_local_xa(xid, info, business, async || {
            dtm.register_xa_branch(info).await
        })
        .await
    }

    /// Phase 1 of a local XA transaction `xid`: start, the barrier row `(<info's trans type>,
    /// gid, branch_id, action, 01)`, `business`, `register` (DTM learns about the branch), end
    /// and prepare; rolled back on any error. Shared by XA branches and workflow XA steps.
    pub(crate) async fn run_local_xa<T, E>(
        &self,
        xid: Xid,
        info: &BranchInfo,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, E>,
        register: impl AsyncFnOnce() -> Result<(), dtmcli::Error>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let insert_sql = self.insert_sql();

        let mut conn = XaConn {
            conn: Some(self.pool().acquire().await.map_err(Error::from)?),
        };
        let session = DB::session_id(conn.get()).await.map_err(Error::from)?;
        run_step::<DB>(conn.get(), XaStep::Start, &xid)
            .await
            .map_err(Error::from)?; // the guard closes the connection

        let mut ended = false;
        let outcome: Result<T, E> = async {
            let affected = DB::insert_row(
                conn.get(),
                insert_sql,
                Row {
                    trans_type: info.trans_type.as_str(),
                    gid: &info.gid,
                    branch_id: &info.branch_id,
                    op: Op::Action.as_str(),
                    barrier_id: XA_BARRIER_ID,
                    reason: Op::Action.as_str(),
                },
            )
            .await
            .map_err(Error::from)?;
            if affected == 0 {
                return Err(Error::Dtm(dtmcli::Error::failure(format!(
                    "XA branch {xid} was already rolled back or finished; its action does not run again"
                )))
                .into());
            }
            let value = business(conn.get()).await?;
            register().await.map_err(Error::Dtm)?;
            ended = true;
            run_step::<DB>(conn.get(), XaStep::End, &xid)
                .await
                .map_err(Error::from)?;
            run_step::<DB>(conn.get(), XaStep::Prepare, &xid)
                .await
                .map_err(Error::from)?;
            Ok(value)
        }
        .await;

        match outcome {
            Ok(value) => {
                tracing::debug!(%xid, "xa prepared");
                if DB::REUSE_AFTER_PREPARE {
                    conn.release();
                } else {
                    conn.close().await;
                }
                if let Some(id) = session {
                    self.wait_session_gone(id, &xid).await?;
                }
                Ok(value)
            }
            Err(e) => {
                let mut clean = true;
                if !ended {
                    clean &= run_step::<DB>(conn.get(), XaStep::End, &xid).await.is_ok();
                }
                if let Err(abort) = run_step::<DB>(conn.get(), XaStep::Abort, &xid).await {
                    tracing::warn!(%xid, error = %abort, "rolling back a failed XA branch failed");
                    clean = false;
                }
                if clean && DB::REUSE_AFTER_PREPARE {
                    conn.release();
                } else {
                    conn.close().await;
                }
                Err(e)
            }
        }
    }

    /// Waits until the closed session `id`, which prepared `xid`, has left the server, so that
    /// phase 2 can reach the transaction ([`XaDatabase::session_alive`]). Failing to see it go
    /// is an error: the client then aborts, and phase-2 rollback waits for the transaction.
    async fn wait_session_gone(&self, id: u64, xid: &Xid) -> Result<(), Error> {
        let mut conn = self.pool().acquire().await?;
        let deadline = tokio::time::Instant::now() + DETACH_WAIT;
        while DB::session_alive(&mut conn, id).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Dtm(dtmcli::Error::other(format!(
                    "the session that prepared XA transaction {xid} did not end within {DETACH_WAIT:?}"
                ))));
            }
            tokio::time::sleep(DETACH_POLL).await;
        }
        Ok(())
    }

    /// Runs phase 2 of an XA branch: commits (`op=commit`) or rolls back (`op=rollback`) the
    /// transaction [`Barrier::xa_local`] prepared, on a pooled connection.
    ///
    /// A transaction that no longer exists counts as done (an error containing `XAER_NOTA` or
    /// `does not exist`: a repeated call). On MySQL such an answer is checked with
    /// `xa recover` (which needs the `XA_RECOVER_ADMIN` privilege on MySQL 8; without it the
    /// answer is trusted): a transaction still listed there is held by the session that
    /// prepared it, which happens when that session was closed by something other than
    /// [`Barrier::xa_local`]; the call then waits up to five seconds for it, and fails so
    /// that DTM retries.
    ///
    /// After a rollback it writes the barrier row `(xa, gid, branch_id, action, 01)` with
    /// reason `rollback`, so that an action arriving late cannot prepare; while an action is
    /// still running that insert waits for it.
    ///
    /// ```no_run
    /// # async fn demo(barrier: dtm_barrier::Barrier<sqlx::Postgres>, info: dtmcli::BranchInfo) -> Result<(), dtm_barrier::Error> {
    /// // `info.op` is `commit` or `rollback`: the server's call of the branch's phase-2 URL.
    /// barrier.xa_phase2(&info).await?;
    /// # Ok(()) }
    /// ```
    pub async fn xa_phase2(&self, info: &BranchInfo) -> Result<(), Error> {
        let step = match (info.trans_type, info.op) {
            (TransType::Xa, Op::Commit) => XaStep::Commit,
            (TransType::Xa, Op::Rollback) => XaStep::Rollback,
            (trans_type, op) => {
                return Err(invalid(format!(
                    "xa_phase2 commits or rolls back an XA branch, this call is {trans_type} {op}"
                )))
            }
        };
        self.finish_xa(&info.gid, &info.branch_id, step).await
    }

    /// Phase 2 of the local XA transaction of branch `branch_id`: `step` is
    /// [`XaStep::Commit`] or [`XaStep::Rollback`]. Shared by XA branches and workflow XA steps.
    pub(crate) async fn finish_xa(
        &self,
        gid: &str,
        branch_id: &str,
        step: XaStep,
    ) -> Result<(), Error> {
        let xid = Xid::new(gid, branch_id)?;
        let insert_sql = self.insert_sql();
        let mut conn = self.pool().acquire().await?;
        let deadline = tokio::time::Instant::now() + DETACH_WAIT;
        loop {
            match run_step::<DB>(&mut conn, step, &xid).await {
                Ok(()) => break,
                Err(e) if already_done(&e) => {
                    let attached = match DB::is_prepared(&mut conn, &xid).await {
                        Ok(attached) => attached,
                        Err(check) => {
                            tracing::warn!(%xid, error = %check, "cannot list prepared XA transactions; trusting the answer");
                            false
                        }
                    };
                    if !attached {
                        tracing::debug!(%xid, ?step, "xa transaction already done");
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Dtm(dtmcli::Error::other(format!(
                            "XA transaction {xid} is prepared but still held by the session that prepared it"
                        ))));
                    }
                    tokio::time::sleep(PHASE2_POLL).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if step == XaStep::Rollback {
            DB::insert_row(
                &mut conn,
                insert_sql,
                Row {
                    trans_type: TransType::Xa.as_str(),
                    gid,
                    branch_id,
                    op: Op::Action.as_str(),
                    barrier_id: XA_BARRIER_ID,
                    reason: REASON_ROLLBACK,
                },
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xid_refuses_characters_that_need_escaping() {
        assert_eq!(Xid::new("g1", "0201").unwrap().to_string(), "g1-0201");
        for (gid, branch_id) in [("it's", "01"), ("a\\b", "01"), ("g", "0'1"), ("g\0", "01")] {
            let err = Xid::new(gid, branch_id).unwrap_err();
            assert!(
                matches!(err, Error::Dtm(dtmcli::Error::InvalidArgument(_))),
                "{gid:?} {branch_id:?}: {err}"
            );
        }
        assert!(matches!(
            Xid::new("", "01").unwrap_err(),
            Error::Dtm(dtmcli::Error::MissingField("gid"))
        ));
    }

    #[cfg(feature = "mysql")]
    #[test]
    fn mysql_statements() {
        let xid = Xid::new("g", "01").unwrap();
        let sql = |step| <sqlx::MySql as XaDatabase>::xa_sql(step, &xid);
        assert_eq!(sql(XaStep::Start).as_deref(), Some("xa start 'g-01'"));
        assert_eq!(sql(XaStep::End).as_deref(), Some("xa end 'g-01'"));
        assert_eq!(sql(XaStep::Prepare).as_deref(), Some("xa prepare 'g-01'"));
        assert_eq!(sql(XaStep::Abort).as_deref(), Some("xa rollback 'g-01'"));
        assert_eq!(sql(XaStep::Commit).as_deref(), Some("xa commit 'g-01'"));
        assert_eq!(sql(XaStep::Rollback).as_deref(), Some("xa rollback 'g-01'"));
    }

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_statements() {
        let xid = Xid::new("g", "01").unwrap();
        let sql = |step| <sqlx::Postgres as XaDatabase>::xa_sql(step, &xid);
        assert_eq!(sql(XaStep::Start).as_deref(), Some("begin"));
        assert_eq!(sql(XaStep::End), None);
        assert_eq!(
            sql(XaStep::Prepare).as_deref(),
            Some("prepare transaction 'g-01'")
        );
        assert_eq!(sql(XaStep::Abort).as_deref(), Some("rollback"));
        assert_eq!(
            sql(XaStep::Commit).as_deref(),
            Some("commit prepared 'g-01'")
        );
        assert_eq!(
            sql(XaStep::Rollback).as_deref(),
            Some("rollback prepared 'g-01'")
        );
    }

    #[test]
    fn missing_or_finished_transactions_count_as_done() {
        let e = |s: &str| sqlx::Error::Protocol(s.to_owned());
        assert!(already_done(&e("1397 (XAE04): XAER_NOTA: Unknown XID")));
        assert!(already_done(&e(
            "prepared transaction with identifier \"g-01\" does not exist"
        )));
        assert!(!already_done(&e("connection reset")));
    }
}
