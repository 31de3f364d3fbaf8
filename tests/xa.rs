//! XA against the real DTM server and real MariaDB / PostgreSQL: the Rust twins of the
//! server's XA scenarios (the server's [`test/`](https://github.com/dtm-labs/dtm/tree/v1.19.0/test) suite). Branches are stored as
//! `(rollback, commit)` pairs.
//!
//! The resource manager is a service of this file: one axum route per database whose action
//! (`op=action`) moves money in `xa_account` inside a local XA transaction
//! ([`Barrier::xa_local`]) and whose phase 2 (`op=commit` / `op=rollback`) is
//! [`Barrier::xa_phase2`]. The databases come from `DTM_TEST_MYSQL_URL` and
//! `DTM_TEST_POSTGRES_URL` (`scripts/db.sh start`, then `eval "$(scripts/db.sh env)"`).

mod support;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use dtm_barrier::{Barrier, XaDatabase};
use dtmcli::{BranchInfo, DtmClient, DtmResult, Error, GlobalStatus, Op, TransType};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::{MySql, Pool, Postgres};
use support::{client, new_gid, wait_status, P, S};

const SEC: Duration = Duration::from_secs(1);
/// The balance every test account starts with.
const INITIAL_BALANCE: i64 = 10_000;
/// What the business code says when a request scripts it to fail.
const SCRIPTED_FAILURE: &str = "xa branch scripted to fail";

/// The body of an XA action: move `amount` (negative: take) on `user_id`'s account; `result`
/// `FAILURE` makes the business answer FAILURE after its update (which must roll back).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct XaReq {
    user_id: String,
    amount: i64,
    #[serde(default)]
    result: String,
}

impl XaReq {
    fn new(user_id: &str, amount: i64) -> Self {
        XaReq {
            user_id: user_id.to_owned(),
            amount,
            result: String::new(),
        }
    }

    fn failing(mut self) -> Self {
        self.result = "FAILURE".to_owned();
        self
    }
}

/// The test's view of one database: the SQL the resource manager and the assertions need.
trait Ledger: XaDatabase {
    /// The route segment and the name in messages.
    const ROUTE: &'static str;
    /// The environment variable holding the URL.
    const URL_VAR: &'static str;

    /// A pool on this database.
    fn connect(url: &str, max: u32) -> BoxFuture<'_, Pool<Self>>;

    /// Creates `xa_account` if missing.
    fn create_accounts(pool: &Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>>;

    /// Adds `amount` to `user`'s balance; returns the affected rows.
    fn adjust<'c>(
        conn: &'c mut Self::Connection,
        user: &'c str,
        amount: i64,
    ) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// Opens an account with [`INITIAL_BALANCE`].
    fn open_account<'a>(pool: &'a Pool<Self>, user: &'a str) -> BoxFuture<'a, ()>;

    /// The balance of an account.
    fn balance<'a>(pool: &'a Pool<Self>, user: &'a str) -> BoxFuture<'a, i64>;

    /// The ids of every prepared XA transaction on the server.
    fn prepared_xids(pool: &Pool<Self>) -> BoxFuture<'_, Vec<String>>;

    /// The reason of the XA barrier row of a branch, if it exists.
    fn barrier_reason<'a>(
        pool: &'a Pool<Self>,
        gid: &'a str,
        branch_id: &'a str,
    ) -> BoxFuture<'a, Option<String>>;
}

