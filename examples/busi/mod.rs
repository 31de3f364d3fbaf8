//! The business service of the quick start: an inter-bank transfer.
//!
//! Money leaves an account (`TransOut`) and arrives in another one (`TransIn`), as saga
//! actions with compensations, as TCC try / confirm / cancel, and as message steps. Balances
//! live in a SQL table (`busi_account`; SQLite by default, MySQL/MariaDB and PostgreSQL work
//! the same) and every change runs inside the DTM barrier: the routes are wrapped in
//! [`BarrierLayer`], so duplicates, null compensations and late forward operations never touch
//! a balance. Accounts are created on first use with [`INITIAL_BALANCE`].
//!
//! To try rollbacks, a branch URL may carry `?result=A,B,...`: the n-th call of that branch
//! operation answers the n-th word (`SUCCESS`, `FAILURE` → 409, `ONGOING` → 425, `ERROR` →
//! 500) before reaching the business code, and SUCCESS after the list runs out; e.g.
//! `TransIn?result=FAILURE`.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use dtm_barrier::{Barrier, BarrierDatabase, BarrierLayer, BarrierTx, Error as BarrierError};
use dtmcli::{BranchInfo, DtmClient, DtmResult, Error, Op, Tcc};
use serde::{Deserialize, Serialize};
use sqlx::Pool;

/// The balance of an account the first time it is used.
pub const INITIAL_BALANCE: i64 = 10_000;

/// The path below which the routes are mounted.
pub const BASE_PATH: &str = "/api/busi";

/// The body of every transfer call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransferReq {
    /// The amount to move.
    pub amount: i64,
    /// The account the money leaves.
    pub from: String,
    /// The account the money arrives in.
    pub to: String,
}

impl TransferReq {
    /// `amount` from `from` to `to`.
    pub fn new(amount: i64, from: impl Into<String>, to: impl Into<String>) -> Self {
        TransferReq {
            amount,
            from: from.into(),
            to: to.into(),
        }
    }
}

/// The account table, per database. Every statement binds its values.
pub trait Ledger: BarrierDatabase {
    /// Creates `busi_account` if missing.
    fn create_accounts(pool: &Pool<Self>) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Adds `delta` to `account` (created on first use); `false` if `check` is set and the
    /// balance would go negative.
    fn adjust(
        conn: &mut Self::Connection,
        account: &str,
        delta: i64,
        check: bool,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// The balance of `account`, `None` if it was never used.
    fn balance(
        pool: &Pool<Self>,
        account: &str,
    ) -> impl Future<Output = sqlx::Result<Option<i64>>> + Send;
}

macro_rules! ledger {
    ($db:ty, $ensure:literal, $update:literal, $select:literal) => {
        impl Ledger for $db {
            async fn create_accounts(pool: &Pool<Self>) -> sqlx::Result<()> {
                sqlx::query(
                    "create table if not exists busi_account \
                     (account varchar(128) primary key, balance bigint not null)",
                )
                .execute(pool)
                .await?;
                Ok(())
            }

            async fn adjust(
                conn: &mut Self::Connection,
                account: &str,
                delta: i64,
                check: bool,
            ) -> sqlx::Result<bool> {
                sqlx::query($ensure)
                    .bind(account)
                    .bind(INITIAL_BALANCE)
                    .execute(&mut *conn)
                    .await?;
                let floor = if check { 0 } else { i64::MIN / 2 };
                let done = sqlx::query($update)
                    .bind(delta)
                    .bind(account)
                    .bind(delta)
                    .bind(floor)
                    .execute(&mut *conn)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn balance(pool: &Pool<Self>, account: &str) -> sqlx::Result<Option<i64>> {
                sqlx::query_scalar($select)
                    .bind(account)
                    .fetch_optional(pool)
                    .await
            }
        }
    };
}

ledger!(
    sqlx::Sqlite,
    "insert or ignore into busi_account(account, balance) values(?, ?)",
    "update busi_account set balance = balance + ? where account = ? and balance + ? >= ?",
    "select balance from busi_account where account = ?"
);
ledger!(
    sqlx::MySql,
    "insert ignore into busi_account(account, balance) values(?, ?)",
    "update busi_account set balance = balance + ? where account = ? and balance + ? >= ?",
    "select balance from busi_account where account = ?"
);
ledger!(
    sqlx::Postgres,
    "insert into busi_account(account, balance) values($1, $2) on conflict do nothing",
    "update busi_account set balance = balance + $1 where account = $2 and balance + $3 >= $4",
    "select balance from busi_account where account = $1"
);

/// One call the service received, as recorded for inspection.
#[derive(Debug, Clone)]
pub struct Call {
    /// The route (`TransOut`, `TransInConfirm`, ...).
    pub route: String,
    /// The branch id of the call.
    pub branch_id: String,
    /// The operation.
    pub op: Op,
    /// What the service answered.
    pub answer: DtmResultOrError,
    /// The request headers, lower-case names.
    pub headers: HashMap<String, String>,
}

/// The answer recorded for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmResultOrError {
    /// SUCCESS / FAILURE / ONGOING.
    Result(DtmResult),
    /// Any other answer (a 500, a 400).
    Error,
}

/// Fault-injection scripts and the record of calls.
#[derive(Clone, Default)]
struct Recorder {
    inner: Arc<Mutex<RecorderState>>,
}

#[derive(Default)]
struct RecorderState {
    /// How often each `(gid, branch_id, op, route)` was called.
    counts: HashMap<(String, String, Op, String), usize>,
    calls: HashMap<String, Vec<Call>>,
}

/// The bank: the account table, the barrier and the record of calls, shared by all handlers.
pub struct Bank<DB: Ledger> {
    pool: Pool<DB>,
    barrier: Barrier<DB>,
    recorder: Recorder,
    dtm: DtmClient,
    base_url: Arc<OnceLock<String>>,
    runtime: tokio::runtime::Handle,
}

impl<DB: Ledger> Clone for Bank<DB> {
    fn clone(&self) -> Self {
        Bank {
            pool: self.pool.clone(),
            barrier: self.barrier.clone(),
            recorder: self.recorder.clone(),
            dtm: self.dtm.clone(),
            base_url: Arc::clone(&self.base_url),
            runtime: self.runtime.clone(),
        }
    }
}

impl<DB: Ledger> std::fmt::Debug for Bank<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank")
            .field("barrier", &self.barrier)
            .finish_non_exhaustive()
    }
}

