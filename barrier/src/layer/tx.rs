//! The handler's view of the barrier: the open local transaction.

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "axum")]
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
#[cfg(feature = "axum")]
use axum::http::request::Parts;
#[cfg(feature = "axum")]
use axum::http::StatusCode;
#[cfg(feature = "axum")]
use axum::response::{IntoResponse, Response};
#[cfg(feature = "axum")]
use axum::Json;
use sqlx::Transaction;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};

use crate::{BarrierDatabase, BranchBarrier, Error};

/// The local transaction [`BarrierLayer`](crate::BarrierLayer) opened for this request, with
/// the barrier rows already inserted. Write the business changes through it; the layer
/// commits when the handler answers 200 (gRPC OK) and rolls back otherwise.
///
/// ```no_run
/// # #[cfg(feature = "axum")] mod demo {
/// use dtm_barrier::{BarrierTx, Error};
/// use dtmcli::DtmResult;
/// use sqlx::Sqlite;
///
/// async fn trans_in(tx: BarrierTx<Sqlite>) -> Result<DtmResult, Error> {
///     let mut conn = tx.lock().await?;
///     sqlx::query("update account set balance = balance + 30 where id = 2")
///         .execute(&mut *conn)
///         .await?; // a database error rolls back and answers 500: DTM retries
///     Ok(DtmResult::Success)
/// }
/// # }
/// ```
pub struct BarrierTx<DB: BarrierDatabase> {
    pub(crate) tx: Arc<Mutex<Option<Transaction<'static, DB>>>>,
    pub(crate) branch: Arc<BranchBarrier<DB>>,
}

impl<DB: BarrierDatabase> Clone for BarrierTx<DB> {
    fn clone(&self) -> Self {
        BarrierTx {
            tx: Arc::clone(&self.tx),
            branch: Arc::clone(&self.branch),
        }
    }
}

impl<DB: BarrierDatabase> fmt::Debug for BarrierTx<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierTx")
            .field("branch", &self.branch)
            .finish_non_exhaustive()
    }
}

impl<DB: BarrierDatabase> BarrierTx<DB> {
    /// Locks the transaction for use: the guard derefs to its connection, so
    /// `.execute(&mut *conn)` runs a statement in it, as with an sqlx `Transaction`.
    ///
    /// Fails with [`Error::TransactionClosed`] only if used after the request ended.
    pub async fn lock(&self) -> Result<TxGuard<DB>, Error> {
        // An owned guard keeps the future free of borrowed lifetimes, so that handlers
        // generic over the database stay `Send`.
        let guard = Arc::clone(&self.tx).lock_owned().await;
        OwnedMutexGuard::try_map(guard, |tx| tx.as_mut().map(|tx| &mut **tx))
            .map_err(|_| Error::TransactionClosed)
    }

    /// The branch barrier of this request, for more protected local transactions in the same
    /// handler (they get barrier ids `02`, `03`, ...).
    pub fn branch(&self) -> &BranchBarrier<DB> {
        &self.branch
    }
}

/// The locked transaction of a [`BarrierTx`]; it derefs to the transaction's connection.
pub type TxGuard<DB> =
    OwnedMappedMutexGuard<Option<Transaction<'static, DB>>, <DB as sqlx::Database>::Connection>;

impl<DB: BarrierDatabase> BarrierTx<DB> {
    /// The handle the layer put into a request, or why there is none (logged: a missing layer
    /// is a mistake in the service's wiring, and DTM would retry its 500 forever).
    pub(crate) fn resolve(
        found: Option<&BarrierTx<DB>>,
        passed_msg_query: bool,
    ) -> Result<Self, BarrierTxRejection> {
        if let Some(tx) = found {
            return Ok(tx.clone());
        }
        let rejection = if passed_msg_query {
            BarrierTxRejection::MsgQuery
        } else {
            BarrierTxRejection::MissingLayer
        };
        match rejection {
            BarrierTxRejection::MissingLayer => {
                tracing::error!(database = std::any::type_name::<DB>(), "{rejection}");
            }
            _ => tracing::warn!("{rejection}"),
        }
        Err(rejection)
    }
}

/// Why [`BarrierTx`] is not available to a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BarrierTxRejection {
    /// The route is not wrapped in [`BarrierLayer`](crate::BarrierLayer) for this database
    /// type: 500 (gRPC `Internal`), and an error is logged.
    MissingLayer,
    /// The request is DTM's query of a prepared two-phase message (`op=msg`), which the layer
    /// lets through without a transaction: 400 (gRPC `InvalidArgument`). Answer such queries
    /// from a route whose handler calls [`Barrier::query_prepared`](crate::Barrier::query_prepared).
    MsgQuery,
}

impl fmt::Display for BarrierTxRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BarrierTxRejection::MissingLayer => {
                "BarrierTx needs the route to be wrapped in dtm_barrier::BarrierLayer for the same database type"
            }
            BarrierTxRejection::MsgQuery => {
                "op=msg is DTM's query of a prepared message, which runs without a barrier \
                 transaction: point the message's query URL at a handler that calls \
                 Barrier::query_prepared, not at this route"
            }
        })
    }
}

impl std::error::Error for BarrierTxRejection {}

#[cfg(feature = "axum")]
impl IntoResponse for BarrierTxRejection {
    fn into_response(self) -> Response {
        let status = match self {
            BarrierTxRejection::MsgQuery => StatusCode::BAD_REQUEST,
            BarrierTxRejection::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "message": self.to_string() })),
        )
            .into_response()
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync, DB: BarrierDatabase> FromRequestParts<S> for BarrierTx<DB> {
    type Rejection = BarrierTxRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Self::resolve(
            parts.extensions.get::<BarrierTx<DB>>(),
            parts.extensions.get::<super::PassedMsgQuery>().is_some(),
        )
    }
}

/// `Option<BarrierTx<DB>>`: `None` where the layer opened no transaction (routes without the
/// layer, `op=msg` queries).
#[cfg(feature = "axum")]
impl<S: Send + Sync, DB: BarrierDatabase> OptionalFromRequestParts<S> for BarrierTx<DB> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<BarrierTx<DB>>().cloned())
    }
}
