//! Test support: the real DTM server and the quick-start business service, one of each per
//! test binary, started on free loopback ports on first use and stopped when the binary ends.
//!
//! The DTM binary comes from `scripts/install-dtm.sh` (or `DTM_BIN`); a missing binary fails
//! the tests loudly.

#![allow(dead_code, unreachable_pub)]

#[path = "../../examples/busi/mod.rs"]
pub mod busi;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use dtmcli::{BranchStatus, DtmClient, GlobalStatus, TransQuery};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{MySql, Postgres, Sqlite};

/// The DTM version the suite runs against.
pub const DTM_VERSION: &str = "v1.19.0";

/// A running DTM server.
pub struct Dtm {
    /// The HTTP API base, `http://127.0.0.1:<port>/api/dtmsvr`.
    pub api: String,
    /// The gRPC port.
    pub grpc_port: u16,
    /// The temporary folder with the config, the boltdb store and the log.
    pub dir: PathBuf,
    child: Mutex<Child>,
    /// Closing this pipe (also when the test process dies) makes the wrapper stop DTM.
    _lifeline: Mutex<ChildStdin>,
}

impl Drop for Dtm {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn dtm_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("DTM_BIN") {
        return PathBuf::from(bin);
    }
    let cache = std::env::var_os("DTM_SDK_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/dtm-rs")
        });
    cache.join("bin").join(format!("dtm-{DTM_VERSION}"))
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /api/ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.contains("pong")
}

impl Dtm {
    /// Starts a DTM server with a fresh boltdb store on free ports and waits until it answers.
    pub fn start() -> Dtm {
        Dtm::start_with("UpdateBranchSync: 1\n")
    }

    /// Starts a DTM server that keeps v1.19.0's default `UpdateBranchSync: 0`, under which
    /// branch records without `sync` go to a writer that saves nothing on boltdb.
    pub fn start_with_update_branch_async() -> Dtm {
        Dtm::start_with("")
    }

    fn start_with(branch_sync: &str) -> Dtm {
        let bin = dtm_binary();
        assert!(
            bin.exists(),
            "the DTM server binary is missing at {}: run scripts/install-dtm.sh (or set DTM_BIN)",
            bin.display()
        );
        let dir = std::env::temp_dir().join(format!("dtm-test-{}", dtmcli::local_gid()));
        std::fs::create_dir_all(&dir).expect("create the DTM work folder");
        let (http_port, grpc_port) = (free_port(), free_port());
        // PROTOCOL.md §10: synchronous branch updates and a fast cron; per-transaction
        // retry_interval / timeout_to_fail shorten the rest.
        let config = format!(
            "Store:\n  Driver: boltdb\nHttpPort: {http_port}\nGrpcPort: {grpc_port}\n\
             {branch_sync}TransCronInterval: 1\nConfigUpdateInterval: 1\n\
             RetryInterval: 10\nTimeoutToFail: 10\nRequestTimeout: 3\nLogLevel: info\n"
        );
        std::fs::write(dir.join("conf.yml"), config).expect("write the DTM config");
        // The wrapper shell stops DTM and removes the folder when its stdin closes, which
        // also happens when the test process ends without running destructors.
        let script = r#"dir="$1"; "$0" -c "$dir/conf.yml" >"$dir/dtm.log" 2>&1 </dev/null &
pid=$!
cat >/dev/null
kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir""#;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&bin)
            .arg(&dir)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .spawn()
            .expect("start the DTM wrapper shell");
        let lifeline = child.stdin.take().expect("piped stdin");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ping(http_port) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("DTM exited early ({status}); log:\n{}", read_log(&dir));
            }
            assert!(
                Instant::now() < deadline,
                "DTM did not answer /api/ping within 30 s; log:\n{}",
                read_log(&dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Dtm {
            api: format!("http://127.0.0.1:{http_port}/api/dtmsvr"),
            grpc_port,
            dir,
            child: Mutex::new(child),
            _lifeline: Mutex::new(lifeline),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        read_log(&self.dir)
    }
}

fn read_log(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("dtm.log")).unwrap_or_default()
}

/// The DTM server of this test binary.
pub fn dtm() -> &'static Dtm {
    static DTM: OnceLock<Dtm> = OnceLock::new();
    DTM.get_or_init(Dtm::start)
}

