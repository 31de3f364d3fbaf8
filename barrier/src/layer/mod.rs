//! The barrier as a tower layer, for axum routers (and, with the `tonic` feature, tonic
//! servers).
//!
//! For every request the layer reads the branch info (HTTP: query string, then `dtm-*`
//! headers; gRPC: `dtm-*` metadata; missing or invalid → 400 / `InvalidArgument` naming the
//! field), then reads the whole request body (at most [`BarrierLayer::body_limit`] bytes, else
//! 413 / `ResourceExhausted`) *before* it takes a database connection, so that a slow client
//! holds neither a pooled connection nor a row lock. Then it begins a local transaction and
//! runs the barrier:
//!
//! - duplicate, null compensation or hanging → commit, answer SUCCESS (HTTP 200
//!   `{"dtm_result":"SUCCESS"}`, gRPC OK) without calling the handler;
//! - otherwise the handler runs with the open transaction ([`BarrierTx`]); a successful
//!   answer (HTTP 200, the only status DTM reads as SUCCESS; gRPC OK) commits (a failed
//!   commit answers 500 / `Internal`), any other answer rolls back and reaches DTM unchanged
//!   (409 / 425 / 500, `Aborted` / `FailedPrecondition`);
//! - a database error rolls back and answers 500 / `Internal`, so DTM retries; a deadlock
//!   among the barrier's own inserts is first retried a few times; a cancelled request rolls
//!   back.
//!
//! Requests with `op=msg` (the server's query of a prepared message) pass through without a
//! transaction: answer them with [`Barrier::query_prepared`](crate::Barrier::query_prepared).
//! A handler that asks for [`BarrierTx`] on such a request gets a 400 saying so.

#[cfg(feature = "tonic")]
mod grpc;
#[cfg(feature = "axum")]
mod http_transport;
mod tx;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use dtmcli::{BranchInfo, Op};
use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::Mutex;
use tower::{Layer, Service};

#[cfg(feature = "tonic")]
pub(crate) use grpc::branch_info_from_metadata;
#[cfg(feature = "tonic")]
pub use grpc::Grpc;
#[cfg(feature = "axum")]
pub use http_transport::Http;
pub use tx::{BarrierTx, BarrierTxRejection, TxGuard};

use crate::{Barrier, BarrierDatabase, Decision, Error};

