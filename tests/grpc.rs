//! gRPC against the real DTM server's gRPC port: the Rust twins of the server's gRPC saga,
//! TCC and msg scenarios (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite), with a tonic business service built on
//! this SDK (`dtmgrpc/examples/busi`). Each test checks the final global status (through the
//! HTTP read API: the gRPC API has no query), the branch statuses in stored order and the
//! balances.

mod grpc_support;
mod support;

use std::time::{Duration, Instant};

use dtmcli::{GlobalStatus, Op};
use dtmgrpc::{DtmGrpcClient, Error, Msg, Saga};
use grpc_support::busi::{Answer, BusiReq, INITIAL_BALANCE};
use grpc_support::{busi, dtm_grpc, grpc_addr};
use support::{accounts, bank, client, status_of, wait_status, F, P, S};

/// The content type the server calls gRPC branches with (its raw codec).
const DTM_RAW: &str = "application/grpc+dtm_raw";

async fn new_gid() -> String {
    dtm_grpc().new_gid().await.expect("NewGid")
}

fn req_for(gid: &str) -> BusiReq {
    let (from, to) = accounts(gid);
    BusiReq::new(30, from, to)
}

fn assert_balances(req: &BusiReq, out_delta: i64, in_delta: i64) {
    assert_eq!(
        busi().balance(&req.from),
        INITIAL_BALANCE + out_delta,
        "from"
    );
    assert_eq!(busi().balance(&req.to), INITIAL_BALANCE + in_delta, "to");
}

/// A transfer saga of 30 (TransOut, then TransIn), retried every second.
fn transfer(dtm: &DtmGrpcClient, gid: &str, req: &BusiReq) -> Saga {
    let b = busi();
    dtm.saga(gid)
        .add(b.url("TransOut"), b.url("TransOutRevert"), req)
        .add(b.url("TransIn"), b.url("TransInRevert"), req)
        .retry_interval(std::time::Duration::from_secs(1))
}

fn ids_and_ops(q: &dtmcli::TransQuery) -> Vec<(String, Op)> {
    q.branches
        .iter()
        .map(|b| (b.branch_id.clone(), b.op))
        .collect()
}

fn ids(pairs: &[(&str, Op)]) -> Vec<(String, Op)> {
    pairs.iter().map(|(id, op)| (id.to_string(), *op)).collect()
}

async fn wait_for_calls(gid: &str, method: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while busi().methods(gid).iter().filter(|m| *m == method).count() < n {
        assert!(
            Instant::now() < deadline,
            "{method} was not called {n} times for {gid}: {:?}",
            busi().methods(gid)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn answers(gid: &str, method: &str) -> Vec<Answer> {
    busi()
        .calls(gid)
        .into_iter()
        .filter(|c| c.method == method)
        .map(|c| c.answer)
        .collect()
}

#[tokio::test]
async fn grpc_new_gid() {
    let dtm = dtm_grpc();
    let (a, b) = (dtm.new_gid().await.unwrap(), dtm.new_gid().await.unwrap());
    assert!(!a.is_empty());
    assert_ne!(a, b);
    assert_eq!(dtm.server(), grpc_addr());
}

#[tokio::test]
async fn grpc_saga_normal_with_a_tonic_service_on_the_raw_codec() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        ids_and_ops(&q),
        ids(&[
            ("01", Op::Compensate),
            ("01", Op::Action),
            ("02", Op::Compensate),
            ("02", Op::Action)
        ])
    );
    let t = q.transaction.as_ref().unwrap();
    assert_eq!(
        (t.protocol.as_str(), t.rollback_reason.as_str()),
        ("grpc", "")
    );
    // The stored payload is the protobuf encoding of the request.
    assert_eq!(
        q.branches[1].payload().unwrap(),
        dtmgrpc::prost::Message::encode_to_vec(&req)
    );

    // The server called the tonic service with its raw codec; the handler decoded the payload
    // and read the branch info from the metadata.
    let calls = busi().calls(&gid);
    assert_eq!(busi().methods(&gid), ["TransOut", "TransIn"]);
    for (call, branch_id) in calls.iter().zip(["01", "02"]) {
        assert_eq!(call.metadata["content-type"], DTM_RAW);
        assert_eq!(call.req, req, "the handler decoded the payload");
        assert_eq!(
            (call.info.branch_id.as_str(), call.info.op),
            (branch_id, Op::Action)
        );
        assert_eq!(call.info.dtm, None, "the server sends dtm-dtm empty");
        assert_eq!(call.answer, Answer::Result(dtmgrpc::DtmResult::Success));
    }
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_saga_rollback_with_reason_and_a_compensation_ongoing_once() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid)
        .script("TransIn", "FAILURE")
        .script("TransOutRevert", "ONGOING");
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    wait_for_calls(&gid, "TransOutRevert", 1).await;
    let (status, _) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Aborting));
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, F]);
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransIn scripted to fail"), "{reason}");
    assert_eq!(
        answers(&gid, "TransOutRevert"),
        [
            Answer::Result(dtmgrpc::DtmResult::Ongoing),
            Answer::Result(dtmgrpc::DtmResult::Success)
        ]
    );
    assert_eq!(
        busi().methods(&gid),
        [
            "TransOut",
            "TransIn",
            "TransInRevert",
            "TransOutRevert",
            "TransOutRevert"
        ]
    );
    assert_balances(&req, 0, 0);
}

