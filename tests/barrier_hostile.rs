//! Hostile input against the barrier on the real databases (SQLite, MariaDB, PostgreSQL):
//! distinct gids never share barrier rows, values that do not fit the table are refused before
//! anything is written, tables that would merge values are reported, and a custom PostgreSQL
//! table stays usable by Go services.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use dtm_barrier::{Barrier, BarrierDatabase, Error};
use dtmcli::BranchInfo;
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{MySql, Pool, Postgres, Sqlite};

async fn mysql() -> Pool<MySql> {
    let url = support::db_url("DTM_TEST_MYSQL_URL");
    MySqlPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap()
}

async fn postgres() -> Pool<Postgres> {
    let url = support::db_url("DTM_TEST_POSTGRES_URL");
    PgPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap()
}

async fn sqlite() -> Pool<Sqlite> {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap()
}

/// A scratch schema (or table prefix on SQLite) of this run.
fn scratch(prefix: &str) -> String {
    format!("{prefix}_{}", &dtmcli::local_gid()[..12])
}

fn info(gid: &str, branch_id: &str) -> BranchInfo {
    BranchInfo {
        gid: gid.to_owned(),
        trans_type: dtmcli::TransType::Saga,
        branch_id: branch_id.to_owned(),
        op: dtmcli::Op::Action,
        dtm: None,
        phase2_url: None,
    }
}

/// Runs a barrier call that counts how often its business code ran.
async fn run<DB: BarrierDatabase>(
    barrier: &Barrier<DB>,
    info: BranchInfo,
    ran: &AtomicUsize,
) -> Result<(), Error> {
    barrier
        .branch(info)
        .call(async |_conn| {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Error>(())
        })
        .await?;
    Ok(())
}

async fn rows<DB: Counted>(barrier: &Barrier<DB>) -> i64 {
    DB::count(
        barrier.pool(),
        format!("select count(*) from {}", barrier.table()),
    )
    .await
}

/// The databases whose row counts these tests read.
trait Counted: BarrierDatabase {
    fn count(pool: &Pool<Self>, sql: String) -> futures_util::future::BoxFuture<'_, i64>;
}

macro_rules! counted {
    ($($db:ty),*) => {$(
        impl Counted for $db {
            fn count(pool: &Pool<Self>, sql: String) -> futures_util::future::BoxFuture<'_, i64> {
                Box::pin(async move {
                    sqlx::query_scalar::<_, i64>(&sql).fetch_one(pool).await.unwrap()
                })
            }
        }
    )*};
}
counted!(MySql, Postgres, Sqlite);

/// Pairs of gids that a case-, accent- or trailing-space-insensitive key, or a truncating
/// insert, would take for one: each must run its business code once.
async fn distinct_values_never_merge<DB: Counted>(barrier: Barrier<DB>) {
    barrier.create_table().await.unwrap();
    barrier.check_table().await.unwrap();
    let run_id = &dtmcli::local_gid()[..8];
    let long = |last: char| {
        let mut s = format!("{run_id}-{}", "a".repeat(dtmcli::MAX_ID_CHARS));
        s.truncate(dtmcli::MAX_ID_CHARS - 1);
        s.push(last);
        s
    };
    let pairs = [
        (format!("Order-{run_id}"), format!("order-{run_id}")),
        (format!("cafe-{run_id}"), format!("café-{run_id}")),
        (format!("space-{run_id}"), format!("space-{run_id} ")),
        (long('x'), long('y')),
    ];
    for (a, b) in &pairs {
        let ran = AtomicUsize::new(0);
        run(&barrier, info(a, "01"), &ran).await.unwrap();
        run(&barrier, info(b, "01"), &ran).await.unwrap();
        assert_eq!(
            ran.load(Ordering::SeqCst),
            2,
            "{a:?} and {b:?} are distinct"
        );
        // The same gid again is a duplicate.
        run(&barrier, info(b, "01"), &ran).await.unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), 2, "{b:?} again is a duplicate");
    }
    // Message queries keep distinct gids apart too.
    for (a, b) in &pairs {
        let first = barrier.query_prepared(a).await.unwrap();
        assert_eq!(first, dtmcli::DtmResult::Failure, "{a:?}");
        assert_eq!(
            barrier.query_prepared(b).await.unwrap(),
            dtmcli::DtmResult::Failure
        );
    }
    // Branch ids likewise.
    let ran = AtomicUsize::new(0);
    let gid = format!("branch-{run_id}");
    run(&barrier, info(&gid, "A1"), &ran).await.unwrap();
    run(&barrier, info(&gid, "a1"), &ran).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 2);

    // Too long for the columns: refused before anything is written, never truncated into the
    // 128-character value that shares its first 128 characters.
    let before = rows(&barrier).await;
    for (gid, branch_id, field) in [
        (format!("{}z", long('x')), "01".to_owned(), "gid"),
        (
            gid.clone(),
            "9".repeat(dtmcli::MAX_ID_CHARS + 1),
            "branch_id",
        ),
        (format!("ctl-{run_id}\u{7}"), "01".to_owned(), "gid"),
    ] {
        let err = run(&barrier, info(&gid, &branch_id), &AtomicUsize::new(0))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Dtm(dtmcli::Error::InvalidField { field: f, .. }) if *f == field),
            "{err:?}"
        );
        if field == "gid" {
            let err = barrier.query_prepared(&gid).await.unwrap_err();
            assert!(
                matches!(err, Error::Dtm(dtmcli::Error::InvalidField { .. })),
                "{err:?}"
            );
        }
    }
    assert_eq!(rows(&barrier).await, before, "nothing written");
}

