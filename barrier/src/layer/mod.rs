//! The barrier as a tower layer for axum routers.
//!
//! For every request the layer reads the branch info (query string, then `dtm-*` headers;
//! missing → 400 naming the field), begins a local transaction and runs the barrier:
//!
//! - duplicate, null compensation or hanging → commit, answer 200
//!   `{"dtm_result":"SUCCESS"}` without calling the handler;
//! - otherwise the handler runs with the open transaction ([`BarrierTx`]); a 2xx answer
//!   commits (a failed commit answers 500), any other answer rolls back and reaches DTM
//!   unchanged (409 / 425 / 500);
//! - a database error rolls back and answers 500, so DTM retries; a cancelled request rolls
//!   back.
//!
//! Requests with `op=msg` (the server's query of a prepared message) pass through without a
//! transaction: answer them with [`Barrier::query_prepared`](crate::Barrier::query_prepared).

mod tx;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dtmcli::{BranchInfo, DtmResult, Op};
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;
use tower::{Layer, Service};

pub use tx::{BarrierTx, MissingBarrierLayer, TxGuard};

use crate::{Barrier, BarrierDatabase, Decision, Error};

/// Wraps a service (an axum `Router`, a route) in the barrier.
///
/// ```no_run
/// use axum::{routing::post, Router};
/// use dtm_barrier::{Barrier, BarrierLayer, BarrierTx};
/// use dtmcli::{DtmResult, Error};
/// use sqlx::Sqlite;
///
/// async fn trans_out(tx: BarrierTx<Sqlite>) -> Result<DtmResult, Error> {
///     let mut tx = tx.lock().await?;
///     sqlx::query("update account set balance = balance - 30 where id = 1")
///         .execute(&mut **tx).await.map_err(Error::other)?;
///     Ok(DtmResult::Success)
/// }
///
/// # async fn demo(pool: sqlx::SqlitePool) {
/// let app: Router = Router::new()
///     .route("/api/busi/TransOut", post(trans_out))
///     .layer(BarrierLayer::new(Barrier::new(pool)));
/// # }
/// ```
pub struct BarrierLayer<DB: BarrierDatabase> {
    barrier: Barrier<DB>,
}

impl<DB: BarrierDatabase> BarrierLayer<DB> {
    /// A layer running `barrier` around every request.
    pub fn new(barrier: Barrier<DB>) -> Self {
        BarrierLayer { barrier }
    }
}

impl<DB: BarrierDatabase> Clone for BarrierLayer<DB> {
    fn clone(&self) -> Self {
        BarrierLayer {
            barrier: self.barrier.clone(),
        }
    }
}

impl<DB: BarrierDatabase> fmt::Debug for BarrierLayer<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierLayer")
            .field("barrier", &self.barrier)
            .finish()
    }
}

impl<S, DB: BarrierDatabase> Layer<S> for BarrierLayer<DB> {
    type Service = BarrierService<S, DB>;

    fn layer(&self, inner: S) -> Self::Service {
        BarrierService {
            inner,
            barrier: self.barrier.clone(),
        }
    }
}

/// The service made by [`BarrierLayer`].
pub struct BarrierService<S, DB: BarrierDatabase> {
    inner: S,
    barrier: Barrier<DB>,
}

impl<S: Clone, DB: BarrierDatabase> Clone for BarrierService<S, DB> {
    fn clone(&self) -> Self {
        BarrierService {
            inner: self.inner.clone(),
            barrier: self.barrier.clone(),
        }
    }
}

impl<S, DB: BarrierDatabase> fmt::Debug for BarrierService<S, DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierService")
            .field("barrier", &self.barrier)
            .finish_non_exhaustive()
    }
}

impl<S, DB> Service<Request<Body>> for BarrierService<S, DB>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    DB: BarrierDatabase,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call (tower's usual swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let barrier = self.barrier.clone();
        Box::pin(guard(barrier, inner, req))
    }
}

async fn guard<S, DB>(
    barrier: Barrier<DB>,
    mut inner: S,
    mut req: Request<Body>,
) -> Result<Response, S::Error>
where
    S: Service<Request<Body>, Response = Response>,
    DB: BarrierDatabase,
{
    let (parts, body) = req.into_parts();
    let info = match BranchInfo::from_parts(&parts) {
        Ok(info) => info,
        Err(e) => return Ok(dtmcli::axum::BranchInfoRejection(e).into_response()),
    };
    req = Request::from_parts(parts, body);
    if info.op == Op::Msg {
        return inner.call(req).await;
    }
    let branch = Arc::new(barrier.branch(info));
    let mut tx = match barrier.pool().begin().await {
        Ok(tx) => tx,
        Err(e) => return Ok(database_error(e.into())),
    };
    let id = branch.next_barrier_id();
    match barrier.check(&mut tx, branch.info(), &id).await {
        Ok(Decision::Proceed) => {}
        Ok(_) => {
            return Ok(match tx.commit().await {
                Ok(()) => DtmResult::Success.into_response(),
                Err(e) => database_error(e.into()),
            });
        }
        Err(e) => return Ok(database_error(e)), // `tx` dropped: rollback
    }

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
    if response.status().is_success() {
        if let Err(e) = tx.commit().await {
            return Ok(database_error(e.into()));
        }
    } else if let Err(e) = tx.rollback().await {
        tracing::warn!(error = %e, "barrier rollback failed; the connection drops it");
    }
    Ok(response)
}

/// A 500 that DTM retries; the words FAILURE / ONGOING never appear in it.
fn database_error(e: Error) -> Response {
    tracing::warn!(error = %e, "barrier database error; answering 500 so that DTM retries");
    let message = e
        .to_string()
        .replace(DtmResult::Failure.as_str(), "failure")
        .replace(DtmResult::Ongoing.as_str(), "ongoing");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "message": message })),
    )
        .into_response()
}
