//! Workflow over HTTP against the real DTM server: the Rust twins of the server's workflow
//! scenarios (`test/workflow_*_test.go` in github.com/dtm-labs/dtm v1.19.0). Each test checks
//! the stored status, the recorded branch rows, the calls the business service received and
//! the balances.
//!
//! The workflows are registered once per test binary in a registry served by its own resume
//! endpoint, as a service would at start-up; DTM resumes unfinished ones through it.

mod support;

use dtmcli::model::WorkflowOptions;
use dtmcli::DtmResult;
use dtmcli::{BranchStatus, Error, GlobalStatus, Op, Workflow, Workflows};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use support::busi::{DtmResultOrError, Ledger, TransferReq};
use support::{accounts, bank, client, new_gid, wait_status, S};

/// What a test workflow does: the transfer and the fault scripts of its two branches.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Plan {
    req: TransferReq,
    #[serde(default)]
    out: String,
    #[serde(default)]
    into: String,
    /// The fault script of TransOutCompensate, for the workflows that use it.
    #[serde(default)]
    compensate: String,
}

async fn plan(out: &str, into: &str) -> (String, Plan) {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let plan = Plan {
        req: TransferReq::new(30, from, to),
        out: out.into(),
        into: into.into(),
        compensate: String::new(),
    };
    (gid, plan)
}

