//! The Rust SDK for [DTM](https://github.com/dtm-labs/dtm), the distributed transaction
//! manager: one dependency for the whole SDK.
//!
//! - [`dtmcli`]: the protocol vocabulary and the HTTP client (Saga, TCC, two-phase messages,
//!   the read API) plus branch helpers for axum.
//!
//! The crates can also be used one by one.
//!
//! ```no_run
//! # async fn demo() -> dtm_sdk::dtmcli::Result<()> {
//! let dtm = dtm_sdk::dtmcli::DtmClient::new("http://localhost:36789/api/dtmsvr")?;
//! println!("new gid: {}", dtm.new_gid().await?);
//! # Ok(()) }
//! ```

pub use dtmcli;
