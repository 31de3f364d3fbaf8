//! Requests/s of a branch handler protected by the sub-transaction barrier versus the same
//! handler with a bare local transaction, on SQLite, MariaDB and PostgreSQL; with the `redis`
//! feature, an amount change through the Redis barrier versus a bare `INCRBY` (group `redis`).
//!
//! Each database gets a criterion group named after it with three benchmarks. Every iteration
//! is one request (or call), one after the other, so requests/s is one client's rate
//! (1 / latency):
//!
//! - `bare`: an axum route whose handler begins a transaction from the pool, runs
//!   `update bench_account set balance = balance + 1 where id = ?` and commits;
//! - `barrier_layer`: the same update in a handler taking `BarrierTx` on a route wrapped in
//!   `BarrierLayer`; every request has a fresh gid
//!   (`gid=…&trans_type=saga&branch_id=01&op=action`), so the barrier really inserts its row;
//! - `barrier_call`: the same update through `BranchBarrier::call`, without axum, to tell the
//!   layer's overhead from the barrier's SQL.
//!
//! The routers are driven in process with `tower::ServiceExt::oneshot` (no network). SQLite
//! is a file in a temporary folder (WAL, busy timeout, sqlx's default `synchronous = FULL`).
//! MariaDB and PostgreSQL come from `DTM_TEST_MYSQL_URL` and `DTM_TEST_POSTGRES_URL`
//! (`scripts/db.sh start` runs both); a database whose variable is missing, or that cannot be
//! reached, is skipped with a line saying why. Run:
//!
//! ```text
//! eval "$(scripts/db.sh env)"; cargo bench -p dtm-barrier --bench barrier
//! ```
//!
//! Criterion's `thrpt:` line is in elements/s, here requests/s. The tables are the
//! benchmark's own, emptied at start: `bench_account` and the barrier table `bench_barrier`
//! (`dtm_barrier_bench.barrier` on MariaDB and PostgreSQL), created by `Barrier::create_table`
//! like the default one, so that rows and locks of tests sharing the servers (in
//! `dtm_barrier.barrier`) stay out of the measurement.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::routing::post;
use axum::Router;
use criterion::{Criterion, Throughput};
use dtm_barrier::{Barrier, BarrierDatabase, BarrierLayer, BarrierTx};
use dtmcli::{BranchInfo, DtmResult, Error, Op, TransType};
use futures_util::future::BoxFuture;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{MySql, Pool, Postgres, Sqlite};
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// Rows in `bench_account`; requests update them in turn.
const ROWS: u64 = 4;
/// Connections per pool (requests are sequential; more would only sit idle).
const POOL_SIZE: u32 = 4;
/// Prefix of every gid the benchmark uses.
const GID_PREFIX: &str = "barrier-bench-";

static NEXT_ROW: AtomicU64 = AtomicU64::new(0);
static NEXT_GID: AtomicU64 = AtomicU64::new(0);
/// How often the barrier-protected handler ran (the sanity check reads it).
static BARRIER_HANDLER_RUNS: AtomicU64 = AtomicU64::new(0);

/// The benchmark's statements for one database (placeholders differ).
trait BenchDb: BarrierDatabase {
    /// The group name.
    const GROUP: &'static str;
    /// The benchmark's barrier table.
    const BARRIER_TABLE: &'static str;

    /// `update bench_account set balance = balance + 1 where id = ?`; the affected rows.
    fn add_one(conn: &mut Self::Connection, id: i64) -> BoxFuture<'_, Result<u64, sqlx::Error>>;

    /// Runs a statement without parameters on the pool.
    fn execute<'c>(pool: &'c Pool<Self>, sql: &'c str) -> BoxFuture<'c, Result<u64, sqlx::Error>>;

    /// Counts the rows of the barrier table `table` with this gid.
    fn count_gid<'c>(
        pool: &'c Pool<Self>,
        table: &'c str,
        gid: &'c str,
    ) -> BoxFuture<'c, Result<i64, sqlx::Error>>;
}