/// Per-gid counters of local steps and callbacks, to check what ran how often.
fn counters() -> &'static Mutex<HashMap<(String, &'static str), usize>> {
    static C: OnceLock<Mutex<HashMap<(String, &'static str), usize>>> = OnceLock::new();
    C.get_or_init(Mutex::default)
}

/// Counts one more `what` for `gid`; returns the new count.
fn count(gid: &str, what: &'static str) -> usize {
    let mut counters = counters().lock().unwrap();
    let n = counters.entry((gid.to_owned(), what)).or_default();
    *n += 1;
    *n
}

fn counted(gid: &str, what: &'static str) -> usize {
    counters()
        .lock()
        .unwrap()
        .get(&(gid.to_owned(), what))
        .copied()
        .unwrap_or(0)
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Sends `route` (with its fault script) with the transfer as JSON, through the workflow.
async fn send(wf: &Workflow, route: &str, script: &str, req: &TransferReq) -> dtmcli::Result<()> {
    wf.send(http().post(bank().url(route, script)).json(req))
        .await
        .map(drop)
}

/// A phase-2 callback that sends `route` with the transfer.
fn callback(
    route: &'static str,
    req: &TransferReq,
) -> impl FnOnce(
    Workflow,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = dtmcli::Result<()>> + Send>>
       + Send
       + 'static {
    let req = req.clone();
    move |wf: Workflow| Box::pin(async move { send(&wf, route, "", &req).await })
}

fn register_all(w: &Workflows) {
    // A saga: each branch's compensation registered before its action.
    w.register("saga", |wf: Workflow, p: Plan| async move {
        wf.new_branch()?
            .on_rollback(callback("TransOutCompensate", &p.req))?;
        send(&wf, "TransOut", &p.out, &p.req).await?;
        wf.new_branch()?
            .on_rollback(callback("TransInCompensate", &p.req))?;
        send(&wf, "TransIn", &p.into, &p.req).await?;
        Ok(())
    })
    .unwrap();

    // OnFinish on the first branch, two plain HTTP branches.
    w.register("normal", |wf: Workflow, p: Plan| async move {
        let gid = wf.gid().to_owned();
        wf.new_branch()?.on_finish(move |wf, rollback| {
            let gid = gid.clone();
            async move {
                assert_eq!(
                    wf.branch_info().op,
                    if rollback { Op::Rollback } else { Op::Commit }
                );
                count(
                    &gid,
                    if rollback {
                        "finish-rollback"
                    } else {
                        "finish-commit"
                    },
                );
                Ok(())
            }
        })?;
        send(&wf, "TransOut", &p.out, &p.req).await?;
        wf.new_branch()?;
        send(&wf, "TransIn", &p.into, &p.req).await?;
        Ok(())
    })
    .unwrap();

    // A local step guarded by the SQL barrier (its rollback too), then an HTTP branch.
    w.register("barrier", |wf: Workflow, p: Plan| async move {
        let req = p.req.clone();
        wf.new_branch()?.on_rollback(move |wf| async move {
            let info = wf.branch_info();
            assert_eq!(info.op, Op::Rollback);
            adjust_with_barrier(info, req.from, req.amount).await
        })?;
        let (from, amount) = (p.req.from.clone(), p.req.amount);
        wf.local(async |info| adjust_with_barrier(info, from, -amount).await)
            .await?;
        wf.new_branch()?;
        send(&wf, "TransIn", &p.into, &p.req).await?;
        Ok(())
    })
    .unwrap();

    // TCC style: try through HTTP, confirm on commit, cancel on rollback.
    w.register("tcc", |wf: Workflow, p: Plan| async move {
        wf.new_branch()?
            .on_commit(callback("TransOutConfirm", &p.req))?
            .on_rollback(callback("TransOutCancel", &p.req))?;
        send(&wf, "TransOutTry", &p.out, &p.req).await?;
        wf.new_branch()?
            .on_commit(callback("TransInConfirm", &p.req))?
            .on_rollback(callback("TransInCancel", &p.req))?;
        send(&wf, "TransInTry", &p.into, &p.req).await?;
        Ok(())
    })
    .unwrap();

    // A counted local step, then an HTTP branch; returns a result.
    w.register("counted", |wf: Workflow, p: Plan| async move {
        let gid = wf.gid().to_owned();
        wf.new_branch()?;
        let n: usize = wf.local(async |_| Ok(count(&gid, "local"))).await?;
        wf.new_branch()?;
        send(&wf, "TransIn", &p.into, &p.req).await?;
        count(&gid, "function");
        Ok(format!("local step ran as number {n}"))
    })
    .unwrap();

    // Misuse: two actions in one branch.
    w.register("two_actions", |wf: Workflow, _: ()| async move {
        wf.new_branch()?;
        wf.local(async |_| Ok(1)).await?;
        wf.local(async |_| Ok(2)).await?;
        Ok(())
    })
    .unwrap();

    // A 500 is taken as a FAILURE: once by mapping errors, once by judging HTTP answers.
    let saga = |wf: Workflow, p: Plan| async move {
        wf.new_branch()?
            .on_rollback(callback("TransOutCompensate", &p.req))?;
        send(&wf, "TransOut", &p.out, &p.req).await?;
        wf.new_branch()?;
        send(&wf, "TransIn", &p.into, &p.req).await?;
        Ok(())
    };
    w.register_with(
        "map_error",
        WorkflowOptions::new().map_error(|e| match e {
            Error::Status { status: 500, .. } => Error::failure("a 500 is final here"),
            other => other,
        }),
        saga,
    )
    .unwrap();
    w.register_with(
        "http_answer",
        WorkflowOptions::new().http_answer(|status, _body| match status {
            200 => Ok(()),
            _ => Err(Error::failure(format!("status {status} is final here"))),
        }),
        saga,
    )
    .unwrap();

    // TCC style whose first confirm answers as scripted (`out`), e.g. FAILURE once.
    w.register("tcc_confirm_script", |wf: Workflow, p: Plan| async move {
        let (req, script) = (p.req.clone(), p.out.clone());
        wf.new_branch()?
            .on_commit(move |wf| async move { send(&wf, "TransOutConfirm", &script, &req).await })?
            .on_rollback(callback("TransOutCancel", &p.req))?;
        send(&wf, "TransOutTry", "", &p.req).await?;
        wf.new_branch()?
            .on_commit(callback("TransInConfirm", &p.req))?
            .on_rollback(callback("TransInCancel", &p.req))?;
        send(&wf, "TransInTry", "", &p.req).await?;
        Ok(())
    })
    .unwrap();

    // A saga whose TransOutCompensate answers as scripted (`compensate`).
    w.register(
        "saga_compensate_script",
        |wf: Workflow, p: Plan| async move {
            let (req, script) = (p.req.clone(), p.compensate.clone());
            wf.new_branch()?.on_rollback(move |wf| async move {
                send(&wf, "TransOutCompensate", &script, &req).await
            })?;
            send(&wf, "TransOut", &p.out, &p.req).await?;
            wf.new_branch()?
                .on_rollback(callback("TransInCompensate", &p.req))?;
            send(&wf, "TransIn", &p.into, &p.req).await?;
            Ok(())
        },
    )
    .unwrap();

    // A binary local result (not UTF-8), replayed exactly over DTM's HTTP API.
    w.register_bytes(
        "binary",
        WorkflowOptions::new(),
        |wf: Workflow, input: Vec<u8>| async move {
            let p: Plan = serde_json::from_slice(&input).unwrap();
            let gid = wf.gid().to_owned();
            wf.new_branch()?;
            let bytes = wf
                .local_bytes(async |_| Ok(vec![0x08, 0x96, 0x01, count(&gid, "binary") as u8]))
                .await?;
            wf.new_branch()?;
            send(&wf, "TransIn", &p.into, &p.req).await?;
            Ok(bytes)
        },
    )
    .unwrap();

    // compensate_error_branch: the failed branch's own compensation runs too.
    w.register_with(
        "saga_compensate_error",
        WorkflowOptions::new().compensate_error_branch(true),
        |wf: Workflow, p: Plan| async move {
            wf.new_branch()?
                .on_rollback(callback("TransOutCompensate", &p.req))?;
            send(&wf, "TransOut", &p.out, &p.req).await?;
            wf.new_branch()?
                .on_rollback(callback("TransInCompensate", &p.req))?;
            send(&wf, "TransIn", &p.into, &p.req).await?;
            Ok(())
        },
    )
    .unwrap();
}

async fn adjust_with_barrier(
    info: dtmcli::BranchInfo,
    account: String,
    delta: i64,
) -> dtmcli::Result<()> {
    let barrier = bank().barrier().clone();
    bank()
        .run(async move {
            let done = barrier
                .branch(info)
                .call(async |conn| {
                    if !<sqlx::Sqlite as Ledger>::adjust(conn, &account, delta, delta < 0).await? {
                        return Err(dtm_barrier::Error::failure("insufficient balance"));
                    }
                    Ok(())
                })
                .await;
            done.map(drop).map_err(dtmcli::Error::from)
        })
        .await
}

/// The registry of this test binary, served at its resume endpoint on its own runtime.
fn workflows() -> &'static Workflows {
    static W: OnceLock<Workflows> = OnceLock::new();
    W.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("resume endpoint runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                // Tests run on runtimes of their own and share this registry: its client keeps
                // no idle connection, which would belong to the runtime of the test that opened
                // it.
                let dtm = dtmcli::DtmClient::builder(&support::dtm().api)
                    .http_client(
                        reqwest::Client::builder()
                            .pool_max_idle_per_host(0)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap();
                let w = Workflows::new(dtm, format!("http://{addr}/api/workflow/resume"));
                register_all(&w);
                let app = axum::Router::new().route("/api/workflow/resume", w.resume_route());
                tx.send(w).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        rx.recv().expect("resume endpoint started")
    })
}

/// The stored branch rows as `(branch_id, op, status)`.
async fn rows(gid: &str) -> Vec<(String, String, BranchStatus)> {
    let q = client().query(gid).await.unwrap();
    let mut rows: Vec<_> = q
        .branches
        .iter()
        .map(|b| (b.branch_id.clone(), b.op.as_str().to_owned(), b.status))
        .collect();
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    rows
}

fn row(branch: &str, op: &str, status: BranchStatus) -> (String, String, BranchStatus) {
    (branch.into(), op.into(), status)
}

async fn assert_balances(p: &Plan, out: i64, into: i64) {
    support::assert_balances(bank(), (&p.req.from, out), (&p.req.to, into)).await;
}

/// The routes `gid` received, with the op they carried and what was answered.
fn calls(gid: &str) -> Vec<(String, Op, bool)> {
    bank()
        .calls(gid)
        .into_iter()
        .map(|c| {
            let ok = c.answer == DtmResultOrError::Result(DtmResult::Success);
            (c.route, c.op, ok)
        })
        .collect()
}

fn call(route: &str, op: Op, ok: bool) -> (String, Op, bool) {
    (route.into(), op, ok)
}

/// Executes workflow `name` on a new plan with these fault scripts, expecting it to roll
/// back: checks the FAILURE and the stored `failed` status; returns the gid, the plan, the
/// error and the stored rollback reason.
async fn execute_failing(name: &str, out: &str, into: &str) -> (String, Plan, Error, String) {
    let (gid, p) = plan(out, into).await;
    let err = workflows()
        .execute::<_, ()>(name, &gid, &p)
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{name}: {err:?}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    let reason = q.transaction.unwrap().rollback_reason;
    (gid, p, err, reason)
}

#[tokio::test]
async fn workflow_normal_with_on_finish() {
    let (gid, p) = plan("", "").await;
    let () = workflows().execute("normal", &gid, &p).await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(
        q.transaction.unwrap().trans_type,
        dtmcli::TransType::Workflow
    );
    assert_eq!(
        rows(&gid).await,
        [
            row("01", "action", S),
            row("01", "commit", S),
            row("02", "action", S)
        ]
    );
    assert_eq!(
        calls(&gid),
        [
            call("TransOut", Op::Action, true),
            call("TransIn", Op::Action, true)
        ]
    );
    assert_eq!(counted(&gid, "finish-commit"), 1);
    assert_eq!(counted(&gid, "finish-rollback"), 0);
    assert_balances(&p, -30, 30).await;
}

#[tokio::test]
async fn workflow_rollback_of_a_barrier_step_after_an_http_failure() {
    let (gid, p, err, reason) = execute_failing("barrier", "", "FAILURE").await;
    assert!(
        err.to_string().contains("TransIn scripted to fail"),
        "{err}"
    );
    assert!(reason.contains("TransIn scripted to fail"), "{reason}");
    assert_eq!(
        rows(&gid).await,
        [
            row("01", "action", S),
            row("01", "rollback", S),
            row("02", "action", BranchStatus::Failed)
        ]
    );
    assert_eq!(calls(&gid), [call("TransIn", Op::Action, false)]);
    assert_balances(&p, 0, 0).await;
}

#[tokio::test]
async fn workflow_tcc_commit_confirms_and_rollback_cancels() {
    let (gid, p) = plan("", "").await;
    let () = workflows().execute("tcc", &gid, &p).await.unwrap();
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(
        calls(&gid),
        [
            call("TransOutTry", Op::Action, true),
            call("TransInTry", Op::Action, true),
            // Reverse order of registration.
            call("TransInConfirm", Op::Commit, true),
            call("TransOutConfirm", Op::Commit, true),
        ]
    );
    assert_eq!(
        rows(&gid).await,
        [
            row("01", "action", S),
            row("01", "commit", S),
            row("02", "action", S),
            row("02", "commit", S)
        ]
    );
    assert_balances(&p, -30, 30).await;

    let (gid, p, _, _) = execute_failing("tcc", "", "FAILURE").await;
    // The failed try's own cancel is not called (compensate_error_branch is off).
    assert_eq!(
        calls(&gid),
        [
            call("TransOutTry", Op::Action, true),
            call("TransInTry", Op::Action, false),
            call("TransOutCancel", Op::Rollback, true),
        ]
    );
    assert_balances(&p, 0, 0).await;
}

#[tokio::test]
async fn workflow_compensate_error_branch_compensates_the_failed_branch_too() {
    let (gid, p, _, _) = execute_failing("saga_compensate_error", "", "FAILURE").await;
    assert_eq!(
        calls(&gid),
        [
            call("TransOut", Op::Action, true),
            call("TransIn", Op::Action, false),
            call("TransInCompensate", Op::Rollback, true),
            call("TransOutCompensate", Op::Rollback, true),
        ]
    );
    assert_balances(&p, 0, 0).await;
}

/// The first HTTP call answers 500 (then ONGOING): execute reports the error and leaves the
/// workflow prepared; DTM's callback resumes it, and it succeeds.
#[tokio::test]
async fn workflow_error_and_ongoing_are_resumed_by_dtm() {
    for script in ["ERROR", "ONGOING"] {
        let (gid, p) = plan(script, "").await;
        let err = workflows()
            .execute::<_, ()>("saga", &gid, &p)
            .await
            .unwrap_err();
        assert!(!err.is_failure(), "{err:?}");
        assert_eq!(err.is_ongoing(), script == "ONGOING", "{err:?}");
        let q = client().query(&gid).await.unwrap();
        assert_eq!(q.transaction.unwrap().status, GlobalStatus::Prepared);
        assert!(rows(&gid).await.is_empty(), "an error is not recorded");
        // DTM calls the resume endpoint (wait_status nudges its cron).
        wait_status(&gid, GlobalStatus::Succeed).await;
        assert_eq!(
            calls(&gid),
            [
                call("TransOut", Op::Action, false),
                call("TransOut", Op::Action, true),
                call("TransIn", Op::Action, true),
            ],
            "{script}"
        );
        assert_balances(&p, -30, 30).await;
    }
}

/// A recorded step is not executed again on resume: the local step runs once although the
/// function ran twice.
#[tokio::test]
async fn workflow_resume_skips_recorded_steps() {
    let (gid, p) = plan("", "ERROR").await;
    let err = workflows()
        .execute::<_, String>("counted", &gid, &p)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err:?}");
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(counted(&gid, "local"), 1);
    assert_eq!(counted(&gid, "function"), 1, "finished once, on resume");
    assert_eq!(
        calls(&gid),
        [
            call("TransIn", Op::Action, false),
            call("TransIn", Op::Action, true)
        ]
    );
    assert_eq!(
        rows(&gid).await,
        [row("01", "action", S), row("02", "action", S)]
    );
    // The stored result is the one the resumed run returned.
    let q = client().query(&gid).await.unwrap();
    let result = q.transaction.unwrap().result;
    use base64::Engine as _;
    let result = base64::engine::general_purpose::STANDARD
        .decode(result)
        .unwrap();
    assert_eq!(result, br#""local step ran as number 1""#);
}

/// A result is returned, and executing a finished workflow again returns the stored result
/// without running anything.
#[tokio::test]
async fn workflow_result_and_second_execute_returns_it_without_running() {
    let (gid, p) = plan("", "").await;
    let first: String = workflows().execute("counted", &gid, &p).await.unwrap();
    assert_eq!(first, "local step ran as number 1");
    let second: String = workflows().execute("counted", &gid, &p).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(counted(&gid, "function"), 1);
    assert_eq!(counted(&gid, "local"), 1);
    assert_eq!(calls(&gid).len(), 1);

    // A failed one returns its stored FAILURE the same way.
    let (gid, p, err, _) = execute_failing("saga", "", "FAILURE").await;
    let again = workflows()
        .execute::<_, ()>("saga", &gid, &p)
        .await
        .unwrap_err();
    assert!(again.is_failure(), "{again:?}");
    assert_eq!(again.to_string(), err.to_string());
    assert_eq!(
        calls(&gid).len(),
        3,
        "TransOut, TransIn, TransOutCompensate; nothing more"
    );
}

#[tokio::test]
async fn workflow_misuse_is_refused() {
    let w = workflows();
    let err = w
        .register("saga", |_wf: Workflow, _: ()| async { Ok(()) })
        .unwrap_err();
    assert!(err.to_string().contains("already registered"), "{err}");

    let gid = new_gid().await;
    let err = w.execute::<_, ()>("nope", &gid, &()).await.unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
    assert!(client().query(&gid).await.unwrap().transaction.is_none());

    let err = w
        .execute::<_, ()>("two_actions", &gid, &())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already has its action"), "{err}");
    assert_eq!(rows(&gid).await, [row("01", "action", S)]);
}

/// DTM refuses a second record of the same `(branch_id, op)`: the records are written
/// synchronously (`sync`), which is also what makes them survive on DTM's default store.
#[tokio::test]
async fn workflow_same_branch_op_recorded_twice_is_an_error() {
    use dtmcli::model::Transport as _;
    // A workflow left prepared by an unfinished run, with nothing recorded.
    let (gid, p) = plan("ERROR", "").await;
    workflows()
        .execute::<_, ()>("saga", &gid, &p)
        .await
        .unwrap_err();
    let dtm = client();
    let step = |data: &'static [u8]| {
        dtmcli::model::WorkflowStep::new(&gid, "01", Op::Action, BranchStatus::Succeed, data)
    };
    dtm.register_workflow_step(step(b"1")).await.unwrap();
    let err = dtm.register_workflow_step(step(b"2")).await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err:?}");
    assert_eq!(rows(&gid).await, [row("01", "action", S)]);
}

