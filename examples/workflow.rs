//! Workflow: an inter-bank transfer written as ordinary sequential code, whose branch results
//! DTM records; a run left unfinished is resumed by DTM through the service's resume
//! endpoint, replaying what was recorded.
//!
//! ```sh
//! scripts/demo.sh workflow
//! # or, against a server of your own:
//! DTM_SERVER=http://localhost:36789/api/dtmsvr cargo run --example workflow
//! ```
//!
//! The business service (module `busi`) listens on `BUSI_ADDR` (default `127.0.0.1:8081`),
//! the resume endpoint on `WORKFLOW_ADDR` (default `127.0.0.1:8082`).

mod busi;

use std::time::Duration;

use anyhow::Context;
use busi::{Bank, TransferReq, INITIAL_BALANCE};
use dtmcli::model::WorkflowOptions;
use dtmcli::{DtmClient, Outcome, Workflow, Workflows};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Sqlite;

/// The workflow's input: the transfer, and a fault script for TransIn (`""`, `FAILURE`,
/// `ERROR`) to show a rollback and a resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Transfer {
    req: TransferReq,
    trans_in_script: String,
}

/// Registers the workflows. A service does this at start-up, in every process DTM may call
/// back: the resume endpoint finds the function by name.
fn register(workflows: &Workflows, bank: &Bank<Sqlite>) -> dtmcli::Result<()> {
    let bank = bank.clone();
    // One HTTP client for every call (it pools connections), made at start-up.
    let http = reqwest::Client::new();
    workflows.register_with(
        "transfer",
        // DTM first calls the resume endpoint one second after the workflow was prepared if
        // it has not ended by then (these runs take milliseconds; choose it well above the
        // longest run of yours).
        WorkflowOptions::new().retry_interval(Duration::from_secs(1)),
        move |wf: Workflow, t: Transfer| {
            let (bank, http) = (bank.clone(), http.clone());
            async move {
                let req = &t.req;

                // Branch 01: money leaves alice. Its compensation is registered first: DTM
                // runs it if the workflow fails later on.
                let (b, h, r) = (bank.clone(), http.clone(), req.clone());
                wf.new_branch()?.on_rollback(move |wf| async move {
                    let url = b.url("TransOutCompensate", "");
                    wf.send(h.post(url).json(&r)).await?;
                    Ok(())
                })?;
                wf.send(http.post(bank.url("TransOut", "")).json(req))
                    .await?;

                // Branch 02: money arrives at bob. A FAILURE here rolls branch 01 back; an
                // error leaves the workflow for DTM to resume, without calling TransOut again.
                let (b, h, r) = (bank.clone(), http.clone(), req.clone());
                wf.new_branch()?.on_rollback(move |wf| async move {
                    let url = b.url("TransInCompensate", "");
                    wf.send(h.post(url).json(&r)).await?;
                    Ok(())
                })?;
                wf.send(http.post(bank.url("TransIn", &t.trans_in_script)).json(req))
                    .await?;

                // Branch 03, a recorded local step: its result is the same on every replay.
                wf.new_branch()?;
                let receipt: String = wf
                    .local(async |info| Ok(format!("receipt {}-{}", info.gid, info.branch_id)))
                    .await?;
                Ok(receipt)
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
    let server = std::env::var("DTM_SERVER")
        .unwrap_or_else(|_| "http://localhost:36789/api/dtmsvr".to_owned());
    let busi_addr = std::env::var("BUSI_ADDR").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());
    let workflow_addr =
        std::env::var("WORKFLOW_ADDR").unwrap_or_else(|_| "127.0.0.1:8082".to_owned());
    let dtm = DtmClient::new(&server)?;

    // The business service, on SQLite behind the barrier.
    let db_file = std::env::temp_dir().join(format!("dtm-workflow-{}.db", dtmcli::local_gid()));
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&db_file)
                .create_if_missing(true),
        )
        .await?;
    let bank: Bank<Sqlite> = Bank::connect(pool, dtm.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&busi_addr)
        .await
        .with_context(|| format!("bind the business service to {busi_addr}"))?;
    tokio::spawn(busi::serve(listener, bank.clone())?);

    // The workflows and their resume endpoint.
    let workflows = Workflows::new(
        dtm.clone(),
        format!("http://{workflow_addr}/api/workflow/resume"),
    );
    register(&workflows, &bank)?;
    let app = axum::Router::new().route("/api/workflow/resume", workflows.resume_route());
    let listener = tokio::net::TcpListener::bind(&workflow_addr)
        .await
        .with_context(|| format!("bind the resume endpoint to {workflow_addr}"))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("DTM server:       {server}");
    println!("business service: {}", bank.base_url());
    println!("resume endpoint:  {}", workflows.callback());
    println!("alice and bob start with {INITIAL_BALANCE} each\n");

    let req = TransferReq::new(30, "alice", "bob");
    let transfer = |script: &str| Transfer {
        req: req.clone(),
        trans_in_script: script.to_owned(),
    };

    // 1. Both branches succeed; the workflow returns its result.
    let gid = dtm.new_gid().await?;
    let receipt: String = workflows.execute("transfer", &gid, &transfer("")).await?;
    println!("1. succeeded:                 {receipt}");
    balances(&bank).await;

    // 2. TransIn answers FAILURE: branch 01 is compensated, the workflow fails.
    let gid = dtm.new_gid().await?;
    let err = workflows
        .execute::<_, String>("transfer", &gid, &transfer("FAILURE"))
        .await
        .expect_err("TransIn fails");
    anyhow::ensure!(err.is_failure(), "expected a FAILURE, got {err}");
    println!("2. rolled back:               {err}");
    balances(&bank).await;

    // 3. TransIn answers 500 once: the workflow stays prepared, and DTM resumes it through the
    //    resume endpoint, which replays branch 01 (TransOut is not called again).
    let gid = dtm.new_gid().await?;
    let err = workflows
        .execute::<_, String>("transfer", &gid, &transfer("ERROR"))
        .await
        .expect_err("TransIn errs once");
    println!("3. left for DTM to resume:    {err}");
    let outcome = dtm.wait_final(&gid, Duration::from_secs(30)).await?;
    anyhow::ensure!(
        outcome == Outcome::Succeeded,
        "expected success, got {outcome:?}"
    );
    let calls: Vec<String> = bank.routes(&gid);
    println!("   resumed by DTM:            {outcome:?}; business calls {calls:?}");
    anyhow::ensure!(
        calls == ["TransOut", "TransIn", "TransIn"],
        "TransOut ran more than once: {calls:?}"
    );
    // Executing a finished workflow returns its stored result without running anything.
    let receipt: String = workflows
        .execute("transfer", &gid, &transfer("ERROR"))
        .await?;
    println!("   stored result:             {receipt}");
    balances(&bank).await;
    Ok(())
}

async fn balances(bank: &Bank<Sqlite>) {
    println!(
        "   balances: alice {}, bob {}",
        bank.balance("alice").await,
        bank.balance("bob").await
    );
}
