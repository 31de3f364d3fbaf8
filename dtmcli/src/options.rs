//! Transaction options, as DTM stores them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The options of a global transaction ([`TransOptions`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/dtmimp/trans_base.go)).
///
/// Times are whole seconds, as on the wire; `0` means "the server's default". The transaction
/// builders take [`Duration`]s and round them up to whole seconds.
///
/// Its `Debug` output names the branch headers but hides their values, which are often
/// credentials (`Authorization`, cookies, tokens).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TransOptions {
    /// Process the transaction inside the submit call and report its outcome.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wait_result: bool,
    /// Seconds after creation at which an unfinished transaction is rolled back (saga, TCC,
    /// XA) or its message queried (msg).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout_to_fail: u64,
    /// Timeout in seconds of each call the server makes to a branch.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub request_timeout: u64,
    /// Base retry interval in seconds; doubled after each error.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_interval: u64,
    /// Saga only: how many times an unfinished action is retried at once before rolling back
    /// (0 = retry on the cron forever).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_limit: u64,
    /// Headers (metadata over gRPC) the server adds to every branch call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub branch_headers: BTreeMap<String, String>,
    /// Call the branches in parallel: a message's steps, or (the same as `Saga::concurrent`) a
    /// saga's. Always present on the HTTP wire; DTM's gRPC API has no field for it.
    #[serde(default)]
    pub concurrent: bool,
}

impl TransOptions {
    /// Checks what the server cannot use: a branch header whose name is not an HTTP token or
    /// whose value holds control characters. DTM would store such a header and then fail
    /// every branch call, retrying forever. The error names the header, never its value.
    pub fn check(&self) -> crate::Result<()> {
        const SEPARATORS: &[u8] = b"()<>@,;:\\\"/[]?={} \t";
        for (name, value) in &self.branch_headers {
            let name_ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !SEPARATORS.contains(&b));
            if !name_ok {
                return Err(crate::Error::InvalidArgument(format!(
                    "branch header name {name:?} is not an HTTP header name"
                )));
            }
            if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(crate::Error::InvalidArgument(format!(
                    "branch header {name}: its value holds control characters"
                )));
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for TransOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransOptions")
            .field("wait_result", &self.wait_result)
            .field("timeout_to_fail", &self.timeout_to_fail)
            .field("request_timeout", &self.request_timeout)
            .field("retry_interval", &self.retry_interval)
            .field("retry_limit", &self.retry_limit)
            .field("branch_headers", &RedactedHeaders(&self.branch_headers))
            .field("concurrent", &self.concurrent)
            .finish()
    }
}

/// Debug output of a header map: the names, each with `<redacted>` for its value.
#[doc(hidden)]
pub struct RedactedHeaders<'a>(pub &'a BTreeMap<String, String>);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|name| (name, "<redacted>")))
            .finish()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A duration as the whole seconds of the wire format, rounded up so that a short but non-zero
/// duration does not become `0` ("the server's default").
pub fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Adds the option setters shared by every transaction builder of the SDK (HTTP and gRPC). The
/// type must have a field `options: TransOptions`. `retry_limit`, which only sagas read, is
/// the saga builders' own.
#[doc(hidden)]
#[macro_export]
macro_rules! __option_setters {
    () => {
        /// Makes the submit wait until DTM has processed the transaction, and report where it
        /// stands: success, a rollback ([`Error::Failure`]) or a transaction DTM still retries
        /// ([`Error::Unfinished`]), as DTM stored it. The submit is `submit()` for a saga or
        /// message, and the end of the closure for TCC and XA.
        ///
        /// [`Error::Failure`]: $crate::Error::Failure
        /// [`Error::Unfinished`]: $crate::Error::Unfinished
        pub fn wait_result(mut self, wait: bool) -> Self {
            self.options.wait_result = wait;
            self
        }

        /// Roll the transaction back (or query a prepared message) this long after its
        /// creation if it has not finished. Rounded up to whole seconds.
        pub fn timeout_to_fail(mut self, timeout: std::time::Duration) -> Self {
            self.options.timeout_to_fail = $crate::whole_seconds(timeout);
            self
        }

        /// Timeout of each call the server makes to a branch. Rounded up to whole seconds.
        pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.request_timeout = $crate::whole_seconds(timeout);
            self
        }

        /// Base interval between retries (doubled after each error). Rounded up to whole
        /// seconds.
        pub fn retry_interval(mut self, interval: std::time::Duration) -> Self {
            self.options.retry_interval = $crate::whole_seconds(interval);
            self
        }

        /// A header (metadata over gRPC, where names are lower-cased) the server sends with
        /// every branch call, also on retries; the SDK adds it to the calls it makes itself
        /// (TCC try).
        pub fn branch_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.options
                .branch_headers
                .insert(name.into(), value.into());
            self
        }

        /// Replaces all options at once.
        pub fn options(mut self, options: $crate::TransOptions) -> Self {
            self.options = options;
            self
        }
    };
}

/// Adds the `timeout` and `connect_timeout` setters of the SDK's client builders (HTTP and
/// gRPC). The type must have fields `timeout: Duration`, `timeout_set: bool` and
/// `connect_timeout: Option<Duration>`, and its crate a `DEFAULT_TIMEOUT`.
#[doc(hidden)]
#[macro_export]
macro_rules! __timeout_setters {
    () => {
        /// The total timeout of each call (default
        /// [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT) on the connections the SDK builds).
        ///
        /// Set here, it also applies, call by call, to a client or channel you supply, which
        /// otherwise keeps its own timeouts.
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.timeout = timeout;
            self.timeout_set = true;
            self
        }

        /// The timeout for establishing a connection (default: none beyond `timeout`), on the
        /// connections the SDK builds; a client or channel you supply keeps its own.
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.connect_timeout = Some(timeout);
            self
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_omits_defaults_but_keeps_concurrent() {
        let json = serde_json::to_value(TransOptions::default()).unwrap();
        assert_eq!(json, serde_json::json!({"concurrent": false}));
        let mut o = TransOptions {
            retry_interval: 2,
            ..TransOptions::default()
        };
        o.branch_headers.insert("k".into(), "v".into());
        let json = serde_json::to_value(o).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"retry_interval": 2, "branch_headers": {"k": "v"}, "concurrent": false})
        );
    }

    #[test]
    fn unusable_branch_headers_are_refused_without_their_value() {
        let mut o = TransOptions::default();
        o.branch_headers
            .insert("Authorization".into(), "Bearer ok\tx".into());
        assert!(o.check().is_ok());
        o.branch_headers.insert("X-Bad".into(), "SECRET\n".into());
        let err = o.check().unwrap_err().to_string();
        assert!(err.contains("X-Bad") && !err.contains("SECRET"), "{err}");
        let mut o = TransOptions::default();
        o.branch_headers.insert("bad name".into(), "v".into());
        assert!(o.check().is_err());
    }

    #[test]
    fn debug_hides_header_values() {
        let mut o = TransOptions::default();
        o.branch_headers
            .insert("Authorization".into(), "Bearer SECRET".into());
        let text = format!("{o:?} {o:#?}");
        assert!(
            text.contains("Authorization") && text.contains("<redacted>"),
            "{text}"
        );
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn durations_round_up() {
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 0);
    }
}
