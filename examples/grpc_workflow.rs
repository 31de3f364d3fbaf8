//! Workflow over gRPC: the transfer of `examples/workflow.rs` with a tonic business service;
//! DTM resumes an unfinished workflow through the service's `workflow.Workflow/Execute`.
//!
//! ```sh
//! scripts/demo.sh grpc_workflow
//! # or, against a server of your own:
//! DTM_GRPC_SERVER=localhost:36790 DTM_SERVER=http://localhost:36789/api/dtmsvr \
//!     cargo run --example grpc_workflow
//! ```
//!
//! The business service (module `busi`, shared with the tests) listens on `GRPC_BUSI_ADDR`
//! (default `127.0.0.1:58081`), the resume service on `WORKFLOW_ADDR` (default
//! `127.0.0.1:58083`). DTM's HTTP API (`DTM_SERVER`) is used to wait for the outcome.

#[path = "../dtmgrpc/examples/busi/mod.rs"]
mod busi;

use std::time::Duration;

use anyhow::Context;
use busi::{Busi, BusiReq, INITIAL_BALANCE};
use dtmcli::model::WorkflowOptions;
use dtmcli::{DtmClient, Outcome};
use dtmgrpc::tonic::transport::{server::TcpIncoming, Server};
use dtmgrpc::{DtmGrpcClient, Workflow, WorkflowGrpc as _, Workflows};

/// Registers the workflow: branch 01 takes the money from alice, branch 02 gives it to bob,
/// each with its compensation. The input is the request's protobuf bytes.
fn register(workflows: &Workflows, busi: &Busi) -> dtmcli::Result<()> {
    // One channel, made at start-up and cloned into each call.
    let channel = busi::channel(busi.addr());
    workflows.register_bytes(
        "grpc_transfer",
        // DTM's first resume call comes one second after the workflow was prepared.
        WorkflowOptions::new().retry_interval(Duration::from_secs(1)),
        move |wf: Workflow, input: Vec<u8>| {
            let channel = channel.clone();
            async move {
                let req: BusiReq = dtmgrpc::prost::Message::decode(input.as_slice())
                    .map_err(|e| dtmcli::Error::failure(format!("bad input: {e}")))?;
                let (c, r) = (channel.clone(), req.clone());
                wf.new_branch()?.on_rollback(move |wf| async move {
                    wf.grpc(r, |q| busi::call(c, "TransOutRevert", q)).await
                })?;
                wf.grpc(req.clone(), |q| busi::call(channel.clone(), "TransOut", q))
                    .await?;

                let (c, r) = (channel.clone(), req.clone());
                wf.new_branch()?.on_rollback(move |wf| async move {
                    wf.grpc(r, |q| busi::call(c, "TransInRevert", q)).await
                })?;
                wf.grpc(req, |q| busi::call(channel, "TransIn", q)).await?;
                Ok(Vec::new())
            }
        },
    )
}

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
    let workflow_addr =
        std::env::var("WORKFLOW_ADDR").unwrap_or_else(|_| "127.0.0.1:58083".to_owned());

    let dtm = DtmGrpcClient::builder(&grpc_server)
        .connect()
        .await
        .with_context(|| format!("connect to DTM at {grpc_server}"))?;
    let reader = DtmClient::new(&http_server)?;
    let busi = Busi::new(dtm.clone());
    let listener = tokio::net::TcpListener::bind(&busi_addr)
        .await
        .with_context(|| format!("bind the business service to {busi_addr}"))?;
    tokio::spawn(busi::serve(listener, busi.clone())?);

    // The workflows and their resume service.
    let workflows = Workflows::new(dtm.clone(), dtmgrpc::workflow_callback(&workflow_addr));
    register(&workflows, &busi)?;
    let listener = tokio::net::TcpListener::bind(&workflow_addr)
        .await
        .with_context(|| format!("bind the resume service to {workflow_addr}"))?;
    let service = dtmgrpc::workflow_server(workflows.clone());
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    println!("DTM server:       {grpc_server} (gRPC), {http_server} (HTTP, read API)");
    println!("business service: {}", busi.addr());
    println!("resume service:   {}", workflows.callback());
    println!("alice and bob start with {INITIAL_BALANCE} each\n");

    let req = BusiReq::new(30, "alice", "bob");
    let input = |script: Option<(&str, &str)>| {
        let mut r = req.clone();
        if let Some((method, results)) = script {
            r = r.script(method, results);
        }
        dtmgrpc::prost::Message::encode_to_vec(&r)
    };

    // 1. Both branches succeed.
    let gid = dtm.new_gid().await?;
    workflows
        .execute_bytes("grpc_transfer", &gid, input(None))
        .await?;
    println!("1. succeeded");
    balances(&busi);

    // 2. TransIn answers Aborted (FAILURE): branch 01 is compensated.
    let gid = dtm.new_gid().await?;
    let err = workflows
        .execute_bytes("grpc_transfer", &gid, input(Some(("TransIn", "FAILURE"))))
        .await
        .expect_err("TransIn fails");
    anyhow::ensure!(err.is_failure(), "expected a FAILURE, got {err}");
    println!("2. rolled back:               {err}");
    balances(&busi);

    // 3. TransIn fails with an error once: DTM resumes the workflow through
    //    workflow.Workflow/Execute, and TransOut is not called again.
    let gid = dtm.new_gid().await?;
    let err = workflows
        .execute_bytes("grpc_transfer", &gid, input(Some(("TransIn", "ERROR"))))
        .await
        .expect_err("TransIn errs once");
    println!("3. left for DTM to resume:    {err}");
    let outcome = reader.wait_final(&gid, Duration::from_secs(30)).await?;
    anyhow::ensure!(
        outcome == Outcome::Succeeded,
        "expected success, got {outcome:?}"
    );
    let calls = busi.methods(&gid);
    println!("   resumed by DTM:            {outcome:?}; business calls {calls:?}");
    anyhow::ensure!(
        calls == ["TransOut", "TransIn", "TransIn"],
        "TransOut ran more than once: {calls:?}"
    );
    balances(&busi);
    Ok(())
}

fn balances(busi: &Busi) {
    println!(
        "   balances: alice {}, bob {}",
        busi.balance("alice"),
        busi.balance("bob")
    );
}
