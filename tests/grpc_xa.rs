//! XA over gRPC against the real DTM server, on MariaDB and PostgreSQL: a tonic resource
//! manager whose action runs the business in a local XA transaction (`Barrier::xa_local`,
//! registering the branch over gRPC with `DtmGrpcClient`) and whose phase 2 (`dtm-op` commit /
//! rollback) is `Barrier::xa_phase2`. The Rust twins of `TestXaGrpcNormal` / `Rollback`
//! (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite).

mod grpc_support;
mod support;

use std::sync::{Arc, OnceLock};

use dtm_barrier::{Barrier, XaDatabase};
use dtmcli::{Error, GlobalStatus, Op};
use dtmgrpc::tonic::{Request, Status};
use dtmgrpc::DtmGrpcClient;
use grpc_support::busi::BusiReq;
use grpc_support::{dtm_grpc, grpc_addr, SqlBusi};
use support::busi::{Bank, Ledger};
use support::{accounts, wait_status, P, S};

const SERVICE: &str = SqlBusi::SERVICE;

/// The resource manager: `TransOutXa` takes `amount` from `from`, `TransInXa` gives it to
/// `to`, each in a local XA transaction registered over gRPC; `results["TransInXa"] =
/// "FAILURE"` makes that business answer FAILURE after its update. Phase 2 commits or rolls
/// back.
async fn handle<DB: Ledger + XaDatabase>(
    barrier: Barrier<DB>,
    dtm: DtmGrpcClient,
    method: String,
    request: Request<BusiReq>,
) -> Result<(), Status> {
    let info = dtmgrpc::branch_info(&request)?;
    if matches!(info.op, Op::Commit | Op::Rollback) {
        barrier
            .xa_phase2(&info)
            .await
            .map_err(dtmcli::Error::from)?;
        return Ok(());
    }
    let req = request.into_inner();
    let (account, delta) = match method.as_str() {
        "TransOutXa" => (req.from.clone(), -req.amount),
        _ => (req.to.clone(), req.amount),
    };
    let fail = req.results.get(&method).is_some_and(|r| r == "FAILURE");
    barrier
        .xa_local(&dtm, &info, async |conn| {
            let done = DB::adjust(conn, &account, delta, true)
                .await
                .map_err(Error::other)?;
            if !done || fail {
                return Err(Error::failure(format!("{account} refused the transfer")));
            }
            Ok::<_, Error>(())
        })
        .await?;
    Ok(())
}

/// Serves the resource manager on the bank's runtime (where its pool lives).
fn serve<DB: Ledger + XaDatabase>(bank: &Bank<DB>) -> String {
    let barrier = bank.barrier().clone();
    let dtm_addr = grpc_addr();
    // One registrar client, made on first use on the bank's runtime, where its channel lives.
    let dtm: Arc<OnceLock<DtmGrpcClient>> = Arc::default();
    grpc_support::serve_sql(
        bank,
        false,
        Arc::new(move |method, request| {
            let dtm = dtm
                .get_or_init(|| DtmGrpcClient::connect_lazy(dtm_addr.clone()).expect("gRPC client"))
                .clone();
            Box::pin(handle(barrier.clone(), dtm, method, request))
        }),
    )
}

trait XaBank: Ledger + XaDatabase {
    fn bank() -> &'static Bank<Self>;
    fn addr() -> &'static str;
}

macro_rules! xa_bank {
    ($db:ty, $bank:path) => {
        impl XaBank for $db {
            fn bank() -> &'static Bank<Self> {
                $bank()
            }
            fn addr() -> &'static str {
                static ADDR: OnceLock<String> = OnceLock::new();
                ADDR.get_or_init(|| serve($bank()))
            }
        }
    };
}

xa_bank!(sqlx::MySql, support::mysql_bank);
xa_bank!(sqlx::Postgres, support::postgres_bank);

fn url<DB: XaBank>(method: &str) -> String {
    format!("{}/{SERVICE}/{method}", DB::addr())
}

async fn assert_balances<DB: XaBank>(req: &BusiReq, from: i64, to: i64) {
    support::assert_balances(DB::bank(), (&req.from, from), (&req.to, to)).await;
}

async fn grpc_xa_normal<DB: XaBank>() {
    let dtm = dtm_grpc();
    let gid = dtm.new_gid().await.unwrap();
    let (from, to) = accounts(&gid);
    let req = BusiReq::new(30, from, to);
    let r = req.clone();
    dtm.xa(&gid)
        .retry_interval(std::time::Duration::from_secs(1))
        .run(|xa| async move {
            xa.call_branch(&r, &url::<DB>("TransOutXa")).await?;
            xa.call_branch(&r, &url::<DB>("TransInXa")).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    let ops: Vec<(&str, Op)> = q
        .branches
        .iter()
        .map(|b| (b.branch_id.as_str(), b.op))
        .collect();
    assert_eq!(
        ops,
        [
            ("01", Op::Rollback),
            ("01", Op::Commit),
            ("02", Op::Rollback),
            ("02", Op::Commit)
        ]
    );
    assert_eq!(
        q.branches[1].url,
        url::<DB>("TransOutXa"),
        "the phase-2 URL is the action's"
    );
    assert_balances::<DB>(&req, -30, 30).await;
}

async fn grpc_xa_rollback<DB: XaBank>() {
    let dtm = dtm_grpc();
    let gid = dtm.new_gid().await.unwrap();
    let (from, to) = accounts(&gid);
    let req = BusiReq::new(30, from, to).script("TransInXa", "FAILURE");
    let r = req.clone();
    let err = dtm
        .xa(&gid)
        .retry_interval(std::time::Duration::from_secs(1))
        .run(|xa| async move {
            xa.call_branch(&r, &url::<DB>("TransOutXa")).await?;
            xa.call_branch(&r, &url::<DB>("TransInXa")).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    // The failing branch rolled its local XA back before registering.
    assert_eq!(q.branch_statuses(), [S, P]);
    assert!(q
        .transaction
        .unwrap()
        .rollback_reason
        .contains("refused the transfer"));
    assert_balances::<DB>(&req, 0, 0).await;
}

macro_rules! on_both_databases {
    ($($scenario:ident),* $(,)?) => {
        mod mariadb {
            $(#[tokio::test] async fn $scenario() { super::$scenario::<sqlx::MySql>().await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $scenario() { super::$scenario::<sqlx::Postgres>().await })*
        }
    };
}

on_both_databases!(grpc_xa_normal, grpc_xa_rollback);