/// Progress survives on a DTM with v1.19.0's defaults (boltdb, `UpdateBranchSync: 0`), whose
/// asynchronous branch writer saves nothing on boltdb: the SDK records with `sync`. The
/// second execute (what DTM's resume call does) replays the recorded local step instead of
/// running it again.
#[tokio::test]
async fn workflow_progress_survives_on_dtm_defaults() {
    let dtm = support::Dtm::start_with_update_branch_async();
    let client = dtmcli::DtmClient::new(&dtm.api).unwrap();
    // Nothing listens at the callback, and DTM waits a minute before calling it: the test
    // resumes by executing again.
    let w = Workflows::new(client.clone(), "http://127.0.0.1:9/resume");
    w.register_with(
        "counted",
        WorkflowOptions::new().retry_interval(std::time::Duration::from_secs(60)),
        |wf: Workflow, p: Plan| async move {
            let gid = wf.gid().to_owned();
            wf.new_branch()?;
            wf.local(async |_| Ok(count(&gid, "local"))).await?;
            wf.new_branch()?;
            send(&wf, "TransIn", &p.into, &p.req).await?;
            Ok(())
        },
    )
    .unwrap();
    let gid = client.new_gid().await.unwrap();
    let (from, to) = accounts(&gid);
    let p = Plan {
        req: TransferReq::new(30, from, to),
        out: String::new(),
        into: "ERROR".into(),
        compensate: String::new(),
    };
    w.execute::<_, ()>("counted", &gid, &p).await.unwrap_err();
    let q = client.query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Prepared);
    assert_eq!(
        q.branches.len(),
        1,
        "branch 01's action is stored: {:?}",
        q.branches
    );
    let () = w.execute("counted", &gid, &p).await.unwrap();
    assert_eq!(counted(&gid, "local"), 1, "replayed, not run again");
    let q = client.query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Succeed);
    assert_balances(&p, 0, 30).await;
}

