//! Workflow steps as local XA transactions (`Barrier::workflow_xa`, DTM's `DoXa`) against the
//! real DTM server and real MariaDB / PostgreSQL: the twins of the server's XaAction,
//! XaRollback and XaResume scenarios. Each test checks the stored status, the recorded rows
//! and the balances, which move only when the workflow commits.

mod support;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use dtm_barrier::XaDatabase;
use dtmcli::model::WorkflowOptions;
use dtmcli::{BranchStatus, GlobalStatus, Op, Workflow, Workflows};
use serde::{Deserialize, Serialize};
use support::busi::{Bank, Ledger, TransferReq};
use support::{accounts, client, new_gid};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    req: TransferReq,
    /// Answer FAILURE in the second XA step (after its update, which must roll back).
    fail_second: bool,
    /// The fault script of a final HTTP branch (`ERROR` leaves the workflow to resume).
    last: String,
}

fn business_runs() -> &'static Mutex<HashMap<String, usize>> {
    static RUNS: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    RUNS.get_or_init(Mutex::default)
}

/// One XA step on `bank`: moves `delta` on `account`, or fails after moving it.
async fn xa_step<DB: Ledger + XaDatabase>(
    bank: &'static Bank<DB>,
    wf: &Workflow,
    account: String,
    delta: i64,
    fail: bool,
) -> dtmcli::Result<()> {
    let (barrier, wf) = (bank.barrier().clone(), wf.clone());
    bank.run(async move {
        barrier
            .workflow_xa(&wf, async |conn| {
                *business_runs()
                    .lock()
                    .unwrap()
                    .entry(wf.gid().to_owned())
                    .or_default() += 1;
                DB::adjust(conn, &account, delta, delta < 0).await?;
                if fail {
                    return Err(dtm_barrier::Error::failure(
                        "second XA step scripted to fail",
                    ));
                }
                Ok(())
            })
            .await
    })
    .await
}

fn workflows<DB: Ledger + XaDatabase>(bank: &'static Bank<DB>) -> Workflows {
    let w = xa_workflows(bank);
    // An HTTP branch (scripted by `last`) before one XA step.
    w.register_with(
        "http_then_xa",
        WorkflowOptions::new().retry_interval(Duration::from_secs(60)),
        move |wf: Workflow, p: Plan| async move {
            wf.new_branch()?;
            let http = reqwest::Client::new();
            wf.send(
                http.post(support::bank().url("TransOut", &p.last))
                    .json(&p.req),
            )
            .await?;
            wf.new_branch()?;
            xa_step(bank, &wf, p.req.to.clone(), p.req.amount, false).await?;
            Ok(())
        },
    )
    .unwrap();
    w
}

fn xa_workflows<DB: Ledger + XaDatabase>(bank: &'static Bank<DB>) -> Workflows {
    // Executed directly by the tests: DTM's resume call (to a closed port) is not awaited.
    let w = Workflows::new(client(), "http://127.0.0.1:9/resume");
    w.register_with(
        "xa_transfer",
        WorkflowOptions::new().retry_interval(Duration::from_secs(60)),
        move |wf: Workflow, p: Plan| async move {
            wf.new_branch()?;
            xa_step(bank, &wf, p.req.from.clone(), -p.req.amount, false).await?;
            wf.new_branch()?;
            xa_step(bank, &wf, p.req.to.clone(), p.req.amount, p.fail_second).await?;
            // Branch 03 is served by the SQLite bank (its `to` account there is not checked).
            wf.new_branch()?;
            let http = reqwest::Client::new();
            wf.send(
                http.post(support::bank().url("TransIn", &p.last))
                    .json(&p.req),
            )
            .await?;
            Ok(())
        },
    )
    .unwrap();
    w
}

/// Executes `name` on the bank's runtime: the XA commit and rollback run where the workflow
/// runs, and the bank's pool belongs to its runtime (each test has a runtime of its own).
async fn execute<DB: Ledger + XaDatabase>(
    bank: &'static Bank<DB>,
    w: &Workflows,
    name: &'static str,
    gid: &str,
    p: &Plan,
) -> dtmcli::Result<()> {
    let (w, gid, p) = (w.clone(), gid.to_owned(), p.clone());
    bank.run(async move { w.execute(name, &gid, &p).await })
        .await
}

async fn plan(fail_second: bool, last: &str) -> (String, Plan) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let p = Plan {
        req: TransferReq::new(30, from, to),
        fail_second,
        last: last.to_owned(),
    };
    (gid, p)
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

fn row(branch: &str, op: Op, status: BranchStatus) -> (String, Op, BranchStatus) {
    (branch.to_owned(), op, status)
}

