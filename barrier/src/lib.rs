//! The DTM sub-transaction barrier over SQL: exactly-once branch operations for MySQL/MariaDB,
//! PostgreSQL and SQLite through sqlx.
//!
//! DTM may call a branch twice, call a compensation whose forward operation never arrived
//! (null compensation), or deliver a forward operation after its compensation (hanging). The
//! barrier records each `(gid, branch_id, op, barrier_id)` in a table inside the business's own
//! local transaction and decides whether the business code runs, as the reference client's
//! [`barrier.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/barrier.go) does.
//! The table is the Go client's, so Go and Rust services can share it.
//!
//! - [`Barrier`]: the pool and the table; [`Barrier::branch`] gives a [`BranchBarrier`] whose
//!   [`call`](BranchBarrier::call) runs business code in a guarded local transaction, and
//!   [`Barrier::query_prepared`] answers a two-phase message's query.
//! - `BarrierLayer`: the same as a tower layer. `BarrierLayer::for_http` (feature `axum`)
//!   wraps an axum router, whose handlers get the open transaction with the `BarrierTx`
//!   extractor; `BarrierLayer::for_grpc` (feature `tonic`, which does not need axum) wraps a
//!   tonic server, whose handlers use `BarrierTx::from_grpc`.
//! - [`Barrier::do_and_submit`]: a two-phase message (HTTP or gRPC) whose local work is
//!   guarded by the barrier.
//!
//! Business code is an async closure over the local transaction's connection, the same shape
//! everywhere (`call`, `do_and_submit`, `xa_local`): it may borrow from the caller, uses the
//! connection as sqlx expects (`.execute(&mut *conn)`), and `?` works on sqlx errors.
//! [`Error`] is also a response (axum `IntoResponse`; with `tonic`, `Into<tonic::Status>`), so
//! handlers return one error type.
//! - `Barrier::xa_local` / `Barrier::xa_phase2` (features `mysql` / `postgres`): the local
//!   branch of an XA transaction on MySQL/MariaDB and PostgreSQL.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod call;
mod dialect;
mod error;
#[cfg(feature = "layer")]
mod layer;
mod msg;
#[cfg(feature = "redis")]
mod redis_barrier;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod workflow;
#[cfg(any(feature = "mysql", feature = "postgres"))]
mod xa;

pub use call::{Barrier, BranchBarrier, Decision};
#[doc(hidden)]
pub use dialect::Row;
pub use dialect::{BarrierDatabase, Dialect, TableName, DEFAULT_SQLITE_TABLE, DEFAULT_TABLE};
pub use error::Error;
#[cfg(feature = "tonic")]
pub use layer::Grpc;
#[cfg(feature = "axum")]
pub use layer::Http;
#[cfg(feature = "layer")]
pub use layer::{
    BarrierLayer, BarrierService, BarrierTx, BarrierTxRejection, BodyError, Transport, TxGuard,
    DEFAULT_BODY_LIMIT,
};
pub use msg::MsgTx;
#[cfg(feature = "redis")]
pub use redis_barrier::{redis_barrier_key, RedisBarrier, RedisBranch, DEFAULT_REDIS_EXPIRE};
#[cfg(any(feature = "mysql", feature = "postgres"))]
pub use xa::{XaDatabase, XaStep, Xid};