/// The answer mapping options: a 500 taken as FAILURE rolls the workflow back at once.
#[tokio::test]
async fn workflow_custom_answer_mapping() {
    for (name, reason) in [
        ("map_error", "a 500 is final here"),
        ("http_answer", "status 500 is final here"),
    ] {
        let (gid, p, err, stored) = execute_failing(name, "", "ERROR").await;
        assert_eq!(err.to_string(), format!("FAILURE: {reason}"));
        assert_eq!(stored, reason);
        assert_eq!(
            calls(&gid),
            [
                call("TransOut", Op::Action, true),
                call("TransIn", Op::Action, false),
                call("TransOutCompensate", Op::Rollback, true),
            ],
            "{name}"
        );
        assert_eq!(
            rows(&gid).await,
            [
                row("01", "action", S),
                row("01", "rollback", S),
                row("02", "action", BranchStatus::Failed)
            ]
        );
        assert_balances(&p, 0, 0).await;
    }
}

/// A phase-2 callback answering FAILURE does not fail the workflow (its outcome is decided):
/// execute reports an error, the workflow stays prepared, and the resume runs only the
/// callback not recorded yet.
#[tokio::test]
async fn workflow_phase2_failure_is_retried_and_recorded_callbacks_are_skipped() {
    let (gid, p) = plan("FAILURE", "").await;
    let err = workflows()
        .execute::<_, ()>("tcc_confirm_script", &gid, &p)
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err:?}");
    assert!(
        err.to_string().contains("commit callback of branch 01"),
        "{err}"
    );
    let q = client().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Prepared);
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(
        calls(&gid),
        [
            call("TransOutTry", Op::Action, true),
            call("TransInTry", Op::Action, true),
            call("TransInConfirm", Op::Commit, true),
            call("TransOutConfirm", Op::Commit, false),
            // The resume: branch 02's recorded confirm is not called again.
            call("TransOutConfirm", Op::Commit, true),
        ]
    );
    assert_balances(&p, -30, 30).await;
}

