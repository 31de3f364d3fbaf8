//! Two-phase messages and topics against the real DTM server: the Rust twins of the server's
//! msg scenarios (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite).

mod support;

use std::time::{Duration, Instant};

use dtmcli::{GlobalStatus, Msg, Op};
use support::busi::TransferReq;
use support::{accounts, bank, client, new_gid, status_of, wait_status, P, S};

const SEC: Duration = Duration::from_secs(1);

fn req_for(gid: &str) -> TransferReq {
    let (from, to) = accounts(gid);
    TransferReq::new(30, from, to)
}

/// A message moving 30 in through TransIn, retried every second.
async fn msg_in(in_result: &str) -> (Msg, TransferReq) {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let msg = client()
        .msg(&gid)
        .add(bank().url("TransIn", in_result), &req)
        .retry_interval(SEC);
    (msg, req)
}

async fn assert_balances(req: &TransferReq, out_delta: i64, in_delta: i64) {
    support::assert_balances(bank(), (&req.from, out_delta), (&req.to, in_delta)).await;
}

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
async fn msg_topic_normal() {
    let dtm = client();
    let gid = new_gid().await;
    let req = req_for(&gid);
    let topic = format!("transfer-{gid}");
    let b = bank();
    dtm.subscribe(&topic, &b.url("TransOut", ""), "out")
        .await
        .unwrap();
    dtm.subscribe(&topic, &b.url("TransIn", "ONGOING"), "in")
        .await
        .unwrap();
    let err = dtm
        .subscribe(&topic, &b.url("TransOut", ""), "again")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("this url exists"), "{err}");

    let msg = || dtm.msg(&gid).add_topic(&topic, &req).retry_interval(SEC);
    submit_when_topic_is_known(msg).await;
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    let ids: Vec<&str> = q.branches.iter().map(|b| b.branch_id.as_str()).collect();
    assert_eq!(ids, ["01-01", "01-02"]);
    assert!(q.branches.iter().all(|b| b.op == Op::Action));
    assert_eq!(q.branch_statuses(), [S, S]);
    assert_balances(&req, -30, 30).await;

    dtm.unsubscribe(&topic, &b.url("TransOut", ""))
        .await
        .unwrap();
    let err = dtm
        .unsubscribe(&topic, &b.url("TransOut", ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no such an url"), "{err}");
    dtm.delete_topic(&topic).await.unwrap();
    assert!(dtm.delete_topic(&topic).await.is_err(), "the topic is gone");
}

#[tokio::test]
async fn msg_unknown_topic_is_refused() {
    let gid = new_gid().await;
    let err = client()
        .msg(&gid)
        .add_topic("no-such-topic", &req_for(&gid))
        .submit()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("topic not found"), "{err}");
    assert_eq!(status_of(&gid).await.0, None, "nothing was stored");
}

#[tokio::test]
async fn msg_prepared_is_queried_and_submitted_when_the_query_succeeds() {
    let (msg, req) = msg_in("ONGOING").await;
    let mut msg = msg.timeout_to_fail(SEC);
    msg.prepare(bank().url("QueryPrepared", "ONGOING"))
        .await
        .unwrap();
    assert_eq!(
        status_of(msg.gid()).await,
        (Some(GlobalStatus::Prepared), vec![P])
    );
    // No submit: the server asks QueryPrepared after the timeout (ONGOING first, then
    // SUCCESS), submits the message and retries TransIn until it succeeds.
    let q = wait_status(msg.gid(), GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [S]);
    let calls = bank().calls(msg.gid());
    let queries: Vec<_> = calls
        .iter()
        .filter(|c| c.route == "QueryPrepared")
        .collect();
    assert_eq!(queries.len(), 2, "{calls:?}");
    assert!(queries
        .iter()
        .all(|c| c.branch_id == "00" && c.op == Op::Msg));
    assert_eq!(calls.iter().filter(|c| c.route == "TransIn").count(), 2);
    assert_balances(&req, 0, 30).await;
}

#[tokio::test]
async fn msg_prepared_fails_when_the_query_says_failure() {
    let (msg, req) = msg_in("").await;
    let mut msg = msg.timeout_to_fail(SEC);
    msg.prepare(bank().url("QueryPrepared", "ONGOING,FAILURE"))
        .await
        .unwrap();
    let q = wait_status(msg.gid(), GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [P]);
    assert_eq!(bank().routes(msg.gid()), ["QueryPrepared", "QueryPrepared"]);
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn msg_prepare_then_submit() {
    let (mut msg, req) = msg_in("").await;
    msg.prepare(bank().url("QueryPrepared", "")).await.unwrap();
    let gid = msg.gid().to_owned();
    msg.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [S]);
    assert_eq!(
        q.transaction.unwrap().query_prepared,
        bank().url("QueryPrepared", "")
    );
    assert_eq!(bank().routes(&gid), ["TransIn"], "no query needed");
    assert_balances(&req, 0, 30).await;
}

