//! Barrier torture test, on each database: hundreds of global transactions whose branch
//! operations arrive duplicated, concurrently and out of order through the barrier layer, as
//! DTM's retries and a bad network would deliver them. The balances must come out exact:
//! nothing applied twice, no null compensation applied, no forward operation applied after its
//! compensation.
//!
//! Requests go through the example service's router in process (`tower::ServiceExt::oneshot`),
//! so the whole layer runs; a 500 (a deadlock or busy database) is retried like DTM would.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use futures_util::future::join_all;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::Pool;
use support::busi::{self, Bank, Ledger, TransferReq, INITIAL_BALANCE};
use tokio::sync::Semaphore;
use tower::ServiceExt;

const GIDS: usize = 300;
const ACCOUNTS: usize = 4;
const IN_FLIGHT: usize = 24;

/// One operation delivery: route, trans type, op.
type Op = (&'static str, &'static str, &'static str);

/// What happens to one global transaction: phases run one after the other; the deliveries of a
/// phase run concurrently, in shuffled order.
struct Plan {
    phases: Vec<Vec<Op>>,
    /// Expected change of the `from` and `to` accounts.
    from: i64,
    to: i64,
}

fn plan(kind: usize, amount: i64, rng: &mut Rng) -> Plan {
    const OUT: Op = ("TransOut", "saga", "action");
    const OUT_C: Op = ("TransOutCompensate", "saga", "compensate");
    const IN: Op = ("TransIn", "saga", "action");
    const TRY: Op = ("TransOutTry", "tcc", "try");
    const CONFIRM: Op = ("TransOutConfirm", "tcc", "confirm");
    const CANCEL: Op = ("TransOutCancel", "tcc", "cancel");
    const IN_TRY: Op = ("TransInTry", "tcc", "try");
    const IN_CONFIRM: Op = ("TransInConfirm", "tcc", "confirm");
    let dup = |op: Op, n: usize| vec![op; n];
    let mut p = match kind {
        // A saga action delivered three times.
        0 => Plan {
            phases: vec![dup(OUT, 3)],
            from: -amount,
            to: 0,
        },
        // Action and compensation racing, each twice: whatever the order, no net change.
        1 => Plan {
            phases: vec![[dup(OUT, 2), dup(OUT_C, 2)].concat()],
            from: 0,
            to: 0,
        },
        // Compensation first (null compensation), then the hanging action.
        2 => Plan {
            phases: vec![dup(OUT_C, 2), dup(OUT, 2)],
            from: 0,
            to: 0,
        },
        // TCC try then confirm, each duplicated.
        3 => Plan {
            phases: vec![dup(TRY, 2), dup(CONFIRM, 2)],
            from: -amount,
            to: 0,
        },
        // TCC try and cancel racing.
        4 => Plan {
            phases: vec![[dup(TRY, 2), dup(CANCEL, 2)].concat()],
            from: 0,
            to: 0,
        },
        // Money in: a saga action and a TCC confirm on another branch, duplicated.
        _ => Plan {
            phases: vec![[dup(IN, 2), dup(IN_TRY, 2)].concat(), dup(IN_CONFIRM, 3)],
            from: 0,
            to: 2 * amount,
        },
    };
    for phase in &mut p.phases {
        rng.shuffle(phase);
    }
    p
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

#[derive(Default)]
struct Counts {
    requests: AtomicUsize,
    retried: AtomicUsize,
}

async fn deliver(
    app: &Router,
    gid: &str,
    branch: &str,
    op: Op,
    req: &TransferReq,
    counts: &Counts,
) {
    let (route, trans_type, op) = op;
    let uri = format!(
        "{}/{route}?gid={gid}&trans_type={trans_type}&branch_id={branch}&op={op}",
        busi::BASE_PATH
    );
    for attempt in 0..50 {
        counts.requests.fetch_add(1, Ordering::Relaxed);
        let request = Request::post(&uri)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(req).unwrap()))
            .unwrap();
        let status = app
            .clone()
            .oneshot(request)
            .await
            .unwrap()
            .status()
            .as_u16();
        match status {
            200 => return,
            500 => {
                // A deadlock victim or a busy database: DTM would retry.
                counts.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5 * (attempt + 1))).await;
            }
            other => panic!("{uri} answered {other}"),
        }
    }
    panic!("{uri} kept failing");
}