use BranchStatus::{Failed as F, Succeed as S};

async fn xa_action_commits_both<DB: Ledger + XaDatabase>(bank: &'static Bank<DB>) {
    let w = workflows(bank);
    let (gid, p) = plan(false, "").await;
    execute(bank, &w, "xa_transfer", &gid, &p).await.unwrap();
    let q = client().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Succeed);
    assert_eq!(
        rows(&gid).await,
        [
            row("01", Op::Action, S),
            row("01", Op::Business, S),
            row("01", Op::Commit, S),
            row("02", Op::Action, S),
            row("02", Op::Business, S),
            row("02", Op::Commit, S),
            row("03", Op::Action, S),
        ]
    );
    support::assert_balances(bank, (&p.req.from, -30), (&p.req.to, 30)).await;
}

async fn xa_rollback_restores_both<DB: Ledger + XaDatabase>(bank: &'static Bank<DB>) {
    let w = workflows(bank);
    let (gid, p) = plan(true, "").await;
    let err = execute(bank, &w, "xa_transfer", &gid, &p)
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    let q = client().query(&gid).await.unwrap();
    let t = q.transaction.unwrap();
    assert_eq!(t.status, GlobalStatus::Failed);
    assert!(
        t.rollback_reason.contains("scripted to fail"),
        "{}",
        t.rollback_reason
    );
    assert_eq!(
        rows(&gid).await,
        [
            row("01", Op::Action, S),
            row("01", Op::Business, S),
            row("01", Op::Rollback, S),
            row("02", Op::Action, F),
            row("02", Op::Rollback, S),
        ]
    );
    // The prepared first step was rolled back; the failed second one never prepared.
    support::assert_balances(bank, (&p.req.from, 0), (&p.req.to, 0)).await;
    assert!(
        support::bank().routes(&gid).is_empty(),
        "branch 03 never ran"
    );
}

/// The workflow stops after both XA steps were prepared; the second execute replays them (the
/// business does not run again) and then commits both.
async fn xa_resume_commits_prepared_steps<DB: Ledger + XaDatabase>(bank: &'static Bank<DB>) {
    let w = workflows(bank);
    let (gid, p) = plan(false, "ERROR").await;
    let err = execute(bank, &w, "xa_transfer", &gid, &p)
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err:?}");
    // Prepared, not committed: the money has not moved.
    support::assert_balances(bank, (&p.req.from, 0), (&p.req.to, 0)).await;
    execute(bank, &w, "xa_transfer", &gid, &p).await.unwrap();
    assert_eq!(business_runs().lock().unwrap()[&gid], 2, "once per XA step");
    let q = client().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Succeed);
    support::assert_balances(bank, (&p.req.from, -30), (&p.req.to, 30)).await;
    assert_eq!(support::bank().routes(&gid), ["TransIn", "TransIn"]);
}

/// A run interrupted after an XA step's business was recorded but before its action was (a
/// crash between the two): the resume cannot know the transaction's fate, answers FAILURE
/// and rolls the workflow back, the XA step's rollback included.
async fn xa_business_recorded_without_action_rolls_back<DB: Ledger + XaDatabase>(
    bank: &'static Bank<DB>,
) {
    use dtmcli::model::Transport as _;
    let w = workflows(bank);
    let (gid, p) = plan(false, "ERROR").await;
    let err = execute(bank, &w, "http_then_xa", &gid, &p)
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err:?}");
    // What the interrupted run would have left: branch 02's business, not its action.
    client()
        .register_workflow_step(dtmcli::model::WorkflowStep::new(
            &gid,
            "02",
            Op::Business,
            S,
            b"",
        ))
        .await
        .unwrap();
    let err = execute(bank, &w, "http_then_xa", &gid, &p)
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(err.to_string().contains("not resumable"), "{err}");
    assert!(!business_runs().lock().unwrap().contains_key(&gid));
    assert_eq!(
        rows(&gid).await,
        [
            row("01", Op::Action, S),
            row("02", Op::Action, F),
            row("02", Op::Business, S),
            row("02", Op::Rollback, S),
        ]
    );
    support::assert_balances(bank, (&p.req.to, 0), (&p.req.from, 0)).await;
}

macro_rules! on_each_xa_database {
    ($($scenario:ident),* $(,)?) => {
        mod mariadb {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::support::mysql_bank()).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::support::postgres_bank()).await })*
        }
    };
}

on_each_xa_database!(
    xa_action_commits_both,
    xa_rollback_restores_both,
    xa_resume_commits_prepared_steps,
    xa_business_recorded_without_action_rolls_back,
);
