//! The HTTP transport (axum).

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use dtmcli::{BranchInfo, DtmResult};

use super::{BodyError, Transport};
use crate::Error;
use dtmcli::answer::neutral;

/// HTTP for axum: branch info from the query string (then `dtm-*` headers), answers as
/// `dtmcli`'s branch helpers write them. Only 200 commits, because DTM counts only 200 as
/// SUCCESS: any other answer rolls back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Http;

impl Transport for Http {
    type ReqBody = Body;
    type BodyError = axum::Error;
    type ResBody = Body;

    fn branch_info(parts: &Parts) -> Result<BranchInfo, dtmcli::Error> {
        BranchInfo::from_parts(parts)
    }

    fn bad_request(error: dtmcli::Error) -> Response<Body> {
        dtmcli::axum::BranchInfoRejection(error).into_response()
    }

    fn body_from_bytes(bytes: bytes::Bytes) -> Body {
        Body::from(bytes)
    }

    fn body_rejected(error: &BodyError) -> Response<Body> {
        let status = match error {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        (
            status,
            Json(serde_json::json!({ "message": neutral(&error.to_string()) })),
        )
            .into_response()
    }

    fn skipped() -> Response<Body> {
        DtmResult::Success.into_response()
    }

    fn database_error(error: &Error) -> Response<Body> {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "message": neutral(&error.to_string()) })),
        )
            .into_response()
    }

    fn succeeded(response: &Response<Body>) -> bool {
        response.status() == StatusCode::OK
    }
}
