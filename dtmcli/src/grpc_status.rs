//! `tonic::Status` for errors and results, so that a gRPC branch answers DTM the way it reads
//! answers ([`dtmgrpc/type.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmgrpc/type.go)): `FAILURE` → `Aborted`, `ONGOING` →
//! `FailedPrecondition`, anything else → a code DTM retries.

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
}