async fn torture<DB: Ledger>(name: &str, pool: Pool<DB>) {
    let bank = Bank::connect(pool, support::client())
        .await
        .expect("bank tables");
    let app = busi::router(bank.clone());
    let run = dtmcli::local_gid();
    let account = |side: &str, i: usize| format!("torture-{run}-{side}{}", i % ACCOUNTS);
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    let counts = Arc::new(Counts::default());
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut expected: HashMap<String, i64> = HashMap::new();
    let mut jobs = Vec::new();
    for i in 0..GIDS {
        let amount = 1 + (i % 7) as i64;
        let req = TransferReq::new(amount, account("a", i), account("b", i));
        let p = plan(i % 6, amount, &mut rng);
        *expected.entry(req.from.clone()).or_default() += p.from;
        *expected.entry(req.to.clone()).or_default() += p.to;
        let gid = format!("{run}-{i}");
        let (app, counts, limit) = (app.clone(), Arc::clone(&counts), Arc::clone(&limit));
        jobs.push(async move {
            let _slot = limit.acquire().await.unwrap();
            for phase in p.phases {
                // TCC money-in uses branch 02 so that it does not collide with the saga branch.
                join_all(phase.into_iter().map(|op| {
                    let branch = if op.1 == "tcc" && op.0.starts_with("TransIn") {
                        "02"
                    } else {
                        "01"
                    };
                    let (app, gid, req, counts) = (&app, &gid, &req, &counts);
                    async move { deliver(app, gid, branch, op, req, counts).await }
                }))
                .await;
            }
        });
    }
    join_all(jobs).await;
    for (acct, delta) in &expected {
        assert_eq!(
            bank.balance(acct).await,
            INITIAL_BALANCE + delta,
            "{name}: account {acct}"
        );
    }
    println!(
        "torture {name}: {GIDS} gids, {} deliveries ({} retried after a 500), {} accounts exact",
        counts.requests.load(Ordering::Relaxed),
        counts.retried.load(Ordering::Relaxed),
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torture_sqlite() {
    let dir = std::env::temp_dir().join(format!("dtm-torture-{}", dtmcli::local_gid()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = SqliteConnectOptions::new()
        .filename(dir.join("busi.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30));
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    torture("sqlite", pool).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torture_mariadb() {
    let url = support::db_url("DTM_TEST_MYSQL_URL");
    let pool = MySqlPoolOptions::new()
        .max_connections(32)
        .connect(&url)
        .await
        .unwrap();
    torture("mariadb", pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn torture_postgres() {
    let url = support::db_url("DTM_TEST_POSTGRES_URL");
    let pool = PgPoolOptions::new()
        .max_connections(32)
        .connect(&url)
        .await
        .unwrap();
    torture("postgres", pool).await;
}

#[tokio::test]
async fn a_bad_table_name_is_refused_at_construction() {
    let pool = SqlitePoolOptions::new()
        .connect_lazy("sqlite::memory:")
        .unwrap();
    for bad in ["barrier; drop table x", "a.b.c", "1table", ""] {
        let err = dtm_barrier::Barrier::<sqlx::Sqlite>::with_table(pool.clone(), bad).unwrap_err();
        assert!(
            matches!(err, dtm_barrier::Error::InvalidTable { .. }),
            "{bad}: {err}"
        );
    }
    assert!(dtm_barrier::Barrier::<sqlx::Sqlite>::with_table(pool, "my_barrier").is_ok());
}

/// A second barrier table next to the default one (same schema) works on every database:
/// create it, run a protected local transaction, and see the duplicate skipped.
async fn custom_table<DB: Ledger>(pool: Pool<DB>, table: &str) {
    let barrier = dtm_barrier::Barrier::with_table(pool.clone(), table).unwrap();
    DB::create_accounts(&pool).await.unwrap();
    dtm_barrier::Barrier::new(pool)
        .create_table()
        .await
        .unwrap();
    barrier.create_table().await.unwrap();
    let gid = dtmcli::local_gid();
    let info = dtmcli::BranchInfo::from_query(&format!(
        "gid={gid}&trans_type=saga&branch_id=01&op=action"
    ))
    .unwrap();
    let run = || async {
        barrier
            .branch(info.clone())
            .call(async |conn| {
                let done = DB::adjust(conn, "custom-table", 1, true).await?;
                Ok::<_, dtm_barrier::Error>(done)
            })
            .await
    };
    assert_eq!(run().await.unwrap(), Some(true), "first call runs");
    assert_eq!(run().await.unwrap(), None, "the duplicate is skipped");
}

#[tokio::test]
async fn custom_table_next_to_the_default_one() {
    // On PostgreSQL a barrier table shared with Go services needs its constraint named
    // `uniq_barrier`, a name unique per schema: a custom table goes into a schema of its own.
    let url = support::db_url("DTM_TEST_POSTGRES_URL");
    custom_table(
        PgPoolOptions::new().connect(&url).await.unwrap(),
        "dtm_barrier_custom.barrier",
    )
    .await;
    let url = support::db_url("DTM_TEST_MYSQL_URL");
    custom_table(
        MySqlPoolOptions::new().connect(&url).await.unwrap(),
        "dtm_barrier.barrier_custom",
    )
    .await;
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    Bank::connect(pool.clone(), support::client())
        .await
        .unwrap();
    custom_table(pool, "barrier_custom").await;
}
