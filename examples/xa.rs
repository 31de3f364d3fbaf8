//! XA on MariaDB/MySQL or PostgreSQL: a transfer whose two branches each prepare a local XA
//! transaction that DTM then commits, and an overdraft whose failing branch makes DTM roll the
//! other one back.
//!
//! ```sh
//! scripts/db.sh start                               # MariaDB and PostgreSQL on loopback
//! eval "$(scripts/db.sh env)"
//! DATABASE_URL=$DTM_TEST_MYSQL_URL scripts/demo.sh xa
//! DATABASE_URL=$DTM_TEST_POSTGRES_URL scripts/demo.sh xa   # needs max_prepared_transactions > 0
//! ```
//!
//! The resource manager is one route, `/api/xa/Transfer`: for `op=action` it runs the business
//! in a local XA transaction (`Barrier::xa_local`, which also registers the branch at DTM), for
//! `op=commit` / `op=rollback` it finishes it (`Barrier::xa_phase2`).

mod busi;

use anyhow::{bail, Context};
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use busi::{Ledger, INITIAL_BALANCE};
use dtm_barrier::{Barrier, XaDatabase};
use dtmcli::{BranchInfo, DtmClient, DtmResult, Error, GlobalStatus, Op};
use serde::{Deserialize, Serialize};

/// One branch of the transfer: move `delta` on `account`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Move {
    account: String,
    delta: i64,
}

struct Rm<DB: Ledger + XaDatabase> {
    barrier: Barrier<DB>,
    dtm: DtmClient,
}

impl<DB: Ledger + XaDatabase> Clone for Rm<DB> {
    fn clone(&self) -> Self {
        Rm {
            barrier: self.barrier.clone(),
            dtm: self.dtm.clone(),
        }
    }
}

/// Phase 1 (`op=action`) or phase 2 (`op=commit` / `op=rollback`) of an XA branch.
async fn transfer<DB: Ledger + XaDatabase>(
    State(rm): State<Rm<DB>>,
    info: BranchInfo,
    body: axum::body::Bytes,
) -> Result<DtmResult, dtm_barrier::Error> {
    if matches!(info.op, Op::Commit | Op::Rollback) {
        rm.barrier.xa_phase2(&info).await?;
        return Ok(DtmResult::Success);
    }
    let m: Move = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidArgument(format!("move body: {e}")))?;
    rm.barrier
        .xa_local(&rm.dtm, &info, async |conn| {
            if !DB::adjust(conn, &m.account, m.delta, true).await? {
                let why = format!("insufficient balance in {}", m.account);
                return Err(dtm_barrier::Error::failure(why));
            }
            Ok(())
        })
        .await?;
    Ok(DtmResult::Success)
}

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

async fn run<DB: Ledger + XaDatabase>(
    pool: sqlx::Pool<DB>,
    dtm: DtmClient,
    name: &str,
) -> anyhow::Result<()> {
    let barrier = Barrier::new(pool.clone());
    barrier.create_table().await?;
    DB::create_accounts(&pool).await?;
    let app = Router::new()
        .route("/api/xa/Transfer", post(transfer::<DB>))
        .with_state(Rm {
            barrier,
            dtm: dtm.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rm_url = format!("http://{}/api/xa/Transfer", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("XA resource manager {rm_url} on {name}");

    let run = dtmcli::local_gid();
    let (alice, bob) = (format!("alice-{run}"), format!("bob-{run}"));
    let balance = |account: String| {
        let pool = pool.clone();
        async move {
            DB::balance(&pool, &account)
                .await
                .map(|b| b.unwrap_or(INITIAL_BALANCE))
        }
    };

    // A transfer of 30: both branches prepare, DTM commits them.
    let gid = dtm.new_gid().await?;
    let (a, b, url) = (alice.clone(), bob.clone(), rm_url.clone());
    dtm.xa(&gid)
        .run(|xa| async move {
            xa.call_branch(
                &Move {
                    account: a,
                    delta: -30,
                },
                &url,
            )
            .await?;
            xa.call_branch(
                &Move {
                    account: b,
                    delta: 30,
                },
                &url,
            )
            .await?;
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    busi::expect_final(&dtm, &gid, GlobalStatus::Succeed).await?;
    println!(
        "xa transfer of 30:      succeed; alice {}, bob {}",
        balance(alice.clone()).await?,
        balance(bob.clone()).await?
    );

    // An overdraft: bob's branch prepares, alice's fails; DTM rolls bob's back.
    let gid = dtm.new_gid().await?;
    let (a, b, url) = (alice.clone(), bob.clone(), rm_url.clone());
    let outcome = dtm
        .xa(&gid)
        .run(|xa| async move {
            xa.call_branch(
                &Move {
                    account: b,
                    delta: 20_000,
                },
                &url,
            )
            .await?;
            xa.call_branch(
                &Move {
                    account: a,
                    delta: -20_000,
                },
                &url,
            )
            .await?;
            Ok::<_, Error>(())
        })
        .await;
    match outcome {
        Err(e) if e.is_failure() => {}
        other => bail!("the overdraft should fail, got {other:?}"),
    }
    busi::expect_final(&dtm, &gid, GlobalStatus::Failed).await?;
    let (a, b) = (balance(alice).await?, balance(bob).await?);
    println!("xa overdraft of 20000:  failed;  alice {a}, bob {b}");
    if a != INITIAL_BALANCE - 30 || b != INITIAL_BALANCE + 30 {
        bail!("unexpected balances: alice {a}, bob {b}");
    }
    println!("balances are exact: the prepared branch of the overdraft was rolled back");
    Ok(())
}
