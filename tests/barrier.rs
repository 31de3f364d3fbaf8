//! The barrier against the real DTM server on each database (SQLite, MariaDB, PostgreSQL): the
//! Rust twins of the server's barrier scenarios (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite). The business
//! failures here come from the business code inside the barrier (an overdraft), so the
//! compensations that follow are real null compensations: only the barrier keeps them from
//! paying money back.

mod support;

use std::time::Duration;

use dtmcli::{DtmClient, Error, GlobalStatus, Op};
use support::busi::{Bank, Ledger, TransferReq, INITIAL_BALANCE};
use support::{accounts, client, new_gid, status_of, wait_status, F, P, S};

const SEC: Duration = Duration::from_secs(1);
/// More than any account holds: the business code answers FAILURE.
const OVERDRAFT: i64 = INITIAL_BALANCE * 2;

async fn assert_balances<DB: Ledger>(bank: &Bank<DB>, req: &TransferReq, from: i64, to: i64) {
    support::assert_balances(bank, (&req.from, from), (&req.to, to)).await;
}

/// Calls a route directly, as DTM would, and returns the status code.
async fn call_directly(url: &str, info: &[(&str, &str)], body: Option<&TransferReq>) -> u16 {
    let http = reqwest::Client::new();
    let query = info
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let url = format!("{url}?{query}");
    let req = match body {
        Some(b) => http
            .post(url)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(b).unwrap()),
        None => http.get(url),
    };
    req.send().await.expect("direct call").status().as_u16()
}

/// The transfer saga: TransOut, then TransIn, each with its compensation.
fn transfer_saga<DB: Ledger>(bank: &Bank<DB>, gid: &str, req: &TransferReq) -> dtmcli::Saga {
    client()
        .saga(gid)
        .add(
            bank.url("TransOut", ""),
            bank.url("TransOutCompensate", ""),
            req,
        )
        .add(
            bank.url("TransIn", ""),
            bank.url("TransInCompensate", ""),
            req,
        )
        .retry_interval(SEC)
}

async fn saga_barrier_normal<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    transfer_saga(bank, &gid, &req).submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances(bank, &req, -30, 30).await;
    // DTM delivering the action once more changes nothing.
    let info = [
        ("gid", gid.as_str()),
        ("trans_type", "saga"),
        ("branch_id", "02"),
        ("op", "action"),
    ];
    assert_eq!(
        call_directly(&bank.url("TransIn", ""), &info, Some(&req)).await,
        200
    );
    assert_balances(bank, &req, -30, 30).await;
}

async fn saga_barrier_rollback<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(OVERDRAFT, from, to);
    client()
        .saga(&gid)
        .add(
            bank.url("TransIn", ""),
            bank.url("TransInCompensate", ""),
            &req,
        )
        .add(
            bank.url("TransOut", ""),
            bank.url("TransOutCompensate", ""),
            &req,
        )
        .retry_interval(SEC)
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, S, S, F]);
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("insufficient balance"), "{reason}");
    // TransOut failed inside the barrier, so its compensation paid nothing back.
    assert_eq!(
        bank.routes(&gid),
        [
            "TransIn",
            "TransOut",
            "TransOutCompensate",
            "TransInCompensate"
        ]
    );
    assert_balances(bank, &req, 0, 0).await;
}

async fn saga_barrier_two_calls_in_one_handler<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(31, from, to);
    client()
        .saga(&gid)
        .add(
            bank.url("TransOut", ""),
            bank.url("TransOutCompensate", ""),
            &req,
        )
        .add(
            bank.url("TransInB2", "ERROR"),
            bank.url("TransInCompensate", ""),
            &req,
        )
        .retry_interval(SEC)
        .submit()
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances(bank, &req, -31, 31).await;
    // Both protected parts (barrier ids 01 and 02) ran once; repeating the call is a no-op.
    let info = [
        ("gid", gid.as_str()),
        ("trans_type", "saga"),
        ("branch_id", "02"),
        ("op", "action"),
    ];
    assert_eq!(
        call_directly(&bank.url("TransInB2", ""), &info, Some(&req)).await,
        200
    );
    assert_balances(bank, &req, -31, 31).await;
}

