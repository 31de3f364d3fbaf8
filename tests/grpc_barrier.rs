//! The barrier behind a tonic server, against the real DTM server's gRPC port, on each
//! database: a tonic service wrapped in `BarrierLayer::<DB, Grpc>` whose handlers move money
//! in SQL through `BarrierTx::from_grpc`, and two-phase messages whose local work runs through
//! `Barrier::do_and_submit` with a gRPC query method (`Barrier::query_prepared_grpc`). The Rust
//! twins of `TestSagaGrpcBarrier*` and
//! `TestMsgGrpcPrepareAndSubmit*` (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite).

mod grpc_support;
mod support;

use std::sync::{Arc, OnceLock};

use dtm_barrier::{Barrier, BarrierTx};
use dtmcli::{Error, GlobalStatus};
use dtmgrpc::tonic::{Request, Status};
use grpc_support::busi::BusiReq;
use grpc_support::{dtm_grpc, SqlBusi};
use support::busi::{Bank, Ledger, INITIAL_BALANCE};
use support::{accounts, status_of, wait_status, F, P, S};

const SERVICE: &str = SqlBusi::SERVICE;
/// More than any account holds: the business code answers FAILURE (`Aborted`).
const OVERDRAFT: i64 = INITIAL_BALANCE * 2;

/// The business of the service: money moves in SQL through the transaction the barrier layer
/// opened; `QueryPreparedB` answers a message query with the barrier's ready-made handler.
async fn handle<DB: Ledger>(
    barrier: Barrier<DB>,
    method: String,
    request: Request<BusiReq>,
) -> Result<(), Status> {
    if method == "QueryPreparedB" {
        // The barrier's ready-made answer to DTM's query of a prepared message.
        return barrier
            .query_prepared_grpc::<_, ()>(&request)
            .await
            .map(drop);
    }
    let tx = BarrierTx::<DB>::from_grpc(&request)?;
    let req = request.into_inner();
    let (account, delta, check) = match method.as_str() {
        "TransOut" => (req.from, -req.amount, true),
        "TransOutRevert" => (req.from, req.amount, false),
        "TransIn" => (req.to, req.amount, true),
        "TransInRevert" => (req.to, -req.amount, false),
        _ => return Err(Status::unimplemented(method)),
    };
    let mut tx = tx.lock().await.map_err(dtmcli::Error::from)?;
    let done = DB::adjust(&mut tx, &account, delta, check)
        .await
        .map_err(Error::other)?;
    if !done {
        return Err(Error::failure(format!("insufficient balance in {account}")).into());
    }
    Ok(())
}

/// Serves the SQL service of `bank`'s database behind the barrier layer; returns its address.
fn serve<DB: Ledger>(bank: &Bank<DB>) -> String {
    let barrier = bank.barrier().clone();
    grpc_support::serve_sql(
        bank,
        true,
        Arc::new(move |method, request| Box::pin(handle(barrier.clone(), method, request))),
    )
}

/// One gRPC service per database and test binary.
trait GrpcBank: Ledger {
    fn bank() -> &'static Bank<Self>;
    fn grpc_addr() -> &'static str;
}

macro_rules! grpc_bank {
    ($db:ty, $bank:path) => {
        impl GrpcBank for $db {
            fn bank() -> &'static Bank<Self> {
                $bank()
            }
            fn grpc_addr() -> &'static str {
                static ADDR: OnceLock<String> = OnceLock::new();
                ADDR.get_or_init(|| serve($bank()))
            }
        }
    };
}

grpc_bank!(sqlx::Sqlite, support::bank);
grpc_bank!(sqlx::MySql, support::mysql_bank);
grpc_bank!(sqlx::Postgres, support::postgres_bank);

fn url<DB: GrpcBank>(method: &str) -> String {
    format!("{}/{SERVICE}/{method}", DB::grpc_addr())
}

async fn assert_balances<DB: GrpcBank>(req: &BusiReq, from: i64, to: i64) {
    support::assert_balances(DB::bank(), (&req.from, from), (&req.to, to)).await;
}

