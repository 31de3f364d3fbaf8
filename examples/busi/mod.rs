//! The business service of the quick start: an inter-bank transfer.
//!
//! Money leaves an account (`TransOut`) and arrives in another one (`TransIn`), as saga
//! actions with compensations, as TCC try / confirm / cancel, and as message steps. Accounts are
//! created on first use with [`INITIAL_BALANCE`].
//!
//! Balances live in memory here. Like the DTM barrier, the service records which
//! `(gid, branch_id, op)` it applied so that a duplicate call is applied once, a compensation
//! whose forward operation never ran does nothing, and a forward operation arriving after its
//! compensation does nothing.
//!
//! To try rollbacks, a branch URL may carry `?result=A,B,...`: the n-th call of that branch
//! operation answers the n-th word (`SUCCESS`, `FAILURE` → 409, `ONGOING` → 425, `ERROR` →
//! 500) and SUCCESS after the list runs out; e.g. `TransIn?result=FAILURE`.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::any;
use axum::Router;
use dtmcli::{BranchInfo, DtmClient, DtmResult, Error, Op, Tcc};
use serde::{Deserialize, Serialize};

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

/// One call the service received, as recorded for inspection.
#[derive(Debug, Clone)]
pub struct Call {
    /// The route (`TransOut`, `TransInConfirm`, ...).
    pub route: String,
    /// The branch info of the call.
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
    /// A 500.
    Error,
}

#[derive(Default)]
struct BankState {
    balances: HashMap<String, i64>,
    /// `(gid, branch_id, op)` already applied (or blocked by a null compensation).
    applied: HashSet<(String, String, Op)>,
    /// How often each `(gid, branch_id, op, route)` was called.
    counts: HashMap<(String, String, Op, String), usize>,
    calls: HashMap<String, Vec<Call>>,
}

/// The bank: balances and the record of calls, shared by all handlers.
#[derive(Clone)]
pub struct Bank {
    state: Arc<Mutex<BankState>>,
    dtm: DtmClient,
    base_url: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank").finish_non_exhaustive()
    }
}

impl Bank {
    /// A bank whose nested TCC branch uses `dtm`'s HTTP client.
    pub fn new(dtm: DtmClient) -> Self {
        Bank {
            state: Arc::default(),
            dtm,
            base_url: Arc::default(),
        }
    }

    /// The URL of the routes, such as `http://127.0.0.1:8081/api/busi`, once [`serve`] runs.
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

    /// The balance of `account`.
    pub fn balance(&self, account: &str) -> i64 {
        let state = self.state.lock().unwrap();
        state
            .balances
            .get(account)
            .copied()
            .unwrap_or(INITIAL_BALANCE)
    }

    /// The calls received for `gid`, in arrival order.
    pub fn calls(&self, gid: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state.calls.get(gid).cloned().unwrap_or_default()
    }

    /// The routes called for `gid` with their operation, in arrival order.
    pub fn routes(&self, gid: &str) -> Vec<String> {
        self.calls(gid).into_iter().map(|c| c.route).collect()
    }
}

/// The routes of the service, to be served below [`BASE_PATH`].
pub fn router(bank: Bank) -> Router {
    let routes = [
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
    let mut inner = Router::new();
    for route in routes {
        inner = inner.route(
            &format!("/{route}"),
            any(
                move |State(bank): State<Bank>,
                      Query(q): Query<ResultScript>,
                      info: BranchInfo,
                      headers: HeaderMap,
                      body: Bytes| async move {
                    bank.handle(route, &q, &info, &headers, &body).await
                },
            ),
        );
    }
    inner = inner
        .route(
            "/TransInTryNested",
            any(
                |State(bank): State<Bank>,
                 Query(q): Query<ResultScript>,
                 info: BranchInfo,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    bank.handle("TransInTryNested", &q, &info, &headers, &body)
                        .await
                },
            ),
        )
        .route(
            "/QueryPrepared",
            any(
                |State(bank): State<Bank>,
                 Query(q): Query<ResultScript>,
                 info: BranchInfo,
                 headers: HeaderMap| async move {
                    bank.handle("QueryPrepared", &q, &info, &headers, &[]).await
                },
            ),
        );
    Router::new().nest(BASE_PATH, inner.with_state(bank))
}

/// The `?result=` fault-injection script of a branch URL.
#[derive(Debug, Deserialize)]
pub struct ResultScript {
    #[serde(default)]
    result: String,
}