async fn tcc_barrier_normal<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let r = req.clone();
    client()
        .tcc(&gid)
        .retry_interval(SEC)
        .run(|tcc| async move {
            tcc.call_branch(
                &r,
                &bank.url("TransOutTry", ""),
                &bank.url("TransOutConfirm", ""),
                &bank.url("TransOutCancel", ""),
            )
            .await?;
            tcc.call_branch(
                &r,
                &bank.url("TransInTry", ""),
                &bank.url("TransInConfirm", ""),
                &bank.url("TransInCancel", ""),
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_balances(bank, &req, -30, 30).await;
}

async fn tcc_barrier_rollback<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(OVERDRAFT, from, to);
    let r = req.clone();
    let err = client()
        .tcc(&gid)
        .retry_interval(SEC)
        .run(|tcc| async move {
            tcc.call_branch(
                &r,
                &bank.url("TransInTry", ""),
                &bank.url("TransInConfirm", ""),
                &bank.url("TransInCancel", ""),
            )
            .await?;
            tcc.call_branch(
                &r,
                &bank.url("TransOutTry", ""),
                &bank.url("TransOutConfirm", ""),
                &bank.url("TransOutCancel", ""),
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, P, S, P]);
    // The failed try left nothing; its cancel is a null compensation and refunds nothing.
    let routes = bank.routes(&gid);
    assert!(routes.contains(&"TransOutCancel".to_owned()), "{routes:?}");
    assert_balances(bank, &req, 0, 0).await;
}

/// The cancel arrives (twice, concurrently) before the try: the late try must do nothing.
async fn tcc_barrier_disorder<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let r = req.clone();
    let g = gid.clone();
    let err = client()
        .tcc(&gid)
        .timeout_to_fail(Duration::from_secs(2))
        .retry_interval(SEC)
        .run(|tcc| async move {
            let info = tcc
                .register_branch(
                    &r,
                    &bank.url("TransOutConfirm", ""),
                    &bank.url("TransOutCancel", ""),
                )
                .await?;
            // The try is "delayed in the network": the server times the transaction out and
            // cancels; a duplicate cancel races with it.
            let cancel = [
                ("gid", g.as_str()),
                ("trans_type", "tcc"),
                ("branch_id", info.branch_id.as_str()),
                ("op", "cancel"),
            ];
            let cancel_url = bank.url("TransOutCancel", "");
            let (a, b) = tokio::join!(
                wait_status(&g, GlobalStatus::Failed),
                call_directly(&cancel_url, &cancel, Some(&r))
            );
            drop(a);
            assert_eq!(b, 200, "a cancel before the try is a null compensation");
            let try_info = [
                ("gid", g.as_str()),
                ("trans_type", "tcc"),
                ("branch_id", info.branch_id.as_str()),
                ("op", "try"),
            ];
            let late_try = call_directly(&bank.url("TransOutTry", ""), &try_info, Some(&r)).await;
            assert_eq!(
                late_try, 200,
                "the late try is answered SUCCESS without effect"
            );
            Err::<(), _>(Error::failure("the transaction was cancelled"))
        })
        .await
        .unwrap_err();
    assert!(err.is_failure());
    let (status, branches) = status_of(&gid).await;
    assert_eq!(status, Some(GlobalStatus::Failed));
    assert_eq!(branches, [S, P]);
    let calls = bank.calls(&gid);
    assert!(
        calls.iter().filter(|c| c.op == Op::Cancel).count() >= 2,
        "{calls:?}"
    );
    assert_balances(bank, &req, 0, 0).await;
}

/// A message whose local work takes 30 from `from` and whose step gives 30 to `to`.
fn transfer_msg<DB: Ledger>(
    bank: &Bank<DB>,
    dtm: &DtmClient,
    gid: &str,
    req: &TransferReq,
) -> dtmcli::Msg {
    dtm.msg(gid)
        .add(bank.url("TransIn", ""), req)
        .retry_interval(SEC)
}

async fn do_and_submit<DB: Ledger>(
    bank: &'static Bank<DB>,
    msg: dtmcli::Msg,
    req: TransferReq,
    outcome: Result<(), Error>,
) -> dtmcli::Result<()> {
    let barrier = bank.barrier().clone();
    let query = bank.url("QueryPreparedB", "");
    bank.run(async move {
        barrier
            .do_and_submit(msg, query, async |conn| {
                assert!(DB::adjust(conn, &req.from, -req.amount, true).await?);
                Ok(outcome?)
            })
            .await
            .map_err(Error::from)
    })
    .await
}

async fn msg_do_and_submit_normal<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let msg = transfer_msg(bank, &client(), &gid, &req);
    do_and_submit(bank, msg, req.clone(), Ok(())).await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [S]);
    assert_balances(bank, &req, -30, 30).await;
}

