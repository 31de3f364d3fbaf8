//! The gRPC status mapping, both directions, in one place
//! ([`dtmgrpc/type.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmgrpc/type.go)):
//! an error or result becomes the `tonic::Status` a gRPC branch answers (`FAILURE` →
//! `Aborted`, `ONGOING` → `FailedPrecondition`, anything else → a code DTM retries), and a
//! status a call ended with becomes an [`Error`] ([`result_of`], [`Error::from_grpc`]); calls
//! that failed without protocol meaning are [`GrpcError`]s.

use std::fmt;

use crate::{DtmResult, Error};

/// The message DTM reads as ONGOING when it comes with `Aborted` (the legacy form), so a
/// FAILURE must never be sent with exactly this message.
const LEGACY_ONGOING: &str = "ONGOING";

impl From<Error> for tonic::Status {
    /// The status a gRPC branch answers for an error:
    ///
    /// - [`Error::Failure`] → `Aborted` with the failure's message (DTM rolls back, and a saga
    ///   stores the message in its rollback reason);
    /// - [`Error::Ongoing`] → `FailedPrecondition` (DTM asks again later);
    /// - [`Error::MissingField`], [`Error::InvalidField`] and [`Error::InvalidArgument`] → `InvalidArgument`, naming the
    ///   field (metadata key `dtm-<field>`);
    /// - anything else → `Unknown` with the error's text, as the reference server and client
    ///   do for plain errors; DTM retries it with backoff.
    ///
    /// ```
    /// use dtmcli::Error;
    /// use tonic::{Code, Status};
    ///
    /// let status = Status::from(Error::failure("insufficient balance"));
    /// assert_eq!(status.code(), Code::Aborted);
    /// assert_eq!(status.message(), "insufficient balance");
    /// assert_eq!(Status::from(Error::ongoing("later")).code(), Code::FailedPrecondition);
    /// ```
    fn from(error: Error) -> Self {
        match error {
            Error::Failure { message } => {
                let message = if message == LEGACY_ONGOING || message.is_empty() {
                    format!("{}: {message}", DtmResult::Failure)
                } else {
                    message
                };
                tonic::Status::aborted(message)
            }
            Error::Ongoing { message } => {
                tonic::Status::failed_precondition(if message.is_empty() {
                    DtmResult::Ongoing.as_str().to_owned()
                } else {
                    message
                })
            }
            Error::MissingField(field) => tonic::Status::invalid_argument(format!(
                "missing transaction info: metadata `dtm-{field}` is absent or empty"
            )),
            Error::InvalidField { field, reason } => tonic::Status::invalid_argument(format!(
                "invalid transaction info: metadata `dtm-{field}` {reason}"
            )),
            Error::InvalidArgument(message) => tonic::Status::invalid_argument(message),
            other => tonic::Status::unknown(other.to_string()),
        }
    }
}

impl DtmResult {
    /// The gRPC status code DTM reads as this result: `Ok`, `Aborted` or
    /// `FailedPrecondition`.
    pub const fn grpc_code(self) -> tonic::Code {
        match self {
            DtmResult::Success => tonic::Code::Ok,
            DtmResult::Failure => tonic::Code::Aborted,
            DtmResult::Ongoing => tonic::Code::FailedPrecondition,
        }
    }

    /// This result as the outcome of a gRPC branch handler: `Ok(())` for SUCCESS, else the
    /// status DTM reads as FAILURE or ONGOING (message `FAILURE` / `ONGOING`).
    ///
    /// ```
    /// use dtmcli::DtmResult;
    ///
    /// assert!(DtmResult::Success.into_grpc().is_ok());
    /// let status = DtmResult::Failure.into_grpc().unwrap_err();
    /// assert_eq!(status.code(), tonic::Code::Aborted);
    /// ```
    pub fn into_grpc(self) -> Result<(), tonic::Status> {
        match self {
            DtmResult::Success => Ok(()),
            other => Err(tonic::Status::new(other.grpc_code(), other.as_str())),
        }
    }
}

/// A gRPC connection or call that failed in a way the DTM protocol gives no meaning to: the
/// target could not be reached, or it answered a status other than OK, `Aborted` (FAILURE) or
/// `FailedPrecondition` (ONGOING).
///
/// The SDK returns it as [`Error::Grpc`]:
///
/// ```
/// # fn demo(result: dtmcli::Result<()>) {
/// if let Err(dtmcli::Error::Grpc(e)) = result {
///     eprintln!("{} answered {:?}", e.target(), e.status().map(|s| s.code()));
/// }
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum GrpcError {
    /// A connection could not be established.
    Connect {
        /// The `host:port` (or URI) dialled.
        target: String,
        /// The transport error (a `tonic::transport::Error`).
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A call ended with a status without protocol meaning (`Unavailable`, `Unknown`,
    /// `Internal`, `DeadlineExceeded`, ...).
    Call {
        /// The `host:port` (or URI) called.
        target: String,
        /// The full method name, `/package.Service/Method`.
        method: String,
        /// The status it ended with.
        status: tonic::Status,
    },
}

impl GrpcError {
    /// The `host:port` (or URI) that was dialled or called.
    pub fn target(&self) -> &str {
        match self {
            GrpcError::Connect { target, .. } | GrpcError::Call { target, .. } => target,
        }
    }

    /// The status of a failed call.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            GrpcError::Call { status, .. } => Some(status),
            GrpcError::Connect { .. } => None,
        }
    }
}

