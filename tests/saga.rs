//! Saga against the real DTM server: the Rust twins of the server's saga scenarios
//! (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite). Each test checks the final global status, the branch statuses
//! in stored order (`01 compensate, 01 action, 02 compensate, 02 action`) and the balances.

mod support;

use std::time::Duration;

use dtmcli::{GlobalStatus, Op, Saga};
use support::busi::{DtmResultOrError, TransferReq};
use support::{accounts, bank, client, new_gid, status_of, wait_status, F, P, S};

const SEC: Duration = Duration::from_secs(1);

/// A transfer saga of 30 with fault scripts for TransOut / TransIn.
async fn transfer(out_result: &str, in_result: &str) -> (Saga, TransferReq) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    (transfer_saga(&gid, &req, out_result, in_result), req)
}

/// The saga of [`transfer`] for `gid` and `req`.
fn transfer_saga(gid: &str, req: &TransferReq, out_result: &str, in_result: &str) -> Saga {
    let b = bank();
    client()
        .saga(gid)
        .add(
            b.url("TransOut", out_result),
            b.url("TransOutCompensate", ""),
            req,
        )
        .add(
            b.url("TransIn", in_result),
            b.url("TransInCompensate", ""),
            req,
        )
        .retry_interval(SEC)
}

async fn assert_balances(req: &TransferReq, out_delta: i64, in_delta: i64) {
    support::assert_balances(bank(), (&req.from, out_delta), (&req.to, in_delta)).await;
}

async fn wait_for_calls(gid: &str, route: &str, n: usize) {
    for _ in 0..400 {
        if bank().routes(gid).iter().filter(|r| *r == route).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{route} was not called {n} times for {gid}: {:?}",
        bank().routes(gid)
    );
}