/// A client of this binary's DTM server.
pub fn client() -> DtmClient {
    DtmClient::new(&dtm().api).expect("valid DTM URL")
}

/// The SQLite bank: the quick-start business service on the embedded default database.
pub fn bank() -> &'static busi::Bank<Sqlite> {
    static BANK: OnceLock<busi::Bank<Sqlite>> = OnceLock::new();
    BANK.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("dtm-busi-{}", dtmcli::local_gid()));
        std::fs::create_dir_all(&dir).expect("create the SQLite folder");
        let file = dir.join("busi.db");
        start_bank(move || async move {
            let options = SqliteConnectOptions::new()
                .filename(file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(30));
            SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await
                .expect("open the SQLite database")
        })
    })
}

/// The database URL from the environment; a missing one fails the test loudly.
pub fn db_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: start the databases with `scripts/db.sh start` and export what \
             `scripts/db.sh env` prints (scripts/test.sh does both)"
        )
    })
}

/// The bank on MariaDB/MySQL (`DTM_TEST_MYSQL_URL`).
pub fn mysql_bank() -> &'static busi::Bank<MySql> {
    static BANK: OnceLock<busi::Bank<MySql>> = OnceLock::new();
    BANK.get_or_init(|| {
        let url = db_url("DTM_TEST_MYSQL_URL");
        start_bank(move || async move {
            let pool = MySqlPoolOptions::new()
                .max_connections(20)
                .connect(&url)
                .await
                .expect("connect to MariaDB");
            // The test database may hold a barrier table made by older code with the server's
            // case-insensitive collation: convert it as `check_table`'s error says.
            let barrier = dtm_barrier::Barrier::new(pool.clone());
            if let Err(dtm_barrier::Error::UnsafeTable { problem, .. }) =
                barrier.check_table().await
            {
                if problem.contains("alter table") {
                    let table = dtm_barrier::TableName::new(barrier.table()).unwrap();
                    let fix = dtm_barrier::Dialect::mysql_fix_sql(&table, "utf8mb4_nopad_bin");
                    sqlx::query(&fix)
                        .execute(&pool)
                        .await
                        .expect("convert the test barrier table");
                }
            }
            pool
        })
    })
}

/// The bank on PostgreSQL (`DTM_TEST_POSTGRES_URL`).
pub fn postgres_bank() -> &'static busi::Bank<Postgres> {
    static BANK: OnceLock<busi::Bank<Postgres>> = OnceLock::new();
    BANK.get_or_init(|| {
        let url = db_url("DTM_TEST_POSTGRES_URL");
        start_bank(move || async move {
            PgPoolOptions::new()
                .max_connections(20)
                .connect(&url)
                .await
                .expect("connect to PostgreSQL")
        })
    })
}

/// Starts a bank on its own runtime thread, so that it (and its pool) outlive every test's
/// runtime.
fn start_bank<DB, F, Fut>(connect: F) -> busi::Bank<DB>
where
    DB: busi::Ledger,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = sqlx::Pool<DB>>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("business service runtime");
        rt.block_on(async move {
            let pool = connect().await;
            let bank = busi::Bank::connect(pool, client())
                .await
                .expect("create the bank's tables");
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind the business service");
            let serve = busi::serve(listener, bank.clone()).expect("business service address");
            tx.send(bank).unwrap();
            serve.await.expect("business service");
        });
    });
    rx.recv().expect("business service started")
}

/// A fresh gid from the server.
pub async fn new_gid() -> String {
    client().new_gid().await.expect("newGid")
}

/// Accounts unique to one test, so that tests sharing the service can check balances.
pub fn accounts(gid: &str) -> (String, String) {
    (format!("{gid}-out"), format!("{gid}-in"))
}