/// The default of [`BarrierLayer::body_limit`]: 2 MiB, axum's default body limit.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Why the layer could not read a request body.
#[derive(Debug)]
#[non_exhaustive]
pub enum BodyError {
    /// The body is larger than the layer's limit (HTTP 413, gRPC `ResourceExhausted`).
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read (the client went away, a broken stream): HTTP 400.
    Unreadable(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { limit } => {
                write!(
                    f,
                    "the request body is larger than the barrier layer's limit of {limit} bytes"
                )
            }
            BodyError::Unreadable(why) => write!(f, "cannot read the request body: {why}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// How a transport carries branch info and the answers the layer writes itself.
///
/// Implemented by `Http` (feature `axum`) and `Grpc` (feature `tonic`).
pub trait Transport: Send + Sync + 'static {
    /// The request body type.
    type ReqBody: http_body::Body<Data = Bytes, Error = Self::BodyError> + Send + 'static;
    /// The error of the request body.
    type BodyError: Into<Box<dyn std::error::Error + Send + Sync>>;
    /// The response body type.
    type ResBody: Send + 'static;

    /// Reads the branch info of a request.
    fn branch_info(parts: &Parts) -> Result<BranchInfo, dtmcli::Error>;
    /// The answer to a request without (valid) branch info.
    fn bad_request(error: dtmcli::Error) -> Response<Self::ResBody>;
    /// A request body made of bytes already read.
    fn body_from_bytes(bytes: Bytes) -> Self::ReqBody;
    /// The answer to a body that could not be read or is too large.
    fn body_rejected(error: &BodyError) -> Response<Self::ResBody>;
    /// The SUCCESS answer for a call the barrier skipped.
    fn skipped() -> Response<Self::ResBody>;
    /// The answer to a database error: one DTM retries.
    fn database_error(error: &Error) -> Response<Self::ResBody>;
    /// Whether the handler's answer means success (commit).
    fn succeeded(response: &Response<Self::ResBody>) -> bool;
}

/// Wraps a service in the barrier: an axum `Router` or route with
/// [`for_http`](BarrierLayer::for_http) (feature `axum`), a tonic server with
/// [`for_grpc`](BarrierLayer::for_grpc) (feature `tonic`).
///
/// Put it on a router holding the branch routes only and nest or merge that router into the
/// app: every request through the layer must be a DTM branch call, so `/health` or a REST
/// route behind it would be answered 400.
///
/// ```no_run
/// # #[cfg(feature = "axum")] mod demo {
/// use axum::{routing::{get, post}, Router};
/// use dtm_barrier::{Barrier, BarrierLayer, BarrierTx, Error};
/// use dtmcli::DtmResult;
/// use sqlx::Sqlite;
///
/// async fn trans_out(tx: BarrierTx<Sqlite>) -> Result<DtmResult, Error> {
///     let mut conn = tx.lock().await?;
///     sqlx::query("update account set balance = balance - 30 where id = 1")
///         .execute(&mut *conn).await?;
///     Ok(DtmResult::Success)
/// }
///
/// # async fn demo(pool: sqlx::SqlitePool) {
/// let branches: Router = Router::new()
///     .route("/TransOut", post(trans_out))
///     .layer(BarrierLayer::for_http(Barrier::new(pool)).body_limit(64 * 1024));
/// let app: Router = Router::new()
///     .route("/health", get(|| async { "ok" }))
///     .nest("/api/busi", branches);
/// # }
/// # }
/// ```
pub struct BarrierLayer<DB: BarrierDatabase, T: Transport> {
    barrier: Barrier<DB>,
    body_limit: usize,
    transport: PhantomData<fn() -> T>,
}

#[cfg(feature = "axum")]
impl<DB: BarrierDatabase> BarrierLayer<DB, Http> {
    /// A layer running `barrier` around every HTTP request of an axum router or route.
    pub fn for_http(barrier: Barrier<DB>) -> Self {
        Self::with_transport(barrier)
    }
}

#[cfg(feature = "tonic")]
impl<DB: BarrierDatabase> BarrierLayer<DB, Grpc> {
    /// A layer running `barrier` around a tonic service. Wrap the service whose methods are
    /// DTM branches, `.add_service(BarrierLayer::for_grpc(barrier).layer(svc))`, so that
    /// health checks, reflection and other services stay outside the barrier (as a layer on
    /// the whole server, every request must be a DTM branch call). DTM calls branches with
    /// unary requests; the layer reads the request message before it begins the transaction,
    /// so it is not meant for streaming methods.
    pub fn for_grpc(barrier: Barrier<DB>) -> Self {
        Self::with_transport(barrier)
    }
}

impl<DB: BarrierDatabase, T: Transport> BarrierLayer<DB, T> {
    /// A layer for a transport of your own (an implementation of [`Transport`]).
    pub fn with_transport(barrier: Barrier<DB>) -> Self {
        BarrierLayer {
            barrier,
            body_limit: DEFAULT_BODY_LIMIT,
            transport: PhantomData,
        }
    }

    /// The barrier the layer runs.
    pub fn barrier(&self) -> &Barrier<DB> {
        &self.barrier
    }

    /// The largest request body the layer reads, in bytes (default [`DEFAULT_BODY_LIMIT`]); a
    /// larger one is answered 413 (gRPC `ResourceExhausted`) without touching the database.
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }
}

impl<DB: BarrierDatabase, T: Transport> Clone for BarrierLayer<DB, T> {
    fn clone(&self) -> Self {
        BarrierLayer {
            barrier: self.barrier.clone(),
            body_limit: self.body_limit,
            transport: PhantomData,
        }
    }
}

impl<DB: BarrierDatabase, T: Transport> fmt::Debug for BarrierLayer<DB, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierLayer")
            .field("barrier", &self.barrier)
            .field("body_limit", &self.body_limit)
            .field("transport", &std::any::type_name::<T>())
            .finish()
    }
}

