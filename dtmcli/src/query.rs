//! The read API: what the server stored about transactions and their branches.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Deserializer};

use crate::{BranchStatus, GlobalStatus, Op, TransType};

/// A global transaction as the server stores it ([`storage/trans.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/storage/trans.go)).
///
/// SQL stores keep fewer fields than boltdb/redis (no steps, payloads or flattened options),
/// so only the fields below are read.
///
/// Its `Debug` output shows `options` parsed, with branch header values hidden.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct GlobalTrans {
    /// The global transaction id.
    pub gid: String,
    /// The kind of transaction.
    pub trans_type: TransType,
    /// Its status.
    pub status: GlobalStatus,
    /// `http`, `grpc` or `json-rpc`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub protocol: String,
    /// Why it rolled back, if it did.
    #[serde(default, deserialize_with = "null_as_default")]
    pub rollback_reason: String,
    /// The result a workflow returned (base64).
    #[serde(default, deserialize_with = "null_as_default")]
    pub result: String,
    /// The message's query URL.
    #[serde(default, deserialize_with = "null_as_default")]
    pub query_prepared: String,
    /// Saga concurrency, message delay or workflow data, as JSON text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub custom_data: String,
    /// The transaction options, as JSON text.
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: String,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub create_time: Option<String>,
    /// Last update time (RFC 3339).
    #[serde(default)]
    pub update_time: Option<String>,
    /// When it succeeded (RFC 3339).
    #[serde(default)]
    pub finish_time: Option<String>,
    /// When it was rolled back (RFC 3339).
    #[serde(default)]
    pub rollback_time: Option<String>,
    /// When the server processes it next (RFC 3339).
    #[serde(default)]
    pub next_cron_time: Option<String>,
    /// The current retry interval in seconds.
    #[serde(default)]
    pub next_cron_interval: Option<i64>,
}

impl GlobalTrans {
    /// The transaction options, parsed from [`options`](Self::options); `None` if the server
    /// stored none or they do not parse.
    pub fn parsed_options(&self) -> Option<crate::TransOptions> {
        serde_json::from_str(&self.options).ok()
    }
}

impl std::fmt::Debug for GlobalTrans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let options: &dyn std::fmt::Debug = match (&self.parsed_options(), self.options.is_empty())
        {
            (_, true) => &"",
            (Some(parsed), _) => &Some(parsed.clone()),
            (None, _) => &"<unparsed, hidden: it may hold branch headers>",
        };
        f.debug_struct("GlobalTrans")
            .field("gid", &self.gid)
            .field("trans_type", &self.trans_type)
            .field("status", &self.status)
            .field("protocol", &self.protocol)
            .field("rollback_reason", &self.rollback_reason)
            .field("result", &self.result)
            .field("query_prepared", &self.query_prepared)
            .field("custom_data", &self.custom_data)
            .field("options", options)
            .field("create_time", &self.create_time)
            .field("update_time", &self.update_time)
            .field("finish_time", &self.finish_time)
            .field("rollback_time", &self.rollback_time)
            .field("next_cron_time", &self.next_cron_time)
            .field("next_cron_interval", &self.next_cron_interval)
            .finish()
    }
}

/// One branch operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct BranchTrans {
    /// The global transaction id.
    pub gid: String,
    /// The branch id.
    pub branch_id: String,
    /// The operation.
    pub op: Op,
    /// Its status.
    pub status: BranchStatus,
    /// The URL the server calls.
    #[serde(default, deserialize_with = "null_as_default")]
    pub url: String,
    /// The payload, base64 as stored; see [`BranchTrans::payload`].
    #[serde(default, deserialize_with = "null_as_default")]
    pub bin_data: String,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub create_time: Option<String>,
    /// When it succeeded (RFC 3339).
    #[serde(default)]
    pub finish_time: Option<String>,
}

impl BranchTrans {
    /// The payload bytes the server sends to this branch.
    pub fn payload(&self) -> Result<Vec<u8>, base64::DecodeError> {
        base64::engine::general_purpose::STANDARD.decode(&self.bin_data)
    }
}

/// The answer of `query`: the transaction (absent for an unknown gid) and its branches in
/// the order they were stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct TransQuery {
    /// The global transaction, `None` if the gid is unknown.
    pub transaction: Option<GlobalTrans>,
    /// Its branches: saga `[01 compensate, 01 action, 02 ...]`, TCC `[01 cancel, 01 confirm,
    /// ...]`, msg `[01, 02, ...]`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub branches: Vec<BranchTrans>,
}

impl TransQuery {
    /// The branch statuses in order, handy in assertions.
    pub fn branch_statuses(&self) -> Vec<BranchStatus> {
        self.branches.iter().map(|b| b.status).collect()
    }
}

