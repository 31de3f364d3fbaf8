//! XA over gRPC against the real DTM server, on MariaDB and PostgreSQL: a tonic resource
//! manager whose action runs the business in a local XA transaction (`Barrier::xa_local`,
//! registering the branch over gRPC with `DtmGrpcClient`) and whose phase 2 (`dtm-op` commit /
//! rollback) is `Barrier::xa_phase2`. The Rust twins of `TestXaGrpcNormal` / `Rollback`
//! (`../shared/PROTOCOL.md` §11).

mod grpc_support;
mod support;

use std::convert::Infallible;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use dtm_barrier::{Barrier, XaDatabase};
use dtmcli::{Error, GlobalStatus, Op};
use dtmgrpc::tonic::codegen::{http, Service};
use dtmgrpc::tonic::server::NamedService;
use dtmgrpc::tonic::{self, Request, Response, Status};
use dtmgrpc::{tonic_prost, DtmGrpcClient};
use futures_util::future::BoxFuture;
use grpc_support::busi::BusiReq;
use grpc_support::{dtm_grpc, grpc_addr};
use support::busi::{Bank, Ledger, INITIAL_BALANCE};
use support::{accounts, wait_status, P, S};

const SERVICE: &str = "busi.XaBusi";

/// The resource manager: `TransOutXa` takes `amount` from `from`, `TransInXa` gives it to
/// `to`; `results["TransInXa"] = "FAILURE"` makes that business answer FAILURE after its update.
struct XaBusi<DB: Ledger> {
    barrier: Barrier<DB>,
    dtm: DtmGrpcClient,
}

impl<DB: Ledger> Clone for XaBusi<DB> {
    fn clone(&self) -> Self {
        XaBusi {
            barrier: self.barrier.clone(),
            dtm: self.dtm.clone(),
        }
    }
}

impl<DB: Ledger + XaDatabase> XaBusi<DB> {
    async fn handle(&self, method: &str, request: Request<BusiReq>) -> Result<(), Status> {
        let info = dtmgrpc::branch_info(&request)?;
        if matches!(info.op, Op::Commit | Op::Rollback) {
            self.barrier
                .xa_phase2(&info)
                .await
                .map_err(dtmcli::Error::from)?;
            return Ok(());
        }
        let req = request.into_inner();
        let (account, delta) = match method {
            "TransOutXa" => (req.from.clone(), -req.amount),
            _ => (req.to.clone(), req.amount),
        };
        let fail = req.results.get(method).is_some_and(|r| r == "FAILURE");
        self.barrier
            .xa_local(&self.dtm, &info, move |conn| {
                Box::pin(async move {
                    let done = DB::adjust(conn, &account, delta, true)
                        .await
                        .map_err(Error::other)?;
                    if !done || fail {
                        return Err(Error::failure(format!("{account} refused the transfer")));
                    }
                    Ok::<_, Error>(())
                })
            })
            .await?;
        Ok(())
    }
}

struct Method<DB: Ledger> {
    busi: XaBusi<DB>,
    name: String,
}

impl<DB: Ledger + XaDatabase> Service<Request<BusiReq>> for Method<DB> {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Response<()>, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<BusiReq>) -> Self::Future {
        let (busi, name) = (self.busi.clone(), self.name.clone());
        Box::pin(async move { busi.handle(&name, request).await.map(Response::new) })
    }
}

impl<DB: Ledger + XaDatabase> Service<http::Request<tonic::body::Body>> for XaBusi<DB> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let name = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let busi = self.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<(), BusiReq>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(Method { busi, name }, request)
                .await)
        })
    }
}

impl<DB: Ledger> NamedService for XaBusi<DB> {
    const NAME: &'static str = SERVICE;
}

/// Serves the resource manager on the bank's runtime (where its pool lives).
fn serve<DB: Ledger + XaDatabase>(bank: &Bank<DB>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let barrier = bank.barrier().clone();
    let dtm_addr = grpc_addr();
    bank.runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let dtm = DtmGrpcClient::connect_lazy(dtm_addr).unwrap();
        tonic::transport::Server::builder()
            .add_service(XaBusi { barrier, dtm })
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("gRPC XA resource manager");
    });
    addr
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
    assert_eq!(
        DB::bank().balance(&req.from).await,
        INITIAL_BALANCE + from,
        "from"
    );
    assert_eq!(
        DB::bank().balance(&req.to).await,
        INITIAL_BALANCE + to,
        "to"
    );
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