#[tokio::test]
async fn grpc_saga_concurrent() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    transfer(&dtm, &gid, &req)
        .concurrent()
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        q.transaction.unwrap().custom_data,
        r#"{"orders":{},"concurrent":true}"#
    );
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_saga_concurrent_with_order() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    // TransIn may start only after TransOut succeeded, which takes a retry.
    let req = req_for(&gid).script("TransOut", "ONGOING");
    transfer(&dtm, &gid, &req)
        .concurrent()
        .add_branch_order(1, [0])
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        q.transaction.unwrap().custom_data,
        r#"{"orders":{"1":[0]},"concurrent":true}"#
    );
    assert_eq!(busi().methods(&gid), ["TransOut", "TransOut", "TransIn"]);
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_saga_ongoing_stays_submitted_then_succeeds() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid).script("TransOut", "ONGOING");
    transfer(&dtm, &gid, &req).submit().await.unwrap();
    wait_for_calls(&gid, "TransOut", 1).await;
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Submitted));
    assert_eq!(branches, [P, P, P, P]);
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_saga_wait_result() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    transfer(&dtm, &gid, &req)
        .wait_result(true)
        .submit()
        .await
        .unwrap();
    // Processed inside the call.
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Succeed));
    assert_eq!(branches, [P, S, P, S]);
    assert_balances(&req, -30, 30);

    let gid = new_gid().await;
    let req = req_for(&gid).script("TransIn", "FAILURE");
    let err = transfer(&dtm, &gid, &req)
        .wait_result(true)
        .submit()
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(
        err.to_string().contains("TransIn scripted to fail"),
        "{err}"
    );
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, F]);
    assert_balances(&req, 0, 0);
}

/// Over gRPC DTM answers `Aborted` both for a rollback and for a saga it still retries; with
/// the HTTP API the client reads the stored status and tells them apart, and `outcome` /
/// `wait_final` work on the gRPC client.
#[tokio::test]
async fn grpc_saga_wait_result_ongoing_is_unfinished_and_outcome_follows_it() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid).script("TransIn", "ONGOING");
    let err = transfer(&dtm, &gid, &req)
        .wait_result(true)
        .submit()
        .await
        .unwrap_err();
    support::assert_unfinished_on(&err, &["/TransIn"]);
    assert_eq!(
        dtm.wait_final(&gid, Duration::from_secs(20)).await.unwrap(),
        dtmcli::Outcome::Succeeded
    );
    assert_eq!(dtm.outcome(&gid).await.unwrap(), dtmcli::Outcome::Succeeded);
    assert_eq!(status_of(&gid).await.1, [P, S, P, S]);
    assert_balances(&req, -30, 30);
}