macro_rules! bench_db {
    ($db:ty, $name:literal, $table:literal, $param:literal) => {
        impl BenchDb for $db {
            const GROUP: &'static str = $name;
            const BARRIER_TABLE: &'static str = $table;

            fn add_one(
                conn: &mut Self::Connection,
                id: i64,
            ) -> BoxFuture<'_, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    let sql = concat!(
                        "update bench_account set balance = balance + 1 where id = ",
                        $param
                    );
                    let done = sqlx::query(sql).bind(id).execute(&mut *conn).await?;
                    Ok(done.rows_affected())
                })
            }

            fn execute<'c>(
                pool: &'c Pool<Self>,
                sql: &'c str,
            ) -> BoxFuture<'c, Result<u64, sqlx::Error>> {
                Box::pin(async move { Ok(sqlx::query(sql).execute(pool).await?.rows_affected()) })
            }

            fn count_gid<'c>(
                pool: &'c Pool<Self>,
                table: &'c str,
                gid: &'c str,
            ) -> BoxFuture<'c, Result<i64, sqlx::Error>> {
                Box::pin(async move {
                    let sql = format!("select count(*) from {table} where gid = {}", $param);
                    sqlx::query_scalar(&sql).bind(gid).fetch_one(pool).await
                })
            }
        }
    };
}

bench_db!(Sqlite, "sqlite", "bench_barrier", "?");
// Own tables, away from the rows (and locks) of test suites sharing the servers.
bench_db!(MySql, "mariadb", "dtm_barrier_bench.barrier", "?");
bench_db!(Postgres, "postgres", "dtm_barrier_bench.barrier", "$1");

fn next_row() -> i64 {
    (NEXT_ROW.fetch_add(1, Ordering::Relaxed) % ROWS + 1) as i64
}

/// A gid no earlier run used.
fn next_gid() -> String {
    static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let n = NEXT_GID.fetch_add(1, Ordering::Relaxed);
    format!("{GID_PREFIX}{run:x}-{n}")
}

fn request(gid: &str) -> Request<Body> {
    Request::post(format!(
        "/op?gid={gid}&trans_type=saga&branch_id=01&op=action"
    ))
    .body(Body::empty())
    .expect("a valid request")
}

fn branch_info(gid: String) -> BranchInfo {
    BranchInfo {
        gid,
        trans_type: TransType::Saga,
        branch_id: "01".to_owned(),
        op: Op::Action,
        dtm: None,
        phase2_url: None,
    }
}

fn updated_one(affected: u64) -> Result<(), Error> {
    if affected == 1 {
        Ok(())
    } else {
        Err(Error::other(format!("updated {affected} rows, not 1")))
    }
}

/// The business step behind the barrier layer.
async fn with_barrier<DB: BenchDb>(tx: BarrierTx<DB>) -> Result<DtmResult, Error> {
    BARRIER_HANDLER_RUNS.fetch_add(1, Ordering::Relaxed);
    let mut tx = tx.lock().await?;
    updated_one(
        DB::add_one(&mut tx, next_row())
            .await
            .map_err(Error::other)?,
    )?;
    Ok(DtmResult::Success)
}

/// The same step in its own local transaction, without a barrier.
async fn bare<DB: BenchDb>(State(pool): State<Pool<DB>>) -> Result<DtmResult, Error> {
    let mut tx = pool.begin().await.map_err(Error::other)?;
    updated_one(
        DB::add_one(&mut tx, next_row())
            .await
            .map_err(Error::other)?,
    )?;
    tx.commit().await.map_err(Error::other)?;
    Ok(DtmResult::Success)
}

