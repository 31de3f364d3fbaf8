//! DTM distributed transactions over gRPC.
//!
//! [DTM](https://github.com/dtm-labs/dtm) coordinates transactions across services. This
//! crate is the gRPC twin of [`dtmcli`]: it talks to the server's gRPC port (36790 by
//! default) with [tonic], and helps tonic services act as branches.
//!
//! - [`DtmGrpcClient`]: [`Saga`], two-phase [`Msg`], TCC ([`TccBuilder`], [`Tcc`]), XA
//!   ([`XaBuilder`], [`Xa`]; the local XA branch is `dtm_barrier`'s `xa_local`), gids,
//!   topics, `ping`, and with the HTTP API ([`DtmGrpcClientBuilder::http_api`]) `outcome`
//!   and `wait_final`. Branch URLs are `host:port/package.Service/Method` ([`GrpcUrl`]); the server
//!   calls `http://` URLs of a gRPC transaction over HTTP, so transports can be mixed.
//! - Branch side: [`branch_info`] reads the `dtm-*` metadata of a request; [`Error`] and
//!   [`DtmResult`] convert into the [`tonic::Status`] DTM reads (FAILURE → `Aborted`, ONGOING →
//!   `FailedPrecondition`). The server sends each branch its stored payload bytes unchanged,
//!   with the content type `application/grpc+dtm_raw`; a tonic service decodes them like any
//!   request, since tonic does not look at the content subtype.
//!
//! The protocol vocabulary ([`TransType`], [`Op`], statuses, [`DtmResult`], [`TransOptions`],
//! [`BranchInfo`], [`BranchIdGen`]) and the [`Error`] type are [`dtmcli`]'s, re-exported here.
//! The server's own API (`dtmgimp.proto`) is compiled into [`proto`]. Transaction status
//! queries exist only over HTTP: [`DtmGrpcClient::http_api`] gives the `dtmcli::DtmClient`
//! of the same server when the builder was told its HTTP address.
//!
//! ```no_run
//! # async fn demo() -> dtmgrpc::Result<()> {
//! use dtmgrpc::{prost, DtmGrpcClient};
//!
//! /// The request message of the business service's methods.
//! #[derive(Clone, PartialEq, prost::Message)]
//! #[prost(prost_path = "::dtmgrpc::prost")]
//! struct TransReq {
//!     #[prost(int64, tag = "1")]
//!     amount: i64,
//! }
//!
//! let dtm = DtmGrpcClient::builder("localhost:36790")
//!     .http_api("http://localhost:36789/api/dtmsvr") // for wait_result and outcomes
//!     .connect()
//!     .await?;
//! let busi = "localhost:58081/busi.Busi";
//! let req = TransReq { amount: 30 };
//! let gid = dtm.new_gid().await?;
//! dtm.saga(&gid)
//!     .add(format!("{busi}/TransOut"), format!("{busi}/TransOutRevert"), &req)
//!     .add(format!("{busi}/TransIn"), format!("{busi}/TransInRevert"), &req)
//!     .wait_result(true)
//!     .submit()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Features: `server` (default) enables tonic's server in the re-exported [`tonic`], to serve
//! branches; `http-api` (default) adds a client of DTM's HTTP API beside the gRPC one, for
//! what DTM's gRPC API cannot answer (`outcome`, `wait_final`, deciding a `wait_result`
//! submit); `tls` enables TLS (rustls with the system's roots) for `https://` addresses.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod trans;

mod branch;
mod client;
pub mod codec;
mod error;
mod msg;
mod saga;
mod tcc;
mod url;
pub mod workflow;
mod xa;

/// The DTM server's gRPC API (`proto/dtmgimp.proto`, package `dtmgimp`): messages and the
/// generated client of service `Dtm`. `google.protobuf.Empty` is `()`.
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("dtmgimp");
}

pub use branch::{branch_info, branch_info_from_metadata, keys};
pub use client::{DtmGrpcClient, DtmGrpcClientBuilder, DEFAULT_TIMEOUT};
pub use dtmcli::model::WorkflowOptions;
pub use error::{result_of, GrpcError};
pub use msg::Msg;
pub use saga::Saga;
pub use tcc::{BranchResponse, Tcc, TccBuilder};
pub use url::GrpcUrl;
pub use workflow::{workflow_callback, Workflow, WorkflowGrpc, Workflows, WORKFLOW_EXECUTE};
#[cfg(feature = "server")]
pub use workflow::{workflow_server, WorkflowService};
pub use xa::{Xa, XaBuilder};

pub use dtmcli::{
    BranchIdGen, BranchInfo, BranchStatus, DtmResult, Error, GlobalStatus, Op, Result,
    TransOptions, TransType,
};

/// The tonic version this crate is built with, for services and channels.
pub use tonic;

/// The prost version this crate is built with, for messages (derive with
/// `#[prost(prost_path = "::dtmgrpc::prost")]` if prost is not a direct dependency).
pub use prost;

/// The prost codec for tonic (`tonic_prost::ProstCodec`), for hand-written services.
pub use tonic_prost;

/// The README's code blocks, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
