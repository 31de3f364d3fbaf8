//! Quick start: an inter-bank transfer as a saga, a TCC and a two-phase message, against a
//! running DTM server.
//!
//! `scripts/demo.sh` installs and starts DTM, then runs this example. To run it against a
//! server of your own:
//!
//! ```sh
//! DTM_SERVER=http://localhost:36789/api/dtmsvr cargo run --example quick_start
//! ```
//!
//! The business service (module `busi`) listens on `BUSI_ADDR` (default `127.0.0.1:8081`) and
//! keeps its balances in SQLite (a temporary file, or `BUSI_SQLITE`) behind the DTM barrier.

mod busi;

use std::time::Duration;

use anyhow::{bail, Context};
use busi::{Bank, Ledger, TransferReq, INITIAL_BALANCE};
use dtmcli::DtmClient;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::Sqlite;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let server = std::env::var("DTM_SERVER")
        .unwrap_or_else(|_| "http://localhost:36789/api/dtmsvr".to_owned());
    let busi_addr = std::env::var("BUSI_ADDR").unwrap_or_else(|_| "127.0.0.1:8081".to_owned());

    let dtm = DtmClient::new(&server)?;
    let db_file = match std::env::var("BUSI_SQLITE") {
        Ok(path) => path.into(),
        Err(_) => std::env::temp_dir().join(format!("dtm-quick-start-{}.db", dtmcli::local_gid())),
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&db_file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .with_context(|| format!("open {}", db_file.display()))?;
    let bank: Bank<Sqlite> = Bank::connect(pool, dtm.clone()).await?;
    let listener = tokio::net::TcpListener::bind(&busi_addr)
        .await
        .with_context(|| format!("bind the business service to {busi_addr}"))?;
    tokio::spawn(busi::serve(listener, bank.clone())?);
    println!("DTM server:       {server}");
    println!("business service: {}", bank.base_url());
    println!("balances:         SQLite {}", db_file.display());
    println!("alice and bob start with {INITIAL_BALANCE} each\n");

    let req = TransferReq::new(30, "alice", "bob");
    let b = &bank;

    // 1. A saga: TransOut then TransIn, each with a compensation.
    let gid = dtm.new_gid().await?;
    dtm.saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .add(b.url("TransIn", ""), b.url("TransInCompensate", ""), &req)
        .wait_result(true)
        .submit()
        .await?;
    report("saga", &dtm, &gid, b).await?;

    // 2. A saga whose TransIn fails: DTM compensates both steps.
    let gid = dtm.new_gid().await?;
    let outcome = dtm
        .saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .add(
            b.url("TransIn", "FAILURE"),
            b.url("TransInCompensate", ""),
            &req,
        )
        .wait_result(true)
        .submit()
        .await;
    match outcome {
        Err(e) if e.is_failure() => {}
        other => bail!("the failing saga should be rolled back, got {other:?}"),
    }
    report("saga with a failing step", &dtm, &gid, b).await?;

    // 3. A TCC: reserve in TransOutTry, credit in TransInConfirm.
    let gid = dtm.new_gid().await?;
    let r = req.clone();
    dtm.tcc(&gid)
        .run(|tcc| async move {
            tcc.call_branch(
                &r,
                &b.url("TransOutTry", ""),
                &b.url("TransOutConfirm", ""),
                &b.url("TransOutCancel", ""),
            )
            .await?;
            tcc.call_branch(
                &r,
                &b.url("TransInTry", ""),
                &b.url("TransInConfirm", ""),
                &b.url("TransInCancel", ""),
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    report("tcc", &dtm, &gid, b).await?;

    // 4. A two-phase message: the money leaves alice in a local transaction guarded by the
    //    barrier; DTM then delivers TransIn to bob. If this process died between the two,
    //    DTM would ask QueryPreparedB whether the local transaction committed.
    let gid = dtm.new_gid().await?;
    let msg = dtm.msg(&gid).add(b.url("TransIn", ""), &req);
    b.barrier()
        .do_and_submit(msg, b.url("QueryPreparedB", ""), async |conn| {
            if !Sqlite::adjust(conn, &req.from, -30, true).await? {
                return Err(dtm_barrier::Error::failure("insufficient balance"));
            }
            Ok(())
        })
        .await?;
    report("msg (DoAndSubmit)", &dtm, &gid, b).await?;

    let (alice, bob) = (b.balance("alice").await, b.balance("bob").await);
    if alice != INITIAL_BALANCE - 90 || bob != INITIAL_BALANCE + 90 {
        bail!("unexpected balances: alice {alice}, bob {bob}");
    }
    println!("\nall transactions ended as expected: 3 transfers of 30 applied, 1 rolled back");
    Ok(())
}

/// Waits until the transaction ends and prints its outcome and the balances.
async fn report(what: &str, dtm: &DtmClient, gid: &str, bank: &Bank<Sqlite>) -> anyhow::Result<()> {
    let q = busi::wait_final(dtm, gid).await?;
    let t = q.transaction.context("transaction not found")?;
    let branches: Vec<String> = q
        .branches
        .iter()
        .map(|b| format!("{} {} {}", b.branch_id, b.op, b.status))
        .collect();
    println!("{what:<26} {gid}: {}", t.status);
    println!("    branches: {}", branches.join(", "));
    if !t.rollback_reason.is_empty() {
        println!("    rollback reason: {}", t.rollback_reason);
    }
    println!(
        "    balances: alice {}, bob {}",
        bank.balance("alice").await,
        bank.balance("bob").await
    );
    Ok(())
}
