//! A workflow whose process is killed (SIGKILL) after its first branch was recorded is
//! finished by DTM through a fresh process: the first branch's business runs exactly once.
//! Over HTTP (axum resume route, HTTP branches) and over gRPC (`workflow.Workflow/Execute`,
//! gRPC branches).
//!
//! This binary is its own child process (no test harness): run without arguments it is the
//! test, which starts the real DTM and the business service, then runs itself as
//! - the *worker*: registers the workflows, serves the resume endpoint, executes the workflow
//!   and hangs before its second branch (killed there);
//! - the *server*: a fresh process that only registers the workflows and serves the resume
//!   endpoint on the same address, as a restarted service would.

mod grpc_support;
mod support;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use dtmcli::{BranchStatus, DtmClient, GlobalStatus, Op, Workflow, Workflows};
use dtmgrpc::tonic;
use grpc_support::busi::BusiReq;
use serde::{Deserialize, Serialize};
use support::busi::TransferReq;

const ROLE: &str = "WORKFLOW_CRASH_ROLE";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Setup {
    /// `http` or `grpc`.
    transport: String,
    dtm: String,
    dtm_grpc: String,
    bank: String,
    busi_grpc: String,
    resume_port: u16,
    gid: String,
    req: TransferReq,
}

fn register(w: &Workflows, bank: &str, hang: bool) {
    let bank = bank.to_owned();
    w.register("crash_transfer", move |wf: Workflow, req: TransferReq| {
        let bank = bank.clone();
        async move {
            let http = reqwest::Client::new();
            wf.new_branch()?;
            wf.send(http.post(format!("{bank}/TransOut")).json(&req))
                .await?;
            if hang {
                // Killed here, after branch 01 was recorded.
                eprintln!("worker: branch 01 recorded, hanging");
                std::future::pending::<()>().await;
            }
            wf.new_branch()?;
            wf.send(http.post(format!("{bank}/TransIn")).json(&req))
                .await?;
            Ok(())
        }
    })
    .expect("register");
}

/// The gRPC twin of [`register`]: the branches are gRPC calls to the business service.
fn register_grpc(w: &dtmgrpc::Workflows, busi: &str, hang: bool) {
    use dtmgrpc::WorkflowGrpc as _;
    // One channel for every call, made at start-up on the process's runtime.
    let channel = grpc_support::busi::channel(busi);
    w.register(
        "crash_transfer",
        move |wf: dtmgrpc::Workflow, req: TransferReq| {
            let channel = channel.clone();
            async move {
                let req = BusiReq::new(req.amount, req.from, req.to);
                wf.new_branch()?;
                wf.grpc(req.clone(), |r| {
                    grpc_support::busi::call(channel.clone(), "TransOut", r)
                })
                .await?;
                if hang {
                    eprintln!("worker: branch 01 recorded, hanging");
                    std::future::pending::<()>().await;
                }
                wf.new_branch()?;
                wf.grpc(req, |r| grpc_support::busi::call(channel, "TransIn", r))
                    .await?;
                Ok(())
            }
        },
    )
    .expect("register");
}

/// The gRPC twin of [`child`].
async fn grpc_child(role: &str, setup: Setup) {
    let client = dtmgrpc::DtmGrpcClient::builder(&setup.dtm_grpc)
        .build()
        .expect("DTM address");
    let addr = format!("127.0.0.1:{}", setup.resume_port);
    let w = dtmgrpc::Workflows::new(client, dtmgrpc::workflow_callback(&addr));
    register_grpc(&w, &setup.busi_grpc, role == "worker");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind the resume service");
    let service = dtmgrpc::workflow_server(w.clone());
    let serve = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    if role == "worker" {
        let out: dtmcli::Result<()> = w.execute("crash_transfer", &setup.gid, &setup.req).await;
        panic!("the worker should have been killed, but its workflow ended: {out:?}");
    }
    serve.await.expect("serve").expect("serve");
}