/// The statements of [`Ledger`] differ only in placeholders and DDL.
macro_rules! ledger {
    ($db:ty, $name:literal, $var:literal, $options:ty, create: $create:literal,
     adjust: $adjust:literal, insert: $insert:literal, balance: $balance:literal,
     prepared: $prepared:literal, reason: $reason:literal) => {
        impl Ledger for $db {
            const ROUTE: &'static str = $name;
            const URL_VAR: &'static str = $var;

            fn connect(url: &str, max: u32) -> BoxFuture<'_, Pool<Self>> {
                Box::pin(async move {
                    <$options>::new()
                        .max_connections(max)
                        .connect(url)
                        .await
                        .unwrap_or_else(|e| panic!("connect to {} at {url}: {e}", $name))
                })
            }

            fn create_accounts(pool: &Pool<Self>) -> BoxFuture<'_, Result<(), sqlx::Error>> {
                Box::pin(async move { sqlx::query($create).execute(pool).await.map(drop) })
            }

            fn adjust<'c>(
                conn: &'c mut Self::Connection,
                user: &'c str,
                amount: i64,
            ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let done = sqlx::query($adjust)
                        .bind(amount)
                        .bind(user)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected())
                })
            }

            fn open_account<'a>(pool: &'a Pool<Self>, user: &'a str) -> BoxFuture<'a, ()> {
                Box::pin(async move {
                    sqlx::query($insert)
                        .bind(user)
                        .bind(INITIAL_BALANCE)
                        .execute(pool)
                        .await
                        .expect("open an account");
                })
            }

            fn balance<'a>(pool: &'a Pool<Self>, user: &'a str) -> BoxFuture<'a, i64> {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>($balance)
                        .bind(user)
                        .fetch_one(pool)
                        .await
                        .expect("read a balance")
                })
            }

            fn prepared_xids(pool: &Pool<Self>) -> BoxFuture<'_, Vec<String>> {
                Box::pin(async move {
                    use sqlx::Row as _;
                    // A plain `&str` runs unprepared, as `xa recover` needs.
                    sqlx::Executor::fetch_all(pool, $prepared)
                        .await
                        .expect("list prepared XA transactions")
                        .iter()
                        .map(|row| {
                            let xid: Vec<u8> = row.try_get("data").expect("an XA id");
                            String::from_utf8(xid).expect("a UTF-8 XA id")
                        })
                        .collect()
                })
            }

            fn barrier_reason<'a>(
                pool: &'a Pool<Self>,
                gid: &'a str,
                branch_id: &'a str,
            ) -> BoxFuture<'a, Option<String>> {
                Box::pin(async move {
                    sqlx::query_scalar::<_, String>($reason)
                        .bind(gid)
                        .bind(branch_id)
                        .fetch_optional(pool)
                        .await
                        .expect("read a barrier row")
                })
            }
        }
    };
}

ledger!(MySql, "mysql", "DTM_TEST_MYSQL_URL", MySqlPoolOptions,
    create: "create table if not exists xa_account (user_id varchar(128) primary key, \
             balance bigint not null) engine=InnoDB",
    adjust: "update xa_account set balance = balance + ? where user_id = ?",
    insert: "insert into xa_account (user_id, balance) values (?, ?)",
    balance: "select balance from xa_account where user_id = ?",
    // `data` is gtrid + bqual; the SDK's XA ids have an empty bqual.
    prepared: "xa recover",
    reason: "select reason from dtm_barrier.barrier where gid = ? and branch_id = ? \
             and op = 'action' and barrier_id = '01'");

ledger!(Postgres, "postgres", "DTM_TEST_POSTGRES_URL", PgPoolOptions,
    create: "create table if not exists xa_account (user_id varchar(128) primary key, \
             balance bigint not null)",
    adjust: "update xa_account set balance = balance + $1 where user_id = $2",
    insert: "insert into xa_account (user_id, balance) values ($1, $2)",
    balance: "select balance from xa_account where user_id = $1",
    prepared: "select convert_to(gid, 'UTF8') as data from pg_prepared_xacts",
    reason: "select reason from dtm_barrier.barrier where gid = $1 and branch_id = $2 \
             and op = 'action' and barrier_id = '01'");

/// The database URL from the environment; a missing one fails the test loudly.
fn db_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: start the databases with `scripts/db.sh start` and run \
             `eval \"$(scripts/db.sh env)\"` before the XA tests"
        )
    })
}

