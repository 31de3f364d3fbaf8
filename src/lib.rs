#![doc = include_str!("../README.md")]
//!
//! ## This crate
//!
//! `dtm-sdk` re-exports the SDK's crates so that one dependency brings all of them:
//! [`dtmcli`] (protocol vocabulary, HTTP client, axum branch helpers) and [`dtm_barrier`]
//! (the sub-transaction barrier over SQL, its tower layer, DoAndSubmit).

pub use dtm_barrier;
pub use dtmcli;
pub use dtmgrpc;