/// Two runs of one workflow at once (DTM's resume while the first run is slow, here a second
/// registry standing for another process): the run that finishes second gets an error when
/// DTM refuses its record, and rolls nothing back.
#[tokio::test]
async fn workflow_run_overtaken_by_another_gets_an_error_not_a_rollback() {
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let make = |hold: bool| {
        let gate = std::sync::Arc::clone(&gate);
        let w = Workflows::new(client(), "http://127.0.0.1:9/resume");
        w.register_with(
            "overtaken",
            WorkflowOptions::new().retry_interval(std::time::Duration::from_secs(60)),
            move |wf: Workflow, p: Plan| {
                let gate = std::sync::Arc::clone(&gate);
                async move {
                    wf.new_branch()?
                        .on_rollback(callback("TransOutCompensate", &p.req))?;
                    send(&wf, "TransOut", "", &p.req).await?;
                    wf.new_branch()?;
                    wf.local(async |_| {
                        if hold {
                            gate.notified().await;
                        }
                        Ok(())
                    })
                    .await?;
                    Ok(())
                }
            },
        )
        .unwrap();
        w
    };
    let (slow, fast) = (make(true), make(false));
    let (gid, p) = plan("", "").await;
    let first = tokio::spawn({
        let (gid, p) = (gid.clone(), p.clone());
        async move { slow.execute::<_, ()>("overtaken", &gid, &p).await }
    });
    // Wait until the slow run recorded branch 01 and hangs in branch 02.
    for _ in 0..200 {
        if rows(&gid).await.len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let () = fast.execute("overtaken", &gid, &p).await.unwrap();
    gate.notify_one();
    let err = first.await.unwrap().unwrap_err();
    assert!(!err.is_failure(), "{err:?}");
    assert!(err.to_string().contains("no longer prepared"), "{err}");
    let q = client().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Succeed);
    assert_eq!(
        calls(&gid),
        [call("TransOut", Op::Action, true)],
        "recorded once, replayed by the second run, never compensated"
    );
    assert_balances(&p, -30, 0).await;
}

