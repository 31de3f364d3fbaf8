//! A flash sale on Redis: more buyers than items, each purchase a saga that takes one item
//! from the stock and records the order, both through the barrier on Redis. The stock never
//! goes below zero; a buyer who comes too late is rolled back, and the orders match the items
//! sold exactly, whatever DTM retries.
//!
//! ```sh
//! scripts/db.sh start   # or any Redis
//! REDIS_URL=redis://127.0.0.1:16379/ scripts/demo.sh redis_flash_sale
//! ```
//!
//! The service listens on `BUSI_ADDR` (default `127.0.0.1:8081`).

use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use dtm_barrier::RedisBarrier;
use dtmcli::{BranchInfo, DtmClient, DtmResult};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};

const ITEMS: i64 = 10;
const BUYERS: usize = 25;

/// One purchase: which sale, and how many items.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Purchase {
    sale: String,
    quantity: i64,
}

fn stock_key(sale: &str) -> String {
    format!("flash-sale-{sale}-stock")
}

fn orders_key(sale: &str) -> String {
    format!("flash-sale-{sale}-orders")
}

/// The service: each route is one amount change through the barrier. `Deduct` answers
/// FAILURE (409) when the stock would go below zero, and DTM rolls the purchase back.
fn router(barrier: RedisBarrier) -> Router {
    let change = |key: fn(&str) -> String, sign: i64| {
        post(
            move |State(barrier): State<RedisBarrier>,
                  info: BranchInfo,
                  Json(p): Json<Purchase>| async move {
                barrier
                    .branch(info)
                    .adjust_amount(&key(&p.sale), sign * p.quantity)
                    .await?;
                Ok::<_, dtm_barrier::Error>(DtmResult::Success)
            },
        )
    };
    Router::new()
        .route("/api/sale/Deduct", change(stock_key, -1))
        .route("/api/sale/DeductRevert", change(stock_key, 1))
        .route("/api/sale/Order", change(orders_key, 1))
        .route("/api/sale/OrderRevert", change(orders_key, -1))
        .with_state(barrier)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let server = std::env::var("DTM_SERVER")
        .unwrap_or_else(|_| "http://localhost:36789/api/dtmsvr".to_owned());
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let busi_addr = std::env::var("BUSI_ADDR").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());

    let dtm = DtmClient::new(&server)?;
    let mut redis = redis::Client::open(redis_url.as_str())?
        .get_connection_manager()
        .await
        .with_context(|| format!("connect to Redis at {redis_url}"))?;
    let barrier = RedisBarrier::new(redis.clone());
    let listener = tokio::net::TcpListener::bind(&busi_addr)
        .await
        .with_context(|| format!("bind the service to {busi_addr}"))?;
    tokio::spawn(async move { axum::serve(listener, router(barrier)).await });
    let busi = format!("http://{busi_addr}/api/sale");

    // The sale's keys exist before the sale starts (a missing key is a FAILURE).
    let sale = dtmcli::local_gid();
    let _: () = redis.set(stock_key(&sale), ITEMS).await?;
    let _: () = redis.set(orders_key(&sale), 0).await?;
    println!("sale {sale}: {ITEMS} items, {BUYERS} buyers");

    // Every buyer at once: a saga each.
    let purchase = Purchase {
        sale: sale.clone(),
        quantity: 1,
    };
    let buyers = (0..BUYERS).map(|_| {
        let (dtm, busi, purchase) = (dtm.clone(), busi.clone(), purchase.clone());
        async move {
            let gid = dtm.new_gid().await?;
            dtm.saga(&gid)
                .add(
                    format!("{busi}/Deduct"),
                    format!("{busi}/DeductRevert"),
                    &purchase,
                )
                .add(
                    format!("{busi}/Order"),
                    format!("{busi}/OrderRevert"),
                    &purchase,
                )
                .retry_interval(Duration::from_secs(1))
                .wait_result(true)
                .submit()
                .await
        }
    });
    let outcomes = futures_util::future::join_all(buyers).await;
    let sold = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused = outcomes
        .iter()
        .filter(|o| matches!(o, Err(e) if e.is_failure()))
        .count();
    for outcome in &outcomes {
        if let Err(e) = outcome {
            anyhow::ensure!(
                e.is_failure(),
                "a purchase neither succeeded nor rolled back: {e}"
            );
        }
    }

    let stock: i64 = redis.get(stock_key(&sale)).await?;
    let orders: i64 = redis.get(orders_key(&sale)).await?;
    println!("bought: {sold}, rolled back: {refused}");
    println!("stock left: {stock}, orders: {orders}");
    anyhow::ensure!(
        sold as i64 == ITEMS && stock == 0 && orders == ITEMS,
        "the sale does not add up: sold {sold}, stock {stock}, orders {orders}"
    );
    println!("every item sold exactly once; the stock never went below zero");
    Ok(())
}
