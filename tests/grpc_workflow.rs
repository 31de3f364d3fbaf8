//! Workflow over gRPC against the real DTM server: the twins of the server's gRPC workflow
//! scenarios (simple, rollback, mixed HTTP and gRPC, error then resume). The workflows are
//! registered once in a registry whose `workflow.Workflow/Execute` service DTM calls to
//! resume them.

mod grpc_support;
mod support;

use std::sync::OnceLock;

use dtmcli::{BranchStatus, GlobalStatus, Op};
use dtmgrpc::{tonic, DtmGrpcClient, Workflow, WorkflowGrpc as _, Workflows};
use grpc_support::busi::{Answer, BusiReq, INITIAL_BALANCE};
use grpc_support::{busi, grpc_addr};
use support::busi::Ledger;
use support::{accounts, bank, client, wait_status, S};

/// The channel to the gRPC business service, made once on the registry's runtime (where the
/// workflows run), which outlives every test.
static BUSI_CHANNEL: OnceLock<tonic::transport::Channel> = OnceLock::new();

/// The recorded call of `method` with `req`.
async fn grpc(wf: &Workflow, method: &'static str, req: &BusiReq) -> dtmgrpc::Result<()> {
    let channel = BUSI_CHANNEL.get().expect("the registry made it").clone();
    wf.grpc(req.clone(), |r| busi::call(channel, method, r))
        .await
}

fn revert(
    method: &'static str,
    req: &BusiReq,
) -> impl FnOnce(
    Workflow,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = dtmgrpc::Result<()>> + Send>>
       + Send
       + 'static {
    let req = req.clone();
    move |wf: Workflow| Box::pin(async move { grpc(&wf, method, &req).await })
}

fn register_all(w: &Workflows) {
    w.register("grpc_saga", |wf: Workflow, req: BusiReqJson| async move {
        let req = req.0;
        wf.new_branch()?
            .on_rollback(revert("TransOutRevert", &req))?;
        grpc(&wf, "TransOut", &req).await?;
        wf.new_branch()?
            .on_rollback(revert("TransInRevert", &req))?;
        grpc(&wf, "TransIn", &req).await?;
        Ok(())
    })
    .unwrap();

    // A typed result, recorded as JSON by a local step.
    w.register("grpc_result", |wf: Workflow, req: BusiReqJson| async move {
        wf.new_branch()?;
        grpc(&wf, "TransOut", &req.0).await?;
        Ok(format!("moved {} from {}", req.0.amount, req.0.from))
    })
    .unwrap();

    // gRPC, a local XA transaction on PostgreSQL, then HTTP, over one gRPC workflow.
    w.register("mixed", |wf: Workflow, req: BusiReqJson| async move {
        let req = req.0;
        wf.new_branch()?
            .on_rollback(revert("TransOutRevert", &req))?;
        grpc(&wf, "TransOut", &req).await?;
        wf.new_branch()?;
        let (pg, to, w2) = (support::postgres_bank(), req.to.clone(), wf.clone());
        let barrier = pg.barrier().clone();
        pg.run(async move {
            barrier
                .workflow_xa(&w2, async |conn| {
                    <sqlx::Postgres as Ledger>::adjust(conn, &to, 30, false).await?;
                    Ok(())
                })
                .await
        })
        .await?;
        wf.new_branch()?;
        let transfer = support::busi::TransferReq::new(req.amount, &req.from, &req.to);
        let script = req.results.get("HttpTransIn").cloned().unwrap_or_default();
        wf.send(
            reqwest::Client::new()
                .post(bank().url("TransIn", &script))
                .json(&transfer),
        )
        .await?;
        Ok(())
    })
    .unwrap();
}