/// Without the HTTP API a gRPC client cannot decide a `wait_result` answer: it refuses the
/// option before DTM sees anything, and says what to set.
#[tokio::test]
async fn grpc_wait_result_without_the_http_api_is_refused_before_any_call() {
    let bare = DtmGrpcClient::connect_lazy(grpc_addr()).unwrap();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let err = transfer(&bare, &gid, &req)
        .wait_result(true)
        .submit()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http_api"), "{err}");
    let err = bare
        .tcc(&gid)
        .wait_result(true)
        .run(|_tcc| async { Ok::<_, Error>(()) })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("http_api"), "{err}");
    assert!(bare.outcome(&gid).await.is_err());
    assert_eq!(status_of(&gid).await.0, None, "nothing reached DTM");
    assert_balances(&req, 0, 0);
    // Without wait_result the same saga goes through.
    transfer(&bare, &gid, &req).submit().await.unwrap();
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_saga_branch_headers_reach_every_call_including_cron_retries() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid).script("TransIn", "ERROR");
    transfer(&dtm, &gid, &req)
        .branch_header("test_header", "test")
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        answers(&gid, "TransIn"),
        [Answer::Error, Answer::Result(dtmgrpc::DtmResult::Success)]
    );
    let calls = busi().calls(&gid);
    assert_eq!(calls.len(), 3, "{:?}", busi().methods(&gid));
    for call in calls {
        assert_eq!(
            call.metadata.get("test_header").map(String::as_str),
            Some("test"),
            "{}",
            call.method
        );
    }
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_saga_empty_url_counts_as_success() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let b = busi();
    dtm.saga(&gid)
        .add(b.url("TransOut"), b.url("TransOutRevert"), &req)
        .add("", b.url("TransInRevert"), &req)
        .retry_interval(std::time::Duration::from_secs(1))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(busi().methods(&gid), ["TransOut"]);
    assert_balances(&req, -30, 0);
}

#[tokio::test]
async fn grpc_saga_mixed_transports_calls_http_steps_over_http() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let http_req = support::busi::TransferReq::new(30, &req.from, &req.to);
    let (g, h) = (busi(), bank());
    dtm.saga(&gid)
        .add(g.url("TransOut"), g.url("TransOutRevert"), &req)
        .add_json(
            h.url("TransIn", ""),
            h.url("TransInCompensate", ""),
            &http_req,
        )
        .retry_interval(std::time::Duration::from_secs(1))
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(busi().methods(&gid), ["TransOut"]);
    assert_eq!(bank().routes(&gid), ["TransIn"]);
    assert_eq!(busi().balance(&req.from), INITIAL_BALANCE - 30);
    assert_eq!(bank().balance(&req.to).await, 10_000 + 30);
}

#[tokio::test]
async fn grpc_saga_malformed_branch_url_is_a_client_error() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    for url in ["127.0.0.1:1", "grpc://127.0.0.1:1/busi.Busi/TransIn"] {
        let err = dtm
            .saga(&gid)
            .add(url, "", &req)
            .submit()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("invalid gRPC branch URL"), "{text}");
        assert!(text.contains(url), "{text}");
    }
    // Nothing reached the server.
    let q = client().query(&gid).await.unwrap();
    assert!(q.transaction.is_none(), "{q:?}");
}

#[tokio::test]
async fn grpc_unreachable_dtm_is_a_clear_error() {
    let addr = format!("127.0.0.1:{}", support::free_port());
    let err = DtmGrpcClient::connect(addr.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to {addr}")),
        "{err}"
    );

    let dtm = DtmGrpcClient::connect_lazy(addr.clone()).unwrap();
    let gid = dtmcli::local_gid();
    let err = dtm.saga(&gid).submit().await.unwrap_err();
    assert!(!err.is_failure() && !err.is_ongoing(), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("/dtmgimp.Dtm/Submit to {addr}")),
        "{err}"
    );
    let Error::Grpc(grpc) = &err else {
        panic!("expected a gRPC error")
    };
    let status = grpc.status().unwrap();
    assert_eq!(status.code(), dtmgrpc::tonic::Code::Unavailable);
}