impl Bank {
    async fn handle(
        &self,
        route: &'static str,
        script: &ResultScript,
        info: &BranchInfo,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<DtmResult, Error> {
        let answer = self.scripted(route, script, info);
        let outcome = match answer {
            DtmResultOrError::Result(DtmResult::Failure) => {
                Err(Error::failure(format!("{route} scripted to fail")))
            }
            DtmResultOrError::Result(DtmResult::Ongoing) => {
                Err(Error::ongoing(format!("{route} scripted as not finished")))
            }
            DtmResultOrError::Error => Err(Error::other(format!("{route} scripted error"))),
            DtmResultOrError::Result(_) => self.apply(route, info, body).await,
        };
        let recorded = match &outcome {
            Ok(r) => DtmResultOrError::Result(*r),
            Err(e) if e.is_failure() => DtmResultOrError::Result(DtmResult::Failure),
            Err(e) if e.is_ongoing() => DtmResultOrError::Result(DtmResult::Ongoing),
            Err(_) => DtmResultOrError::Error,
        };
        let headers = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let mut state = self.state.lock().unwrap();
        state.calls.entry(info.gid.clone()).or_default().push(Call {
            route: route.to_owned(),
            branch_id: info.branch_id.clone(),
            op: info.op,
            answer: recorded,
            headers,
        });
        outcome
    }

    /// The answer the script of this call asks for.
    fn scripted(&self, route: &str, script: &ResultScript, info: &BranchInfo) -> DtmResultOrError {
        let mut state = self.state.lock().unwrap();
        let key = (
            info.gid.clone(),
            info.branch_id.clone(),
            info.op,
            route.to_owned(),
        );
        let count = state.counts.entry(key).or_default();
        let word = script
            .result
            .split(',')
            .filter(|w| !w.is_empty())
            .nth(*count);
        *count += 1;
        match word {
            Some("FAILURE") => DtmResultOrError::Result(DtmResult::Failure),
            Some("ONGOING") => DtmResultOrError::Result(DtmResult::Ongoing),
            Some("ERROR") => DtmResultOrError::Error,
            _ => DtmResultOrError::Result(DtmResult::Success),
        }
    }

    /// Runs the business effect of a call once per `(gid, branch_id, op)`.
    async fn apply(&self, route: &str, info: &BranchInfo, body: &[u8]) -> Result<DtmResult, Error> {
        if route == "QueryPrepared" {
            return Ok(DtmResult::Success);
        }
        let req: TransferReq = serde_json::from_slice(body)
            .map_err(|e| Error::InvalidArgument(format!("transfer body: {e}")))?;
        if req.amount <= 0 {
            return Err(Error::failure(format!(
                "amount must be positive, got {}",
                req.amount
            )));
        }
        if route == "TransInTryNested" {
            return self.nested_try(info, &req).await;
        }
        let (account, delta) = match route {
            "TransOut" | "TransOutTry" => (&req.from, -req.amount),
            "TransOutCompensate" | "TransOutCancel" => (&req.from, req.amount),
            "TransIn" | "TransInConfirm" => (&req.to, req.amount),
            "TransInCompensate" => (&req.to, -req.amount),
            // TransInTry reserves nothing; TransOutConfirm keeps what the try took;
            // TransInCancel has nothing to undo; the nested branch's own confirm and cancel
            // leave the work to its sub-branch.
            _ => (&req.to, 0),
        };
        let mut state = self.state.lock().unwrap();
        let balance = state
            .balances
            .get(account)
            .copied()
            .unwrap_or(INITIAL_BALANCE);
        if !info.op.is_compensation() && balance + delta < 0 {
            return Err(Error::failure(format!("insufficient balance in {account}")));
        }
        let gid = info.gid.clone();
        let branch = info.branch_id.clone();
        let origin_new = info
            .op
            .origin()
            .is_some_and(|o| state.applied.insert((gid.clone(), branch.clone(), o)));
        let current_new = state.applied.insert((gid, branch, info.op));
        if (info.op.is_compensation() && origin_new) || !current_new {
            // Null compensation, duplicate, or a forward operation after its compensation.
            return Ok(DtmResult::Success);
        }
        *state
            .balances
            .entry(account.clone())
            .or_insert(INITIAL_BALANCE) += delta;
        Ok(DtmResult::Success)
    }

    /// A try that opens a nested TCC branch: the money arrives through sub-branch `<id>01`.
    async fn nested_try(&self, info: &BranchInfo, req: &TransferReq) -> Result<DtmResult, Error> {
        let tcc = Tcc::from_branch(&self.dtm, info)?;
        tcc.call_branch(
            req,
            &self.url("TransInTry", ""),
            &self.url("TransInConfirm", ""),
            &self.url("TransInCancel", ""),
        )
        .await?;
        Ok(DtmResult::Success)
    }
}

/// Serves the routes on `listener` until the process ends. The bank knows its
/// [`Bank::base_url`] as soon as this returns, before the future is first polled.
pub fn serve(
    listener: tokio::net::TcpListener,
    bank: Bank,
) -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let addr = listener.local_addr()?;
    let _ = bank.base_url.set(format!("http://{addr}{BASE_PATH}"));
    Ok(async move { axum::serve(listener, router(bank)).await })
}
