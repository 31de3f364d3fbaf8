#![doc = include_str!("../README.md")]
//!
//! ## This crate
//!
//! `dtm-sdk` re-exports the SDK's crates so that one dependency brings all of them:
//! [`dtmcli`] (protocol vocabulary, HTTP client, axum branch helpers), [`dtm_barrier`] (the
//! sub-transaction barrier over SQL, its tower layer, DoAndSubmit) and [`dtmgrpc`] (the gRPC
//! client and tonic branch helpers).

pub use dtm_barrier;
pub use dtmcli;
#[cfg(feature = "grpc")]
pub use dtmgrpc;