/// One call the resource manager received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    db: &'static str,
    gid: String,
    branch_id: String,
    op: Op,
}

type CallLog = Arc<Mutex<Vec<Call>>>;

/// The resource manager of this test binary.
struct Rm {
    base: String,
    calls: CallLog,
}

impl Rm {
    /// The XA URL of the route on database `DB`.
    fn url<DB: Ledger>(&self) -> String {
        format!("{}/xa/{}", self.base, DB::ROUTE)
    }

    /// The `(branch_id, op)` of every call for `gid`, in arrival order.
    fn calls(&self, gid: &str) -> Vec<(String, Op)> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.gid == gid)
            .map(|c| (c.branch_id.clone(), c.op))
            .collect()
    }
}

/// The state of one database's route.
struct Route<DB: Ledger> {
    barrier: Barrier<DB>,
    dtm: DtmClient,
    calls: CallLog,
}

impl<DB: Ledger> Clone for Route<DB> {
    fn clone(&self) -> Self {
        Route {
            barrier: self.barrier.clone(),
            dtm: self.dtm.clone(),
            calls: Arc::clone(&self.calls),
        }
    }
}

/// The action and phase 2 of an XA branch, on the same URL as the reference client uses.
async fn xa_branch<DB: Ledger>(
    State(route): State<Route<DB>>,
    info: BranchInfo,
    body: Bytes,
) -> Result<DtmResult, Error> {
    route.calls.lock().unwrap().push(Call {
        db: DB::ROUTE,
        gid: info.gid.clone(),
        branch_id: info.branch_id.clone(),
        op: info.op,
    });
    match info.op {
        Op::Action => {
            let req: XaReq = serde_json::from_slice(&body)
                .map_err(|e| Error::InvalidArgument(format!("XA action body: {e}")))?;
            route
                .barrier
                .xa_local(&route.dtm, &info, async |conn| {
                    let rows = DB::adjust(conn, &req.user_id, req.amount)
                        .await
                        .map_err(Error::other)?;
                    if rows != 1 {
                        return Err(Error::other(format!("no account {}", req.user_id)));
                    }
                    if req.result == "FAILURE" {
                        return Err(Error::failure(SCRIPTED_FAILURE));
                    }
                    Ok(())
                })
                .await?;
        }
        Op::Commit | Op::Rollback => route.barrier.xa_phase2(&info).await?,
        other => return Err(Error::InvalidArgument(format!("unexpected op {other}"))),
    }
    Ok(DtmResult::Success)
}

/// Connects, creates the tables and returns the route's state.
async fn route<DB: Ledger>(calls: &CallLog) -> Route<DB> {
    let pool = DB::connect(&db_url(DB::URL_VAR), 20).await;
    let barrier = Barrier::new(pool.clone());
    barrier
        .create_table()
        .await
        .unwrap_or_else(|e| panic!("create the barrier table on {}: {e}", DB::ROUTE));
    DB::create_accounts(&pool)
        .await
        .unwrap_or_else(|e| panic!("create xa_account on {}: {e}", DB::ROUTE));
    Route {
        barrier,
        dtm: client(),
        calls: Arc::clone(calls),
    }
}

/// The resource manager, started on first use on its own runtime thread so that it (and its
/// pools) outlive every test's runtime.
fn rm() -> &'static Rm {
    static RM: OnceLock<Rm> = OnceLock::new();
    RM.get_or_init(|| {
        let calls = CallLog::default();
        let served = Arc::clone(&calls);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("resource manager runtime");
            rt.block_on(async move {
                let app = Router::new()
                    .route("/xa/mysql", post(xa_branch::<MySql>))
                    .with_state(route::<MySql>(&served).await)
                    .merge(
                        Router::new()
                            .route("/xa/postgres", post(xa_branch::<Postgres>))
                            .with_state(route::<Postgres>(&served).await),
                    );
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the resource manager");
                let addr = listener.local_addr().expect("resource manager address");
                tx.send(format!("http://{addr}")).unwrap();
                axum::serve(listener, app).await.expect("resource manager");
            });
        });
        let base = rx
            .recv()
            .expect("the resource manager started (see the panic above)");
        Rm { base, calls }
    })
}