async fn grpc_saga_barrier_normal<DB: GrpcBank>() {
    let dtm = dtm_grpc();
    let gid = dtm.new_gid().await.unwrap();
    let (from, to) = accounts(&gid);
    let req = BusiReq::new(30, from, to);
    dtm.saga(&gid)
        .add(url::<DB>("TransOut"), url::<DB>("TransOutRevert"), &req)
        .add(url::<DB>("TransIn"), url::<DB>("TransInRevert"), &req)
        .retry_interval(std::time::Duration::from_secs(1))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances::<DB>(&req, -30, 30).await;
}

async fn grpc_saga_barrier_rollback<DB: GrpcBank>() {
    let dtm = dtm_grpc();
    let gid = dtm.new_gid().await.unwrap();
    let (from, to) = accounts(&gid);
    let req = BusiReq::new(OVERDRAFT, from, to);
    dtm.saga(&gid)
        .add(url::<DB>("TransIn"), url::<DB>("TransInRevert"), &req)
        .add(url::<DB>("TransOut"), url::<DB>("TransOutRevert"), &req)
        .retry_interval(std::time::Duration::from_secs(1))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, F]);
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("insufficient balance"), "{reason}");
    // TransOut failed inside the barrier: its compensation is a null compensation.
    assert_balances::<DB>(&req, 0, 0).await;
}

/// DoAndSubmit over gRPC: local work takes the money from `from` through the barrier, the
/// message gives it to `to`; `query_first` makes the server's query win the race.
async fn do_and_submit<DB: GrpcBank>(query_first: bool) {
    let dtm = dtm_grpc();
    let gid = dtm.new_gid().await.unwrap();
    let (from, to) = accounts(&gid);
    let req = BusiReq::new(30, from, to);
    if query_first {
        let (barrier, g) = (DB::bank().barrier().clone(), gid.clone());
        let answer = DB::bank()
            .run(async move { barrier.query_prepared(&g).await.unwrap() })
            .await;
        assert_eq!(answer, dtmcli::DtmResult::Failure);
    }
    let barrier = DB::bank().barrier().clone();
    let (query, amount, account) = (url::<DB>("QueryPreparedB"), req.amount, req.from.clone());
    let (g, r) = (gid.clone(), req.clone());
    // The local transaction runs where the bank's pool lives.
    let outcome = DB::bank()
        .run(async move {
            let msg = dtm_grpc()
                .msg(&g)
                .add(url::<DB>("TransIn"), &r)
                .retry_interval(std::time::Duration::from_secs(1));
            barrier
                .do_and_submit(msg, query, async |conn| {
                    assert!(DB::adjust(conn, &account, -amount, true).await?);
                    Ok(())
                })
                .await
                .map_err(Error::from)
        })
        .await;
    if query_first {
        assert!(matches!(outcome, Err(Error::Duplicated)), "{outcome:?}");
        assert_eq!(status_of(&gid).await, (Some(GlobalStatus::Failed), vec![P]));
        assert_balances::<DB>(&req, 0, 0).await;
    } else {
        outcome.unwrap();
        let q = wait_status(&gid, GlobalStatus::Succeed).await;
        assert_eq!(q.branch_statuses(), [S]);
        assert_balances::<DB>(&req, -30, 30).await;
    }
}

async fn grpc_msg_do_and_submit<DB: GrpcBank>() {
    do_and_submit::<DB>(false).await;
}

async fn grpc_msg_do_and_submit_query_first<DB: GrpcBank>() {
    do_and_submit::<DB>(true).await;
}

macro_rules! on_each_database {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $scenario() { super::$scenario::<sqlx::Sqlite>().await })*
        }
        mod mariadb {
            $(#[tokio::test] async fn $scenario() { super::$scenario::<sqlx::MySql>().await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $scenario() { super::$scenario::<sqlx::Postgres>().await })*
        }
    };
}

on_each_database!(
    grpc_saga_barrier_normal,
    grpc_saga_barrier_rollback,
    grpc_msg_do_and_submit,
    grpc_msg_do_and_submit_query_first,
);