#[tokio::test]
async fn distinct_values_never_merge_on_sqlite() {
    distinct_values_never_merge(Barrier::new(sqlite().await)).await;
}

#[tokio::test]
async fn distinct_values_never_merge_on_mariadb() {
    let table = format!("{}.barrier", scratch("dtm_hostile"));
    distinct_values_never_merge(Barrier::with_table(mysql().await, &table).unwrap()).await;
}

#[tokio::test]
async fn distinct_values_never_merge_on_postgres() {
    let table = format!("{}.barrier", scratch("dtm_hostile"));
    distinct_values_never_merge(Barrier::with_table(postgres().await, &table).unwrap()).await;
}

/// The Go client's DDL (`sqls/dtmcli.barrier.mysql.sql`) on a server whose default collation
/// is case- and accent-insensitive: `check_table` says so and how to fix it; once fixed the
/// table keeps `Order-1` and `order-1` apart.
#[tokio::test]
async fn an_insensitive_mariadb_table_is_reported_with_its_fix() {
    let pool = mysql().await;
    let schema = scratch("dtm_ci");
    let table = format!("{schema}.barrier");
    sqlx::raw_sql(&format!(
        "create database {schema} default charset utf8mb4 collate utf8mb4_general_ci;
         create table {table} (id bigint(22) primary key auto_increment,
           trans_type varchar(45) default '', gid varchar(128) default '',
           branch_id varchar(128) default '', op varchar(45) default '',
           barrier_id varchar(45) default '', reason varchar(45) default '',
           create_time datetime default now(), update_time datetime default now(),
           key(create_time), key(update_time), unique key(gid, branch_id, op, barrier_id)
         ) engine=InnoDB default charset=utf8mb4"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let barrier = Barrier::with_table(pool.clone(), &table).unwrap();
    // create_table leaves an existing table alone (and logs the problem).
    barrier.create_table().await.unwrap();
    let err = barrier.check_table().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::UnsafeTable { .. }), "{err:?}");
    assert!(
        text.contains("utf8mb4_general_ci") && text.contains("alter table"),
        "{text}"
    );

    // What the merge looks like on such a table: the second gid's business never runs.
    let ran = AtomicUsize::new(0);
    run(&barrier, info("Order-1", "01"), &ran).await.unwrap();
    run(&barrier, info("order-1", "01"), &ran).await.unwrap();
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "the insensitive table merges them"
    );

    // The fix the error gives.
    sqlx::raw_sql(&format!(
        "delete from {table}; {}",
        dtm_barrier::Dialect::mysql_fix_sql(
            &dtm_barrier::TableName::new(&table).unwrap(),
            "utf8mb4_nopad_bin"
        )
    ))
    .execute(&pool)
    .await
    .unwrap();
    barrier.check_table().await.unwrap();
    let ran = AtomicUsize::new(0);
    run(&barrier, info("Order-1", "01"), &ran).await.unwrap();
    run(&barrier, info("order-1", "01"), &ran).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 2);
    sqlx::raw_sql(&format!("drop database {schema}"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_table_is_reported() {
    let barrier = Barrier::with_table(sqlite().await, "never_created").unwrap();
    let err = barrier.check_table().await.unwrap_err();
    assert!(err.to_string().contains("create_table"), "{err}");
    let barrier = Barrier::with_table(postgres().await, "dtm_nowhere.barrier").unwrap();
    assert!(matches!(
        barrier.check_table().await,
        Err(Error::UnsafeTable { .. })
    ));
}

/// PostgreSQL with a non-deterministic (case-insensitive) collation on the key columns.
#[tokio::test]
async fn a_nondeterministic_postgres_collation_is_reported() {
    let pool = postgres().await;
    let schema = scratch("dtm_ci");
    sqlx::raw_sql(&format!(
        "create schema {schema};
         create collation {schema}.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         create table {schema}.barrier (id serial primary key,
           trans_type varchar(45) default '', gid varchar(128) collate {schema}.ci default '',
           branch_id varchar(128) default '', op varchar(45) default '',
           barrier_id varchar(45) default '', reason varchar(45) default '',
           constraint uniq_barrier unique(gid, branch_id, op, barrier_id))"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let barrier = Barrier::with_table(pool.clone(), &format!("{schema}.barrier")).unwrap();
    let err = barrier.check_table().await.unwrap_err();
    assert!(err.to_string().contains("gid ci"), "{err}");
    sqlx::raw_sql(&format!("drop schema {schema} cascade"))
        .execute(&pool)
        .await
        .unwrap();
}

/// A custom PostgreSQL table created by this SDK takes the constraint name the Go client's
/// insert names (`on conflict on constraint uniq_barrier`); a second barrier table in the same
/// schema cannot, and is refused with a clear error instead of being made unusable for Go.
#[tokio::test]
async fn a_custom_postgres_table_is_usable_by_go_services() {
    let pool = postgres().await;
    let schema = scratch("dtm_custom");
    let table = format!("{schema}.barrier");
    let barrier = Barrier::with_table(pool.clone(), &table).unwrap();
    barrier.create_table().await.unwrap();
    barrier.check_table().await.unwrap();
    // The Go client's statement, verbatim but for the table name.
    let go_insert = format!(
        "insert into {table}(trans_type, gid, branch_id, op, barrier_id, reason) \
         values($1,$2,$3,$4,$5,$6) on conflict ON CONSTRAINT uniq_barrier do nothing"
    );
    let insert = || {
        sqlx::query(&go_insert)
            .bind("saga")
            .bind("go-gid")
            .bind("01")
            .bind("action")
            .bind("01")
            .bind("action")
    };
    assert_eq!(insert().execute(&pool).await.unwrap().rows_affected(), 1);
    assert_eq!(insert().execute(&pool).await.unwrap().rows_affected(), 0);
    // The Rust barrier sees the Go row: the same action from Rust is a duplicate.
    let ran = AtomicUsize::new(0);
    run(&barrier, info("go-gid", "01"), &ran).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    let second = Barrier::with_table(pool.clone(), &format!("{schema}.other")).unwrap();
    let err = second.create_table().await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::UnsafeTable { .. }) && text.contains("schema of its own"),
        "{text}"
    );
    sqlx::raw_sql(&format!("drop schema {schema} cascade"))
        .execute(&pool)
        .await
        .unwrap();
}

/// Names that cannot work on the database are refused at construction, not at the first call.
#[tokio::test]
async fn unusable_table_names_are_refused_at_construction() {
    let pg = PgPoolOptions::new()
        .connect_lazy("postgres://nowhere/x")
        .unwrap();
    for bad in [
        format!("dtm.{}", "t".repeat(60)), // its sequence `<table>_seq` would pass 63 bytes
        format!("{}.barrier", "s".repeat(64)),
        "order".to_owned(),
        "dtm.user".to_owned(),
        "pg_catalog.barrier".to_owned(),
        "information_schema.barrier".to_owned(),
    ] {
        let err = Barrier::with_table(pg.clone(), &bad).unwrap_err();
        assert!(matches!(err, Error::InvalidTable { .. }), "{bad}: {err}");
    }
    assert!(Barrier::with_table(pg, &format!("dtm.{}", "t".repeat(59))).is_ok());
    let my = MySqlPoolOptions::new()
        .connect_lazy("mysql://nowhere/x")
        .unwrap();
    for bad in [
        "mysql.barrier",
        "performance_schema.barrier",
        "sys.barrier",
        "select",
    ] {
        assert!(Barrier::with_table(my.clone(), bad).is_err(), "{bad}");
    }
    assert!(Barrier::with_table(my, &"t".repeat(64)).is_ok());
}