#[tokio::test]
async fn msg_abort_of_a_prepared_message() {
    let (mut msg, req) = msg_in("").await;
    msg.prepare(bank().url("QueryPrepared", "")).await.unwrap();
    let gid = msg.gid().to_owned();
    msg.abort().await.unwrap();
    assert_eq!(status_of(&gid).await, (Some(GlobalStatus::Failed), vec![P]));
    assert!(bank().routes(&gid).is_empty());
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn msg_abnormal_prepare_twice_and_after_the_end() {
    let (mut msg, req) = msg_in("").await;
    let query = bank().url("QueryPrepared", "");
    msg.prepare(query.clone()).await.unwrap();
    msg.prepare(query.clone())
        .await
        .expect("prepare is idempotent while prepared");
    let gid = msg.gid().to_owned();
    msg.submit().await.unwrap();
    wait_status(&gid, GlobalStatus::Succeed).await;
    // Submitting consumes a message; the same message is built again to prepare it again.
    let mut again = client().msg(&gid).add(bank().url("TransIn", ""), &req);
    let err = again.prepare(query).await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(err.to_string().contains("cannot prepare"), "{err}");
    assert_balances(&req, 0, 30).await;
}

#[tokio::test]
async fn msg_delay_holds_the_branches_back() {
    let (msg, req) = msg_in("").await;
    let msg = msg.delay(Duration::from_secs(2));
    let submitted = Instant::now();
    let gid = msg.gid().to_owned();
    msg.submit().await.unwrap();
    assert_eq!(
        status_of(&gid).await,
        (Some(GlobalStatus::Submitted), vec![P])
    );
    assert!(bank().routes(&gid).is_empty(), "no call before the delay");
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert!(
        submitted.elapsed() >= Duration::from_millis(1900),
        "the delay of 2 s was honoured ({:?})",
        submitted.elapsed()
    );
    assert_eq!(q.branch_statuses(), [S]);
    assert_eq!(q.transaction.unwrap().custom_data, r#"{"delay":2}"#);
    assert_balances(&req, 0, 30).await;
}

/// A message whose first step fails once, called in order: the server stops at that step and
/// calls the second only after the retry.
async fn two_steps_first_failing_once() -> Vec<String> {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let b = bank();
    let msg = client()
        .msg(&gid)
        .add(b.url("TransIn", "ERROR"), &req)
        .add(b.url("TransOut", ""), &req)
        .retry_interval(SEC);
    msg.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [S, S]);
    assert_eq!(q.branches[0].branch_id, "01");
    assert_eq!(q.branches[1].branch_id, "02");
    let options: serde_json::Value = serde_json::from_str(&q.transaction.unwrap().options).unwrap();
    assert_eq!(options["concurrent"], false, "{options}");
    assert_balances(&req, -30, 30).await;
    b.routes(&gid)
}

#[tokio::test]
async fn msg_concurrent() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let b = bank();
    client()
        .msg(&gid)
        .add(b.url("TransIn", "ERROR"), &req)
        .add(b.url("TransOut", ""), &req)
        .retry_interval(3 * SEC)
        .concurrent()
        .submit()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen = status_of(&gid).await.1;
        if seen == [P, S] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        [P, S],
        "branch 02 succeeded in the first pass, before 01's retry"
    );
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    let options: serde_json::Value = serde_json::from_str(&q.transaction.unwrap().options).unwrap();
    assert_eq!(options["concurrent"], true, "{options}");
    let mut routes = b.routes(&gid);
    routes.sort();
    assert_eq!(routes, ["TransIn", "TransIn", "TransOut"]);
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn msg_sequential_stops_at_the_failing_step() {
    let routes = two_steps_first_failing_once().await;
    assert_eq!(routes, ["TransIn", "TransIn", "TransOut"]);
}

#[tokio::test]
async fn msg_failure_of_a_step_is_retried_not_rolled_back() {
    let (msg, req) = msg_in("FAILURE,ERROR").await;
    let gid = msg.gid().to_owned();
    msg.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [S]);
    assert_eq!(bank().routes(&gid), ["TransIn", "TransIn", "TransIn"]);
    assert_balances(&req, 0, 30).await;
}

/// A `wait_result` message whose step answers ONGOING is still running, not failed: DTM
/// keeps calling the step, and the error names it.
#[tokio::test]
async fn msg_wait_result_with_a_step_ongoing_is_unfinished_then_succeeds() {
    let (msg, req) = msg_in("ONGOING").await;
    let gid = msg.gid().to_owned();
    let err = msg.wait_result(true).submit().await.unwrap_err();
    support::assert_unfinished_on(&err, &["/TransIn"]);
    support::assert_succeeds_in_the_end(&gid).await;
    assert_balances(&req, 0, 30).await;
}
