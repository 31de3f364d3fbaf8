#![doc = include_str!("../README.md")]
//!
//! ## This crate
//!
//! `dtm-sdk` re-exports the SDK's crates so that one dependency brings all of them:
//! [`dtmcli`] (protocol vocabulary, HTTP client, axum branch helpers).

pub use dtmcli;
