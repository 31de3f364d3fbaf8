//! The gRPC transport (tonic).

use std::convert::Infallible;

use bytes::Bytes;
use dtmcli::BranchInfo;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response};
use http_body::Frame;
use http_body_util::StreamBody;

use super::{BodyError, Transport};
use crate::{BarrierDatabase, BarrierTx, Error};
use dtmcli::answer::neutral;

/// gRPC for tonic servers: branch info from `dtm-*` metadata; answers are gRPC statuses
/// (`InvalidArgument` for missing info, `Internal` for database errors, OK with an empty
/// message when the barrier skipped the call); the handler's status decides commit (OK) or
/// rollback (any error, e.g. `Aborted` for FAILURE).
///
/// ```no_run
/// # fn demo<S>(pool: sqlx::MySqlPool, svc: S) where
/// #   S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>, Error = std::convert::Infallible>
/// #     + tonic::server::NamedService + Clone + Send + Sync + 'static,
/// #   S::Future: Send + 'static,
/// # {
/// use dtm_barrier::{Barrier, BarrierLayer};
/// use tower::Layer;
/// // Only the service whose methods are DTM branches goes behind the barrier.
/// let server = tonic::transport::Server::builder()
///     .add_service(BarrierLayer::for_grpc(Barrier::new(pool)).layer(svc));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Grpc;

impl Transport for Grpc {
    type ReqBody = tonic::body::Body;
    type BodyError = tonic::Status;
    type ResBody = tonic::body::Body;

    fn branch_info(parts: &Parts) -> Result<BranchInfo, dtmcli::Error> {
        branch_info_from_metadata(&parts.headers)
    }

    fn bad_request(error: dtmcli::Error) -> Response<tonic::body::Body> {
        tonic::Status::invalid_argument(neutral(&error.to_string())).into_http()
    }

    fn body_from_bytes(bytes: Bytes) -> tonic::body::Body {
        tonic::body::Body::new(http_body_util::Full::new(bytes))
    }

    fn body_rejected(error: &BodyError) -> Response<tonic::body::Body> {
        let message = neutral(&error.to_string());
        match error {
            BodyError::TooLarge { .. } => tonic::Status::resource_exhausted(message),
            _ => tonic::Status::invalid_argument(message),
        }
        .into_http()
    }

    fn skipped() -> Response<tonic::body::Body> {
        // A unary answer needs one message: an empty one (flag 0, length 0), then status OK.
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames = [
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(&[0, 0, 0, 0, 0]))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = StreamBody::new(futures_util::stream::iter(frames));
        let mut response = Response::new(tonic::body::Body::new(body));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        response
    }

    fn database_error(error: &Error) -> Response<tonic::body::Body> {
        tonic::Status::internal(neutral(&error.to_string())).into_http()
    }

    fn succeeded(response: &Response<tonic::body::Body>) -> bool {
        // tonic answers a handler's error as a trailers-only response: the status is in the
        // headers. An OK answer carries its status in the trailers.
        match response.headers().get("grpc-status") {
            Some(code) => code.as_bytes() == b"0",
            None => response.status().is_success(),
        }
    }
}

/// Reads branch info from gRPC metadata (`dtm-gid`, `dtm-trans_type`, `dtm-branch_id`,
/// `dtm-op`, and from clients `dtm-dtm`, `dtm-phase2_url`).
pub(crate) fn branch_info_from_metadata(headers: &HeaderMap) -> Result<BranchInfo, dtmcli::Error> {
    BranchInfo::from_prefixed(|key| headers.get(key).map(|v| v.as_bytes()))
}

impl<DB: BarrierDatabase> BarrierTx<DB> {
    /// The transaction the layer opened for this gRPC request, or `Internal` naming the
    /// missing layer.
    #[allow(clippy::result_large_err)]
    pub fn from_grpc<T>(request: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        let extensions = request.extensions();
        Self::resolve(
            extensions.get::<BarrierTx<DB>>(),
            extensions.get::<super::PassedMsgQuery>().is_some(),
        )
        .map_err(|rejection| {
            let message = rejection.to_string();
            match rejection {
                super::BarrierTxRejection::MsgQuery => tonic::Status::invalid_argument(message),
                _ => tonic::Status::internal(message),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[test]
    fn metadata_names_the_missing_field() {
        let mut headers = HeaderMap::new();
        headers.insert("dtm-gid", HeaderValue::from_static("g"));
        headers.insert("dtm-trans_type", HeaderValue::from_static("saga"));
        headers.insert("dtm-op", HeaderValue::from_static("action"));
        let err = branch_info_from_metadata(&headers).unwrap_err();
        assert!(
            matches!(err, dtmcli::Error::MissingField("branch_id")),
            "{err}"
        );
        headers.insert("dtm-branch_id", HeaderValue::from_static("01"));
        let info = branch_info_from_metadata(&headers).unwrap();
        assert_eq!((info.gid.as_str(), info.branch_id.as_str()), ("g", "01"));
        assert_eq!(info.dtm, None, "the server sends an empty dtm-dtm");
    }

    #[test]
    fn statuses_decide_commit() {
        let ok = Response::new(tonic::body::Body::empty());
        assert!(Grpc::succeeded(&ok));
        let aborted = tonic::Status::aborted("FAILURE").into_http::<tonic::body::Body>();
        assert!(!Grpc::succeeded(&aborted));
        let err = Grpc::bad_request(dtmcli::Error::MissingField("gid"));
        assert_eq!(err.headers()["grpc-status"], "3", "InvalidArgument");
        let db = Grpc::database_error(&Error::TransactionClosed);
        assert_eq!(
            db.headers()["grpc-status"],
            "13",
            "Internal, which DTM retries"
        );
    }

    #[tokio::test]
    async fn a_skipped_call_answers_ok_with_an_empty_message() {
        let response = Grpc::skipped();
        assert!(Grpc::succeeded(&response));
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(collected.to_bytes().as_ref(), &[0, 0, 0, 0, 0]);
    }
}