impl fmt::Display for GrpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrpcError::Connect { target, cause } => {
                write!(
                    f,
                    "cannot connect to {target}: {}",
                    crate::error::chain(cause.as_ref())
                )
            }
            GrpcError::Call {
                target,
                method,
                status,
            } => {
                write!(
                    f,
                    "gRPC call {method} to {target} failed with {:?}: {}",
                    status.code(),
                    status.message()
                )?;
                if let Some(source) = std::error::Error::source(status) {
                    write!(f, " ({})", crate::error::chain(source))?;
                }
                Ok(())
            }
        }
    }
}

/// The text already names the whole chain of causes, so they are not also returned by
/// `source()`: reports of the chain (`anyhow`'s `{:#}`) print each once. The transport error
/// and the status stay reachable through the fields and [`GrpcError::status`].
impl std::error::Error for GrpcError {}

/// What a gRPC status means in the protocol ([`dtmgrpc/type.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmgrpc/type.go)): OK → SUCCESS;
/// `Aborted` → FAILURE (ONGOING when the message is exactly `ONGOING`, the legacy form);
/// `FailedPrecondition` → ONGOING; any other code → `None` (an ordinary error).
pub fn result_of(status: &tonic::Status) -> Option<DtmResult> {
    match status.code() {
        tonic::Code::Ok => Some(DtmResult::Success),
        tonic::Code::Aborted if status.message() == LEGACY_ONGOING => Some(DtmResult::Ongoing),
        tonic::Code::Aborted => Some(DtmResult::Failure),
        tonic::Code::FailedPrecondition => Some(DtmResult::Ongoing),
        _ => None,
    }
}

impl Error {
    /// The error for the status a gRPC call of `method` on `target` ended with:
    /// [`Error::Failure`] / [`Error::Ongoing`] carrying the status message when the status
    /// has that meaning ([`result_of`]), else [`Error::Grpc`].
    pub fn from_grpc(target: &str, method: &str, status: tonic::Status) -> Error {
        match result_of(&status) {
            Some(DtmResult::Failure) => Error::failure(status.message()),
            Some(DtmResult::Ongoing) => Error::ongoing(status.message()),
            _ => Error::Grpc(GrpcError::Call {
                target: target.to_owned(),
                method: method.to_owned(),
                status,
            }),
        }
    }

    /// The status of a gRPC call that failed without protocol meaning ([`Error::Grpc`]).
    pub fn grpc_status(&self) -> Option<&tonic::Status> {
        match self {
            Error::Grpc(e) => e.status(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn errors_map_to_the_codes_dtm_reads() {
        let s = Status::from(Error::failure("no money"));
        assert_eq!((s.code(), s.message()), (Code::Aborted, "no money"));
        // A failure must not look like the legacy ONGOING answer.
        let s = Status::from(Error::failure("ONGOING"));
        assert_eq!((s.code(), s.message()), (Code::Aborted, "FAILURE: ONGOING"));
        let s = Status::from(Error::ongoing(""));
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "ONGOING")
        );
        let s = Status::from(Error::MissingField("gid"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("`dtm-gid`"), "{}", s.message());
        let s = Status::from(Error::other("disk full"));
        assert_eq!((s.code(), s.message()), (Code::Unknown, "disk full"));
    }

    #[test]
    fn results_map_to_codes() {
        assert_eq!(DtmResult::Success.grpc_code(), Code::Ok);
        assert!(DtmResult::Success.into_grpc().is_ok());
        let s = DtmResult::Ongoing.into_grpc().unwrap_err();
        assert_eq!(
            (s.code(), s.message()),
            (Code::FailedPrecondition, "ONGOING")
        );
        let s = DtmResult::Failure.into_grpc().unwrap_err();
        assert_eq!((s.code(), s.message()), (Code::Aborted, "FAILURE"));
    }

    #[test]
    fn statuses_are_read_like_the_server_reads_them() {
        assert_eq!(result_of(&Status::ok("")), Some(DtmResult::Success));
        assert_eq!(
            result_of(&Status::aborted("no money")),
            Some(DtmResult::Failure)
        );
        assert_eq!(
            result_of(&Status::aborted("ONGOING")),
            Some(DtmResult::Ongoing)
        );
        assert_eq!(
            result_of(&Status::failed_precondition("later")),
            Some(DtmResult::Ongoing)
        );
        assert_eq!(result_of(&Status::unavailable("down")), None);
        assert_eq!(result_of(&Status::new(Code::Unknown, "x")), None);
    }

    #[test]
    fn errors_keep_the_message_and_the_status() {
        let e = Error::from_grpc("h:1", "/a.B/C", Status::aborted("no money"));
        assert!(e.is_failure());
        assert_eq!(e.to_string(), "FAILURE: no money");
        let e = Error::from_grpc("h:1", "/a.B/C", Status::failed_precondition("later"));
        assert!(e.is_ongoing());
        let e = Error::from_grpc("h:1", "/a.B/C", Status::internal("boom"));
        assert_eq!(
            e.to_string(),
            "gRPC call /a.B/C to h:1 failed with Internal: boom"
        );
        assert_eq!(e.grpc_status().unwrap().code(), Code::Internal);
        let Error::Grpc(grpc) = e else {
            panic!("expected Grpc")
        };
        assert_eq!(grpc.target(), "h:1");
    }
}
