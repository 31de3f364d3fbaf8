//! Branch identity: the transaction information a branch call carries, and branch ids.

use crate::{Error, Op, Result, TransType};

/// The prefix of the HTTP headers and gRPC metadata keys that carry branch info:
/// `dtm-gid`, `dtm-trans_type`, `dtm-branch_id`, `dtm-op`, `dtm-dtm`, `dtm-phase2_url`.
pub const BRANCH_INFO_PREFIX: &str = "dtm-";

/// The transaction information DTM (or a client) sends with every branch call.
///
/// Over HTTP it travels in the query string (`gid`, `trans_type`, `branch_id`, `op`, and from
/// clients also `dtm` and `phase2_url`); over gRPC in `dtm-*` metadata. The barrier keys its
/// records on the first four.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BranchInfo {
    /// The global transaction id.
    pub gid: String,
    /// The kind of the global transaction.
    pub trans_type: TransType,
    /// The branch id (`01`, `02`, `0201`, ...).
    pub branch_id: String,
    /// The operation this call performs.
    pub op: Op,
    /// The DTM server address; only calls made by a client (TCC try, XA action, message query)
    /// carry it, calls made by the server do not.
    pub dtm: Option<String>,
    /// The XA phase-2 URL, sent by XA clients with the action call.
    pub phase2_url: Option<String>,
}

impl BranchInfo {
    /// Builds branch info from named values, such as query parameters.
    ///
    /// `lookup(name)` returns the value of `gid`, `trans_type`, `branch_id`, `op`, `dtm` or
    /// `phase2_url`. An absent or empty required field gives [`Error::MissingField`] naming it;
    /// an unknown `trans_type` or `op` gives [`Error::InvalidArgument`].
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<String>) -> Result<Self> {
        let mut required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or(Error::MissingField(name))
        };
        let gid = required("gid")?;
        let trans_type = required("trans_type")?;
        let branch_id = required("branch_id")?;
        let op = required("op")?;
        let parse_err =
            |field: &str, e: Error| Error::InvalidArgument(format!("field `{field}`: {e}"));
        let trans_type = trans_type.parse().map_err(|e| parse_err("trans_type", e))?;
        let op = op.parse().map_err(|e| parse_err("op", e))?;
        Ok(BranchInfo {
            gid,
            trans_type,
            branch_id,
            op,
            dtm: lookup("dtm").filter(|v| !v.is_empty()),
            phase2_url: lookup("phase2_url").filter(|v| !v.is_empty()),
        })
    }

    /// Builds branch info from `dtm-*` keys (HTTP headers, gRPC metadata): `get(key)` returns
    /// the value of the full key, such as `dtm-gid`.
    pub fn from_prefixed(mut get: impl FnMut(&str) -> Option<String>) -> Result<Self> {
        Self::from_lookup(|name| get(&format!("{BRANCH_INFO_PREFIX}{name}")))
    }

    /// Parses branch info from a URL query string (`gid=..&trans_type=..&branch_id=..&op=..`).
    pub fn from_query(query: &str) -> Result<Self> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        Self::from_lookup(|name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    /// The query parameters that identify this branch, in the order DTM writes them.
    pub fn query_pairs(&self) -> Vec<(&'static str, &str)> {
        let mut pairs = vec![
            ("gid", self.gid.as_str()),
            ("trans_type", self.trans_type.as_str()),
            ("branch_id", self.branch_id.as_str()),
            ("op", self.op.as_str()),
        ];
        if let Some(dtm) = &self.dtm {
            pairs.push(("dtm", dtm));
        }
        if let Some(url) = &self.phase2_url {
            pairs.push(("phase2_url", url));
        }
        pairs
    }
}

/// Hands out the ids of the branches a client registers: `01`, `02`, ... below a prefix.
///
/// A global TCC or XA transaction starts with an empty prefix; a nested TCC uses the id of the
/// branch it runs in (`02` → `0201`, `0202`, ...). At most 99 sub-branches per prefix, and the
/// prefix must be shorter than 20 characters, as in the reference client.
#[derive(Debug, Clone, Default)]
pub struct BranchIdGen {
    prefix: String,
    issued: u32,
}

impl BranchIdGen {
    /// The largest number of sub-branches one prefix can have.
    pub const MAX_SUB_BRANCHES: u32 = 99;
    /// The length from which a prefix can no longer have sub-branches.
    pub const MAX_PREFIX_LEN: usize = 20;

    /// A generator of sub-branch ids below `prefix` (empty for a global transaction).
    pub fn new(prefix: impl Into<String>) -> Self {
        BranchIdGen {
            prefix: prefix.into(),
            issued: 0,
        }
    }

    /// The next sub-branch id.
    pub fn next_id(&mut self) -> Result<String> {
        if self.issued >= Self::MAX_SUB_BRANCHES {
            return Err(Error::InvalidArgument(format!(
                "more than {} sub-branches below branch {:?}",
                Self::MAX_SUB_BRANCHES,
                self.prefix
            )));
        }
        if self.prefix.len() >= Self::MAX_PREFIX_LEN {
            return Err(Error::InvalidArgument(format!(
                "branch id {:?} is too long to have sub-branches",
                self.prefix
            )));
        }
        self.issued += 1;
        Ok(format!("{}{:02}", self.prefix, self.issued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_query_and_names_the_missing_field() {
        let info =
            BranchInfo::from_query("gid=g1&trans_type=tcc&branch_id=02&op=try&dtm=http%3A%2F%2Fx")
                .unwrap();
        assert_eq!(info.gid, "g1");
        assert_eq!(info.trans_type, TransType::Tcc);
        assert_eq!(info.op, Op::Try);
        assert_eq!(info.dtm.as_deref(), Some("http://x"));
        assert_eq!(info.phase2_url, None);

        let err = BranchInfo::from_query("gid=g1&trans_type=saga&op=action").unwrap_err();
        assert!(matches!(err, Error::MissingField("branch_id")), "{err}");
        let err = BranchInfo::from_query("gid=&trans_type=saga").unwrap_err();
        assert!(matches!(err, Error::MissingField("gid")), "{err}");
        let err = BranchInfo::from_query("gid=g&trans_type=saga&branch_id=01&op=jump").unwrap_err();
        assert!(err.to_string().contains("`op`"), "{err}");
    }

    #[test]
    fn query_pairs_round_trip() {
        let info =
            BranchInfo::from_query("gid=a&trans_type=xa&branch_id=01&op=action&phase2_url=u")
                .unwrap();
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(info.query_pairs())
            .finish();
        assert_eq!(BranchInfo::from_query(&query).unwrap(), info);
    }

    #[test]
    fn branch_ids_nest_and_stop_at_99() {
        let mut top = BranchIdGen::default();
        assert_eq!(top.next_id().unwrap(), "01");
        assert_eq!(top.next_id().unwrap(), "02");
        let mut nested = BranchIdGen::new("02");
        assert_eq!(nested.next_id().unwrap(), "0201");
        let mut full = BranchIdGen::default();
        for _ in 0..99 {
            full.next_id().unwrap();
        }
        assert!(full.next_id().is_err());
        assert!(BranchIdGen::new("0".repeat(20)).next_id().is_err());
    }
}