async fn msg_do_and_submit_business_failed<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let msg = transfer_msg(bank, &client(), &gid, &req);
    let err = do_and_submit(bank, msg, req.clone(), Err(Error::failure("no")))
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert_eq!(status_of(&gid).await, (Some(GlobalStatus::Failed), vec![P]));
    assert!(bank.routes(&gid).is_empty(), "aborted without asking");
    assert_balances(bank, &req, 0, 0).await;
}

async fn msg_do_and_submit_business_error<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let msg = transfer_msg(bank, &client(), &gid, &req);
    let err = do_and_submit(bank, msg, req.clone(), Err(Error::other("disk full")))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "disk full");
    // The local transaction rolled back, so the query answered FAILURE and the message died.
    assert_eq!(status_of(&gid).await, (Some(GlobalStatus::Failed), vec![P]));
    assert_eq!(bank.routes(&gid), ["QueryPreparedB"]);
    assert_balances(bank, &req, 0, 0).await;
}

/// The begin/commit form: the local work written through the message's transaction, then
/// committed (the message is submitted), rolled back (dropped) or dropped unfinished (DTM's
/// query finds nothing committed and drops the message).
async fn msg_begin_commit_rollback_and_drop<DB: Ledger>(bank: &'static Bank<DB>) {
    #[derive(Clone, Copy, Debug)]
    enum End {
        Commit,
        Rollback,
        Drop,
    }
    for end in [End::Commit, End::Rollback, End::Drop] {
        let gid = new_gid().await;
        let (from, to) = accounts(&gid);
        let req = TransferReq::new(30, from, to);
        let msg = transfer_msg(bank, &client(), &gid, &req).timeout_to_fail(SEC);
        let barrier = bank.barrier().clone();
        let query = bank.url("QueryPreparedB", "");
        let r = req.clone();
        bank.run(async move {
            let mut tx = barrier.begin_msg(msg, query).await.unwrap();
            assert!(DB::adjust(&mut tx, &r.from, -r.amount, true).await.unwrap());
            match end {
                End::Commit => tx.commit().await.unwrap(),
                End::Rollback => tx.rollback().await.unwrap(),
                End::Drop => drop(tx),
            }
        })
        .await;
        match end {
            End::Commit => {
                let q = wait_status(&gid, GlobalStatus::Succeed).await;
                assert_eq!(q.branch_statuses(), [S], "{end:?}");
                assert_balances(bank, &req, -30, 30).await;
            }
            End::Rollback => {
                assert_eq!(status_of(&gid).await, (Some(GlobalStatus::Failed), vec![P]));
                assert!(bank.routes(&gid).is_empty(), "aborted without a query");
                assert_balances(bank, &req, 0, 0).await;
            }
            End::Drop => {
                // Left prepared; after timeout_to_fail DTM asks the query, which answers
                // FAILURE (nothing committed), and drops the message.
                let q = wait_status(&gid, GlobalStatus::Failed).await;
                assert_eq!(q.branch_statuses(), [P], "{end:?}");
                assert_eq!(bank.routes(&gid), ["QueryPreparedB"]);
                assert_balances(bank, &req, 0, 0).await;
            }
        }
    }
}

