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

/// The longest gid or branch id, in characters: the size of the `gid` and `branch_id` columns of
/// the barrier table and of DTM's SQL stores (`varchar(128)`).
pub const MAX_ID_CHARS: usize = 128;

/// The characters DTM's HTTP API removes from a gid it receives, and the reference client's
/// HTTP barrier from the branch info it reads: `\n`, `\r` and `;`.
pub const STRIPPED_CHARS: [char; 3] = ['\n', '\r', ';'];

/// Checks a gid a client is about to give DTM: not empty, at most [`MAX_ID_CHARS`]
/// characters, and no character DTM would not hand back unchanged to the branches (those of
/// [`STRIPPED_CHARS`], which DTM's HTTP API removes, and other control characters).
///
/// ```
/// assert!(dtmcli::check_gid("order-1").is_ok());
/// assert!(dtmcli::check_gid("order;1").is_err()); // DTM would store "order1"
/// assert!(dtmcli::check_gid(&"x".repeat(129)).is_err());
/// ```
pub fn check_gid(gid: &str) -> Result<()> {
    let refuse = |why: &str| Err(Error::InvalidArgument(format!("gid {why}")));
    if gid.is_empty() {
        return refuse("is empty");
    }
    if gid.chars().count() > MAX_ID_CHARS {
        return refuse(&format!("is longer than {MAX_ID_CHARS} characters"));
    }
    if gid.contains(STRIPPED_CHARS) {
        return refuse(
            "contains `;`, `\\n` or `\\r`, which DTM removes: the branches would see another gid",
        );
    }
    if gid.chars().any(char::is_control) {
        return refuse("contains a control character");
    }
    Ok(())
}