#[tokio::test]
async fn saga_normal() {
    let (saga, req) = transfer("", "").await;
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
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
            ("01", Op::Compensate),
            ("01", Op::Action),
            ("02", Op::Compensate),
            ("02", Op::Action)
        ]
    );
    assert_eq!(q.transaction.unwrap().rollback_reason, "");
    // The payload stored for the branches is the typed request, as JSON.
    let stored: TransferReq = serde_json::from_slice(&q.branches[1].payload().unwrap()).unwrap();
    assert_eq!(stored.amount, 30);
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_rollback_compensates_the_failed_step_too() {
    let (saga, req) = transfer("", "FAILURE").await;
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, F]);
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransIn scripted to fail"), "{reason}");
    assert_eq!(
        bank().routes(&gid),
        [
            "TransOut",
            "TransIn",
            "TransInCompensate",
            "TransOutCompensate"
        ]
    );
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_ongoing_stays_submitted_then_succeeds() {
    let (saga, req) = transfer("ONGOING", "").await;
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    wait_for_calls(&gid, "TransOut", 1).await;
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Submitted));
    assert_eq!(branches, [P, P, P, P]);
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_compensation_error_is_retried_by_the_cron() {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let b = bank();
    let saga = client()
        .saga(&gid)
        .add(
            b.url("TransOut", ""),
            b.url("TransOutCompensate", "ERROR"),
            &req,
        )
        .add(
            b.url("TransIn", "FAILURE"),
            b.url("TransInCompensate", ""),
            &req,
        )
        .retry_interval(SEC);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    wait_for_calls(&gid, "TransOutCompensate", 1).await;
    let (status, _) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Aborting));
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, F]);
    let answers: Vec<_> = b
        .calls(&gid)
        .into_iter()
        .filter(|c| c.route == "TransOutCompensate")
        .map(|c| c.answer)
        .collect();
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0], DtmResultOrError::Error);
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_resubmit_while_submitted_is_accepted_and_after_succeed_refused() {
    let (saga, req) = transfer("ONGOING", "").await;
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    wait_for_calls(&gid, "TransOut", 1).await;
    // Submitting consumes a saga; the same saga is built again to submit it again.
    let again = || transfer_saga(&gid, &req, "ONGOING", "");
    again()
        .submit()
        .await
        .expect("a submitted saga may be submitted again");
    wait_status(&gid, GlobalStatus::Succeed).await;
    let err = again().submit().await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(
        err.to_string().contains("current status 'succeed'"),
        "{err}"
    );
    // Steps ran again on the second submit, but the money moved once.
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_empty_url_counts_as_success() {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let b = bank();
    let saga = client()
        .saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .add("", b.url("TransInCompensate", ""), &req)
        .retry_interval(SEC);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(b.routes(&gid), ["TransOut"]);
    assert_balances(&req, -30, 0).await;
}

#[tokio::test]
async fn saga_concurrent_normal() {
    let (saga, req) = transfer("", "").await;
    let saga = saga.concurrent();
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        q.transaction.unwrap().custom_data,
        r#"{"orders":{},"concurrent":true}"#
    );
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_concurrent_rollback_with_compensation_ongoing_once() {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let b = bank();
    let saga = client()
        .saga(&gid)
        .add(
            b.url("TransOut", "FAILURE"),
            b.url("TransOutCompensate", "ONGOING"),
            &req,
        )
        .add(b.url("TransIn", ""), b.url("TransInCompensate", ""), &req)
        .concurrent()
        .retry_interval(SEC);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    // Step 1 failed; its compensation answered ONGOING once and was retried.
    assert_eq!(q.branches[0].status, S);
    assert_eq!(q.branches[1].status, F);
    let compensations = b
        .routes(&gid)
        .iter()
        .filter(|r| *r == "TransOutCompensate")
        .count();
    assert_eq!(compensations, 2);
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_concurrent_rollback_order_first_step_fails() {
    let (saga, req) = transfer("FAILURE", "").await;
    let saga = saga.concurrent().add_branch_order(1, [0]);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    // Step 2 waited for step 1, so it never ran and is not compensated.
    assert_eq!(q.branch_statuses(), [S, F, P, P]);
    assert_eq!(bank().routes(&gid), ["TransOut", "TransOutCompensate"]);
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_concurrent_rollback_order_second_step_fails() {
    let (saga, req) = transfer("", "FAILURE").await;
    let saga = saga.concurrent().add_branch_order(1, [0]);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, F]);
    // Compensation runs in reverse order: step 2 before step 1.
    assert_eq!(
        bank().routes(&gid),
        [
            "TransOut",
            "TransIn",
            "TransInCompensate",
            "TransOutCompensate"
        ]
    );
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_retry_limit_not_reached_succeeds() {
    let (saga, req) = transfer("", "ERROR,ERROR,ERROR").await;
    let saga = saga.retry_limit(3);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    let tries = bank()
        .routes(&gid)
        .iter()
        .filter(|r| *r == "TransIn")
        .count();
    assert_eq!(tries, 4);
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_retry_limit_exceeded_rolls_back() {
    let (saga, req) = transfer("", "ERROR,ERROR,ERROR").await;
    let saga = saga.retry_limit(1).wait_result(true);
    let gid = saga.gid().to_owned();
    let err = saga.submit().await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, P]);
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "RetryCount is greater than RetryLimit, RetryLimit: 1"
    );
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_timeout_to_fail_rolls_back_an_unfinished_saga() {
    let ongoing = vec!["ONGOING"; 100].join(",");
    let (saga, req) = transfer(&ongoing, "").await;
    let saga = saga.timeout_to_fail(Duration::from_secs(2));
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    // The action that may have run is compensated; step 2 never started.
    assert_eq!(q.branch_statuses(), [S, P, P, P]);
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "Timeout after 2 seconds"
    );
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_wait_result_normal() {
    let (saga, req) = transfer("", "").await;
    let saga = saga.wait_result(true);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let (status, branches) = status_of(&gid).await;
    assert_eq!(
        status,
        Some(GlobalStatus::Succeed),
        "finished inside submit"
    );
    assert_eq!(branches, [P, S, P, S]);
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_wait_result_rollback_reports_the_reason() {
    let (saga, req) = transfer("", "FAILURE").await;
    let saga = saga.wait_result(true);
    let gid = saga.gid().to_owned();
    let err = saga.submit().await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(
        err.to_string().contains("TransIn scripted to fail"),
        "{err}"
    );
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Failed));
    assert_eq!(branches, [S, S, S, F]);
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn saga_wait_result_ongoing_is_an_error_then_the_cron_finishes() {
    let (saga, req) = transfer("ONGOING", "").await;
    let saga = saga.wait_result(true);
    let gid = saga.gid().to_owned();
    let err = saga.submit().await.unwrap_err();
    // DTM answers FAILURE; the stored status says the saga is still running.
    // The step DTM retries first, then the one waiting behind it.
    support::assert_unfinished_on(&err, &["/TransOut?", "/TransIn"]);
    assert!(err.to_string().contains(&gid), "{err}");
    assert_eq!(status_of(&gid).await.0, Some(GlobalStatus::Submitted));
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_branch_headers_reach_every_call_including_cron_retries() {
    let (saga, req) = transfer("", "ERROR").await;
    let saga = saga.branch_header("test_header", "test");
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    wait_status(&gid, GlobalStatus::Succeed).await;
    let calls = bank().calls(&gid);
    assert_eq!(
        calls.iter().map(|c| c.route.as_str()).collect::<Vec<_>>(),
        ["TransOut", "TransIn", "TransIn"],
        "TransIn failed once and was retried by the cron"
    );
    for call in &calls {
        assert_eq!(
            call.headers.get("test_header").map(String::as_str),
            Some("test"),
            "{call:?}"
        );
    }
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn saga_request_timeout_is_stored_and_used() {
    let (saga, req) = transfer("", "").await;
    let saga = saga
        .request_timeout(Duration::from_secs(6))
        .wait_result(true);
    let gid = saga.gid().to_owned();
    saga.submit().await.unwrap();
    let q = client().query(&gid).await.unwrap();
    let t = q.transaction.unwrap();
    assert_eq!(t.status, GlobalStatus::Succeed);
    let options: serde_json::Value = serde_json::from_str(&t.options).unwrap();
    assert_eq!(options["request_timeout"], 6, "{options}");
    assert_balances(&req, -30, 30).await;
}

/// A `wait_result` submit whose branch is down answers FAILURE although nothing rolled back:
/// the stored status says the saga is still running, and DTM finishes it once the branch is
/// back. The caller must not record such an order as rejected.
#[tokio::test]
async fn saga_with_a_branch_down_is_still_running_then_succeeds_when_it_returns() {
    let b = bank();
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    // A port nothing listens on yet: the TransIn service is down.
    let port = support::free_port();
    let down = format!("http://127.0.0.1:{port}{}", support::busi::BASE_PATH);
    let err = client()
        .saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .add(
            format!("{down}/TransIn"),
            format!("{down}/TransInCompensate"),
            &req,
        )
        .retry_interval(SEC)
        .wait_result(true)
        .submit()
        .await
        .unwrap_err();
    // DTM answers FAILURE, as for a rollback; the stored status tells it apart, and the error
    // names the branch DTM keeps retrying.
    assert!(err.is_unfinished() && !err.is_failure(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("{down}/TransIn")) && text.contains("still submitted"),
        "{text}"
    );
    assert_eq!(
        client().outcome(&gid).await.unwrap(),
        dtmcli::Outcome::Running {
            status: GlobalStatus::Submitted
        }
    );
    let still = client()
        .wait_final(&gid, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(!still.is_final(), "{still:?}");
    assert_balances(&req, -30, 0).await;

    // The service comes back on that port; DTM's retry delivers TransIn.
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let service = b.runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, support::busi::router(b.clone())).await
    });
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(
        client().wait_final(&gid, SEC).await.unwrap(),
        dtmcli::Outcome::Succeeded
    );
    assert_balances(&req, -30, 30).await;
    service.abort();
}

/// A branch that answers an error (500) keeps the saga running; the `wait_result` error names
/// the branch. DTM does not pass the branch's own answer on (it answers "wait result not
/// return success" and logs the branch's answer), so the error cannot carry it.
#[tokio::test]
async fn saga_wait_result_with_an_erroring_branch_names_it() {
    let (saga, req) = transfer("", "ERROR").await;
    let gid = saga.gid().to_owned();
    let err = saga.wait_result(true).submit().await.unwrap_err();
    support::assert_unfinished_on(&err, &["/TransIn?result=ERROR"]);
    let text = err.to_string();
    assert!(text.contains("/TransIn?result=ERROR"), "{text}");
    assert!(
        text.contains("DTM answered: wait result not return success"),
        "{text}"
    );
    // The script runs out: DTM's retry succeeds.
    support::assert_succeeds_in_the_end(&gid).await;
    assert_balances(&req, -30, 30).await;
}