async fn msg_do_and_submit_query_first<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let query = [
        ("gid", gid.as_str()),
        ("trans_type", "msg"),
        ("branch_id", "00"),
        ("op", "msg"),
    ];
    assert_eq!(
        call_directly(&bank.url("QueryPreparedB", ""), &query, None).await,
        409
    );
    let msg = transfer_msg(bank, &client(), &gid, &req);
    let err = do_and_submit(bank, msg, req.clone(), Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Duplicated), "{err:?}");
    assert_eq!(status_of(&gid).await, (Some(GlobalStatus::Failed), vec![P]));
    assert_balances(bank, &req, 0, 0).await;
}

async fn msg_do_and_submit_prepare_failed<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let nowhere = DtmClient::new(format!(
        "http://127.0.0.1:{}/api/dtmsvr",
        support::free_port()
    ))
    .unwrap();
    let msg = transfer_msg(bank, &nowhere, &gid, &req);
    let err = do_and_submit(bank, msg, req.clone(), Ok(()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Request { .. }), "{err:?}");
    assert_eq!(status_of(&gid).await.0, None);
    assert_balances(bank, &req, 0, 0).await;
}

async fn layer_refuses_a_request_without_trans_info<DB: Ledger>(bank: &'static Bank<DB>) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let info = [
        ("gid", gid.as_str()),
        ("trans_type", "saga"),
        ("op", "action"),
    ];
    let resp = reqwest::Client::new()
        .post(format!(
            "{}?{}",
            bank.url("TransOut", ""),
            info.map(|(k, v)| format!("{k}={v}")).join("&")
        ))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&req).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("`branch_id`"), "{body}");
    assert_balances(bank, &req, 0, 0).await;
}

/// Gids that differ only in case, accents or a trailing space are distinct transactions: each
/// saga moves its own money. (A table with MySQL's default case- and accent-insensitive
/// collation answered the second one SUCCESS without running its business code.)
async fn distinct_gids_both_move_money<DB: Ledger>(bank: &'static Bank<DB>) {
    let uniq = &dtmcli::local_gid()[..10];
    let pairs = [
        (format!("Order-{uniq}"), format!("order-{uniq}")),
        (format!("cafe-{uniq}"), format!("café-{uniq}")),
        (format!("pad-{uniq}"), format!("pad-{uniq} ")),
    ];
    for (a, b) in &pairs {
        let (from, to) = accounts(&format!("merge-{}", &dtmcli::local_gid()[..10]));
        let req = TransferReq::new(30, from, to);
        for gid in [a, b] {
            transfer_saga(bank, gid, &req).submit().await.unwrap();
            let q = wait_status(gid, GlobalStatus::Succeed).await;
            assert_eq!(q.branch_statuses(), [P, S, P, S], "{gid:?}");
        }
        assert_balances(bank, &req, -60, 60).await;
    }
}

macro_rules! on_each_database {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::support::bank()).await })*
        }
        mod mariadb {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::support::mysql_bank()).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::support::postgres_bank()).await })*
        }
    };
}

on_each_database!(
    distinct_gids_both_move_money,
    saga_barrier_normal,
    saga_barrier_rollback,
    saga_barrier_two_calls_in_one_handler,
    tcc_barrier_normal,
    tcc_barrier_rollback,
    tcc_barrier_disorder,
    msg_do_and_submit_normal,
    msg_do_and_submit_business_failed,
    msg_do_and_submit_business_error,
    msg_do_and_submit_query_first,
    msg_do_and_submit_prepare_failed,
    msg_begin_commit_rollback_and_drop,
    layer_refuses_a_request_without_trans_info,
);
