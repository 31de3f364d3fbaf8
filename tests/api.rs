//! The read API, gids and admin calls against the real DTM server.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use dtmcli::{AllQuery, DtmClient, Error, GlobalStatus, TransType};
use support::busi::TransferReq;
use support::{accounts, bank, client, new_gid, status_of, wait_status};

#[tokio::test]
async fn new_gid_from_the_server_and_locally() {
    let a = client().new_gid().await.unwrap();
    let b = client().new_gid().await.unwrap();
    assert_ne!(a, b);
    // The server's short uuid: 22 base-57 digits, fewer when the leading ones are zero.
    assert!((20..=22).contains(&a.len()), "the server's short uuid: {a}");
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
    let local = dtmcli::local_gid();
    // A local gid is accepted by the server like its own.
    client()
        .msg(&local)
        .add(
            bank().url("TransIn", ""),
            &TransferReq::new(1, "x", format!("{local}-in")),
        )
        .submit()
        .await
        .unwrap();
    wait_status(&local, GlobalStatus::Succeed).await;
}

#[tokio::test]
async fn query_of_an_unknown_gid_is_empty() {
    let q = client().query("no-such-gid").await.unwrap();
    assert_eq!(q.transaction, None);
    assert!(q.branches.is_empty());
    let err = client().query("").await.unwrap_err();
    assert!(matches!(err, Error::MissingField("gid")), "{err:?}");
}

#[tokio::test]
async fn query_returns_the_stored_transaction() {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(5, from, to);
    let b = bank();
    client()
        .saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .wait_result(true)
        .submit()
        .await
        .unwrap();
    let q = client().query(&gid).await.unwrap();
    let t = q.transaction.unwrap();
    assert_eq!(
        (t.gid.as_str(), t.trans_type, t.status),
        (gid.as_str(), TransType::Saga, GlobalStatus::Succeed)
    );
    assert_eq!(t.protocol, "http");
    assert!(t.create_time.is_some() && t.finish_time.is_some());
    assert_eq!(q.branches.len(), 2);
    assert_eq!(q.branches[1].url, b.url("TransOut", ""));
}

#[tokio::test]
async fn all_pages_through_every_transaction_with_filters() {
    let mut mine = HashSet::new();
    for _ in 0..3 {
        let gid = new_gid().await;
        let (from, to) = accounts(&gid);
        client()
            .saga(&gid)
            .add(
                bank().url("TransOut", ""),
                "",
                &TransferReq::new(1, from, to),
            )
            .wait_result(true)
            .submit()
            .await
            .unwrap();
        mine.insert(gid);
    }
    let dtm = client();
    let mut seen = Vec::new();
    let mut query = AllQuery::default().limit(1);
    let mut pages = 0;
    loop {
        let page = dtm.all(&query).await.unwrap();
        pages += 1;
        assert!(page.transactions.len() <= 1);
        seen.extend(page.transactions.into_iter().map(|t| t.gid));
        match page.next_position {
            Some(p) => query = query.position(p),
            None => break,
        }
        assert!(pages < 1000, "paging does not end");
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no transaction twice");
    assert!(mine.is_subset(&unique), "every saga of this test is listed");

    let filtered = dtm
        .all(
            &AllQuery::default()
                .status(GlobalStatus::Succeed)
                .trans_type(TransType::Saga),
        )
        .await
        .unwrap();
    assert!(filtered
        .transactions
        .iter()
        .all(|t| t.status == GlobalStatus::Succeed && t.trans_type == TransType::Saga));
    let listed: HashSet<_> = filtered.transactions.into_iter().map(|t| t.gid).collect();
    assert!(mine.is_subset(&listed));

    let none = dtm
        .all(&AllQuery::default().trans_type(TransType::Xa))
        .await
        .unwrap();
    assert!(none.transactions.is_empty());
}

#[tokio::test]
async fn force_stop_ends_a_transaction_without_compensation() {
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(7, from.clone(), to);
    let ongoing = vec!["ONGOING"; 100].join(",");
    let b = bank();
    let saga = client()
        .saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .add(
            b.url("TransIn", &ongoing),
            b.url("TransInCompensate", ""),
            &req,
        )
        .retry_interval(Duration::from_secs(1));
    saga.submit().await.unwrap();
    // Wait until TransOut moved the money and TransIn keeps answering ONGOING.
    for _ in 0..400 {
        if b.routes(&gid).iter().any(|r| r == "TransIn") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    client().force_stop(&gid).await.unwrap();
    assert_eq!(status_of(&gid).await.0, Some(GlobalStatus::Failed));
    assert!(!b.routes(&gid).iter().any(|r| r.ends_with("Compensate")));
    assert_eq!(
        b.balance(&from).await,
        support::busi::INITIAL_BALANCE - 7,
        "not compensated"
    );
    let err = client().force_stop(&gid).await.unwrap_err();
    assert!(err.is_failure(), "{err:?}");
}

#[tokio::test]
async fn unknown_gid_in_admin_calls_is_a_server_error() {
    let err = client()
        .reset_next_cron_time("no-such-gid")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Status { status: 500, .. }), "{err:?}");
}

#[tokio::test]
async fn unreachable_server_is_a_request_error() {
    // The DTM of this binary is up; a client of a port nobody listens on must fail cleanly.
    let dtm = DtmClient::new(format!(
        "http://127.0.0.1:{}/api/dtmsvr",
        support::free_port()
    ))
    .unwrap();
    let err = dtm.new_gid().await.unwrap_err();
    assert!(matches!(err, Error::Request { .. }), "{err:?}");
    let err = dtm
        .tcc("g")
        .run(|_tcc| async { Ok::<_, Error>(()) })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Request { .. }), "{err:?}");
}

/// `ping` and `version` read the server's version route; a wrong base URL fails there, at
/// start-up, instead of at the first transaction.
#[tokio::test]
async fn ping_and_version() {
    let dtm = client();
    dtm.ping().await.unwrap();
    // A server built with `go install` (as here) calls itself v0.0.0-dev; release builds
    // carry their tag.
    let version = dtm.version().await.unwrap();
    assert!(version.starts_with('v') && version.len() > 1, "{version}");
    let wrong = dtmcli::DtmClient::new(format!("{}/wrong", support::dtm().api)).unwrap();
    let err = wrong.ping().await.unwrap_err();
    assert!(
        matches!(err, dtmcli::Error::Status { status: 404, .. }),
        "{err:?}"
    );
}

/// A timeout set on the builder ends calls on an HTTP client the caller supplied (which has
/// none of its own here).
#[tokio::test]
async fn an_explicit_timeout_applies_to_a_supplied_client() {
    let addr = support::silent_server();
    let dtm = DtmClient::builder(format!("http://{addr}/api/dtmsvr"))
        .http_client(reqwest::Client::new())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = support::within_20s(dtm.new_gid()).await.unwrap_err();
    assert!(
        matches!(&err, Error::Request { cause, .. } if cause.is_timeout()),
        "{err:?}"
    );
}
