//! How gRPC answers become [`Error`]s, and the error kept for calls without protocol meaning.

use std::fmt;

use dtmcli::{DtmResult, Error};

/// A gRPC connection or call that failed in a way the DTM protocol gives no meaning to: the
/// target could not be reached, or it answered a status other than OK, `Aborted` (FAILURE) or
/// `FailedPrecondition` (ONGOING).
///
/// The SDK returns it inside [`Error::Other`]; get it back with `downcast_ref`:
///
/// ```no_run
/// # async fn demo(dtm: dtmgrpc::DtmGrpcClient) {
/// if let Err(dtmgrpc::Error::Other(e)) = dtm.new_gid().await {
///     if let Some(e) = e.downcast_ref::<dtmgrpc::GrpcError>() {
///         eprintln!("{} answered {:?}", e.target(), e.status().map(|s| s.code()));
///     }
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
        /// The transport error.
        source: tonic::transport::Error,
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
            GrpcError::Connect { target, source } => {
                write!(f, "cannot connect to {target}: {}", chain(source))
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
                    write!(f, " ({})", chain(source))?;
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

/// An error and its sources, joined with `: ` (tonic's transport errors say little on top).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = e.source();
    }
    text
}

/// What a gRPC status means in the protocol ([`dtmgrpc/type.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmgrpc/type.go)): OK → SUCCESS;
/// `Aborted` → FAILURE (ONGOING when the message is exactly `ONGOING`, the legacy form);
/// `FailedPrecondition` → ONGOING; any other code → `None` (an ordinary error).
pub fn result_of(status: &tonic::Status) -> Option<DtmResult> {
    match status.code() {
        tonic::Code::Ok => Some(DtmResult::Success),
        tonic::Code::Aborted if status.message() == DtmResult::Ongoing.as_str() => {
            Some(DtmResult::Ongoing)
        }
        tonic::Code::Aborted => Some(DtmResult::Failure),
        tonic::Code::FailedPrecondition => Some(DtmResult::Ongoing),
        _ => None,
    }
}

/// The [`Error`] for a status a call ended with: [`Error::Failure`] / [`Error::Ongoing`]
/// carrying the status message, or [`GrpcError::Call`].
pub(crate) fn from_status(target: &str, method: &str, status: tonic::Status) -> Error {
    match result_of(&status) {
        Some(DtmResult::Failure) => Error::failure(status.message()),
        Some(DtmResult::Ongoing) => Error::ongoing(status.message()),
        _ => Error::other(GrpcError::Call {
            target: target.to_owned(),
            method: method.to_owned(),
            status,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

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
        let e = from_status("h:1", "/a.B/C", Status::aborted("no money"));
        assert!(e.is_failure());
        assert_eq!(e.to_string(), "FAILURE: no money");
        let e = from_status("h:1", "/a.B/C", Status::failed_precondition("later"));
        assert!(e.is_ongoing());
        let e = from_status("h:1", "/a.B/C", Status::internal("boom"));
        assert_eq!(
            e.to_string(),
            "gRPC call /a.B/C to h:1 failed with Internal: boom"
        );
        let Error::Other(inner) = e else {
            panic!("expected Other")
        };
        let grpc = inner.downcast_ref::<GrpcError>().unwrap();
        assert_eq!(grpc.status().unwrap().code(), Code::Internal);
        assert_eq!(grpc.target(), "h:1");
    }
}