/// Creates and fills `bench_account`, creates the barrier table and empties it.
async fn setup<DB: BenchDb>(barrier: &Barrier<DB>) -> Result<(), Box<dyn std::error::Error>> {
    let pool = barrier.pool();
    DB::execute(
        pool,
        "create table if not exists bench_account (id bigint primary key, balance bigint not null)",
    )
    .await?;
    DB::execute(pool, "delete from bench_account").await?;
    let rows: Vec<String> = (1..=ROWS).map(|id| format!("({id}, 0)")).collect();
    let insert = format!(
        "insert into bench_account (id, balance) values {}",
        rows.join(", ")
    );
    DB::execute(pool, &insert).await?;
    barrier.create_table().await?;
    DB::execute(pool, &format!("delete from {}", barrier.table())).await?;
    Ok(())
}

/// One request with a fresh gid runs the handler and leaves a barrier row; the same request
/// again is answered by the barrier alone. Proves the layer is really in the measured path.
async fn sanity_check<DB: BenchDb>(
    barrier: &Barrier<DB>,
    app: &Router,
) -> Result<(), Box<dyn std::error::Error>> {
    let gid = next_gid();
    let runs = BARRIER_HANDLER_RUNS.load(Ordering::Relaxed);
    for attempt in ["first", "duplicate"] {
        let status = app.clone().oneshot(request(&gid)).await?.status();
        if !status.is_success() {
            return Err(format!("{attempt} request answered {status}").into());
        }
    }
    let ran = BARRIER_HANDLER_RUNS.load(Ordering::Relaxed) - runs;
    let rows = DB::count_gid(barrier.pool(), barrier.table(), &gid).await?;
    if ran != 1 || rows != 1 {
        return Err(
            format!("handler ran {ran} times, {rows} barrier rows; expected 1 and 1").into(),
        );
    }
    Ok(())
}

fn bench_database<DB: BenchDb>(c: &mut Criterion, rt: &Runtime, pool: Pool<DB>) {
    let barrier = match Barrier::with_table(pool.clone(), DB::BARRIER_TABLE) {
        Ok(barrier) => barrier,
        Err(e) => {
            println!("{}: not run: {e}", DB::GROUP);
            return;
        }
    };
    let bare_app = Router::new()
        .route("/op", post(bare::<DB>))
        .with_state(pool.clone());
    let barrier_app = Router::new()
        .route("/op", post(with_barrier::<DB>))
        .layer(BarrierLayer::for_http(barrier.clone()));
    let ready = rt.block_on(async {
        setup(&barrier).await?;
        sanity_check(&barrier, &barrier_app).await
    });
    if let Err(e) = ready {
        println!("{}: not run: setup failed: {e}", DB::GROUP);
        return;
    }

    let mut group = c.benchmark_group(DB::GROUP);
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare", |b| {
        b.to_async(rt).iter(|| {
            let app = bare_app.clone();
            async move {
                let response = app.oneshot(request(&next_gid())).await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
            }
        });
    });
    group.bench_function("barrier_layer", |b| {
        b.to_async(rt).iter(|| {
            let app = barrier_app.clone();
            async move {
                let response = app.oneshot(request(&next_gid())).await.unwrap();
                assert!(response.status().is_success(), "{}", response.status());
            }
        });
    });
    group.bench_function("barrier_call", |b| {
        b.to_async(rt).iter(|| {
            let branch = barrier.branch(branch_info(next_gid()));
            async move {
                let done = branch
                    .call(async |conn| {
                        let affected = DB::add_one(conn, next_row()).await?;
                        Ok::<_, dtm_barrier::Error>(affected)
                    })
                    .await;
                assert!(matches!(done, Ok(Some(1))), "{done:?}");
            }
        });
    });
    group.finish();
    rt.block_on(pool.close());
}