impl<S, DB: BarrierDatabase, T: Transport> Layer<S> for BarrierLayer<DB, T> {
    type Service = BarrierService<S, DB, T>;

    fn layer(&self, inner: S) -> Self::Service {
        BarrierService {
            inner,
            barrier: self.barrier.clone(),
            body_limit: self.body_limit,
            transport: PhantomData,
        }
    }
}

/// The service made by [`BarrierLayer`].
pub struct BarrierService<S, DB: BarrierDatabase, T: Transport> {
    inner: S,
    barrier: Barrier<DB>,
    body_limit: usize,
    transport: PhantomData<fn() -> T>,
}

impl<S, DB: BarrierDatabase, T: Transport> BarrierService<S, DB, T> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, without the barrier.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The barrier the service runs.
    pub fn barrier(&self) -> &Barrier<DB> {
        &self.barrier
    }
}

impl<S: Clone, DB: BarrierDatabase, T: Transport> Clone for BarrierService<S, DB, T> {
    fn clone(&self) -> Self {
        BarrierService {
            inner: self.inner.clone(),
            barrier: self.barrier.clone(),
            body_limit: self.body_limit,
            transport: PhantomData,
        }
    }
}

impl<S, DB: BarrierDatabase, T: Transport> fmt::Debug for BarrierService<S, DB, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierService")
            .field("barrier", &self.barrier)
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

impl<S, DB, T> Service<Request<T::ReqBody>> for BarrierService<S, DB, T>
where
    S: Service<Request<T::ReqBody>, Response = Response<T::ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    DB: BarrierDatabase,
    T: Transport,
{
    type Response = Response<T::ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<T::ReqBody>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let barrier = self.barrier.clone();
        Box::pin(guard::<S, DB, T>(barrier, inner, req, self.body_limit))
    }
}

/// A barrier-wrapped tonic service keeps its service's name, so that one service of a server
/// can be wrapped alone (`.add_service(BarrierLayer::for_grpc(b).layer(svc))`) while health
/// checks, reflection and other services stay outside the barrier.
#[cfg(feature = "tonic")]
impl<S, DB> tonic::server::NamedService for BarrierService<S, DB, Grpc>
where
    S: tonic::server::NamedService,
    DB: BarrierDatabase,
{
    const NAME: &'static str = S::NAME;
}

/// Marks a request the layer let through without a transaction because it is a message query
/// (`op=msg`), so that [`BarrierTx`] can say so instead of blaming a missing layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PassedMsgQuery;

async fn guard<S, DB, T>(
    barrier: Barrier<DB>,
    mut inner: S,
    req: Request<T::ReqBody>,
    body_limit: usize,
) -> Result<Response<T::ResBody>, S::Error>
where
    S: Service<Request<T::ReqBody>, Response = Response<T::ResBody>>,
    DB: BarrierDatabase,
    T: Transport,
{
    let (mut parts, body) = req.into_parts();
    let info = match T::branch_info(&parts) {
        Ok(info) => info,
        Err(e) => return Ok(T::bad_request(e)),
    };
    if info.op == Op::Msg {
        parts.extensions.insert(PassedMsgQuery);
        return inner.call(Request::from_parts(parts, body)).await;
    }
    // The whole body first: no connection or row lock is held while a client sends it.
    let body = match read_body::<T>(&parts, body, body_limit).await {
        Ok(bytes) => T::body_from_bytes(bytes),
        Err(e) => {
            tracing::debug!(error = %e, gid = %info.gid, "barrier layer refused a request body");
            return Ok(T::body_rejected(&e));
        }
    };
    let mut req = Request::from_parts(parts, body);

    let branch = Arc::new(barrier.branch(info));
    let id = branch.next_barrier_id();
    let tx = match barrier.begin_checked(branch.info(), &id).await {
        Ok((tx, Decision::Proceed)) => tx,
        Ok((tx, _)) => {
            return Ok(match tx.commit().await {
                Ok(()) => T::skipped(),
                Err(e) => database_error::<T>(e.into()),
            });
        }
        Err(Error::Dtm(e)) => return Ok(T::bad_request(e)),
        Err(e) => return Ok(database_error::<T>(e)), // `tx` dropped: rollback
    };

    let handle = BarrierTx {
        tx: Arc::new(Mutex::new(Some(tx))),
        branch,
    };
    req.extensions_mut().insert(handle.clone());
    let response = inner.call(req).await?;
    let tx = handle.tx.lock().await.take();
    let Some(tx) = tx else {
        return Ok(response);
    };
    if T::succeeded(&response) {
        if let Err(e) = tx.commit().await {
            return Ok(database_error::<T>(e.into()));
        }
    } else if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %e, "barrier rollback failed; the connection drops it");
    }
    Ok(response)
}

