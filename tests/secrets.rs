//! Secrets in branch headers never escape, and gids DTM cannot hand back unchanged never
//! reach it. Every log event of this test binary, at TRACE level and from every crate, is
//! captured while sagas and TCCs with an `Authorization` header run through the real DTM
//! server; the secret must appear in none of it, nor in any `Debug` output or error.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dtmcli::{Error, GlobalStatus};
use support::busi::TransferReq;
use support::{accounts, bank, client, new_gid, wait_status, P, S};

const SECRET: &str = "Bearer s3cr3t-token-7f2c";

/// Everything every thread logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per binary");
        logs
    })
}

fn assert_no_secret(what: &str, text: &str) {
    assert!(!text.contains("s3cr3t"), "the secret is in {what}: {text}");
}

fn assert_logs_clean() {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    assert!(
        text.contains("TRACE") || text.contains("DEBUG"),
        "nothing was captured"
    );
    assert_no_secret("the logs", &text);
}

/// The bank's TransOut as a TCC branch.
async fn trans_out_try(tcc: &dtmcli::Tcc, req: &TransferReq) -> Result<(), Error> {
    let b = bank();
    tcc.call_branch(
        req,
        b.url("TransOutTry", ""),
        b.url("TransOutConfirm", ""),
        b.url("TransOutCancel", ""),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_saga_with_an_authorization_header_prints_it_nowhere() {
    logs();
    let b = bank();
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let saga = client()
        .saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .add(b.url("TransIn", ""), b.url("TransInCompensate", ""), &req)
        .branch_header("Authorization", SECRET)
        .wait_result(true);
    assert_no_secret("the saga's Debug", &format!("{saga:?} {saga:#?}"));
    let msg = client().msg(&gid).branch_header("Authorization", SECRET);
    let xa = client().xa(&gid).branch_header("Authorization", SECRET);
    let debug = format!("{msg:?} {xa:?}");
    assert!(debug.contains("Authorization"), "{debug}");
    assert_no_secret("the msg and XA builders' Debug", &debug);
    saga.submit().await.unwrap();
    let q = wait_status(&gid, GlobalStatus::Succeed).await;
    assert_eq!(q.branch_statuses(), [P, S, P, S]);
    support::assert_balances(b, (&req.from, -30), (&req.to, 30)).await;
    // The header did reach the branches.
    let calls = b.calls(&gid);
    assert_eq!(calls.len(), 2);
    for call in &calls {
        assert_eq!(
            call.headers.get("authorization").map(String::as_str),
            Some(SECRET)
        );
    }
    let stored = q.transaction.as_ref().unwrap();
    assert_no_secret("the stored transaction's Debug", &format!("{stored:?}"));
    let options = stored.parsed_options().unwrap();
    assert_eq!(
        options.branch_headers["Authorization"], SECRET,
        "still readable on purpose"
    );
    assert_logs_clean();
}

#[tokio::test]
async fn a_tcc_with_an_authorization_header_prints_it_nowhere() {
    logs();
    let b = bank();
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let builder = client()
        .tcc(&gid)
        .branch_header("Authorization", SECRET)
        .retry_interval(Duration::from_secs(1));
    assert_no_secret("the TCC builder's Debug", &format!("{builder:?}"));
    let r = &req;
    builder
        .run(|tcc| async move {
            assert_no_secret("the TCC handle's Debug", &format!("{tcc:?}"));
            trans_out_try(&tcc, r).await
        })
        .await
        .unwrap();
    wait_status(&gid, GlobalStatus::Succeed).await;
    support::assert_balances(b, (&req.from, -30), (&req.to, 0)).await;
    let try_call = &b.calls(&gid)[0];
    assert_eq!(try_call.route, "TransOutTry");
    assert_eq!(
        try_call.headers.get("authorization").map(String::as_str),
        Some(SECRET),
        "the SDK's own try call carries the header"
    );
    assert_logs_clean();
}

/// An invalid header value (DTM would store it, then fail every branch call and retry
/// forever) is refused before the transaction is prepared; the error names the header only.
#[tokio::test]
async fn an_invalid_header_value_is_refused_before_dtm_sees_it_and_never_printed() {
    logs();
    let b = bank();
    let gid = new_gid().await;
    let (from, to) = accounts(&gid);
    let req = TransferReq::new(30, from, to);
    let r = &req;
    let err = client()
        .tcc(&gid)
        .branch_header("Authorization", format!("{SECRET}\n"))
        .run(|tcc| async move { trans_out_try(&tcc, r).await })
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("Authorization"),
        "the error names the header: {text}"
    );
    assert_no_secret("the error", &text);
    let err = client()
        .saga(&gid)
        .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
        .branch_header("Authorization", format!("{SECRET}\r"))
        .submit()
        .await
        .unwrap_err();
    assert_no_secret("the error", &format!("{err} {err:?}"));
    assert_eq!(client().query(&gid).await.unwrap().transaction, None);
    assert!(b.calls(&gid).is_empty(), "no branch was called");
    assert_logs_clean();
}

#[tokio::test]
async fn gids_dtm_would_change_are_refused_before_any_call() {
    logs();
    let b = bank();
    let uniq = &dtmcli::local_gid()[..10];
    let req = TransferReq::new(30, format!("{uniq}-out"), format!("{uniq}-in"));
    for (gid, stripped) in [
        (format!("a;{uniq}"), format!("a{uniq}")),
        (format!("a\n{uniq}"), format!("a{uniq}")),
    ] {
        let err = client()
            .saga(&gid)
            .add(b.url("TransOut", ""), b.url("TransOutCompensate", ""), &req)
            .submit()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let err = client()
            .tcc(&gid)
            .run(|_tcc| async { Ok::<_, Error>(()) })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let err = client()
            .msg(&gid)
            .add(b.url("TransIn", ""), &req)
            .submit()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        for stored in [&gid, &stripped] {
            let q = client().query(stored).await.unwrap();
            assert_eq!(q.transaction, None, "{stored:?} reached DTM");
        }
    }
    let long = "g".repeat(dtmcli::MAX_ID_CHARS + 1);
    assert!(client().saga(&long).submit().await.is_err());
    assert_eq!(client().query(&long).await.unwrap().transaction, None);
}
