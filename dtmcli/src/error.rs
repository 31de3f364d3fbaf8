//! The error type shared by the client and the branch side.

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong talking to DTM or to a branch, and what a branch handler
/// reports back to DTM.
///
/// [`Error::Failure`] and [`Error::Ongoing`] carry the protocol meaning of `FAILURE` and
/// `ONGOING`: a branch handler that returns them answers DTM with 409 / 425 (with the `axum`
/// feature, `Error` implements `IntoResponse`). Every other variant is an ordinary error, which
/// DTM retries with backoff when a branch answers it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `FAILURE`: the operation failed for good and the global transaction should roll back.
    ///
    /// Produced when a branch or the server answers 409 or a body containing `FAILURE`.
    /// From a `wait_result` submit it means the transaction rolled back: DTM stored it as
    /// `failed`, and `message` is the rollback reason it stored (see [`Error::Unfinished`]
    /// for the other case).
    #[error("FAILURE: {message}")]
    Failure {
        /// What the failing side said (the response body, or a handler's reason).
        message: String,
    },

    /// `ONGOING`: the operation is not finished; ask again later.
    ///
    /// Produced when a branch or the server answers 425 or a body containing `ONGOING`.
    #[error("ONGOING: {message}")]
    Ongoing {
        /// What the answering side said.
        message: String,
    },

    /// A `wait_result` submit ended before the transaction did: DTM stored it as
    /// `submitted` (or `aborting`, `prepared`) and keeps retrying the branches listed in
    /// `pending` until they answer SUCCESS, then the transaction ends by itself.
    ///
    /// DTM's own answer to such a submit is FAILURE, ONGOING or an error, as for a rollback;
    /// the SDK reads the stored status to tell the two apart. Wait for the end with
    /// `wait_final`, or let the caller's caller retry later.
    #[error(
        "transaction {gid} is not finished: still {status}, waiting on {}; DTM answered: {answer}",
        pending_text(pending)
    )]
    Unfinished {
        /// The global transaction id.
        gid: String,
        /// The stored status: `submitted`, `aborting` or `prepared`.
        status: crate::GlobalStatus,
        /// The URLs of the branches DTM has not finished in the current direction, in the
        /// order it stored them: in a sequential saga or message, the first is the one DTM
        /// retries and the others wait behind it. DTM's log has their last answers.
        pending: Vec<String>,
        /// DTM's answer to the submit.
        answer: String,
    },

    /// A `wait_result` submit whose outcome the SDK could not learn: DTM's answer was not
    /// SUCCESS (or did not arrive: a timeout, a reset connection) and the stored status could
    /// not be read afterwards. The transaction may have succeeded, rolled back or still be
    /// running: read it later with `outcome(gid)` before acting on it, never resubmit it under
    /// another gid.
    #[error("the outcome of transaction {gid} is unknown: {answer}; and its status could not be read: {cause}")]
    OutcomeUnknown {
        /// The global transaction id.
        gid: String,
        /// DTM's answer to the submit, or why none arrived.
        answer: String,
        /// Why the status could not be read.
        cause: String,
    },

    /// `DUPLICATED`: the local transaction of a two-phase message found its barrier row
    /// already written by the server's query, so it must not commit (the message is dropped).
    #[error("DUPLICATED: the message was queried before its local transaction committed")]
    Duplicated,

    /// A call was answered with an HTTP status the protocol gives no meaning to.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL that was called (without its query).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The response body, as text.
        body: String,
    },

    /// The HTTP request itself failed: connection refused, timeout, invalid URL, ...
    ///
    /// The text names the whole chain of causes (`Connection refused`, `operation timed
    /// out`, ...). The reqwest error is in `cause`; it is not also this error's `source()`,
    /// so that reports walking the chain (`anyhow`'s `{:#}`) do not print it twice.
    #[cfg(feature = "http")]
    #[error("request to {url} failed: {}", chain(cause))]
    Request {
        /// The URL that was called (without its query).
        url: String,
        /// The underlying transport error (`is_timeout()`, `is_connect()`, ...).
        cause: reqwest::Error,
    },

    /// A payload given to a builder could not be serialized to JSON.
    ///
    /// Like every variant, its text already says the cause, which is therefore not also its
    /// `source()`: reports of the chain (`anyhow`'s `{:#}`) print it once.
    #[error("cannot serialize the payload of {what}: {cause}")]
    Payload {
        /// Which payload (for example `saga step 2`).
        what: String,
        /// The serializer's error.
        cause: serde_json::Error,
    },

    /// A response could not be decoded.
    #[error("cannot decode the answer of {url}: {cause}")]
    Decode {
        /// The URL that was called.
        url: String,
        /// The decoder's error.
        cause: serde_json::Error,
    },

    /// A branch request lacks a piece of transaction information.
    #[error("missing transaction info: `{0}` is absent or empty")]
    MissingField(&'static str),

    /// A piece of transaction information is present but unusable: too long for the barrier
    /// table, not UTF-8, holding control characters, or an unknown type or op. A branch
    /// answers it with 400 (gRPC `InvalidArgument`); the value itself is not repeated.
    #[error("invalid transaction info: `{field}` {reason}")]
    InvalidField {
        /// The field (`gid`, `trans_type`, `branch_id`, `op`, ...).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// An argument or a received value is not acceptable.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A gRPC connection or call that failed without protocol meaning (unreachable, or a
    /// status other than OK, `Aborted` and `FailedPrecondition`); see
    /// [`Error::grpc_status`].
    #[cfg(feature = "tonic")]
    #[error(transparent)]
    Grpc(crate::grpc::GrpcError),

    /// Any other error, typically raised by business code inside a branch handler or a
    /// transaction closure.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// A `FAILURE` with the given reason: the global transaction should roll back.
    pub fn failure(message: impl Into<String>) -> Self {
        Error::Failure {
            message: message.into(),
        }
    }

    /// An `ONGOING` with the given explanation: DTM asks again later.
    pub fn ongoing(message: impl Into<String>) -> Self {
        Error::Ongoing {
            message: message.into(),
        }
    }

    /// Wraps any error; a branch handler returning it answers 500, which DTM retries.
    pub fn other(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Error::Other(error.into())
    }

    /// Whether this error means `FAILURE`.
    pub fn is_failure(&self) -> bool {
        matches!(self, Error::Failure { .. })
    }

    /// Whether this error means `ONGOING`.
    pub fn is_ongoing(&self) -> bool {
        matches!(self, Error::Ongoing { .. })
    }

    /// Whether this is [`Error::Unfinished`]: a `wait_result` submit returned while DTM still
    /// retries the transaction, which will end by itself.
    pub fn is_unfinished(&self) -> bool {
        matches!(self, Error::Unfinished { .. })
    }

    /// Whether this is [`Error::OutcomeUnknown`]: the transaction may have succeeded, rolled
    /// back or still be running; read its `outcome` later.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. })
    }

    /// A [`Error::Payload`] for `what` (`steps`, `saga step 2`, ...), for the clients.
    #[doc(hidden)]
    pub fn payload(what: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Payload {
            what: what.into(),
            cause: source,
        }
    }
}

fn pending_text(pending: &[String]) -> String {
    if pending.is_empty() {
        "its branches".to_owned()
    } else {
        pending.join(", ")
    }
}

/// An error's text followed by those of its sources, each once (a source whose text is already
/// in the text is skipped: transport errors often repeat their cause).
#[cfg_attr(not(any(feature = "http", feature = "tonic")), allow(dead_code))]
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let part = source.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = source.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_name_each_cause_once() {
        let cause = serde_json::from_str::<u8>("x").unwrap_err();
        let text = cause.to_string();
        let err = Error::payload("saga step 0", cause);
        assert!(err.to_string().contains(&text), "{err}");
        let report = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(report.matches(&text).count(), 1, "{report}");
    }

    #[test]
    fn helpers_classify() {
        assert!(Error::failure("no money").is_failure());
        assert!(Error::ongoing("later").is_ongoing());
        assert!(!Error::MissingField("gid").is_failure());
        assert_eq!(Error::failure("no money").to_string(), "FAILURE: no money");
        assert_eq!(
            Error::MissingField("branch_id").to_string(),
            "missing transaction info: `branch_id` is absent or empty"
        );
    }
}
