//! The README's walkthrough: one axum service whose transfer branches sit behind the barrier,
//! mounted beside `/health`, and a saga over them whose outcome the caller reads.
//!
//! `scripts/demo.sh walkthrough` starts DTM and runs it; the README shows this file.
use std::time::Duration;

use axum::{routing::get, routing::post, Json, Router};
use dtm_barrier::{Barrier, BarrierLayer, BarrierTx, Error};
use dtmcli::{DtmClient, DtmResult};
use serde::{Deserialize, Serialize};
use sqlx::{sqlite::SqliteConnectOptions, Sqlite, SqlitePool};

#[derive(Serialize, Deserialize)]
struct Adjust {
    account: String,
    delta: i64,
}

/// One branch for every step: the action adds `delta` to the account, its compensation
/// takes it back, both inside the barrier's local transaction. An action that would take a
/// balance below zero answers FAILURE, which makes DTM roll the saga back; a compensation
/// never does (DTM retries a failing compensation until it succeeds).
async fn adjust(tx: BarrierTx<Sqlite>, Json(a): Json<Adjust>) -> Result<DtmResult, Error> {
    let compensation = tx.branch().info().op.is_compensation();
    let delta = if compensation { -a.delta } else { a.delta };
    let floor = if compensation { i64::MIN } else { 0 };
    let mut conn = tx.lock().await?;
    let done =
        sqlx::query("update account set balance = balance + ? where id = ? and balance + ? >= ?")
            .bind(delta)
            .bind(&a.account)
            .bind(delta)
            .bind(floor)
            .execute(&mut *conn)
            .await?; // a database error rolls back and answers 500: DTM retries
    if done.rows_affected() == 0 {
        return Err(Error::failure(format!(
            "{} cannot pay {}",
            a.account, -delta
        )));
    }
    Ok(DtmResult::Success) // 200: business change and barrier rows commit together
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dtm_url = std::env::var("DTM_SERVER").unwrap_or("http://localhost:36789/api/dtmsvr".into());
    let addr = std::env::var("BUSI_ADDR").unwrap_or("127.0.0.1:8081".into());

    // The service's database, with its barrier table.
    let file = std::env::temp_dir().join(format!("walkthrough-{}.db", dtmcli::local_gid()));
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&file)
            .create_if_missing(true),
    )
    .await?;
    sqlx::query("create table account (id text primary key, balance integer not null)")
        .execute(&pool)
        .await?;
    sqlx::query("insert into account values ('alice', 100), ('bob', 0)")
        .execute(&pool)
        .await?;
    let barrier = Barrier::new(pool.clone());
    barrier.create_table().await?;

    // DTM's branch routes behind the barrier, nested beside an ordinary route.
    let branches = Router::new()
        .route("/Adjust", post(adjust))
        .layer(BarrierLayer::for_http(barrier));
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .nest("/api/busi", branches);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The caller: a saga moving 30, then one moving 500, which alice cannot pay.
    let dtm = DtmClient::new(dtm_url)?;
    dtm.ping().await?; // a wrong DTM address fails here, not at the first transaction
    let url = format!("http://{addr}/api/busi/Adjust");
    for amount in [30, 500] {
        let gid = dtm.new_gid().await?;
        let out = Adjust {
            account: "alice".into(),
            delta: -amount,
        };
        let into = Adjust {
            account: "bob".into(),
            delta: amount,
        };
        let result = dtm
            .saga(&gid)
            .add(&url, &url, &out) // action URL, compensation URL, payload
            .add(&url, &url, &into)
            .wait_result(true)
            .submit()
            .await;
        match result {
            Ok(()) => println!("{gid}: moved {amount}"),
            Err(e) if e.is_failure() => println!("{gid}: rolled back ({e})"),
            Err(e) if e.is_unfinished() => {
                println!("{gid}: not finished yet ({e}); waiting");
                println!(
                    "{gid}: {:?}",
                    dtm.wait_final(&gid, Duration::from_secs(30)).await?
                );
            }
            Err(e) => return Err(e.into()),
        }
    }

    let balances: Vec<(String, i64)> =
        sqlx::query_as("select id, balance from account order by id")
            .fetch_all(&pool)
            .await?;
    println!("balances: {balances:?}");
    anyhow::ensure!(
        balances == [("alice".into(), 70), ("bob".into(), 30)],
        "unexpected balances"
    );
    Ok(())
}
