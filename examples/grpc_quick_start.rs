//! Quick start over gRPC: an inter-bank transfer as a saga, a TCC and a two-phase message,
//! against a running DTM server's gRPC port, with a tonic business service.
//!
//! ```sh
//! DTM_GRPC_SERVER=localhost:36790 DTM_SERVER=http://localhost:36789/api/dtmsvr \
//!     cargo run --example grpc_quick_start
//! ```
//!
//! The business service (module `busi`, shared with the tests) listens on `GRPC_BUSI_ADDR`
//! (default `127.0.0.1:58081`). The outcome of each transaction is read over HTTP
//! (`DTM_SERVER`), as the server's gRPC API has no query.

#[path = "../dtmgrpc/examples/busi/mod.rs"]
mod busi;

use std::time::Duration;

use anyhow::{bail, Context};
use busi::{Busi, BusiReq, INITIAL_BALANCE};
use dtmcli::{DtmClient, TransQuery};
use dtmgrpc::DtmGrpcClient;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let grpc_server =
        std::env::var("DTM_GRPC_SERVER").unwrap_or_else(|_| "localhost:36790".to_owned());
    let http_server = std::env::var("DTM_SERVER")
        .unwrap_or_else(|_| "http://localhost:36789/api/dtmsvr".to_owned());
    let busi_addr =
        std::env::var("GRPC_BUSI_ADDR").unwrap_or_else(|_| "127.0.0.1:58081".to_owned());

    // DTM's gRPC API cannot say where a transaction stands; its HTTP API can, which
    // `wait_result` and `outcome` need.
    let dtm = DtmGrpcClient::builder(&grpc_server)
        .http_api(&http_server)
        .connect()
        .await
        .with_context(|| format!("connect to DTM at {grpc_server}"))?;
    let reader = DtmClient::new(&http_server)?;
    let busi = Busi::new(dtm.clone());
    let listener = tokio::net::TcpListener::bind(&busi_addr)
        .await
        .with_context(|| format!("bind the business service to {busi_addr}"))?;
    tokio::spawn(busi::serve(listener, busi.clone())?);
    println!("DTM server:       {grpc_server} (gRPC), {http_server} (HTTP, read API)");
    println!("business service: {}", busi.addr());
    println!("alice and bob start with {INITIAL_BALANCE} each\n");

    let req = BusiReq::new(30, "alice", "bob");
    let b = &busi;

    // 1. A saga: TransOut then TransIn, each with a compensation.
    let gid = dtm.new_gid().await?;
    dtm.saga(&gid)
        .add(b.url("TransOut"), b.url("TransOutRevert"), &req)
        .add(b.url("TransIn"), b.url("TransInRevert"), &req)
        .wait_result(true)
        .submit()
        .await?;
    report("saga", &reader, &gid, b).await?;

    // 2. A saga whose TransIn fails (answers Aborted): DTM compensates both steps.
    let gid = dtm.new_gid().await?;
    let failing = req.clone().script("TransIn", "FAILURE");
    let outcome = dtm
        .saga(&gid)
        .add(b.url("TransOut"), b.url("TransOutRevert"), &failing)
        .add(b.url("TransIn"), b.url("TransInRevert"), &failing)
        .wait_result(true)
        .submit()
        .await;
    match outcome {
        Err(e) if e.is_failure() => {}
        other => bail!("the failing saga should be rolled back, got {other:?}"),
    }
    report("saga with a failing step", &reader, &gid, b).await?;

    // 3. A TCC: reserve in TransOutTry, credit in TransInConfirm.
    let gid = dtm.new_gid().await?;
    let r = req.clone();
    dtm.tcc(&gid)
        .run(|tcc| async move {
            tcc.call_branch(
                &r,
                &b.url("TransOutTry"),
                &b.url("TransOutConfirm"),
                &b.url("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                &r,
                &b.url("TransInTry"),
                &b.url("TransInConfirm"),
                &b.url("TransInCancel"),
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    report("tcc", &reader, &gid, b).await?;

    // 4. A two-phase message: prepared, then submitted after the local work.
    let gid = dtm.new_gid().await?;
    let mut msg = dtm
        .msg(&gid)
        .add(b.url("TransOut"), &req)
        .add(b.url("TransIn"), &req);
    msg.prepare(b.url("QueryPrepared")).await?;
    msg.submit().await?;
    report("msg", &reader, &gid, b).await?;

    let (alice, bob) = (b.balance("alice"), b.balance("bob"));
    if alice != INITIAL_BALANCE - 90 || bob != INITIAL_BALANCE + 90 {
        bail!("unexpected balances: alice {alice}, bob {bob}");
    }
    println!("\nall transactions ended as expected: 3 transfers of 30 applied, 1 rolled back");
    Ok(())
}

/// Waits until the transaction ends and prints its outcome and the balances.
async fn report(what: &str, reader: &DtmClient, gid: &str, busi: &Busi) -> anyhow::Result<()> {
    let q = wait_final(reader, gid).await?;
    let t = q.transaction.context("transaction not found")?;
    let branches: Vec<String> = q
        .branches
        .iter()
        .map(|b| format!("{} {} {}", b.branch_id, b.op, b.status))
        .collect();
    println!("{what:<26} {gid}: {}", t.status);
    println!("    branches: {}", branches.join(", "));
    if !t.rollback_reason.is_empty() {
        println!("    rollback reason: {}", t.rollback_reason);
    }
    println!(
        "    balances: alice {}, bob {}",
        busi.balance("alice"),
        busi.balance("bob")
    );
    Ok(())
}

/// DTM's gRPC API has no query: the outcome is read over its HTTP API.
async fn wait_final(reader: &DtmClient, gid: &str) -> anyhow::Result<TransQuery> {
    let outcome = reader.wait_final(gid, Duration::from_secs(30)).await?;
    if !outcome.is_final() {
        bail!("{gid} did not finish in 30 s: {outcome:?}");
    }
    Ok(reader.query(gid).await?)
}