/// A test's own connection to database `DB` (pools stay on the runtime that made them).
struct Db<DB: Ledger> {
    pool: Pool<DB>,
}

impl<DB: Ledger> Db<DB> {
    async fn open() -> Self {
        rm(); // creates the tables once
        Db {
            pool: DB::connect(&db_url(DB::URL_VAR), 3).await,
        }
    }

    /// Two fresh accounts named after the gid: `(from, to)`.
    async fn accounts(&self, gid: &str) -> (String, String) {
        let (from, to) = (format!("{gid}-out"), format!("{gid}-in"));
        DB::open_account(&self.pool, &from).await;
        DB::open_account(&self.pool, &to).await;
        (from, to)
    }

    async fn assert_balances(&self, from: &str, to: &str, moved: i64) {
        let balances = (
            DB::balance(&self.pool, from).await,
            DB::balance(&self.pool, to).await,
        );
        assert_eq!(
            balances,
            (INITIAL_BALANCE - moved, INITIAL_BALANCE + moved),
            "balances on {}",
            DB::ROUTE
        );
    }

    /// Fails if a local XA transaction of `gid` is still prepared.
    async fn assert_nothing_prepared(&self, gid: &str) {
        let prefix = format!("{gid}-");
        let left: Vec<String> = DB::prepared_xids(&self.pool)
            .await
            .into_iter()
            .filter(|xid| xid.starts_with(&prefix))
            .collect();
        assert!(
            left.is_empty(),
            "prepared XA left on {}: {left:?}",
            DB::ROUTE
        );
    }

    async fn barrier_reason(&self, gid: &str, branch_id: &str) -> Option<String> {
        DB::barrier_reason(&self.pool, gid, branch_id).await
    }
}

fn ops(q: &dtmcli::TransQuery) -> Vec<(&str, Op)> {
    q.branches
        .iter()
        .map(|b| (b.branch_id.as_str(), b.op))
        .collect()
}

fn calls(list: &[(&str, Op)]) -> Vec<(String, Op)> {
    list.iter()
        .map(|(id, op)| ((*id).to_owned(), *op))
        .collect()
}

/// TestXaNormal: two branches, submit, both committed in registration order.
async fn xa_normal<DB: Ledger>() {
    let db = Db::<DB>::open().await;
    let url = rm().url::<DB>();
    let gid = new_gid().await;
    let (from, to) = db.accounts(&gid).await;
    let (f, t) = (from.clone(), to.clone());
    let value = client()
        .xa(&gid)
        .retry_interval(SEC)
        .run(|xa| async move {
            xa.call_branch(&XaReq::new(&f, -30), &url).await?;
            xa.call_branch(&XaReq::new(&t, 30), &url).await?;
            Ok::<_, Error>(7)
        })
        .await
        .unwrap();
    assert_eq!(value, 7, "the closure's value is returned");
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        ops(&q),
        [
            ("01", Op::Rollback),
            ("01", Op::Commit),
            ("02", Op::Rollback),
            ("02", Op::Commit)
        ]
    );
    assert_eq!(
        rm().calls(&gid),
        calls(&[
            ("01", Op::Action),
            ("02", Op::Action),
            ("01", Op::Commit),
            ("02", Op::Commit)
        ])
    );
    db.assert_balances(&from, &to, 30).await;
    db.assert_nothing_prepared(&gid).await;
    assert_eq!(
        db.barrier_reason(&gid, "01").await.as_deref(),
        Some("action")
    );
}