#[tokio::test]
async fn grpc_submit_of_a_finished_saga_is_a_failure() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let saga = transfer(&dtm, &gid, &req).wait_result(true);
    saga.submit().await.unwrap();
    // The server answers Aborted (FAILURE) for a submit of a finished transaction.
    let again = transfer(&dtm, &gid, &req);
    let err = again.submit().await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(
        err.to_string().contains("current status 'succeed'"),
        "{err}"
    );
    // With wait_result, the same answer is decided from the stored status: it succeeded.
    let again = transfer(&dtm, &gid, &req).wait_result(true);
    again.submit().await.unwrap();
    assert_balances(&req, -30, 30);
}

// ---------------------------------------------------------------------------------------------
// TCC

async fn trans_out(tcc: &dtmgrpc::Tcc, req: &BusiReq) -> dtmgrpc::Result<()> {
    let b = busi();
    tcc.call_branch(
        req,
        &b.url("TransOutTry"),
        &b.url("TransOutConfirm"),
        &b.url("TransOutCancel"),
    )
    .await
    .map(drop)
}

async fn trans_in(tcc: &dtmgrpc::Tcc, req: &BusiReq) -> dtmgrpc::Result<()> {
    let b = busi();
    tcc.call_branch(
        req,
        &b.url("TransInTry"),
        &b.url("TransInConfirm"),
        &b.url("TransInCancel"),
    )
    .await
    .map(drop)
}

#[tokio::test]
async fn grpc_tcc_normal() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    let value = dtm
        .tcc(&gid)
        .retry_interval(std::time::Duration::from_secs(1))
        .run(|tcc| async move {
            trans_out(&tcc, &r).await?;
            trans_in(&tcc, &r).await?;
            Ok::<_, Error>(42)
        })
        .await
        .unwrap();
    assert_eq!(value, 42, "the closure's value is returned");
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        ids_and_ops(&q),
        ids(&[
            ("01", Op::Cancel),
            ("01", Op::Confirm),
            ("02", Op::Cancel),
            ("02", Op::Confirm)
        ])
    );
    // Confirms run in reverse registration order.
    assert_eq!(
        busi().methods(&gid),
        [
            "TransOutTry",
            "TransInTry",
            "TransInConfirm",
            "TransOutConfirm"
        ]
    );
    let calls = busi().calls(&gid);
    // The try came from the client, with the server's address for nesting.
    let try_call = &calls[0];
    assert_eq!(
        (try_call.info.branch_id.as_str(), try_call.info.op),
        ("01", Op::Try)
    );
    assert_eq!(try_call.info.dtm.as_deref(), Some(grpc_addr().as_str()));
    assert_eq!(try_call.req, req);
    // The confirm came from the server, with the registered payload and its raw codec.
    let confirm = &calls[3];
    assert_eq!(
        (confirm.info.branch_id.as_str(), confirm.info.op),
        ("01", Op::Confirm)
    );
    assert_eq!(confirm.metadata["content-type"], DTM_RAW);
    assert_eq!(confirm.req, req);
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_tcc_rollback_cancels_every_branch_including_the_failed_try() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid)
        .script("TransInTry", "FAILURE")
        .script("TransOutCancel", "ONGOING");
    let r = req.clone();
    let err = dtm
        .tcc(&gid)
        .retry_interval(std::time::Duration::from_secs(1))
        .run(|tcc| async move {
            trans_out(&tcc, &r).await?;
            trans_in(&tcc, &r).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(
        err.to_string().contains("TransInTry scripted to fail"),
        "{err}"
    );
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, P, S, P]);
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransInTry scripted to fail"), "{reason}");
    assert_eq!(
        answers(&gid, "TransOutCancel"),
        [
            Answer::Result(dtmgrpc::DtmResult::Ongoing),
            Answer::Result(dtmgrpc::DtmResult::Success)
        ]
    );
    assert_balances(&req, 0, 0);
}