/// The worker and server roles: the resume endpoint, and for the worker the execution.
async fn child(role: &str, setup: Setup) {
    if setup.transport == "grpc" {
        return grpc_child(role, setup).await;
    }
    let client = DtmClient::new(&setup.dtm).expect("DTM URL");
    let addr = format!("127.0.0.1:{}", setup.resume_port);
    let w = Workflows::new(client, format!("http://{addr}/workflow/resume"));
    register(&w, &setup.bank, role == "worker");
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("bind the resume endpoint");
    let app = axum::Router::new().route("/workflow/resume", w.resume_route());
    let serve = tokio::spawn(async move { axum::serve(listener, app).await });
    if role == "worker" {
        let out: dtmcli::Result<()> = w.execute("crash_transfer", &setup.gid, &setup.req).await;
        panic!("the worker should have been killed, but its workflow ended: {out:?}");
    }
    serve.await.expect("serve").expect("serve");
}

fn spawn(role: &str, setup: &Setup) -> Child {
    Command::new(std::env::current_exe().expect("this binary"))
        .env(ROLE, role)
        .env(
            "WORKFLOW_CRASH_SETUP",
            serde_json::to_string(setup).unwrap(),
        )
        .spawn()
        .expect("spawn a child process")
}

/// Waits until `check` holds, up to 30 s.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The business calls `gid` received, from the HTTP bank or the gRPC service.
fn routes(transport: &str, gid: &str) -> Vec<String> {
    if transport == "grpc" {
        grpc_support::busi().methods(gid)
    } else {
        support::bank().routes(gid)
    }
}

async fn assert_balances(transport: &str, req: &TransferReq, out: i64, into: i64) {
    if transport == "grpc" {
        let busi = grpc_support::busi();
        let initial = grpc_support::busi::INITIAL_BALANCE;
        assert_eq!(
            (busi.balance(&req.from), busi.balance(&req.to)),
            (initial + out, initial + into)
        );
    } else {
        support::assert_balances(support::bank(), (&req.from, out), (&req.to, into)).await;
    }
}

async fn crash_and_resume(transport: &str) {
    let dtm = support::client();
    let bank = support::bank();
    let gid = support::new_gid().await;
    let (from, to) = support::accounts(&gid);
    let setup = Setup {
        transport: transport.to_owned(),
        dtm: support::dtm().api.clone(),
        dtm_grpc: grpc_support::grpc_addr(),
        bank: bank.base_url().to_owned(),
        busi_grpc: grpc_support::busi().addr().to_owned(),
        resume_port: support::free_port(),
        gid: gid.clone(),
        req: TransferReq::new(30, from, to),
    };

    let mut worker = spawn("worker", &setup);
    until("branch 01 to be recorded", async || {
        let q = dtm.query(&gid).await.unwrap();
        q.branches
            .iter()
            .any(|b| b.branch_id == "01" && b.op == Op::Action && b.status == BranchStatus::Succeed)
    })
    .await;
    worker.kill().expect("SIGKILL the worker");
    let status = worker.wait().expect("reap the worker");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{status}"
    );
    let q = dtm.query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Prepared);
    assert_eq!(routes(transport, &gid), ["TransOut"]);
    assert_balances(transport, &setup.req, -30, 0).await;
    eprintln!("worker killed after branch 01; starting a fresh process");

    let mut server = spawn("server", &setup);
    // DTM's cron calls the resume endpoint (wait_status nudges it).
    let q = support::wait_status(&gid, GlobalStatus::Succeed).await;
    server.kill().expect("stop the server");
    let _ = server.wait();
    let mut rows: Vec<(String, Op, BranchStatus)> = q
        .branches
        .iter()
        .map(|b| (b.branch_id.clone(), b.op, b.status))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rows,
        [
            ("01".to_owned(), Op::Action, BranchStatus::Succeed),
            ("02".to_owned(), Op::Action, BranchStatus::Succeed)
        ]
    );
    assert_eq!(
        routes(transport, &gid),
        ["TransOut", "TransIn"],
        "branch 01's business ran exactly once"
    );
    assert_balances(transport, &setup.req, -30, 30).await;
    println!(
        "workflow_crash ({transport}): SIGKILL after branch 01 was recorded, finished through a \
         fresh process; branch 01's business ran once: ok"
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match std::env::var(ROLE) {
        Ok(role) => {
            let setup: Setup = serde_json::from_str(
                &std::env::var("WORKFLOW_CRASH_SETUP").expect("the setup of a child"),
            )
            .expect("setup JSON");
            rt.block_on(child(&role, setup));
        }
        Err(_) => rt.block_on(async {
            crash_and_resume("http").await;
            crash_and_resume("grpc").await;
        }),
    }
}
