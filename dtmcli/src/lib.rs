//! DTM distributed transactions over HTTP.
//!
//! [DTM](https://github.com/dtm-labs/dtm) coordinates transactions across services: Saga, TCC,
//! two-phase messages, XA and workflow. Business services ("branches") expose endpoints; the
//! DTM server calls them and retries until the global transaction ends.
//!
//! This crate holds
//! - the protocol vocabulary shared by the whole SDK ([`TransType`], [`Op`], [`GlobalStatus`],
//!   [`BranchStatus`], [`DtmResult`], [`TransOptions`], [`BranchInfo`], [`BranchIdGen`]) and the
//!   rules for reading an HTTP answer ([`answer`]), always available;
//! - with the `http` feature (default): [`DtmClient`] with [`Saga`], [`Msg`] (with
//!   [`Msg::do_and_submit`]), TCC ([`TccBuilder`], [`Tcc`]), XA ([`XaBuilder`], [`Xa`]), the
//!   read API ([`DtmClient::query`], [`DtmClient::all`]) and topics;
//! - what the gRPC client shares: the transaction [`model`] (saga, message, TCC and XA
//!   written once over a [`model::Transport`]), [`do_and_submit`] ([`TwoPhaseMsg`]) and
//!   [`XaRegistrar`];
//! - with the `axum` feature (default): the [`BranchInfo`] extractor and `IntoResponse` for
//!   [`DtmResult`] and [`Error`], for writing branches.
//!
//! ```no_run
//! # async fn demo() -> dtmcli::Result<()> {
//! use dtmcli::{DtmClient, GlobalStatus};
//!
//! let dtm = DtmClient::new("http://localhost:36789/api/dtmsvr")?;
//! let busi = "http://localhost:8081/api/busi";
//! let req = serde_json::json!({"amount": 30});
//! let gid = dtm.new_gid().await?;
//! dtm.saga(&gid)
//!     .add(format!("{busi}/TransOut"), format!("{busi}/TransOutCompensate"), &req)
//!     .add(format!("{busi}/TransIn"), format!("{busi}/TransInCompensate"), &req)
//!     .wait_result(true)
//!     .submit()
//!     .await?;
//! let stored = dtm.query(&gid).await?;
//! assert_eq!(stored.transaction.unwrap().status, GlobalStatus::Succeed);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod options;

pub mod answer;
mod branch;
mod error;
mod gid;
mod global;
pub mod model;
mod outcome;
mod query;
mod two_phase;
mod types;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "tonic")]
pub mod grpc;
#[cfg(feature = "http")]
mod msg;
#[cfg(feature = "http")]
mod saga;
#[cfg(feature = "http")]
mod tcc;
#[cfg(feature = "http")]
mod trans;
#[cfg(feature = "http")]
mod workflow;
#[cfg(feature = "http")]
mod xa;

pub use branch::{
    check_gid, BranchIdGen, BranchInfo, BRANCH_INFO_PREFIX, MAX_ID_CHARS, STRIPPED_CHARS,
};
pub use error::{Error, Result};
pub use gid::local_gid;
pub use global::XaRegistrar;
pub use model::WorkflowOptions;
#[doc(hidden)]
pub use options::RedactedHeaders;
pub use options::{whole_seconds, TransOptions};
pub use outcome::Outcome;
pub use query::{AllQuery, BranchTrans, GlobalTrans, TransPage, TransQuery};
pub use two_phase::{do_and_submit, finish_msg, query_url, TwoPhaseMsg};
pub use types::{
    BranchStatus, DtmResult, GlobalStatus, Op, Protocol, TransType, QUERY_PREPARED_BRANCH_ID,
};

#[cfg(feature = "http")]
pub use client::{BranchResponse, DtmClient, DtmClientBuilder, DEFAULT_TIMEOUT};
#[cfg(feature = "http")]
pub use msg::Msg;
#[cfg(feature = "http")]
pub use saga::Saga;
#[cfg(feature = "http")]
pub use tcc::{Tcc, TccBuilder};
#[cfg(feature = "http")]
pub use workflow::{Workflow, Workflows};
#[cfg(feature = "http")]
pub use xa::{register_xa_branch, Xa, XaBuilder};