/// A result that is not text is recorded through DTM's HTTP API and replayed exactly.
#[tokio::test]
async fn workflow_binary_result_replays_exactly_over_http() {
    let (gid, p) = plan("", "ERROR").await;
    let input = serde_json::to_vec(&p).unwrap();
    let err = workflows()
        .execute_bytes("binary", &gid, input.clone())
        .await
        .unwrap_err();
    assert!(!err.is_failure(), "{err:?}");
    let result = workflows()
        .execute_bytes("binary", &gid, input)
        .await
        .unwrap();
    assert_eq!(
        result,
        [0x08, 0x96, 0x01, 1],
        "the first run's bytes, replayed"
    );
    assert_eq!(counted(&gid, "binary"), 1);
}

/// A rollback interrupted by an erroring compensation is finished by the resume, which
/// replays the recorded FAILURE of branch 02: its own compensation is still not called
/// (`compensate_error_branch` is off), on the replay path too.
#[tokio::test]
async fn workflow_rollback_resumed_after_a_compensation_error() {
    let (gid, mut p) = plan("", "FAILURE").await;
    p.compensate = "ERROR".into();
    let err = workflows()
        .execute::<_, ()>("saga_compensate_script", &gid, &p)
        .await
        .unwrap_err();
    assert!(
        !err.is_failure(),
        "the outcome is decided, the compensation retried: {err:?}"
    );
    let q = client().query(&gid).await.unwrap();
    assert_eq!(q.transaction.unwrap().status, GlobalStatus::Prepared);
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains("TransIn scripted to fail"), "{reason}");
    assert_eq!(
        calls(&gid),
        [
            call("TransOut", Op::Action, true),
            call("TransIn", Op::Action, false),
            call("TransOutCompensate", Op::Rollback, false),
            // The resume: branch 02's FAILURE replayed, only branch 01 compensated.
            call("TransOutCompensate", Op::Rollback, true),
        ]
    );
    assert_balances(&p, 0, 0).await;
}