/// Checks one identifying field of branch info as it arrived: present, short enough for the
/// barrier table, no control characters.
fn check_id(field: &'static str, value: Option<String>) -> Result<String> {
    let value = value
        .filter(|v| !v.is_empty())
        .ok_or(Error::MissingField(field))?;
    let invalid = |reason: String| Error::InvalidField { field, reason };
    if value.chars().count() > MAX_ID_CHARS {
        return Err(invalid(format!("is longer than {MAX_ID_CHARS} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("contains a control character".into()));
    }
    Ok(value)
}

/// Decodes one `application/x-www-form-urlencoded` component; `None` if the bytes it stands
/// for are not UTF-8 (they are never replaced, so that distinct values stay distinct).
fn decode_component(raw: &str) -> Option<String> {
    let plus_free = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_free)
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// A value read from a request: absent, present, or present but not UTF-8.
type Lookup = Result<Option<String>>;

fn not_utf8(field: &'static str) -> Error {
    Error::InvalidField {
        field,
        reason: "is not valid UTF-8".into(),
    }
}

impl BranchInfo {
    /// Builds branch info from named values, such as query parameters.
    ///
    /// `lookup(name)` returns the value of `gid`, `trans_type`, `branch_id`, `op`, `dtm` or
    /// `phase2_url`. An absent or empty required field gives [`Error::MissingField`] naming it;
    /// a gid or branch id longer than [`MAX_ID_CHARS`] or holding control characters, and an
    /// unknown `trans_type` or `op`, give [`Error::InvalidField`] naming it.
    pub fn from_lookup(mut lookup: impl FnMut(&str) -> Option<String>) -> Result<Self> {
        Self::from_checked_lookup(|name| Ok(lookup(name)))
    }

    fn from_checked_lookup(mut lookup: impl FnMut(&'static str) -> Lookup) -> Result<Self> {
        let gid = check_id("gid", lookup("gid")?)?;
        let trans_type = lookup("trans_type")?
            .filter(|v| !v.is_empty())
            .ok_or(Error::MissingField("trans_type"))?;
        let branch_id = check_id("branch_id", lookup("branch_id")?)?;
        let op = lookup("op")?
            .filter(|v| !v.is_empty())
            .ok_or(Error::MissingField("op"))?;
        let trans_type = trans_type.parse().map_err(|_| Error::InvalidField {
            field: "trans_type",
            reason: format!("is not one of {}", names(TransType::ALL)),
        })?;
        let op = op.parse().map_err(|_| Error::InvalidField {
            field: "op",
            reason: format!("is not one of {}", names(Op::ALL)),
        })?;
        Ok(BranchInfo {
            gid,
            trans_type,
            branch_id,
            op,
            dtm: lookup("dtm")?.filter(|v| !v.is_empty()),
            phase2_url: lookup("phase2_url")?.filter(|v| !v.is_empty()),
        })
    }

    /// Builds branch info from `dtm-*` keys (HTTP headers, gRPC metadata): `get(key)` returns
    /// the raw bytes of the full key, such as `dtm-gid`. Values are taken as they are (DTM and
    /// the reference client strip nothing from gRPC metadata); bytes that are not UTF-8 give
    /// [`Error::InvalidField`].
    pub fn from_prefixed<'a>(mut get: impl FnMut(&str) -> Option<&'a [u8]>) -> Result<Self> {
        Self::from_checked_lookup(|name| prefixed(&mut get, name))
    }

    /// Parses branch info from a URL query string (`gid=..&trans_type=..&branch_id=..&op=..`)
    /// as DTM's reference client reads it: the first value of a repeated parameter counts;
    /// values are percent-decoded and must be UTF-8; `;`, `\n` and `\r` are removed from the
    /// four identifying fields ([`STRIPPED_CHARS`]), as DTM removes them from gids.
    pub fn from_query(query: &str) -> Result<Self> {
        Self::from_http(Some(query), |_| None)
    }

    /// Reads branch info from an HTTP request: each field from the query string as
    /// [`from_query`](Self::from_query) reads it, or, where the query lacks it or has it
    /// empty, from the `dtm-*` header `header(key)` returns.
    pub fn from_http<'a>(
        query: Option<&str>,
        mut header: impl FnMut(&str) -> Option<&'a [u8]>,
    ) -> Result<Self> {
        let query = query.unwrap_or("");
        Self::from_checked_lookup(|name| {
            let from_query = match first_query_value(query, name) {
                Some(Some(value)) => Some(value),
                Some(None) => return Err(not_utf8(name)),
                None => None,
            };
            let value = match from_query.filter(|v| !v.is_empty()) {
                Some(value) => Some(value),
                None => prefixed(&mut header, name)?,
            };
            Ok(match name {
                "gid" | "trans_type" | "branch_id" | "op" => {
                    value.map(|v| v.replace(STRIPPED_CHARS, ""))
                }
                _ => value,
            })
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

fn prefixed<'a>(get: &mut impl FnMut(&str) -> Option<&'a [u8]>, name: &'static str) -> Lookup {
    match get(&format!("{BRANCH_INFO_PREFIX}{name}")) {
        None => Ok(None),
        Some(bytes) => std::str::from_utf8(bytes)
            .map(|v| Some(v.to_owned()))
            .map_err(|_| not_utf8(name)),
    }
}

/// The first value of `name` in a query string: `None` if absent, `Some(None)` if its bytes
/// are not UTF-8.
fn first_query_value(query: &str, name: &str) -> Option<Option<String>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode_component(key).as_deref() == Some(name)).then(|| decode_component(value))
        })
}

fn names<T: std::fmt::Display>(all: &[T]) -> String {
    all.iter().map(T::to_string).collect::<Vec<_>>().join(", ")
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
    fn query_is_read_as_the_reference_client_reads_it() {
        // The first value of a repeated parameter counts, even an empty one.
        let info =
            BranchInfo::from_query("gid=a&gid=b&trans_type=saga&branch_id=01&op=action").unwrap();
        assert_eq!(info.gid, "a");
        let err = BranchInfo::from_query("gid=&gid=b&trans_type=saga&branch_id=01&op=action")
            .unwrap_err();
        assert!(matches!(err, Error::MissingField("gid")), "{err}");
        // `;`, `\n` and `\r` are removed, as DTM removes them from gids.
        let info = BranchInfo::from_query("gid=g%3Bx%0A%0D&trans_type=tcc&branch_id=0%3B1&op=try")
            .unwrap();
        assert_eq!((info.gid.as_str(), info.branch_id.as_str()), ("gx", "01"));
        // Bytes that are not UTF-8 are refused, never replaced (`%ff` and `%fe` would both
        // become U+FFFD and name one transaction).
        for bad in ["g%ff", "g%fe", "%c3%28"] {
            let err = BranchInfo::from_query(&format!(
                "gid={bad}&trans_type=saga&branch_id=01&op=action"
            ))
            .unwrap_err();
            assert!(
                matches!(&err, Error::InvalidField { field: "gid", .. }),
                "{bad}: {err}"
            );
        }
        // Other control characters and over-long ids are refused, naming the field once.
        let err =
            BranchInfo::from_query("gid=g%07&trans_type=saga&branch_id=01&op=action").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid transaction info: `gid` contains a control character"
        );
        let long = "b".repeat(MAX_ID_CHARS + 1);
        let err =
            BranchInfo::from_query(&format!("gid=g&trans_type=saga&branch_id={long}&op=action"))
                .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::InvalidField {
                    field: "branch_id",
                    ..
                }
            ),
            "{err}"
        );
        let err = BranchInfo::from_query("gid=g&trans_type=saga&branch_id=01&op=jump").unwrap_err();
        assert_eq!(err.to_string().matches("invalid").count(), 1, "{err}");
    }

    #[test]
    fn prefixed_values_that_are_not_utf8_are_invalid_not_absent() {
        let get = |key: &str| match key {
            "dtm-gid" => Some(&b"g\xff"[..]),
            "dtm-trans_type" => Some(&b"saga"[..]),
            "dtm-branch_id" => Some(&b"01"[..]),
            "dtm-op" => Some(&b"action"[..]),
            _ => None,
        };
        let err = BranchInfo::from_prefixed(get).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidField { field: "gid", .. }),
            "{err}"
        );
        // gRPC metadata keeps `;` (DTM and the reference client strip nothing there).
        let get = |key: &str| match key {
            "dtm-gid" => Some(&b"g;1"[..]),
            "dtm-trans_type" => Some(&b"saga"[..]),
            "dtm-branch_id" => Some(&b"01"[..]),
            "dtm-op" => Some(&b"action"[..]),
            _ => None,
        };
        assert_eq!(BranchInfo::from_prefixed(get).unwrap().gid, "g;1");
    }

    #[test]
    fn gids_clients_may_use() {
        assert!(check_gid("order-1").is_ok());
        assert!(check_gid(&"x".repeat(MAX_ID_CHARS)).is_ok());
        for bad in ["", "a;b", "a\nb", "a\rb", "a\u{1}b"] {
            assert!(check_gid(bad).is_err(), "{bad:?}");
        }
        assert!(check_gid(&"x".repeat(MAX_ID_CHARS + 1)).is_err());
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