/// The input of the test workflows: the prost request, as JSON.
#[derive(serde::Serialize, serde::Deserialize)]
struct BusiReqJson(#[serde(with = "req_json")] BusiReq);

mod req_json {
    use super::BusiReq;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashMap;

    #[derive(Serialize, Deserialize)]
    struct Plain {
        amount: i64,
        from: String,
        to: String,
        results: HashMap<String, String>,
    }

    pub(super) fn serialize<S: Serializer>(r: &BusiReq, s: S) -> Result<S::Ok, S::Error> {
        Plain {
            amount: r.amount,
            from: r.from.clone(),
            to: r.to.clone(),
            results: r.results.clone(),
        }
        .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BusiReq, D::Error> {
        let p = Plain::deserialize(d)?;
        let mut r = BusiReq::new(p.amount, p.from, p.to);
        r.results = p.results;
        Ok(r)
    }
}

/// The registry of this test binary, served by its own tonic server on its own runtime.
fn workflows() -> &'static Workflows {
    &registry().0
}

/// Executes `name` on the registry's runtime, where its client's connections live (each test
/// has a runtime of its own).
async fn execute<R: serde::de::DeserializeOwned + Send + 'static>(
    name: &'static str,
    gid: &str,
    req: &BusiReq,
) -> dtmgrpc::Result<R> {
    let (gid, input) = (gid.to_owned(), BusiReqJson(req.clone()));
    registry()
        .1
        .spawn(async move { workflows().execute(name, &gid, &input).await })
        .await
        .expect("the execution task")
}

fn registry() -> &'static (Workflows, tokio::runtime::Handle) {
    static W: OnceLock<(Workflows, tokio::runtime::Handle)> = OnceLock::new();
    W.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let dtm = grpc_addr();
        let api = support::dtm().api.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("workflow service runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap().to_string();
                let client = DtmGrpcClient::builder(dtm).http_api(api).build().unwrap();
                let _ = BUSI_CHANNEL.set(busi::channel(busi().addr()));
                let w = Workflows::new(client, dtmgrpc::workflow_callback(&addr));
                register_all(&w);
                tx.send((w.clone(), tokio::runtime::Handle::current()))
                    .unwrap();
                tonic::transport::Server::builder()
                    .add_service(dtmgrpc::workflow_server(w))
                    .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                    .await
                    .unwrap();
            });
        });
        rx.recv().expect("workflow service started")
    })
}

async fn new_req(script: Option<(&str, &str)>) -> (String, BusiReq) {
    let gid = client().new_gid().await.unwrap();
    let (from, to) = accounts(&gid);
    let mut req = BusiReq::new(30, from, to);
    if let Some((method, results)) = script {
        req = req.script(method, results);
    }
    (gid, req)
}

fn assert_balances(req: &BusiReq, out: i64, into: i64) {
    assert_eq!(busi().balance(&req.from), INITIAL_BALANCE + out, "from");
    assert_eq!(busi().balance(&req.to), INITIAL_BALANCE + into, "to");
}

/// The gRPC calls `gid` received: method, op, and whether it was answered OK.
fn calls(gid: &str) -> Vec<(String, Op, bool)> {
    busi()
        .calls(gid)
        .into_iter()
        .map(|c| {
            let ok = c.answer == Answer::Result(dtmcli::DtmResult::Success);
            assert_eq!(c.info.trans_type, dtmcli::TransType::Workflow);
            (c.method, c.info.op, ok)
        })
        .collect()
}

fn call(method: &str, op: Op, ok: bool) -> (String, Op, bool) {
    (method.into(), op, ok)
}

async fn rows(gid: &str) -> Vec<(String, Op, BranchStatus)> {
    let q = client().query(gid).await.unwrap();
    let mut rows: Vec<_> = q
        .branches
        .iter()
        .map(|b| (b.branch_id.clone(), b.op, b.status))
        .collect();
    rows.sort_by(|a, b| (&a.0, a.1.as_str()).cmp(&(&b.0, b.1.as_str())));
    rows
}

#[tokio::test]
async fn grpc_workflow_simple() {
    let (gid, req) = new_req(None).await;
    let q_before = client().query(&gid).await.unwrap();
    assert!(q_before.transaction.is_none());
    let () = execute::<()>("grpc_saga", &gid, &req).await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.transaction.unwrap().protocol, "grpc");
    assert_eq!(
        rows(&gid).await,
        [
            ("01".to_owned(), Op::Action, S),
            ("02".to_owned(), Op::Action, S)
        ]
    );
    assert_eq!(
        calls(&gid),
        [
            call("TransOut", Op::Action, true),
            call("TransIn", Op::Action, true)
        ]
    );
    assert_balances(&req, -30, 30);
    // Executing it again runs nothing (DTM's gRPC API returns no result: `()` from nothing).
    let () = execute::<()>("grpc_saga", &gid, &req).await.unwrap();
    assert_eq!(calls(&gid).len(), 2);
}

