//! Randomized hostile input against the `BranchInfo` extractor and the barrier layer (on an
//! in-memory SQLite database): query strings with repeated, missing, over-long, percent-encoded
//! non-UTF-8 and control-character values, `dtm-*` headers with arbitrary bytes, and bodies
//! around the layer's limit.
//!
//! For every request: no panic; no 5xx (every mistake here is the client's); a request the
//! layer refuses writes nothing; whatever the extractor accepts satisfies the barrier's rules.
//! `DTM_FUZZ_CASES` sets the number of cases (default 100,000, what CI runs).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::http::Request;
use axum::routing::post;
use axum::Router;
use dtm_barrier::{Barrier, BarrierLayer, BarrierTx};
use dtmcli::{BranchInfo, DtmResult};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Sqlite, SqlitePool};
use tower::ServiceExt;

const BODY_LIMIT: usize = 64;

/// A query-string value: valid ids, ids near the 128-character limit, arbitrary text,
/// percent-encoded arbitrary bytes, control characters and the characters DTM strips.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-zA-Z0-9_-]{1,12}",
        2 => prop::sample::select(vec!["saga", "tcc", "msg", "xa", "workflow", "action",
            "compensate", "try", "confirm", "cancel", "rollback", "msg", "01", "02", "00"])
            .prop_map(str::to_owned),
        1 => (120usize..140).prop_map(|n| "g".repeat(n)),
        1 => any::<String>().prop_map(|s| {
            let s: String = s.chars().take(40).collect();
            form_urlencoded::byte_serialize(s.as_bytes()).collect()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..12)
            .prop_map(|b| b.iter().map(|x| format!("%{x:02X}")).collect()),
        1 => "[a-z]{1,4}(%0A|%0D|%3B|%00|%7F|%09|;|\\+)[a-z]{0,4}",
        1 => Just(String::new()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(vec!["gid", "trans_type", "branch_id", "op", "dtm",
            "phase2_url"]).prop_map(str::to_owned),
        1 => "[a-z=&]{0,6}",
    ]
}

#[derive(Debug, Clone)]
struct Case {
    pairs: Vec<(String, String)>,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    let valid = (
        "[a-zA-Z0-9-]{1,10}",
        prop::sample::select(vec![
            ("saga", "action"),
            ("saga", "compensate"),
            ("tcc", "try"),
            ("tcc", "confirm"),
            ("tcc", "cancel"),
            ("msg", "msg"),
        ]),
        "0[1-3]",
    )
        .prop_map(|(gid, (tt, op), branch)| {
            vec![
                ("gid".to_owned(), gid),
                ("trans_type".to_owned(), tt.to_owned()),
                ("branch_id".to_owned(), branch),
                ("op".to_owned(), op.to_owned()),
            ]
        });
    let random = prop::collection::vec((key(), value()), 0..8);
    let pairs = prop_oneof![
        2 => valid.clone(),
        // A valid request with hostile additions (repeats come after the first value).
        2 => (valid, prop::collection::vec((key(), value()), 0..4))
            .prop_map(|(mut v, extra)| { v.extend(extra); v }),
        3 => random,
    ];
    let headers = prop::collection::vec(
        (
            prop::sample::select(vec!["dtm-gid", "dtm-trans_type", "dtm-branch_id", "dtm-op"])
                .prop_map(str::to_owned),
            prop_oneof![
                "[a-z0-9]{1,8}".prop_map(String::into_bytes),
                prop::collection::vec(prop_oneof![0x20u8..0x7f, 0x80u8..=0xff], 0..10),
            ],
        ),
        0..3,
    );
    let body = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..BODY_LIMIT),
        1 => prop::collection::vec(any::<u8>(), BODY_LIMIT..BODY_LIMIT * 2),
    ];
    (pairs, headers, body).prop_map(|(pairs, headers, body)| Case {
        pairs,
        headers,
        body,
    })
}