#[tokio::test]
async fn grpc_tcc_nested_branch_registers_below_its_parent() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    let b = busi();
    dtm.tcc(&gid)
        .retry_interval(std::time::Duration::from_secs(1))
        .run(|tcc| async move {
            trans_out(&tcc, &r).await?;
            // The nested branch's own phase 2 has nothing to do: its sub-branch moves the money.
            tcc.call_branch(&r, &b.url("TransInTryNested"), "", "")
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S, P, S]);
    assert_eq!(
        ids_and_ops(&q),
        ids(&[
            ("01", Op::Cancel),
            ("01", Op::Confirm),
            ("02", Op::Cancel),
            ("02", Op::Confirm),
            ("0201", Op::Cancel),
            ("0201", Op::Confirm)
        ])
    );
    let nested = busi()
        .calls(&gid)
        .into_iter()
        .find(|c| c.method == "TransInTry")
        .expect("the nested try");
    assert_eq!(nested.info.branch_id, "0201");
    assert_eq!(nested.info.dtm.as_deref(), Some(grpc_addr().as_str()));
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_tcc_branch_headers_reach_try_and_confirm() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    dtm.tcc(&gid)
        .retry_interval(std::time::Duration::from_secs(1))
        .branch_header("test_header", "tcc")
        .run(|tcc| async move { trans_out(&tcc, &r).await })
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S]);
    let calls = busi().calls(&gid);
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(methods, ["TransOutTry", "TransOutConfirm"]);
    for call in &calls {
        assert_eq!(call.metadata["test_header"], "tcc", "{}", call.method);
    }
    assert_balances(&req, -30, 0);
}

#[tokio::test]
async fn grpc_tcc_invalid_try_url_aborts_the_transaction() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let err = dtm
        .tcc(&gid)
        .retry_interval(std::time::Duration::from_secs(1))
        .run(|tcc| async move {
            tcc.call_branch(&req, "not_exists://abc", "", "").await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert!(q.branches.is_empty());
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("not_exists://abc"), "{reason}");
}

// ---------------------------------------------------------------------------------------------
// Msg

/// Submits until the server's topic map (refreshed every second in tests) knows the topic.
async fn submit_when_topic_is_known(msg: impl Fn() -> Msg) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match msg().submit().await {
            Ok(()) => return,
            Err(e) if e.to_string().contains("topic not found") && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("submit failed: {e}"),
        }
    }
}

#[tokio::test]
async fn grpc_msg_topic_normal() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let b = busi();
    let topic = format!("grpc-transfer-{gid}");
    dtm.subscribe(&topic, &b.url("TransOut"), "out")
        .await
        .unwrap();
    dtm.subscribe(&topic, &b.url("TransIn"), "in")
        .await
        .unwrap();
    let err = dtm
        .subscribe(&topic, &b.url("TransOut"), "again")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("this url exists"), "{err}");

    let msg = || {
        dtm.msg(&gid)
            .add_topic(&topic, &req)
            .retry_interval(std::time::Duration::from_secs(1))
    };
    submit_when_topic_is_known(msg).await;
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [S, S]);
    let branch_ids: Vec<&str> = q.branches.iter().map(|b| b.branch_id.as_str()).collect();
    assert_eq!(branch_ids, ["01-01", "01-02"]);
    assert_eq!(busi().methods(&gid), ["TransOut", "TransIn"]);
    assert_balances(&req, -30, 30);

    dtm.unsubscribe(&topic, &b.url("TransOut")).await.unwrap();
    assert!(dtm.unsubscribe(&topic, &b.url("TransOut")).await.is_err());
    dtm.delete_topic(&topic).await.unwrap();
    assert!(dtm.delete_topic(&topic).await.is_err(), "the topic is gone");
}

/// A prepared message (TransOut, TransIn) that the server queries once it times out, with
/// the query's answers scripted through a branch header.
async fn prepared_msg(query_results: &str) -> (String, BusiReq) {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let b = busi();
    let mut msg = dtm
        .msg(&gid)
        .add(b.url("TransOut"), &req)
        .add(b.url("TransIn"), &req)
        .timeout_to_fail(std::time::Duration::from_secs(1))
        .retry_interval(std::time::Duration::from_secs(1))
        .branch_header("result-queryprepared", query_results);
    msg.prepare(b.url("QueryPrepared")).await.unwrap();
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Prepared));
    assert_eq!(branches, [P, P]);
    (gid, req)
}