#[tokio::test]
async fn grpc_workflow_rollback_restores_balances() {
    let (gid, req) = new_req(Some(("TransIn", "FAILURE"))).await;
    let err = execute::<()>("grpc_saga", &gid, &req).await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(
        err.to_string().contains("TransIn scripted to fail"),
        "{err}"
    );
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert!(q
        .transaction
        .unwrap()
        .rollback_reason
        .contains("TransIn scripted to fail"));
    assert_eq!(
        calls(&gid),
        [
            call("TransOut", Op::Action, true),
            call("TransIn", Op::Action, false),
            call("TransOutRevert", Op::Rollback, true),
        ]
    );
    assert_eq!(
        rows(&gid).await,
        [
            ("01".to_owned(), Op::Action, S),
            ("01".to_owned(), Op::Rollback, S),
            ("02".to_owned(), Op::Action, BranchStatus::Failed)
        ]
    );
    assert_balances(&req, 0, 0);
}

/// The first gRPC call fails with an error: the workflow stays prepared; DTM calls
/// `workflow.Workflow/Execute`, and it succeeds.
#[tokio::test]
async fn grpc_workflow_error_then_resumed_by_dtm() {
    let (gid, req) = new_req(Some(("TransOut", "ERROR"))).await;
    let err = execute::<()>("grpc_saga", &gid, &req).await.unwrap_err();
    assert!(!err.is_failure() && err.grpc_status().is_some(), "{err:?}");
    assert_eq!(
        client()
            .query(&gid)
            .await
            .unwrap()
            .transaction
            .unwrap()
            .status,
        GlobalStatus::Prepared
    );
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(
        calls(&gid),
        [
            call("TransOut", Op::Action, false),
            call("TransOut", Op::Action, true),
            call("TransIn", Op::Action, true),
        ]
    );
    assert_balances(&req, -30, 30);
}

/// One gRPC workflow with a gRPC branch, a local XA branch on PostgreSQL and an HTTP branch;
/// the HTTP branch fails once, and the resume neither calls the recorded gRPC branch nor runs
/// the XA business again, then commits the prepared XA transaction.
#[tokio::test]
async fn grpc_workflow_mixed_grpc_xa_and_http() {
    let (gid, req) = new_req(Some(("HttpTransIn", "ERROR"))).await;
    let err = execute::<()>("mixed", &gid, &req).await.unwrap_err();
    assert!(
        matches!(err, dtmcli::Error::Status { status: 500, .. }),
        "{err:?}"
    );
    // The XA transaction is prepared, not committed, while the workflow waits.
    support::assert_balances(support::postgres_bank(), (&req.to, 0), (&req.from, 0)).await;
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(calls(&gid), [call("TransOut", Op::Action, true)]);
    support::assert_balances(support::postgres_bank(), (&req.to, 30), (&req.from, 0)).await;
    assert_eq!(
        rows(&gid).await,
        [
            ("01".to_owned(), Op::Action, S),
            ("02".to_owned(), Op::Action, S),
            ("02".to_owned(), Op::Business, S),
            ("02".to_owned(), Op::Commit, S),
            ("03".to_owned(), Op::Action, S),
        ]
    );
    assert_eq!(bank().routes(&gid), ["TransIn", "TransIn"]);
    assert_eq!(busi().balance(&req.from), INITIAL_BALANCE - 30);
    support::assert_balances(bank(), (&req.from, 0), (&req.to, 30)).await;
}

/// DTM's gRPC API does not return a finished workflow's result; the client's HTTP API does,
/// so a second execute returns the stored result without running.
#[tokio::test]
async fn grpc_workflow_second_execute_returns_the_stored_result() {
    let (gid, req) = new_req(None).await;
    let first: String = execute("grpc_result", &gid, &req).await.unwrap();
    assert_eq!(first, format!("moved 30 from {}", req.from));
    let second: String = execute("grpc_result", &gid, &req).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(calls(&gid), [call("TransOut", Op::Action, true)]);
}