/// Reads a whole body, refusing one over `limit` bytes (by its `content-length` before
/// reading anything, else while reading).
async fn read_body<T: Transport>(
    parts: &Parts,
    body: T::ReqBody,
    limit: usize,
) -> Result<Bytes, BodyError> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge { limit })
        }
        Err(e) => Err(BodyError::Unreadable(e.to_string())),
    }
}

fn database_error<T: Transport>(e: Error) -> Response<T::ResBody> {
    tracing::warn!(error = %e, "barrier database error; answering an error DTM retries");
    T::database_error(&e)
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::body::{to_bytes, Body};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use axum::routing::post;
    use axum::Router;
    use dtmcli::DtmResult;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sqlx::{Sqlite, SqlitePool};
    use tower::ServiceExt;

    use super::*;

    /// How often the handler of one app ran.
    #[derive(Clone, Default)]
    struct Calls(Arc<AtomicUsize>);

    impl Calls {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn pool() -> SqlitePool {
        // One connection: a leaked transaction would make the next statement wait.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(2))
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("create table note (gid text, text text)")
            .execute(&pool)
            .await
            .unwrap();
        Barrier::new(pool.clone()).create_table().await.unwrap();
        pool
    }

    /// Writes a note, then answers the status given in the body (200, 409, 425, 500), or
    /// never answers for "hang".
    async fn handler(
        axum::Extension(calls): axum::Extension<Calls>,
        tx: BarrierTx<Sqlite>,
        body: String,
    ) -> Response {
        calls.0.fetch_add(1, Ordering::SeqCst);
        let gid = tx.branch().info().gid.clone();
        {
            let mut conn = tx.lock().await.unwrap();
            sqlx::query("insert into note values (?, ?)")
                .bind(&gid)
                .bind(&body)
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        match body.as_str() {
            "hang" => std::future::pending().await,
            "409" => DtmResult::Failure.into_response(),
            "425" => DtmResult::Ongoing.into_response(),
            "500" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            "201" => StatusCode::CREATED.into_response(),
            _ => DtmResult::Success.into_response(),
        }
    }

    fn app(pool: SqlitePool) -> (Router, Calls) {
        let calls = Calls::default();
        let app = Router::new()
            .route("/op", post(handler))
            .layer(BarrierLayer::for_http(Barrier::new(pool)))
            .layer(axum::Extension(calls.clone()));
        (app, calls)
    }

    async fn call(app: &Router, query: &str, body: &str) -> (u16, String) {
        let req = Request::post(format!("/op?{query}"))
            .body(Body::from(body.to_owned()))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn count(pool: &SqlitePool, table: &str, gid: &str) -> i64 {
        sqlx::query_scalar(&format!("select count(*) from {table} where gid = ?"))
            .bind(gid)
            .fetch_one(pool)
            .await
            .unwrap()
    }

    fn q(gid: &str, branch: &str, op: &str) -> String {
        format!("gid={gid}&trans_type=saga&branch_id={branch}&op={op}")
    }

    #[tokio::test]
    async fn success_commits_business_and_barrier_rows() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        assert_eq!(call(&app, &q("g1", "01", "action"), "ok").await.0, 200);
        assert_eq!(count(&pool, "note", "g1").await, 1);
        assert_eq!(count(&pool, "dtm_barrier", "g1").await, 1);
        // The duplicate is answered SUCCESS without calling the handler.
        let before = calls.get();
        let (status, body) = call(&app, &q("g1", "01", "action"), "ok").await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"dtm_result":"SUCCESS"}"#)
        );
        assert_eq!(calls.get(), before);
        assert_eq!(count(&pool, "note", "g1").await, 1);
    }

    #[tokio::test]
    async fn other_answers_roll_back_and_pass_through() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        for (gid, answer) in [("g409", "409"), ("g425", "425"), ("g500", "500")] {
            let (status, _) = call(&app, &q(gid, "01", "action"), answer).await;
            assert_eq!(status.to_string(), answer);
            assert_eq!(count(&pool, "note", gid).await, 0, "{gid}");
            assert_eq!(count(&pool, "dtm_barrier", gid).await, 0, "{gid}");
        }
        // After the rolled-back FAILURE the compensation is a null compensation.
        let before = calls.get();
        assert_eq!(
            call(&app, &q("g409", "01", "compensate"), "ok").await.0,
            200
        );
        assert_eq!(calls.get(), before, "handler not called");
        assert_eq!(count(&pool, "note", "g409").await, 0);
    }

    #[tokio::test]
    async fn null_compensation_then_hanging_action_do_nothing() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        let before = calls.get();
        assert_eq!(call(&app, &q("g2", "01", "compensate"), "ok").await.0, 200);
        assert_eq!(call(&app, &q("g2", "01", "action"), "ok").await.0, 200);
        assert_eq!(calls.get(), before, "handler never called");
        assert_eq!(count(&pool, "note", "g2").await, 0);
        // The compensation recorded both its own row and the blocking action row.
        assert_eq!(count(&pool, "dtm_barrier", "g2").await, 2);
    }

    #[tokio::test]
    async fn missing_trans_info_is_a_400_naming_the_field() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        let before = calls.get();
        let (status, body) = call(&app, "gid=g3&trans_type=saga&branch_id=01", "ok").await;
        assert_eq!(status, 400);
        assert!(body.contains("`op`"), "{body}");
        assert_eq!(calls.get(), before);
        assert_eq!(count(&pool, "dtm_barrier", "g3").await, 0);
    }

    #[tokio::test]
    async fn database_down_is_a_500_and_the_handler_is_not_called() {
        let options = SqliteConnectOptions::new()
            .filename("/nonexistent-dir/barrier.db")
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(1))
            .connect_lazy_with(options);
        let (app, calls) = app(pool);
        let before = calls.get();
        let (status, body) = call(&app, &q("g4", "01", "action"), "ok").await;
        assert_eq!(status, 500);
        assert!(body.contains("barrier database error"), "{body}");
        assert!(!body.contains("FAILURE") && !body.contains("ONGOING"));
        assert_eq!(calls.get(), before);
    }

    /// DTM reads only 200 as SUCCESS (201 is an error it retries), so only 200 commits.
    #[tokio::test]
    async fn only_200_commits() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        assert_eq!(call(&app, &q("g201", "01", "action"), "201").await.0, 201);
        assert_eq!(count(&pool, "note", "g201").await, 0);
        assert_eq!(count(&pool, "dtm_barrier", "g201").await, 0);
        // DTM's retry runs the handler again, and its 200 commits.
        let before = calls.get();
        assert_eq!(call(&app, &q("g201", "01", "action"), "ok").await.0, 200);
        assert_eq!(calls.get(), before + 1);
        assert_eq!(count(&pool, "note", "g201").await, 1);
    }

    #[tokio::test]
    async fn the_ready_made_query_route_answers_message_queries_only() {
        let pool = pool().await;
        let barrier = Barrier::new(pool.clone());
        let app: Router = Router::new().route("/op", barrier.query_prepared_route());
        let query = |gid: &str, branch: &str, op: &str| {
            format!("gid={gid}&trans_type=msg&branch_id={branch}&op={op}")
        };
        // Nothing committed for gm1: 409, and its row now blocks a late local transaction.
        let (status, body) = call(&app, &query("gm1", "00", "msg"), "").await;
        assert_eq!((status, body.contains("FAILURE")), (409, true), "{body}");
        assert_eq!(count(&pool, "dtm_barrier", "gm1").await, 1);
        // A local transaction that committed first: 200.
        let branch = barrier.branch(
            dtmcli::BranchInfo::from_query("gid=gm2&trans_type=msg&branch_id=00&op=msg").unwrap(),
        );
        branch.call(async |_conn| Ok::<_, Error>(())).await.unwrap();
        assert_eq!(call(&app, &query("gm2", "00", "msg"), "").await.0, 200);
        // Not a message query: 400 naming the field, nothing written.
        let (status, body) = call(&app, &query("gm3", "01", "action"), "").await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("`op`"), "{body}");
        assert_eq!(count(&pool, "dtm_barrier", "gm3").await, 0);
        let (status, body) = call(&app, "gid=gm4", "").await;
        assert_eq!(status, 400, "{body}");
    }

    #[tokio::test]
    async fn a_cancelled_request_rolls_back() {
        let pool = pool().await;
        let (app, _calls) = app(pool.clone());
        let hung = tokio::time::timeout(
            Duration::from_millis(300),
            call(&app, &q("g5", "01", "action"), "hang"),
        )
        .await;
        assert!(hung.is_err(), "the handler never answers");
        // The connection came back (max 1 connection) and nothing was committed.
        assert_eq!(count(&pool, "note", "g5").await, 0);
        assert_eq!(count(&pool, "dtm_barrier", "g5").await, 0);
        // DTM's retry then runs normally.
        assert_eq!(call(&app, &q("g5", "01", "action"), "ok").await.0, 200);
        assert_eq!(count(&pool, "note", "g5").await, 1);
    }

    #[tokio::test]
    async fn the_extractor_names_the_missing_layer() {
        let app = Router::new()
            .route("/op", post(handler))
            .layer(axum::Extension(Calls::default()));
        let (status, body) = call(&app, &q("g6", "01", "action"), "ok").await;
        assert_eq!(status, 500);
        assert!(body.contains("BarrierLayer"), "{body}");
    }

    #[tokio::test]
    async fn query_prepared_and_msg_requests_pass_through() {
        let pool = pool().await;
        let barrier = Barrier::new(pool.clone());
        let app = Router::new()
            .route(
                "/qp",
                post(
                    |info: BranchInfo, tx: Option<BarrierTx<Sqlite>>| async move {
                        assert!(tx.is_none(), "no barrier transaction for op=msg");
                        format!("{} passed", info.gid)
                    },
                ),
            )
            .layer(BarrierLayer::for_http(barrier.clone()));
        let req = Request::post("/qp?gid=g7&trans_type=msg&branch_id=00&op=msg")
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            barrier.query_prepared("g7").await.unwrap(),
            DtmResult::Failure
        );
        assert_eq!(
            barrier.query_prepared("g7").await.unwrap(),
            DtmResult::Failure,
            "stable"
        );
    }

    /// A request body that sends its first bytes, then nothing until the test ends.
    fn stalled_body() -> Body {
        let first =
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"o"))]);
        let never = futures_util::stream::pending();
        Body::from_stream(futures_util::StreamExt::chain(first, never))
    }

    #[tokio::test]
    async fn a_stalled_body_holds_no_connection_and_no_lock() {
        let pool = pool().await; // one connection
        let (app, calls) = app(pool.clone());
        let stalled = Request::post(format!("/op?{}", q("g8", "01", "action")))
            .body(stalled_body())
            .unwrap();
        let stalled = tokio::spawn(app.clone().oneshot(stalled));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // DTM's retry of the same branch, and an unrelated branch, both complete at once
        // (the pool's acquire timeout is 2 s; a held connection would make them wait for it).
        let started = std::time::Instant::now();
        assert_eq!(call(&app, &q("g8", "01", "action"), "ok").await.0, 200);
        assert_eq!(call(&app, &q("g9", "01", "action"), "ok").await.0, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(calls.get(), 2);
        assert_eq!(count(&pool, "note", "g8").await, 1);
        assert!(
            !stalled.is_finished(),
            "the stalled request is still reading its body"
        );
        stalled.abort();
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413_and_writes_nothing() {
        let pool = pool().await;
        let calls = Calls::default();
        let app = Router::new()
            .route("/op", post(handler))
            .layer(BarrierLayer::for_http(Barrier::new(pool.clone())).body_limit(8))
            .layer(axum::Extension(calls.clone()));
        let (status, body) =
            call(&app, &q("g10", "01", "action"), "far more than eight bytes").await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("limit of 8 bytes"), "{body}");
        // Also without a content-length: a streamed body is cut at the limit.
        let streamed = futures_util::stream::iter(
            ["0123", "4567", "89"].map(|s| Ok::<_, std::io::Error>(bytes::Bytes::from(s))),
        );
        let req = Request::post(format!("/op?{}", q("g10", "01", "action")))
            .body(Body::from_stream(streamed))
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 413);
        assert_eq!(calls.get(), 0);
        assert_eq!(count(&pool, "dtm_barrier", "g10").await, 0);
        // Within the limit it runs.
        assert_eq!(call(&app, &q("g10", "01", "action"), "ok").await.0, 200);
        assert_eq!(count(&pool, "note", "g10").await, 1);
    }

    #[tokio::test]
    async fn op_msg_on_a_barrier_route_is_a_400_that_says_what_it_is() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        let (status, body) = call(&app, "gid=g11&trans_type=msg&branch_id=00&op=msg", "ok").await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("query_prepared"), "{body}");
        assert!(
            !body.contains("wrapped in"),
            "not blamed on the layer: {body}"
        );
        assert_eq!(
            calls.get(),
            0,
            "the handler's BarrierTx extractor refused it"
        );
        assert_eq!(count(&pool, "dtm_barrier", "g11").await, 0);
    }

    #[tokio::test]
    async fn ids_that_do_not_fit_the_table_are_a_400_and_write_nothing() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        let long = "g".repeat(dtmcli::MAX_ID_CHARS + 1);
        for (query, field) in [
            (q(&long, "01", "action"), "`gid`"),
            (q("g12", &long, "action"), "`branch_id`"),
            (q("g12%01x", "01", "action"), "`gid`"),
            (q("g12%ff", "01", "action"), "`gid`"),
        ] {
            let (status, body) = call(&app, &query, "ok").await;
            assert_eq!(status, 400, "{query}: {body}");
            assert!(body.contains(field), "{query}: {body}");
        }
        assert_eq!(calls.get(), 0);
        let rows: i64 = sqlx::query_scalar("select count(*) from dtm_barrier")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 0);
        // 128 characters are fine.
        let max = "g".repeat(dtmcli::MAX_ID_CHARS);
        assert_eq!(call(&app, &q(&max, "01", "action"), "ok").await.0, 200);
        assert_eq!(count(&pool, "note", &max).await, 1);
    }

    #[tokio::test]
    async fn ids_that_differ_only_in_stripped_characters_are_one_as_for_go() {
        let pool = pool().await;
        let (app, calls) = app(pool.clone());
        // DTM removes `;` from gids it receives, and the Go barrier from the gids it reads:
        // a try recorded for `g;13` is the one DTM's cancel for `g13` must find.
        assert_eq!(call(&app, &q("g%3B13", "01", "action"), "ok").await.0, 200);
        assert_eq!(count(&pool, "note", "g13").await, 1);
        assert_eq!(call(&app, &q("g13", "01", "action"), "ok").await.0, 200);
        assert_eq!(calls.get(), 1, "the second call is a duplicate");
    }

    #[tokio::test]
    async fn a_missing_layer_is_logged_as_an_error() {
        use std::io::Write;
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = Router::new()
            .route("/op", post(handler))
            .layer(axum::Extension(Calls::default()));
        let (status, _) = call(&app, &q("g14", "01", "action"), "ok").await;
        assert_eq!(status, 500);
        let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("ERROR") && logs.contains("BarrierLayer"),
            "{logs}"
        );
    }

    /// A handler in the shape the README shows: `dtm_barrier::Error` as its error, `?` on sqlx.
    async fn insert_then_fail(tx: BarrierTx<Sqlite>) -> Result<DtmResult, Error> {
        let gid = tx.branch().info().gid.clone();
        let mut conn = tx.lock().await?;
        sqlx::query("insert into note values (?, 'before the failure')")
            .bind(&gid)
            .execute(&mut *conn)
            .await?;
        sqlx::query("insert into no_such_table values (1)")
            .execute(&mut *conn)
            .await?;
        Ok(DtmResult::Success)
    }

    #[tokio::test]
    async fn question_mark_on_a_failing_sqlx_call_rolls_back_and_answers_500() {
        let pool = pool().await;
        let app = Router::new()
            .route("/op", post(insert_then_fail))
            .layer(BarrierLayer::for_http(Barrier::new(pool.clone())));
        let (status, body) = call(&app, &q("g15", "01", "action"), "").await;
        assert_eq!(status, 500, "{body}");
        assert!(body.contains("no_such_table"), "{body}");
        assert!(
            !body.contains("FAILURE") && !body.contains("ONGOING"),
            "{body}"
        );
        assert_eq!(count(&pool, "note", "g15").await, 0, "rolled back");
        assert_eq!(
            count(&pool, "dtm_barrier", "g15").await,
            0,
            "barrier row too"
        );
    }

    /// DTM's routes in a router of their own behind the layer, nested beside ordinary routes:
    /// the barrier never sees the ordinary ones.
    #[tokio::test]
    async fn ordinary_routes_beside_a_barrier_router_are_untouched() {
        let pool = pool().await;
        let calls = Calls::default();
        let branches = Router::new()
            .route("/TransOut", post(handler))
            .layer(BarrierLayer::for_http(Barrier::new(pool.clone())));
        let app: Router = Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .route(
                "/orders/{id}",
                axum::routing::get(
                    |axum::extract::Path(id): axum::extract::Path<u32>| async move {
                        format!("order {id}")
                    },
                ),
            )
            .nest("/api/busi", branches)
            .layer(axum::Extension(calls.clone()));
        let get = |uri: &'static str| {
            let app = app.clone();
            async move {
                let resp = app
                    .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
                (status, String::from_utf8(body.to_vec()).unwrap())
            }
        };
        assert_eq!(get("/health").await, (200, "ok".to_owned()));
        assert_eq!(get("/orders/7").await, (200, "order 7".to_owned()));
        assert_eq!(
            get("/no/such/path").await.0,
            404,
            "not a 400 from the barrier"
        );
        // The branch route is guarded: without trans info it is a 400, with it the handler runs.
        let req = Request::post("/api/busi/TransOut")
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 400);
        let req = Request::post(format!("/api/busi/TransOut?{}", q("g16", "01", "action")))
            .body(Body::from("ok"))
            .unwrap();
        assert_eq!(app.clone().oneshot(req).await.unwrap().status(), 200);
        assert_eq!(calls.get(), 1);
        assert_eq!(count(&pool, "dtm_barrier", "g16").await, 1);
        let rows: i64 = sqlx::query_scalar("select count(*) from dtm_barrier")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 1, "only the branch call wrote a barrier row");
    }

    /// The closure shape borrows from the caller and works inside `tokio::spawn` (it is Send).
    #[tokio::test]
    async fn barrier_closures_borrow_and_run_inside_spawn() {
        let pool = pool().await;
        let barrier = Barrier::new(pool.clone());
        let info = BranchInfo::from_query(&q("g17", "01", "action")).unwrap();
        let task = tokio::spawn(async move {
            let text = String::from("borrowed");
            let branch = barrier.branch(info);
            let first = branch
                .call(async |conn| {
                    sqlx::query("insert into note values ('g17', ?)")
                        .bind(&text)
                        .execute(&mut *conn)
                        .await?;
                    Ok::<_, Error>(text.len())
                })
                .await?;
            let again = barrier
                .branch(BranchInfo::from_query(&q("g17", "01", "action")).unwrap())
                .call(async |_conn| Ok::<_, Error>(0))
                .await?;
            Ok::<_, Error>((first, again))
        });
        assert_eq!(task.await.unwrap().unwrap(), (Some(8), None));
        assert_eq!(count(&pool, "note", "g17").await, 1);
    }
}