/// Filters and paging for `all`. Build it with [`Default`] and the setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct AllQuery {
    pub(crate) status: Option<GlobalStatus>,
    pub(crate) trans_type: Option<TransType>,
    pub(crate) create_time_start: Option<u128>,
    pub(crate) create_time_end: Option<u128>,
    pub(crate) position: Option<String>,
    pub(crate) limit: Option<u32>,
}

impl AllQuery {
    /// Only transactions in this status.
    pub fn status(mut self, status: GlobalStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Only transactions of this type.
    pub fn trans_type(mut self, trans_type: TransType) -> Self {
        self.trans_type = Some(trans_type);
        self
    }

    /// Only transactions created at or after this time (second precision).
    pub fn created_after(mut self, time: SystemTime) -> Self {
        self.create_time_start = Some(millis(time));
        self
    }

    /// Only transactions created at or before this time (second precision).
    pub fn created_before(mut self, time: SystemTime) -> Self {
        self.create_time_end = Some(millis(time));
        self
    }

    /// Continue after this cursor (the `next_position` of the previous page).
    pub fn position(mut self, position: impl Into<String>) -> Self {
        self.position = Some(position.into());
        self
    }

    /// At most this many transactions per page (server default 100).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(s) = self.status {
            pairs.push(("status", s.to_string()));
        }
        if let Some(t) = self.trans_type {
            pairs.push(("transType", t.to_string()));
        }
        if let Some(t) = self.create_time_start {
            pairs.push(("createTimeStart", t.to_string()));
        }
        if let Some(t) = self.create_time_end {
            pairs.push(("createTimeEnd", t.to_string()));
        }
        if let Some(p) = &self.position {
            pairs.push(("position", p.clone()));
        }
        if let Some(l) = self.limit {
            pairs.push(("limit", l.to_string()));
        }
        pairs
    }
}

fn millis(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// One page of `all`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct TransPage {
    /// The transactions of this page.
    #[serde(default, deserialize_with = "null_as_default")]
    pub transactions: Vec<GlobalTrans>,
    /// The cursor of the next page; `None` when the scan is exhausted.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub next_position: Option<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

#[cfg(feature = "http")]
impl crate::DtmClient {
    /// The stored transaction `gid` and its branches (`GET /query`); an unknown gid gives
    /// `transaction: None`.
    pub async fn query(&self, gid: &str) -> crate::Result<TransQuery> {
        if gid.is_empty() {
            return Err(crate::Error::MissingField("gid"));
        }
        self.get("query", &[("gid", gid)]).await
    }

    /// One page of stored transactions (`GET /all`), newest first on SQL stores.
    pub async fn all(&self, query: &AllQuery) -> crate::Result<TransPage> {
        let pairs = query.pairs();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.get("all", &pairs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_server_answer() {
        let json = r#"{"branches":[{"id":1,"create_time":"2026-11-22T00:00:00.1+00:00",
            "update_time":"2026-11-22T00:00:00.1+00:00","gid":"g","url":"http://x/TransOutRevert",
            "bin_data":"eyJhIjoxfQ==","branch_id":"01","op":"compensate","status":"prepared"}],
            "transaction":{"id":1,"gid":"g","trans_type":"saga","status":"succeed",
            "protocol":"http","options":"{\"concurrent\":false}","concurrent":false,"steps":[]}}"#;
        let q: TransQuery = serde_json::from_str(json).unwrap();
        let t = q.transaction.as_ref().unwrap();
        assert_eq!(t.status, GlobalStatus::Succeed);
        assert_eq!(t.rollback_reason, "");
        assert_eq!(q.branches[0].op, Op::Compensate);
        assert_eq!(q.branches[0].payload().unwrap(), br#"{"a":1}"#);
        assert_eq!(q.branch_statuses(), vec![BranchStatus::Prepared]);

        let unknown: TransQuery =
            serde_json::from_str(r#"{"transaction":null,"branches":null}"#).unwrap();
        assert_eq!(unknown.transaction, None);
        assert!(unknown.branches.is_empty());

        let page: TransPage =
            serde_json::from_str(r#"{"transactions":null,"next_position":""}"#).unwrap();
        assert_eq!(page.next_position, None);
    }

    #[test]
    fn all_query_pairs() {
        let q = AllQuery::default()
            .status(GlobalStatus::Failed)
            .trans_type(TransType::Saga)
            .limit(2)
            .position("7");
        assert_eq!(
            q.pairs(),
            vec![
                ("status", "failed".to_owned()),
                ("transType", "saga".to_owned()),
                ("position", "7".to_owned()),
                ("limit", "2".to_owned()),
            ]
        );
    }
}
