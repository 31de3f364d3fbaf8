//! gRPC branch URLs: `host:port/package.Service/Method` ([`trans_status.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/trans_status.go)).

use std::fmt;
use std::str::FromStr;

use dtmcli::{Error, Result};

/// A gRPC branch URL, `host:port/package.Service/Method`, split as the DTM server splits it:
/// at the first `/` into the target, dialled as is (without TLS), and the method path.
///
/// ```
/// use dtmgrpc::GrpcUrl;
///
/// let url: GrpcUrl = "localhost:58081/busi.Busi/TransIn".parse()?;
/// assert_eq!(url.target(), "localhost:58081");
/// assert_eq!(url.method(), "/busi.Busi/TransIn");
/// assert!("localhost:58081".parse::<GrpcUrl>().is_err()); // no method
/// assert!("grpc://localhost:58081/busi.Busi/TransIn".parse::<GrpcUrl>().is_err());
/// # Ok::<(), dtmgrpc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrpcUrl {
    target: String,
    method: String,
}

impl GrpcUrl {
    /// Parses `host:port/package.Service/Method`.
    ///
    /// A URL with a scheme (`://`) is refused: the server's default driver rejects it too
    /// (it needs a service-discovery driver), and `http://` URLs are HTTP branches.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |why: &str| {
            Error::InvalidArgument(format!(
                "invalid gRPC branch URL {url:?}: {why}; expected host:port/package.Service/Method"
            ))
        };
        if url.contains("://") {
            return Err(invalid("it has a scheme (\"://\")"));
        }
        let Some((target, rest)) = url.split_once('/') else {
            return Err(invalid("no \"/\" between the target and the method"));
        };
        if target.is_empty() {
            return Err(invalid("the target host:port is empty"));
        }
        match rest.split_once('/') {
            Some((service, method)) if !service.is_empty() && !method.is_empty() => {}
            _ => return Err(invalid("the method is not package.Service/Method")),
        }
        let method = format!("/{rest}");
        if http::uri::PathAndQuery::from_str(&method).is_err() || method.contains('?') {
            return Err(invalid("the method is not a valid path"));
        }
        Ok(GrpcUrl {
            target: target.to_owned(),
            method,
        })
    }

    /// The `host:port` to dial.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The full method name, `/package.Service/Method`.
    pub fn method(&self) -> &str {
        &self.method
    }
}

impl FromStr for GrpcUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        GrpcUrl::parse(s)
    }
}

impl fmt::Display for GrpcUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.target, self.method)
    }
}

/// Whether the server calls this URL over HTTP even in a gRPC transaction.
pub(crate) fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Checks a URL the server will call: empty (never called, counts as success), `http(s)://`
/// (called over HTTP with the payload as body) or a gRPC URL.
pub(crate) fn check_branch_url(url: &str) -> Result<()> {
    if url.is_empty() || is_http(url) {
        Ok(())
    } else {
        GrpcUrl::parse(url).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_slash() {
        let u = GrpcUrl::parse("127.0.0.1:5/pkg.v1.Svc/Do").unwrap();
        assert_eq!((u.target(), u.method()), ("127.0.0.1:5", "/pkg.v1.Svc/Do"));
        assert_eq!(u.to_string(), "127.0.0.1:5/pkg.v1.Svc/Do");
    }

    #[test]
    fn malformed_urls_say_why() {
        let msg = |u: &str| GrpcUrl::parse(u).unwrap_err().to_string();
        assert!(
            msg("localhost:1").contains("no \"/\""),
            "{}",
            msg("localhost:1")
        );
        assert!(msg("not_exists://abc").contains("scheme"));
        assert!(msg("/busi.Busi/TransIn").contains("target"));
        assert!(msg("h:1/busi.Busi").contains("package.Service/Method"));
        assert!(msg("h:1/busi.Busi/").contains("package.Service/Method"));
        assert!(msg("h:1/busi Busi/x").contains("valid path"));
        assert!(msg("h:1").contains("expected host:port/package.Service/Method"));
    }

    #[test]
    fn step_urls_may_be_empty_http_or_grpc() {
        assert!(check_branch_url("").is_ok());
        assert!(check_branch_url("http://h/api/TransIn").is_ok());
        assert!(check_branch_url("https://h/api/TransIn").is_ok());
        assert!(check_branch_url("h:1/busi.Busi/TransIn").is_ok());
        assert!(check_branch_url("h:1").is_err());
        assert!(check_branch_url("ftp://h/x").is_err());
    }
}