/// Polls `query` until the transaction reaches `want`, nudging the cron with
/// `resetNextCronTime` so that retries happen at once. Panics with the last state and the
/// DTM log on timeout.
pub async fn wait_status(gid: &str, want: GlobalStatus) -> TransQuery {
    wait_status_within(gid, want, Duration::from_secs(40)).await
}

/// [`wait_status`] with an explicit deadline.
pub async fn wait_status_within(gid: &str, want: GlobalStatus, within: Duration) -> TransQuery {
    let dtm = client();
    let deadline = Instant::now() + within;
    let mut last_nudge = Instant::now();
    loop {
        let q = dtm.query(gid).await.expect("query");
        let status = q.transaction.as_ref().map(|t| t.status);
        if status == Some(want) {
            return q;
        }
        if let Some(s) = status {
            assert!(
                !s.is_final(),
                "transaction {gid} ended as {s}, expected {want}: {q:#?}"
            );
        }
        if Instant::now() > deadline {
            panic!("transaction {gid} did not reach {want} in {within:?}: {q:#?}");
        }
        if last_nudge.elapsed() > Duration::from_millis(500) && status.is_some() {
            let _ = dtm.reset_next_cron_time(gid).await;
            last_nudge = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the balances of a transfer's two accounts against [`busi::INITIAL_BALANCE`].
pub async fn assert_balances<DB: busi::Ledger>(
    bank: &busi::Bank<DB>,
    (from, from_delta): (&str, i64),
    (to, to_delta): (&str, i64),
) {
    assert_eq!(
        bank.balance(from).await,
        busi::INITIAL_BALANCE + from_delta,
        "{from}"
    );
    assert_eq!(
        bank.balance(to).await,
        busi::INITIAL_BALANCE + to_delta,
        "{to}"
    );
}

/// The status of a transaction now.
pub async fn status_of(gid: &str) -> (Option<GlobalStatus>, Vec<BranchStatus>) {
    let q = client().query(gid).await.expect("query");
    let branches = q.branch_statuses();
    (q.transaction.map(|t| t.status), branches)
}

/// Shorthands for branch status lists.
#[allow(unused_imports)]
pub use dtmcli::BranchStatus::{Failed as F, Prepared as P, Succeed as S};

/// The stored status and the pending branch URLs of an [`dtmcli::Error::Unfinished`]; panics
/// naming the error when it is another one.
pub fn unfinished(err: &dtmcli::Error) -> (GlobalStatus, &[String]) {
    match err {
        dtmcli::Error::Unfinished {
            status, pending, ..
        } => {
            assert!(err.is_unfinished() && !err.is_failure(), "{err:?}");
            (*status, pending)
        }
        other => panic!("expected Unfinished, got {other:?}"),
    }
}

/// Asserts that `err` is an [`dtmcli::Error::Unfinished`] of a `submitted` transaction whose
/// pending branch URLs contain `fragments`, one each, in order.
pub fn assert_unfinished_on(err: &dtmcli::Error, fragments: &[&str]) {
    let (status, pending) = unfinished(err);
    assert_eq!(status, GlobalStatus::Submitted);
    assert_eq!(pending.len(), fragments.len(), "{pending:?}");
    for (url, fragment) in pending.iter().zip(fragments) {
        assert!(url.contains(fragment), "{fragment} not in {pending:?}");
    }
}

/// Asserts that transaction `gid` ends as succeeded within 20 s (DTM's retries finish it).
pub async fn assert_succeeds_in_the_end(gid: &str) {
    assert_eq!(
        client()
            .wait_final(gid, Duration::from_secs(20))
            .await
            .unwrap(),
        dtmcli::Outcome::Succeeded
    );
}

/// The address of a server that accepts connections and never answers.
pub fn silent_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent server");
    let addr = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    addr
}

/// Awaits `future`, failing the test if it takes more than 20 s (a call that should have been
/// ended by a timeout of the SDK's).
pub async fn within_20s<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("ended by the SDK's timeout")
}
