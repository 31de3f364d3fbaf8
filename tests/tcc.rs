//! TCC against the real DTM server: the Rust twins of the server's TCC scenarios
//! (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite). Branches are stored as `(cancel, confirm)` pairs.

mod support;

use std::time::Duration;

use dtmcli::{Error, GlobalStatus, Op, Tcc};
use support::busi::TransferReq;
use support::{accounts, bank, client, new_gid, status_of, wait_status, P, S};

const SEC: Duration = Duration::from_secs(1);

fn req_for(gid: &str) -> TransferReq {
    let (from, to) = accounts(gid);
    TransferReq::new(30, from, to)
}

async fn trans_out(
    tcc: &Tcc,
    req: &TransferReq,
    try_result: &str,
    cancel_result: &str,
) -> dtmcli::Result<()> {
    let b = bank();
    tcc.call_branch(
        req,
        &b.url("TransOutTry", try_result),
        &b.url("TransOutConfirm", ""),
        &b.url("TransOutCancel", cancel_result),
    )
    .await
    .map(drop)
}

async fn trans_in(tcc: &Tcc, req: &TransferReq, try_result: &str) -> dtmcli::Result<()> {
    let b = bank();
    tcc.call_branch(
        req,
        &b.url("TransInTry", try_result),
        &b.url("TransInConfirm", ""),
        &b.url("TransInCancel", ""),
    )
    .await
    .map(drop)
}

async fn assert_balances(req: &TransferReq, out_delta: i64, in_delta: i64) {
    support::assert_balances(bank(), (&req.from, out_delta), (&req.to, in_delta)).await;
}

#[tokio::test]
async fn tcc_normal() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    let value = client()
        .tcc(&gid)
        .retry_interval(SEC)
        .run(|tcc| async move {
            trans_out(&tcc, &r, "", "").await?;
            trans_in(&tcc, &r, "").await?;
            Ok::<_, Error>(42)
        })
        .await
        .unwrap();
    assert_eq!(value, 42, "the closure's value is returned");
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
            ("01", Op::Cancel),
            ("01", Op::Confirm),
            ("02", Op::Cancel),
            ("02", Op::Confirm)
        ]
    );
    // Confirms run in reverse registration order.
    assert_eq!(
        bank().routes(&gid),
        [
            "TransOutTry",
            "TransInTry",
            "TransInConfirm",
            "TransOutConfirm"
        ]
    );
    // The try carried the client's view of the transaction, including the server address.
    let try_call = &bank().calls(&gid)[0];
    assert_eq!((try_call.branch_id.as_str(), try_call.op), ("01", Op::Try));
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn tcc_rollback_cancels_every_branch_including_the_failed_try() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    let err = client()
        .tcc(&gid)
        .retry_interval(SEC)
        .run(|tcc| async move {
            trans_out(&tcc, &r, "", "ONGOING").await?;
            trans_in(&tcc, &r, "FAILURE").await?;
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
    assert!(reason.contains("FAILURE"), "{reason}");
    let routes = bank().routes(&gid);
    assert_eq!(
        routes.iter().filter(|r| *r == "TransInCancel").count(),
        1,
        "{routes:?}"
    );
    assert_eq!(
        routes.iter().filter(|r| *r == "TransOutCancel").count(),
        2,
        "ONGOING once: {routes:?}"
    );
    // The try of 01 was undone; the cancel of the failed try 02 had nothing to undo.
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn tcc_nested_branch_gets_a_sub_branch_id() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    client()
        .tcc(&gid)
        .retry_interval(SEC)
        .run(|tcc| async move {
            trans_out(&tcc, &r, "", "").await?;
            let b = bank();
            tcc.call_branch(
                &r,
                &b.url("TransInTryNested", ""),
                &b.url("TransInNestedConfirm", ""),
                &b.url("TransInNestedCancel", ""),
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    let ids: Vec<&str> = q.branches.iter().map(|b| b.branch_id.as_str()).collect();
    assert_eq!(ids, ["01", "01", "02", "02", "0201", "0201"]);
    assert_eq!(q.branch_statuses(), [P, S, P, S, P, S]);
    let nested_try = bank()
        .calls(&gid)
        .into_iter()
        .find(|c| c.route == "TransInTry")
        .expect("the nested try ran");
    assert_eq!(nested_try.branch_id, "0201");
    assert_balances(&req, -30, 30).await;
}

#[tokio::test]
async fn tcc_branch_headers_reach_try_and_confirm() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    client()
        .tcc(&gid)
        .branch_header("test_header", "test")
        .run(|tcc| async move { trans_out(&tcc, &r, "", "").await })
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S]);
    let calls = bank().calls(&gid);
    assert_eq!(
        calls.iter().map(|c| c.route.as_str()).collect::<Vec<_>>(),
        ["TransOutTry", "TransOutConfirm"]
    );
    for call in &calls {
        assert_eq!(
            call.headers.get("test_header").map(String::as_str),
            Some("test"),
            "{call:?}"
        );
    }
    assert_balances(&req, -30, 0).await;
}

#[tokio::test]
async fn tcc_timeout_aborts_and_later_branches_are_refused() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    let g = gid.clone();
    let err = client()
        .tcc(&gid)
        .timeout_to_fail(Duration::from_secs(2))
        .retry_interval(SEC)
        .run(|tcc| async move {
            trans_out(&tcc, &r, "", "").await?;
            // Wait until the server's cron gives up on the prepared transaction.
            wait_status(&g, GlobalStatus::Failed).await;
            trans_in(&tcc, &r, "").await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "registerBranch is refused: {err:?}");
    assert!(err.to_string().contains("no trans with gid"), "{err}");
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Failed));
    assert_eq!(branches, [S, P]);
    let q = client().query(&gid).await.unwrap();
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "Timeout after 2 seconds"
    );
    assert_eq!(bank().routes(&gid), ["TransOutTry", "TransOutCancel"]);
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn tcc_panic_inside_the_closure_aborts_and_resumes_the_panic() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    let g = gid.clone();
    let joined = tokio::spawn(async move {
        client()
            .tcc(&g)
            .retry_interval(SEC)
            .run(|tcc| async move {
                trans_out(&tcc, &r, "", "").await?;
                if !r.from.is_empty() {
                    panic!("boom in the global transaction");
                }
                Ok::<_, Error>(())
            })
            .await
    })
    .await;
    let panic = joined.unwrap_err().into_panic();
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"boom in the global transaction")
    );
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, P]);
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "panic: boom in the global transaction"
    );
    assert_balances(&req, 0, 0).await;
}

