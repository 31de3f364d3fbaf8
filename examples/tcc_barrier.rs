//! TCC with the barrier on MariaDB/MySQL or PostgreSQL: a transfer that commits, and one that
//! overdraws and is cancelled, where the barrier keeps the cancel of the failed try from paying
//! anything back.
//!
//! ```sh
//! scripts/db.sh start                               # MariaDB and PostgreSQL on loopback
//! eval "$(scripts/db.sh env)"
//! DATABASE_URL=$DTM_TEST_MYSQL_URL scripts/demo.sh tcc_barrier
//! DATABASE_URL=$DTM_TEST_POSTGRES_URL scripts/demo.sh tcc_barrier
//! ```
//!
//! `DATABASE_URL` picks the database by scheme (`mysql://` or `postgres://`); `DTM_SERVER`
//! the DTM server (default `http://localhost:36789/api/dtmsvr`).

mod busi;

use anyhow::{bail, Context};
use busi::{Bank, Ledger, TransferReq, INITIAL_BALANCE};
use dtmcli::{DtmClient, GlobalStatus};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .context("set DATABASE_URL to a mysql:// or postgres:// URL (see scripts/db.sh env)")?;
    let server = std::env::var("DTM_SERVER")
        .unwrap_or_else(|_| "http://localhost:36789/api/dtmsvr".to_owned());
    let dtm = DtmClient::new(&server)?;
    if url.starts_with("mysql://") {
        run(sqlx::MySqlPool::connect(&url).await?, dtm, "MariaDB/MySQL").await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        run(sqlx::PgPool::connect(&url).await?, dtm, "PostgreSQL").await
    } else {
        bail!("DATABASE_URL must start with mysql:// or postgres://")
    }
}

async fn run<DB: Ledger>(pool: sqlx::Pool<DB>, dtm: DtmClient, name: &str) -> anyhow::Result<()> {
    let bank = Bank::connect(pool, dtm.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    tokio::spawn(busi::serve(listener, bank.clone())?);
    println!("business service {} on {name}", bank.base_url());

    // Accounts unique to this run, so the example can be run again on the same database.
    let run = dtmcli::local_gid();
    let (alice, bob) = (format!("alice-{run}"), format!("bob-{run}"));
    let b = &bank;

    // A transfer of 30: TransOutTry reserves, the confirms complete it.
    let ok = TransferReq::new(30, &alice, &bob);
    let gid = dtm.new_gid().await?;
    dtm.tcc(&gid)
        .run(|tcc| async move {
            tcc.call_branch(
                &ok,
                &b.url("TransOutTry", ""),
                &b.url("TransOutConfirm", ""),
                &b.url("TransOutCancel", ""),
            )
            .await?;
            tcc.call_branch(
                &ok,
                &b.url("TransInTry", ""),
                &b.url("TransInConfirm", ""),
                &b.url("TransInCancel", ""),
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    busi::expect_final(&dtm, &gid, GlobalStatus::Succeed).await?;
    println!(
        "tcc transfer of 30:      succeed; alice {}, bob {}",
        b.balance(&alice).await,
        b.balance(&bob).await
    );

    // An overdraft: TransOutTry answers FAILURE inside the barrier, the transaction is
    // cancelled, and the cancel of that failed try is a null compensation.
    let too_much = TransferReq::new(INITIAL_BALANCE * 2, &alice, &bob);
    let gid = dtm.new_gid().await?;
    let outcome = dtm
        .tcc(&gid)
        .run(|tcc| async move {
            tcc.call_branch(
                &too_much,
                &b.url("TransInTry", ""),
                &b.url("TransInConfirm", ""),
                &b.url("TransInCancel", ""),
            )
            .await?;
            tcc.call_branch(
                &too_much,
                &b.url("TransOutTry", ""),
                &b.url("TransOutConfirm", ""),
                &b.url("TransOutCancel", ""),
            )
            .await?;
            Ok::<_, dtmcli::Error>(())
        })
        .await;
    match outcome {
        Err(e) if e.is_failure() => {}
        other => bail!("the overdraft should fail, got {other:?}"),
    }
    busi::expect_final(&dtm, &gid, GlobalStatus::Failed).await?;
    let (a, bo) = (b.balance(&alice).await, b.balance(&bob).await);
    println!("tcc overdraft of 20000:  failed;  alice {a}, bob {bo}");
    if a != INITIAL_BALANCE - 30 || bo != INITIAL_BALANCE + 30 {
        bail!("unexpected balances: alice {a}, bob {bo}");
    }
    println!("balances are exact: the cancel of the failed try paid nothing back");
    Ok(())
}
