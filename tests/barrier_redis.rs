//! The barrier on Redis against the real DTM server and a real Redis (`DTM_TEST_REDIS_URL`,
//! `scripts/db.sh start`): the twins of the SQL barrier scenarios for amount changes. Each
//! test checks the global status, the amounts in Redis and the barrier keys, which must be
//! named and valued as DTM's own client writes them.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::State;
use axum::routing::any;
use axum::{Json, Router};
use dtm_barrier::{redis_barrier_key, RedisBarrier};
use dtmcli::{BranchInfo, DtmResult, GlobalStatus, Op, TransType};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use support::{client, new_gid, wait_status};

const SEC: Duration = Duration::from_secs(1);

/// A move of `amount` from one Redis key to another.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Move {
    amount: i64,
    from: String,
    to: String,
}

fn redis_url() -> String {
    support::db_url("DTM_TEST_REDIS_URL")
}

/// A connection for the test's own runtime.
async fn conn() -> redis::aio::ConnectionManager {
    redis::Client::open(redis_url())
        .unwrap()
        .get_connection_manager()
        .await
        .expect("connect to the test Redis")
}

/// The resource manager: one route per operation, each one amount change through the barrier,
/// served on its own runtime. Returns its base URL.
fn service() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let barrier = RedisBarrier::new(conn().await);
                let route = |name: &'static str| {
                    any(
                        move |State(barrier): State<RedisBarrier>,
                              info: BranchInfo,
                              Json(m): Json<Move>| async move {
                            let (key, delta) = match name {
                                "TransOut" | "TransOutTry" => (m.from, -m.amount),
                                "TransOutCompensate" | "TransOutCancel" => (m.from, m.amount),
                                "TransIn" | "TransInConfirm" => (m.to, m.amount),
                                "TransInCompensate" => (m.to, -m.amount),
                                _ => return Ok::<_, dtm_barrier::Error>(DtmResult::Success),
                            };
                            barrier.branch(info).adjust_amount(&key, delta).await?;
                            Ok(DtmResult::Success)
                        },
                    )
                };
                let mut app = Router::new();
                for name in [
                    "TransOut",
                    "TransOutCompensate",
                    "TransIn",
                    "TransInCompensate",
                    "TransOutTry",
                    "TransOutConfirm",
                    "TransOutCancel",
                    "TransInTry",
                    "TransInConfirm",
                    "TransInCancel",
                ] {
                    app = app.route(&format!("/{name}"), route(name));
                }
                let app = app
                    .route(
                        "/QueryPrepared",
                        any(
                            |State(barrier): State<RedisBarrier>, info: BranchInfo| async move {
                                barrier.query_prepared(&info.gid).await?;
                                Ok::<_, dtm_barrier::Error>(DtmResult::Success)
                            },
                        ),
                    )
                    .with_state(barrier);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(format!("http://{}", listener.local_addr().unwrap()))
                    .unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        rx.recv().unwrap()
    })
}

/// The branch info of branch `01` of `gid`, as DTM would send it.
fn branch(gid: &str, trans_type: TransType, op: Op) -> BranchInfo {
    BranchInfo {
        gid: gid.to_owned(),
        trans_type,
        branch_id: "01".into(),
        op,
        dtm: None,
        phase2_url: None,
    }
}

fn url(route: &str) -> String {
    format!("{}/{route}", service())
}

/// A move of 30 between two fresh keys holding `from_balance` and 0.
async fn setup(from_balance: i64) -> (String, Move) {
    let gid = new_gid().await;
    let m = Move {
        amount: 30,
        from: format!("{gid}-stock-out"),
        to: format!("{gid}-stock-in"),
    };
    let mut c = conn().await;
    let _: () = c.set(&m.from, from_balance).await.unwrap();
    let _: () = c.set(&m.to, 0).await.unwrap();
    (gid, m)
}

async fn amounts(m: &Move) -> (i64, i64) {
    let mut c = conn().await;
    (c.get(&m.from).await.unwrap(), c.get(&m.to).await.unwrap())
}

async fn key(gid: &str, branch: &str, op: &str) -> Option<String> {
    conn()
        .await
        .get(redis_barrier_key(gid, branch, op, "01"))
        .await
        .unwrap()
}

fn saga(gid: &str, m: &Move) -> dtmcli::Saga {
    client()
        .saga(gid)
        .add(url("TransOut"), url("TransOutCompensate"), m)
        .add(url("TransIn"), url("TransInCompensate"), m)
        .retry_interval(SEC)
}