fn query(pairs: &[(String, String)]) -> String {
    // Values are written as generated: some are already percent-encoded on purpose.
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The handler writes one note per call, in the barrier's transaction.
async fn handler(tx: BarrierTx<Sqlite>) -> Result<DtmResult, dtm_barrier::Error> {
    let gid = tx.branch().info().gid.clone();
    let mut conn = tx.lock().await?;
    sqlx::query("insert into note(gid) values (?)")
        .bind(gid)
        .execute(&mut *conn)
        .await?;
    Ok(DtmResult::Success)
}

/// Answers message queries the way a service should.
async fn query_prepared(
    axum::extract::State(barrier): axum::extract::State<Barrier<Sqlite>>,
    info: BranchInfo,
) -> Result<DtmResult, dtm_barrier::Error> {
    barrier.query_prepared(&info.gid).await
}

async fn setup() -> (SqlitePool, Router, Router) {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::query("create table note (gid text)")
        .execute(&pool)
        .await
        .unwrap();
    let barrier = Barrier::new(pool.clone());
    barrier.create_table().await.unwrap();
    let guarded = Router::new()
        .route("/op", post(handler))
        .layer(BarrierLayer::for_http(barrier.clone()).body_limit(BODY_LIMIT));
    let qp = Router::new()
        .route("/qp", post(query_prepared).get(query_prepared))
        .with_state(barrier);
    (pool, guarded, qp)
}

fn check_info(info: &BranchInfo) -> Result<(), TestCaseError> {
    for (field, v) in [("gid", &info.gid), ("branch_id", &info.branch_id)] {
        prop_assert!(!v.is_empty(), "{field} empty");
        prop_assert!(
            v.chars().count() <= dtmcli::MAX_ID_CHARS,
            "{field} too long"
        );
        prop_assert!(
            !v.chars().any(char::is_control),
            "{field} has a control char"
        );
        prop_assert!(
            !v.contains(dtmcli::STRIPPED_CHARS),
            "{field} keeps a stripped char"
        );
    }
    Ok(())
}

#[test]
fn hostile_requests_never_panic_never_5xx_and_write_nothing_when_refused() {
    let cases: u32 = std::env::var("DTM_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let sent = std::sync::atomic::AtomicU32::new(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (pool, guarded, qp) = rt.block_on(setup());
    // The gids of requests the layer answered 200 (the only ones allowed to write).
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let statuses: Arc<Mutex<std::collections::BTreeMap<u16, u32>>> = Arc::default();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&case(), |case| {
            let query = query(&case.pairs);
            let mut parts = Request::post(format!("/op?{query}"));
            for (name, value) in &case.headers {
                parts = parts.header(name.as_str(), value.as_slice());
            }
            // Some generated strings are not a valid URI or header: nothing to send then.
            let Ok(req) = parts.body(Body::from(case.body.clone())) else {
                return Ok(());
            };
            // The extractor's own rules, on the same request.
            let (head, body) = req.into_parts();
            let info = BranchInfo::from_parts(&head);
            if let Ok(info) = &info {
                check_info(info)?;
            }
            let req = Request::from_parts(head, body);
            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (status, text) = rt.block_on(async {
                let resp = guarded.clone().oneshot(req).await.unwrap();
                let status = resp.status().as_u16();
                let text = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
                (status, String::from_utf8_lossy(&text).into_owned())
            });
            *statuses.lock().unwrap().entry(status).or_default() += 1;
            prop_assert!(
                matches!(status, 200 | 400 | 413),
                "{status} {text} for {case:?}"
            );
            match (&info, status) {
                (Ok(info), 200) => {
                    prop_assert!(case.body.len() <= BODY_LIMIT);
                    accepted.lock().unwrap().insert(info.gid.clone());
                }
                (Ok(info), 400) => prop_assert!(info.op == dtmcli::Op::Msg, "{text}"),
                (Ok(_), 413) => prop_assert!(case.body.len() > BODY_LIMIT),
                (Err(_), s) => prop_assert_eq!(s, 400, "{}", text),
                _ => prop_assert!(false, "{status} {text}"),
            }
            // Message queries with the same input: answered, never a 5xx.
            if let Ok(req) = Request::get(format!("/qp?{query}")).body(Body::empty()) {
                let status = rt
                    .block_on(qp.clone().oneshot(req))
                    .unwrap()
                    .status()
                    .as_u16();
                prop_assert!(
                    matches!(status, 200 | 400 | 409),
                    "query_prepared answered {status}"
                );
                if let (Ok(info), 200 | 409) = (&info, status) {
                    accepted.lock().unwrap().insert(info.gid.clone());
                }
            }
            Ok(())
        })
        .unwrap();

    // Nothing was written for a refused request: every row belongs to an accepted gid.
    let accepted = accepted.lock().unwrap();
    let written: Vec<String> = rt.block_on(async {
        let mut gids: Vec<String> = sqlx::query_scalar("select gid from dtm_barrier")
            .fetch_all(&pool)
            .await
            .unwrap();
        gids.extend(
            sqlx::query_scalar::<_, String>("select gid from note")
                .fetch_all(&pool)
                .await
                .unwrap(),
        );
        gids
    });
    let stray: Vec<&String> = written.iter().filter(|g| !accepted.contains(*g)).collect();
    assert!(
        stray.is_empty(),
        "rows written for refused requests: {stray:?}"
    );
    let statuses = statuses.lock().unwrap();
    let sent = sent.into_inner();
    println!(
        "{cases} cases, {sent} sent: statuses {statuses:?}, {} rows written for {} accepted gids",
        written.len(),
        accepted.len()
    );
    assert!(
        sent >= cases * 99 / 100,
        "only {sent} of {cases} cases made a request"
    );
    // The generator reaches every outcome.
    for s in [200, 400, 413] {
        assert!(
            statuses.get(&s).copied().unwrap_or(0) > 0,
            "no {s} among {statuses:?}"
        );
    }
}