#[tokio::test]
async fn nested_tcc_needs_the_dtm_field() {
    let info = dtmcli::BranchInfo::from_query("gid=g&trans_type=tcc&branch_id=01&op=try").unwrap();
    let err = Tcc::from_branch(&client(), &info).unwrap_err();
    assert!(matches!(err, Error::MissingField("dtm")), "{err:?}");
}

/// A `wait_result` TCC whose confirm answers ONGOING returns `Unfinished` naming the confirm
/// DTM keeps calling (DTM's answer, FAILURE, would look like a rollback); the transaction then
/// succeeds by itself.
#[tokio::test]
async fn tcc_wait_result_with_a_confirm_ongoing_is_unfinished_then_succeeds() {
    let gid = new_gid().await;
    let req = req_for(&gid);
    let r = req.clone();
    let b = bank();
    let err = client()
        .tcc(&gid)
        .retry_interval(SEC)
        .wait_result(true)
        .run(|tcc| async move {
            tcc.call_branch(
                &r,
                &b.url("TransOutTry", ""),
                &b.url("TransOutConfirm", "ONGOING"),
                &b.url("TransOutCancel", ""),
            )
            .await?;
            trans_in(&tcc, &r, "").await
        })
        .await
        .unwrap_err();
    let (status, pending) = support::unfinished(&err);
    assert_eq!(status, GlobalStatus::Submitted);
    assert!(
        pending.iter().any(|url| url.contains("/TransOutConfirm")),
        "{pending:?}"
    );
    assert!(
        pending.iter().all(|url| !url.contains("Cancel")),
        "only forward branches are pending while submitted: {pending:?}"
    );
    support::assert_succeeds_in_the_end(&gid).await;
    let q = client().query(&gid).await.unwrap();
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances(&req, -30, 30).await;
}