#[tokio::test]
async fn redis_saga_normal() {
    let (gid, m) = setup(100).await;
    saga(&gid, &m).wait_result(true).submit().await.unwrap();
    assert_eq!(amounts(&m).await, (70, 30));
    assert_eq!(key(&gid, "01", "action").await.as_deref(), Some("op"));
    assert_eq!(key(&gid, "02", "action").await.as_deref(), Some("op"));
}

/// TransOut cannot take 30 from 10: FAILURE, and its compensation is a null compensation
/// (it records `rollback` under the action's key and changes nothing).
#[tokio::test]
async fn redis_saga_insufficient_amount_rolls_back_with_a_null_compensation() {
    let (gid, m) = setup(10).await;
    let err = saga(&gid, &m).wait_result(true).submit().await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert!(q
        .transaction
        .unwrap()
        .rollback_reason
        .contains("cannot change by -30"));
    assert_eq!(amounts(&m).await, (10, 0));
    assert_eq!(key(&gid, "01", "compensate").await.as_deref(), Some("op"));
    assert_eq!(key(&gid, "01", "action").await.as_deref(), Some("rollback"));
    assert_eq!(key(&gid, "02", "action").await, None, "TransIn never ran");
}

/// The second step cannot take 30 from an empty key after the first took 30: both are
/// compensated (the second as a null compensation), and the amounts are back.
#[tokio::test]
async fn redis_saga_rollback_after_a_taken_amount() {
    let (gid, m) = setup(100).await;
    let empty = Move {
        from: m.to.clone(),
        ..m.clone()
    };
    let err = client()
        .saga(&gid)
        .add(url("TransOut"), url("TransOutCompensate"), &m)
        .add(url("TransOut"), url("TransOutCompensate"), &empty)
        .retry_interval(SEC)
        .wait_result(true)
        .submit()
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(amounts(&m).await, (100, 0));
    assert_eq!(key(&gid, "01", "action").await.as_deref(), Some("op"));
    assert_eq!(key(&gid, "01", "compensate").await.as_deref(), Some("op"));
    assert_eq!(key(&gid, "02", "action").await.as_deref(), Some("rollback"));
}

/// A cancel arriving before its try (null compensation), then the late try: it finds its key
/// taken and changes nothing. Driven through the barrier directly, as DTM's calls would be.
#[tokio::test]
async fn redis_tcc_cancel_before_try_then_the_late_try_does_nothing() {
    let (gid, m) = setup(100).await;
    let barrier = RedisBarrier::new(conn().await);
    let info = |op| branch(&gid, TransType::Tcc, op);
    barrier
        .branch(info(Op::Cancel))
        .adjust_amount(&m.from, 30)
        .await
        .unwrap();
    assert_eq!(amounts(&m).await, (100, 0), "null compensation");
    assert_eq!(key(&gid, "01", "try").await.as_deref(), Some("rollback"));
    barrier
        .branch(info(Op::Try))
        .adjust_amount(&m.from, -30)
        .await
        .unwrap();
    assert_eq!(amounts(&m).await, (100, 0), "the hanging try did nothing");
    // And a duplicate cancel does nothing either.
    barrier
        .branch(info(Op::Cancel))
        .adjust_amount(&m.from, 30)
        .await
        .unwrap();
    assert_eq!(amounts(&m).await, (100, 0));
}