fn sqlite(c: &mut Criterion, rt: &Runtime) {
    let dir = std::env::temp_dir().join(format!("dtm-barrier-bench-{}", std::process::id()));
    let connected = std::fs::create_dir_all(&dir)
        .map_err(sqlx::Error::from)
        .and_then(|()| rt.block_on(sqlite_pool(dir.join("bench.db"))));
    match connected {
        Ok(pool) => bench_database(c, rt, pool),
        Err(e) => println!("sqlite: not run: cannot open {}: {e}", dir.display()),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn sqlite_pool(file: PathBuf) -> Result<Pool<Sqlite>, sqlx::Error> {
    let options = SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(5));
    SqlitePoolOptions::new()
        .max_connections(POOL_SIZE)
        .connect_with(options)
        .await
}

fn mariadb(c: &mut Criterion, rt: &Runtime) {
    let Some(url) = database_url::<MySql>("DTM_TEST_MYSQL_URL") else {
        return;
    };
    let pool = MySqlPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url);
    match rt.block_on(pool) {
        Ok(pool) => bench_database(c, rt, pool),
        Err(e) => println!("mariadb: not run: cannot connect to {url}: {e}"),
    }
}

fn postgres(c: &mut Criterion, rt: &Runtime) {
    let Some(url) = database_url::<Postgres>("DTM_TEST_POSTGRES_URL") else {
        return;
    };
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url);
    match rt.block_on(pool) {
        Ok(pool) => bench_database(c, rt, pool),
        Err(e) => println!("postgres: not run: cannot connect to {url}: {e}"),
    }
}

/// The URL in `var`, or a line saying the database's benchmarks were not run.
fn database_url<DB: BenchDb>(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!(
                "{}: not run: {var} is not set (scripts/db.sh start; eval \"$(scripts/db.sh env)\")",
                DB::GROUP
            );
            None
        }
    }
}

/// The Redis group (feature `redis`, `DTM_TEST_REDIS_URL`): `bare` is a plain `INCRBY` of
/// one key, `barrier_call` the same change through `RedisBranch::adjust_amount` with a fresh
/// gid (one Lua script: the checks, the barrier key, the change).
#[cfg(feature = "redis")]
fn redis(c: &mut Criterion, rt: &Runtime) {
    let url = match std::env::var("DTM_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            println!("redis: not run: DTM_TEST_REDIS_URL is not set (scripts/db.sh start; eval \"$(scripts/db.sh env)\")");
            return;
        }
    };
    let conn = rt.block_on(async {
        redis::Client::open(url.as_str())?
            .get_connection_manager()
            .await
    });
    let mut conn = match conn {
        Ok(conn) => conn,
        Err(e) => {
            println!("redis: not run: cannot connect to {url}: {e}");
            return;
        }
    };
    let key = format!("{GID_PREFIX}redis-{}", std::process::id());
    rt.block_on(async {
        redis::cmd("SET")
            .arg(&key)
            .arg(1_000_000_000_i64)
            .query_async::<()>(&mut conn)
            .await
    })
    .expect("set the benchmark key");
    let barrier = dtm_barrier::RedisBarrier::new(conn.clone()).expire(Duration::from_secs(600));
    let mut group = c.benchmark_group("redis");
    group.throughput(Throughput::Elements(1));
    group.bench_function("bare", |b| {
        b.to_async(rt).iter(|| {
            let (mut conn, key) = (conn.clone(), key.clone());
            async move {
                redis::cmd("INCRBY")
                    .arg(&key)
                    .arg(-1)
                    .query_async::<i64>(&mut conn)
                    .await
                    .expect("INCRBY")
            }
        });
    });
    group.bench_function("barrier_call", |b| {
        b.to_async(rt).iter(|| {
            let (barrier, key) = (barrier.clone(), key.clone());
            async move {
                barrier
                    .branch(branch_info(next_gid()))
                    .adjust_amount(&key, -1)
                    .await
                    .expect("adjust through the barrier")
            }
        });
    });
    group.finish();
}

fn barrier_vs_bare(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    sqlite(c, &rt);
    mariadb(c, &rt);
    postgres(c, &rt);
    #[cfg(feature = "redis")]
    redis(c, &rt);
}

fn main() {
    // What `criterion_group!` / `criterion_main!` expand to, without their undocumented `pub fn`.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    barrier_vs_bare(&mut c);
    c.final_summary();
}