impl<DB: Ledger> Bank<DB> {
    /// A bank on `pool`: creates the barrier and account tables if missing. `dtm` serves the
    /// nested TCC branch. Call it on the runtime that will serve the bank: the pool's
    /// connections belong to it.
    pub async fn connect(pool: Pool<DB>, dtm: DtmClient) -> anyhow::Result<Self> {
        let barrier = Barrier::new(pool.clone());
        barrier.create_table().await?;
        DB::create_accounts(&pool).await?;
        Ok(Bank {
            pool,
            barrier,
            recorder: Recorder::default(),
            dtm,
            base_url: Arc::default(),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// The barrier guarding the bank's local transactions.
    pub fn barrier(&self) -> &Barrier<DB> {
        &self.barrier
    }

    /// The URL of the routes, such as `http://127.0.0.1:8081/api/busi`, once [`serve`] ran.
    pub fn base_url(&self) -> &str {
        self.base_url.get().map_or("", String::as_str)
    }

    /// A route's URL with a fault-injection script (`""` for none).
    pub fn url(&self, route: &str, result: &str) -> String {
        if result.is_empty() {
            format!("{}/{route}", self.base_url())
        } else {
            format!("{}/{route}?result={result}", self.base_url())
        }
    }

    /// The runtime the bank's pool belongs to.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Runs `fut` on the bank's runtime, where its pool's connections live.
    pub async fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .spawn(fut)
            .await
            .expect("task on the bank's runtime")
    }

    /// The balance of `account`.
    pub async fn balance(&self, account: &str) -> i64 {
        let pool = self.pool.clone();
        let account = account.to_owned();
        self.run(async move { DB::balance(&pool, &account).await })
            .await
            .expect("read a balance")
            .unwrap_or(INITIAL_BALANCE)
    }

    /// The calls received for `gid`, in arrival order.
    pub fn calls(&self, gid: &str) -> Vec<Call> {
        let state = self.recorder.inner.lock().unwrap();
        state.calls.get(gid).cloned().unwrap_or_default()
    }

    /// The routes called for `gid`, in arrival order.
    pub fn routes(&self, gid: &str) -> Vec<String> {
        self.calls(gid).into_iter().map(|c| c.route).collect()
    }

    /// The business change of a barrier-protected route: which account moves by how much.
    async fn transfer(
        &self,
        route: &'static str,
        tx: BarrierTx<DB>,
        body: Bytes,
    ) -> Result<DtmResult, BarrierError> {
        let req: TransferReq = serde_json::from_slice(&body)
            .map_err(|e| Error::InvalidArgument(format!("transfer body: {e}")))?;
        if req.amount <= 0 {
            return Err(BarrierError::failure(format!(
                "amount must be positive, got {}",
                req.amount
            )));
        }
        let (account, delta) = match route {
            "TransOut" | "TransOutTry" => (req.from, -req.amount),
            "TransOutCompensate" | "TransOutCancel" => (req.from, req.amount),
            "TransIn" | "TransInConfirm" => (req.to, req.amount),
            "TransInCompensate" => (req.to, -req.amount),
            // TransInTry reserves nothing; TransOutConfirm keeps what the try took;
            // TransInCancel has nothing to undo; the nested branch's own confirm and
            // cancel leave the work to its sub-branch.
            _ => return Ok(DtmResult::Success),
        };
        let forward = !(route.ends_with("Compensate") || route.ends_with("Cancel"));
        let mut conn = tx.lock().await?;
        if !DB::adjust(&mut conn, &account, delta, forward).await? {
            return Err(BarrierError::failure(format!(
                "insufficient balance in {account}"
            )));
        }
        Ok(DtmResult::Success)
    }

    /// Two barrier-protected local transactions in one handler (barrier ids 01 and 02), with
    /// the plain API: half of the amount each.
    async fn trans_in_twice(
        &self,
        info: BranchInfo,
        body: &[u8],
    ) -> Result<DtmResult, BarrierError> {
        let req: TransferReq = serde_json::from_slice(body)
            .map_err(|e| Error::InvalidArgument(format!("transfer body: {e}")))?;
        let branch = self.barrier.branch(info);
        for part in [req.amount - req.amount / 2, req.amount / 2] {
            branch
                .call(async |conn| {
                    DB::adjust(conn, &req.to, part, false).await?;
                    Ok::<_, BarrierError>(())
                })
                .await?;
        }
        Ok(DtmResult::Success)
    }

    /// A try that opens a nested TCC branch: the money arrives through sub-branch `<id>01`.
    async fn nested_try(&self, info: BranchInfo, body: &[u8]) -> Result<DtmResult, Error> {
        let req: TransferReq = serde_json::from_slice(body)
            .map_err(|e| Error::InvalidArgument(format!("transfer body: {e}")))?;
        let tcc = Tcc::from_branch(&self.dtm, &info)?;
        tcc.call_branch(
            &req,
            &self.url("TransInTry", ""),
            &self.url("TransInConfirm", ""),
            &self.url("TransInCancel", ""),
        )
        .await?;
        Ok(DtmResult::Success)
    }
}

/// The routes the barrier layer guards.
const GUARDED: [&str; 12] = [
    "TransOut",
    "TransOutCompensate",
    "TransIn",
    "TransInCompensate",
    "TransOutTry",
    "TransOutConfirm",
    "TransOutCancel",
    "TransInTry",
    "TransInConfirm",
    "TransInCancel",
    "TransInNestedConfirm",
    "TransInNestedCancel",
];

/// The routes of the service, mounted below [`BASE_PATH`].
///
/// - barrier layer: the transfer routes in `GUARDED`;
/// - plain API: `TransInB2` (two protected local transactions in one handler);
/// - no barrier: `TransInTryNested` (opens a nested TCC branch), `QueryPrepared` (answers
///   SUCCESS: "the local work committed", for messages without local work), and
///   `QueryPreparedB` (the barrier's ready-made answer to a message query).
pub fn router<DB: Ledger>(bank: Bank<DB>) -> Router {
    let mut guarded = Router::new();
    for route in GUARDED {
        guarded = guarded.route(
            &format!("/{route}"),
            any(
                move |State(bank): State<Bank<DB>>, tx: BarrierTx<DB>, body: Bytes| async move {
                    bank.transfer(route, tx, body).await
                },
            ),
        );
    }
    let guarded = guarded.layer(BarrierLayer::for_http(bank.barrier.clone()));
    let plain = Router::new()
        .route(
            "/TransInB2",
            any(
                |State(bank): State<Bank<DB>>, info: BranchInfo, body: Bytes| async move {
                    bank.trans_in_twice(info, &body).await
                },
            ),
        )
        .route(
            "/TransInTryNested",
            any(
                |State(bank): State<Bank<DB>>, info: BranchInfo, body: Bytes| async move {
                    bank.nested_try(info, &body).await
                },
            ),
        )
        .route(
            "/QueryPrepared",
            any(|_info: BranchInfo| async { DtmResult::Success }),
        )
        .route("/QueryPreparedB", bank.barrier.query_prepared_route());
    let recorder = bank.recorder.clone();
    let api = guarded
        .merge(plain)
        .layer(middleware::from_fn_with_state(recorder, record))
        .with_state(bank);
    Router::new().nest(BASE_PATH, api)
}

/// The `?result=` fault-injection script of a branch URL.
#[derive(Debug, Default, Deserialize)]
struct ResultScript {
    #[serde(default)]
    result: String,
}

/// Outermost middleware: answers as the URL's script says, and records every call.
async fn record(State(rec): State<Recorder>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(info) = BranchInfo::from_parts(&parts) else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    let route = parts
        .uri
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let script = Query::<ResultScript>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let word = {
        let mut state = rec.inner.lock().unwrap();
        let key = (
            info.gid.clone(),
            info.branch_id.clone(),
            info.op,
            route.clone(),
        );
        let count = state.counts.entry(key).or_default();
        let word = script
            .result
            .split(',')
            .filter(|w| !w.is_empty())
            .nth(*count)
            .map(str::to_owned);
        *count += 1;
        word
    };
    let response = match word.as_deref() {
        Some("FAILURE") => Error::failure(format!("{route} scripted to fail")).into_response(),
        Some("ONGOING") => {
            Error::ongoing(format!("{route} scripted as not finished")).into_response()
        }
        Some("ERROR") => Error::other(format!("{route} scripted error")).into_response(),
        _ => next.run(Request::from_parts(parts, body)).await,
    };
    let answer = match response.status().as_u16() {
        200 => DtmResultOrError::Result(DtmResult::Success),
        409 => DtmResultOrError::Result(DtmResult::Failure),
        425 => DtmResultOrError::Result(DtmResult::Ongoing),
        _ => DtmResultOrError::Error,
    };
    let call = Call {
        route,
        branch_id: info.branch_id,
        op: info.op,
        answer,
        headers,
    };
    rec.inner
        .lock()
        .unwrap()
        .calls
        .entry(info.gid)
        .or_default()
        .push(call);
    response
}

/// Serves the routes on `listener` until the process ends. The bank knows its
/// [`Bank::base_url`] as soon as this returns, before the future is first polled.
pub fn serve<DB: Ledger>(
    listener: tokio::net::TcpListener,
    bank: Bank<DB>,
) -> std::io::Result<impl Future<Output = std::io::Result<()>>> {
    let addr = listener.local_addr()?;
    let _ = bank.base_url.set(format!("http://{addr}{BASE_PATH}"));
    Ok(async move { axum::serve(listener, router(bank)).await })
}

/// Waits (up to 60 s) until transaction `gid` has ended, and returns what the server stored.
pub async fn wait_final(dtm: &DtmClient, gid: &str) -> anyhow::Result<dtmcli::TransQuery> {
    let outcome = dtm
        .wait_final(gid, std::time::Duration::from_secs(60))
        .await?;
    if !outcome.is_final() {
        anyhow::bail!("{gid} did not finish in 60 s: {outcome:?}");
    }
    Ok(dtm.query(gid).await?)
}

/// Waits until transaction `gid` has ended, and fails unless it ended as `want`.
pub async fn expect_final(
    dtm: &DtmClient,
    gid: &str,
    want: dtmcli::GlobalStatus,
) -> anyhow::Result<()> {
    let status = wait_final(dtm, gid).await?.transaction.map(|t| t.status);
    if status != Some(want) {
        anyhow::bail!("{gid} ended as {status:?}, expected {want}");
    }
    Ok(())
}