#[tokio::test]
async fn redis_tcc_normal_and_rollback() {
    let (gid, m) = setup(100).await;
    let dtm = client();
    dtm.tcc(&gid)
        .run(|tcc| {
            let m = m.clone();
            async move {
                tcc.call_branch(
                    &m,
                    &url("TransOutTry"),
                    &url("TransOutConfirm"),
                    &url("TransOutCancel"),
                )
                .await?;
                tcc.call_branch(
                    &m,
                    &url("TransInTry"),
                    &url("TransInConfirm"),
                    &url("TransInCancel"),
                )
                .await?;
                Ok::<_, dtmcli::Error>(())
            }
        })
        .await
        .unwrap();
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(amounts(&m).await, (70, 30));

    let (gid, m) = setup(10).await;
    let err = dtm
        .tcc(&gid)
        .run(|tcc| {
            let m = m.clone();
            async move {
                tcc.call_branch(
                    &m,
                    &url("TransOutTry"),
                    &url("TransOutConfirm"),
                    &url("TransOutCancel"),
                )
                .await?;
                Ok::<_, dtmcli::Error>(())
            }
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(amounts(&m).await, (10, 0));
    assert_eq!(key(&gid, "01", "try").await.as_deref(), Some("rollback"));
}

fn msg(gid: &str, m: &Move) -> dtmcli::Msg {
    client().msg(gid).add(url("TransIn"), m).retry_interval(SEC)
}

#[tokio::test]
async fn redis_msg_do_and_submit() {
    let barrier = RedisBarrier::new(conn().await);
    // Normal: the local step takes the amount, DTM delivers TransIn.
    let (gid, m) = setup(100).await;
    barrier
        .do_and_submit(msg(&gid, &m), url("QueryPrepared"), &m.from, -30)
        .await
        .unwrap();
    wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(amounts(&m).await, (70, 30));
    assert_eq!(key(&gid, "00", "msg").await.as_deref(), Some("op"));

    // Business failure: 10 cannot give 30; the message is dropped.
    let (gid, m) = setup(10).await;
    let err = barrier
        .do_and_submit(msg(&gid, &m), url("QueryPrepared"), &m.from, -30)
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert_eq!(
        client()
            .query(&gid)
            .await
            .unwrap()
            .transaction
            .unwrap()
            .status,
        GlobalStatus::Failed
    );
    assert_eq!(amounts(&m).await, (10, 0));

    // The query ran first (the message timed out): the local step is refused and the
    // message dropped.
    let (gid, m) = setup(100).await;
    let err = barrier.query_prepared(&gid).await.unwrap_err();
    assert!(err.is_failure(), "nothing ran yet: {err:?}");
    let err = barrier
        .do_and_submit(msg(&gid, &m), url("QueryPrepared"), &m.from, -30)
        .await
        .unwrap_err();
    assert!(
        matches!(err, dtm_barrier::Error::Dtm(dtmcli::Error::Duplicated)),
        "{err:?}"
    );
    assert_eq!(
        client()
            .query(&gid)
            .await
            .unwrap()
            .transaction
            .unwrap()
            .status,
        GlobalStatus::Failed
    );
    assert_eq!(amounts(&m).await, (100, 0));
    assert_eq!(key(&gid, "00", "msg").await.as_deref(), Some("rollback"));
}

/// Keys expire as configured.
#[tokio::test]
async fn redis_barrier_keys_expire_as_configured() {
    let (gid, m) = setup(100).await;
    let barrier = RedisBarrier::new(conn().await).expire(Duration::from_secs(600));
    let info = branch(&gid, TransType::Saga, Op::Action);
    let branch = barrier.branch(info);
    branch.adjust_amount(&m.from, -1).await.unwrap();
    branch.adjust_amount(&m.from, -2).await.unwrap();
    let mut c = conn().await;
    let ttl: i64 = c
        .ttl(redis_barrier_key(&gid, "01", "action", "01"))
        .await
        .unwrap();
    assert!((590..=600).contains(&ttl), "{ttl}");
    let second: Option<String> = c
        .get(redis_barrier_key(&gid, "01", "action", "02"))
        .await
        .unwrap();
    assert_eq!(
        second.as_deref(),
        Some("op"),
        "the second call is barrier 02"
    );
    assert_eq!(amounts(&m).await, (97, 0));
}

/// The torture test on Redis: hundreds of global transactions whose operations arrive
/// duplicated, concurrently and out of order, as DTM's retries and a bad network would
/// deliver them, over one shared connection. The amounts must come out exact: nothing applied
/// twice, no null compensation applied, no forward operation applied after its compensation.
#[tokio::test]
async fn redis_torture() {
    const GIDS: usize = 300;
    const KEYS: usize = 4;
    const INITIAL: i64 = 1_000_000;
    type Delivery = (Op, TransType, bool); // op, trans type, on the `to` key
    let (action, compensate) = (
        (Op::Action, TransType::Saga, false),
        (Op::Compensate, TransType::Saga, false),
    );
    let (r#try, cancel) = (
        (Op::Try, TransType::Tcc, false),
        (Op::Cancel, TransType::Tcc, false),
    );
    let money_in = (Op::Action, TransType::Saga, true);
    let dup = |d: Delivery, n: usize| vec![d; n];

    let run = dtmcli::local_gid();
    let key = |side: &str, i: usize| format!("torture-{run}-{side}{}", i % KEYS);
    let mut c = conn().await;
    for i in 0..KEYS {
        let _: () = c.set(key("from", i), INITIAL).await.unwrap();
        let _: () = c.set(key("to", i), INITIAL).await.unwrap();
    }
    let barrier = RedisBarrier::new(conn().await).expire(Duration::from_secs(3600));
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(24));
    let deliveries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut expected: std::collections::HashMap<String, i64> = Default::default();
    let mut seed = 0x5eed_1234_abcd_9876_u64;
    let mut shuffle = |items: &mut Vec<Delivery>| {
        for i in (1..items.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            items.swap(i, (seed % (i as u64 + 1)) as usize);
        }
    };
    let mut jobs = Vec::new();
    for i in 0..GIDS {
        let amount = 1 + (i % 7) as i64;
        // Phases run one after the other; the deliveries of a phase run concurrently.
        let (mut phases, from_delta, to_delta): (Vec<Vec<Delivery>>, i64, i64) = match i % 6 {
            0 => (vec![dup(action, 3)], -amount, 0),
            1 => (vec![[dup(action, 2), dup(compensate, 2)].concat()], 0, 0),
            2 => (vec![dup(compensate, 2), dup(action, 2)], 0, 0),
            3 => (vec![dup(r#try, 3)], -amount, 0),
            4 => (vec![[dup(r#try, 2), dup(cancel, 2)].concat()], 0, 0),
            _ => (vec![dup(money_in, 3)], 0, amount),
        };
        for phase in &mut phases {
            shuffle(phase);
        }
        *expected.entry(key("from", i)).or_default() += from_delta;
        *expected.entry(key("to", i)).or_default() += to_delta;
        let (from, to, gid) = (key("from", i), key("to", i), format!("{run}-{i}"));
        let (barrier, limit, deliveries) = (barrier.clone(), limit.clone(), deliveries.clone());
        jobs.push(async move {
            let _slot = limit.acquire().await.unwrap();
            for phase in phases {
                futures_util::future::join_all(phase.into_iter().map(|(op, trans_type, into)| {
                    let info = branch(&gid, trans_type, op);
                    let (k, delta) = match (into, op.is_compensation()) {
                        (true, _) => (&to, amount),
                        (false, true) => (&from, amount),
                        (false, false) => (&from, -amount),
                    };
                    let (barrier, deliveries) = (&barrier, &deliveries);
                    async move {
                        deliveries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        barrier.branch(info).adjust_amount(k, delta).await.unwrap();
                    }
                }))
                .await;
            }
        });
    }
    futures_util::future::join_all(jobs).await;
    for (k, delta) in &expected {
        let v: i64 = c.get(k).await.unwrap();
        assert_eq!(v, INITIAL + delta, "{k}");
    }
    println!(
        "redis torture: {GIDS} gids, {} deliveries, {} keys exact",
        deliveries.load(std::sync::atomic::Ordering::Relaxed),
        expected.len()
    );
}

/// With `cluster_hash_tags`, the barrier keys carry the amount key as a hash tag (one slot for
/// the script's keys) and behave the same: a null compensation, then the late action changes
/// nothing.
#[tokio::test]
async fn redis_cluster_hash_tags_name_the_keys_after_the_amount_key() {
    let (gid, m) = setup(100).await;
    let barrier = RedisBarrier::new(conn().await).cluster_hash_tags(true);
    let info = |op| branch(&gid, TransType::Saga, op);
    barrier
        .branch(info(Op::Compensate))
        .adjust_amount(&m.from, 30)
        .await
        .unwrap();
    barrier
        .branch(info(Op::Action))
        .adjust_amount(&m.from, -30)
        .await
        .unwrap();
    assert_eq!(amounts(&m).await, (100, 0));
    let mut c = conn().await;
    let tagged = |op: &str| format!("{{{}}}:{}", m.from, redis_barrier_key(&gid, "01", op, "01"));
    let action: Option<String> = c.get(tagged("action")).await.unwrap();
    let compensate: Option<String> = c.get(tagged("compensate")).await.unwrap();
    assert_eq!(action.as_deref(), Some("rollback"));
    assert_eq!(compensate.as_deref(), Some("op"));
    assert_eq!(key(&gid, "01", "action").await, None, "no untagged key");
}