/// TestXaRollback: the second branch's business answers FAILURE, so it never registers; the
/// client aborts and the server rolls back the first.
async fn xa_rollback<DB: Ledger>() {
    let db = Db::<DB>::open().await;
    let url = rm().url::<DB>();
    let gid = new_gid().await;
    let (from, to) = db.accounts(&gid).await;
    let (f, t) = (from.clone(), to.clone());
    let err = client()
        .xa(&gid)
        .retry_interval(SEC)
        .run(|xa| async move {
            xa.call_branch(&XaReq::new(&f, -30), &url).await?;
            xa.call_branch(&XaReq::new(&t, 30).failing(), &url).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(err.is_failure(), "{err:?}");
    assert!(err.to_string().contains(SCRIPTED_FAILURE), "{err}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert_eq!(q.branch_statuses(), [S, P]);
    assert_eq!(ops(&q), [("01", Op::Rollback), ("01", Op::Commit)]);
    let reason = q.transaction.unwrap().rollback_reason;
    assert!(reason.contains(SCRIPTED_FAILURE), "{reason}");
    assert_eq!(
        rm().calls(&gid),
        calls(&[("01", Op::Action), ("02", Op::Action), ("01", Op::Rollback)])
    );
    db.assert_balances(&from, &to, 0).await;
    db.assert_nothing_prepared(&gid).await;
    // Phase-2 rollback marks 01 so that a late action cannot prepare; 02's row went with its
    // aborted local transaction.
    assert_eq!(
        db.barrier_reason(&gid, "01").await.as_deref(),
        Some("rollback")
    );
    assert_eq!(db.barrier_reason(&gid, "02").await, None);
}

/// TestXaDuplicate: branch 01 is committed before the server's commit arrives, which then
/// finds nothing to commit and still succeeds.
async fn xa_commit_already_done<DB: Ledger>() {
    let db = Db::<DB>::open().await;
    let url = rm().url::<DB>();
    let gid = new_gid().await;
    let (from, to) = db.accounts(&gid).await;
    let (f, t) = (from.clone(), to.clone());
    let barrier = Barrier::new(db.pool.clone());
    let g = gid.clone();
    client()
        .xa(&gid)
        .retry_interval(SEC)
        .run(|xa| async move {
            xa.call_branch(&XaReq::new(&f, -30), &url).await?;
            let commit_01 = BranchInfo {
                gid: g,
                trans_type: TransType::Xa,
                branch_id: "01".to_owned(),
                op: Op::Commit,
                dtm: None,
                phase2_url: None,
            };
            barrier.xa_phase2(&commit_01).await?;
            xa.call_branch(&XaReq::new(&t, 30), &url).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    assert_eq!(
        rm().calls(&gid),
        calls(&[
            ("01", Op::Action),
            ("02", Op::Action),
            ("01", Op::Commit),
            ("02", Op::Commit)
        ])
    );
    db.assert_balances(&from, &to, 30).await;
    db.assert_nothing_prepared(&gid).await;
}

/// TestXaTimeout: the server times the transaction out after the first branch and rolls it
/// back; the second branch's registration is refused, so its local transaction aborts.
async fn xa_timeout<DB: Ledger>() {
    let db = Db::<DB>::open().await;
    let url = rm().url::<DB>();
    let gid = new_gid().await;
    let (from, to) = db.accounts(&gid).await;
    let (f, t, g) = (from.clone(), to.clone(), gid.clone());
    let err = client()
        .xa(&gid)
        .timeout_to_fail(2 * SEC)
        // Not shorter than the timeout: the server's first cron pass then already finds the
        // transaction timed out. A pass before the timeout leases the transaction for the
        // server's RetryInterval (10 s), and on the boltdb store `resetNextCronTime` does
        // not shorten that lease.
        .retry_interval(2 * SEC)
        .run(|xa| async move {
            xa.call_branch(&XaReq::new(&f, -30), &url).await?;
            let q = wait_status(&g, GlobalStatus::Failed).await;
            assert_eq!(q.branch_statuses(), [S, P], "01 rolled back by the timeout");
            xa.call_branch(&XaReq::new(&t, 30), &url).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(
        err.is_failure(),
        "the refused registration is a FAILURE: {err:?}"
    );
    let q = client().query(&gid).await.unwrap();
    let trans = q.transaction.as_ref().unwrap();
    assert_eq!(trans.status, GlobalStatus::Failed);
    assert_eq!(trans.rollback_reason, "Timeout after 2 seconds");
    assert_eq!(q.branch_statuses(), [S, P], "02 never registered");
    assert_eq!(
        rm().calls(&gid),
        calls(&[("01", Op::Action), ("01", Op::Rollback), ("02", Op::Action)])
    );
    db.assert_balances(&from, &to, 0).await;
    db.assert_nothing_prepared(&gid).await;
    assert_eq!(db.barrier_reason(&gid, "02").await, None);
}

/// TestXaCoverGidError: a gid with a quote cannot become an XA id; the resource manager
/// refuses it before touching the database and the client aborts.
async fn xa_gid_with_quote_is_refused<DB: Ledger>() {
    let db = Db::<DB>::open().await;
    let url = rm().url::<DB>();
    let gid = format!("{}'q", new_gid().await);

    // Directly: both phases refuse the id.
    let barrier = Barrier::new(db.pool.clone());
    let mut info = BranchInfo {
        gid: gid.clone(),
        trans_type: TransType::Xa,
        branch_id: "01".to_owned(),
        op: Op::Action,
        dtm: Some(client().server().to_owned()),
        phase2_url: Some(url.clone()),
    };
    let err = barrier
        .xa_local(&client(), &info, async |_conn| {
            Err::<(), _>(Error::other("the business code ran"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("XA id"), "{err}");
    info.op = Op::Rollback;
    let err = Error::from(barrier.xa_phase2(&info).await.unwrap_err());
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");

    // Through DTM: the action is answered 400, the client aborts.
    let err = client()
        .xa(&gid)
        .retry_interval(SEC)
        .run(|xa| async move {
            xa.call_branch(&XaReq::new("nobody", 1), &url).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("XA id"), "{err}");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert!(q.branches.is_empty(), "{:?}", q.branches);
}

/// Each scenario on MariaDB and on PostgreSQL.
macro_rules! on_both_databases {
    ($($scenario:ident),+ $(,)?) => {
        mod mariadb {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario::<sqlx::MySql>().await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario::<sqlx::Postgres>().await
                }
            )+
        }
    };
}

on_both_databases!(
    xa_normal,
    xa_rollback,
    xa_commit_already_done,
    xa_timeout,
    xa_gid_with_quote_is_refused,
);

/// TestXaLocalError: the closure fails before calling any branch; the transaction is aborted
/// with the error as reason.
#[tokio::test]
async fn xa_closure_error_aborts() {
    let gid = new_gid().await;
    let err = client()
        .xa(&gid)
        .run(|_xa| async { Err::<(), _>(Error::other("local error before any branch")) })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "local error before any branch");
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert!(q.branches.is_empty());
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "local error before any branch"
    );
}

/// A panic in the closure aborts the transaction, then resumes.
#[tokio::test]
async fn xa_closure_panic_aborts_and_resumes() {
    let gid = new_gid().await;
    let run = client().xa(&gid).run(|_xa| async { panic_in_closure() });
    let panic = AssertUnwindSafe(run).catch_unwind().await.unwrap_err();
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"boom in the XA closure")
    );
    let q = wait_status(&gid, GlobalStatus::Failed).await;
    assert!(q.branches.is_empty());
    assert_eq!(
        q.transaction.unwrap().rollback_reason,
        "panic: boom in the XA closure"
    );
}

fn panic_in_closure() -> Result<(), Error> {
    panic!("boom in the XA closure")
}