#[tokio::test]
async fn grpc_msg_prepared_then_query_prepared_says_committed() {
    let (gid, req) = prepared_msg("ONGOING").await;
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [S, S]);
    assert_eq!(
        busi().methods(&gid),
        ["QueryPrepared", "QueryPrepared", "TransOut", "TransIn"]
    );
    let query = &busi().calls(&gid)[0];
    assert_eq!(
        (query.info.branch_id.as_str(), query.info.op),
        ("00", Op::Msg)
    );
    assert_eq!(query.answer, Answer::Result(dtmgrpc::DtmResult::Ongoing));
    assert_balances(&req, -30, 30);
}

#[tokio::test]
async fn grpc_msg_prepared_then_query_prepared_says_rolled_back() {
    let (gid, req) = prepared_msg("FAILURE").await;
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [P, P]);
    assert_eq!(busi().methods(&gid), ["QueryPrepared"]);
    assert_balances(&req, 0, 0);
}

#[tokio::test]
async fn grpc_msg_abort_drops_a_prepared_message() {
    let dtm = dtm_grpc();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let mut msg = dtm.msg(&gid).add(busi().url("TransIn"), &req);
    msg.prepare(busi().url("QueryPrepared")).await.unwrap();
    msg.abort().await.unwrap();
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Failed));
    assert_eq!(branches, [P]);
    // Submitting a dropped message is a FAILURE from the server.
    let again = dtm.msg(&gid).add(busi().url("TransIn"), &req);
    assert!(again.submit().await.unwrap_err().is_failure());
    assert!(busi().methods(&gid).is_empty());
}

/// Gids DTM would change (`;`, line breaks) or could not pass to gRPC branches in metadata
/// (anything but printable ASCII), and branch headers it could not send, are refused before
/// any call; the builders' `Debug` hides header values.
#[tokio::test]
async fn grpc_unusable_gids_and_headers_are_refused_before_any_call() {
    let dtm = dtm_grpc();
    let uniq = &dtmcli::local_gid()[..10];
    for gid in [
        format!("a;{uniq}"),
        format!("café-{uniq}"),
        format!("a\r{uniq}"),
    ] {
        let req = req_for(&gid);
        let err = transfer(&dtm, &gid, &req).submit().await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{gid:?}: {err:?}");
        let err = dtm
            .tcc(&gid)
            .run(|_tcc| async { Ok::<_, Error>(()) })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{gid:?}: {err:?}");
        let err = dtm.msg(&gid).submit().await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{gid:?}: {err:?}");
        assert_eq!(client().query(&gid).await.unwrap().transaction, None);
    }
    let gid = new_gid().await;
    let req = req_for(&gid);
    let saga = transfer(&dtm, &gid, &req).branch_header("authorization", "Bearer s3cr3t\n");
    let tcc = dtm
        .tcc(&gid)
        .branch_header("authorization", "Bearer s3cr3t");
    let msg = dtm
        .msg(&gid)
        .branch_header("authorization", "Bearer s3cr3t");
    let xa = dtm.xa(&gid).branch_header("authorization", "Bearer s3cr3t");
    let debug = format!("{saga:?} {tcc:?} {msg:?} {xa:?}");
    assert!(
        debug.contains("authorization") && !debug.contains("s3cr3t"),
        "{debug}"
    );
    let err = saga.submit().await.unwrap_err();
    assert!(!format!("{err} {err:?}").contains("s3cr3t"), "{err:?}");
    assert_eq!(client().query(&gid).await.unwrap().transaction, None);
}

#[tokio::test]
async fn grpc_ping() {
    dtm_grpc().ping().await.unwrap();
    // Port 9 on loopback: nothing listens there.
    let down = DtmGrpcClient::connect_lazy("127.0.0.1:9").unwrap();
    assert!(down.ping().await.is_err());
}

/// A timeout set on the builder ends calls on a channel the caller supplied (which has none
/// of its own here).
#[tokio::test]
async fn grpc_explicit_timeout_applies_to_a_supplied_channel() {
    let addr = support::silent_server();
    let channel = dtmgrpc::tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let dtm = DtmGrpcClient::builder(addr.to_string())
        .channel(channel)
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = support::within_20s(dtm.new_gid()).await.unwrap_err();
    assert!(err.grpc_status().is_some(), "{err:?}");
}
