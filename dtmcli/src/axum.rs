//! Branch side for axum services: the [`BranchInfo`] extractor and the answers DTM reads.
//!
//! ```
//! use axum::{routing::post, Json, Router};
//! use dtmcli::{BranchInfo, DtmResult, Error};
//!
//! async fn trans_in(info: BranchInfo, Json(req): Json<serde_json::Value>) -> Result<DtmResult, Error> {
//!     if req["amount"].as_i64().unwrap_or(0) <= 0 {
//!         // 409: DTM rolls the saga back.
//!         return Err(Error::failure(format!("bad amount in {}", info.gid)));
//!     }
//!     Ok(DtmResult::Success) // 200 {"dtm_result":"SUCCESS"}
//! }
//!
//! let app: Router = Router::new().route("/api/busi/TransIn", post(trans_in));
//! ```

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::answer::{failure_text, neutral, STATUS_FAILURE, STATUS_ONGOING};
use crate::{BranchInfo, DtmResult, Error};

impl BranchInfo {
    /// Reads branch info from a request: the query string first, then `dtm-*` headers.
    ///
    /// The rules are those of [`BranchInfo::from_http`].
    pub fn from_parts(parts: &Parts) -> Result<Self, Error> {
        BranchInfo::from_http(parts.uri.query(), |key| {
            parts.headers.get(key).map(|v| v.as_bytes())
        })
    }
}

/// Why the [`BranchInfo`] extractor refused a request: answered as 400 with a JSON
/// `message` naming the missing or invalid field.
#[derive(Debug)]
pub struct BranchInfoRejection(pub Error);

impl IntoResponse for BranchInfoRejection {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({ "message": neutral(&self.0.to_string()) })),
        )
            .into_response()
    }
}

impl std::fmt::Display for BranchInfoRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BranchInfoRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BranchInfo {
    type Rejection = BranchInfoRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        BranchInfo::from_parts(parts).map_err(BranchInfoRejection)
    }
}

/// SUCCESS → 200, FAILURE → 409, ONGOING → 425, each with `{"dtm_result": ...}`.
impl IntoResponse for DtmResult {
    fn into_response(self) -> Response {
        let status = match self {
            DtmResult::Success => StatusCode::OK,
            DtmResult::Failure => status(STATUS_FAILURE),
            DtmResult::Ongoing => status(STATUS_ONGOING),
        };
        (status, Json(json!({ "dtm_result": self.as_str() }))).into_response()
    }
}

/// [`Error::Failure`] → 409 and [`Error::Ongoing`] → 425 (with `dtm_result` and `message`),
/// missing or invalid input → 400, anything else → 500, which DTM retries.
///
/// In 400 and 500 messages the words `FAILURE` and `ONGOING` are written in lower case, and in
/// FAILURE messages the word `ONGOING`, because DTM reads them in the body as a result.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, body) = match &self {
            Error::Failure { message } => (
                status(STATUS_FAILURE),
                json!({ "dtm_result": DtmResult::Failure.as_str(), "message": failure_text(message) }),
            ),
            Error::Ongoing { message } => (
                status(STATUS_ONGOING),
                json!({ "dtm_result": DtmResult::Ongoing.as_str(), "message": message }),
            ),
            Error::MissingField(_) | Error::InvalidField { .. } | Error::InvalidArgument(_) => (
                StatusCode::BAD_REQUEST,
                json!({ "message": neutral(&self.to_string()) }),
            ),
            _ => {
                tracing_error(&self);
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "message": neutral(&self.to_string()) }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("protocol status codes are valid")
}

fn tracing_error(e: &Error) {
    tracing::warn!(error = %e, "branch handler failed; DTM will retry");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn answer(resp: Response) -> (u16, String) {
        let status = resp.status().as_u16();
        let body = to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn app() -> Router {
        Router::new().route(
            "/b",
            get(|info: BranchInfo| async move {
                format!("{}:{}:{}", info.gid, info.branch_id, info.op)
            }),
        )
    }

    #[tokio::test]
    async fn extractor_reads_query_then_headers() {
        let req = Request::get("/b?gid=g&trans_type=saga&branch_id=01&op=action")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            answer(app().oneshot(req).await.unwrap()).await,
            (200, "g:01:action".into())
        );

        let req = Request::get("/b?gid=g&trans_type=tcc&op=try")
            .header("dtm-branch_id", "02")
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            answer(app().oneshot(req).await.unwrap()).await,
            (200, "g:02:try".into())
        );
    }

    #[tokio::test]
    async fn missing_field_is_a_400_naming_it() {
        let req = Request::get("/b?gid=g&branch_id=01&op=action")
            .body(Body::empty())
            .unwrap();
        let (status, body) = answer(app().oneshot(req).await.unwrap()).await;
        assert_eq!(status, 400);
        assert!(body.contains("`trans_type`"), "{body}");
    }

    #[tokio::test]
    async fn results_and_errors_map_to_protocol_statuses() {
        assert_eq!(
            answer(DtmResult::Success.into_response()).await,
            (200, r#"{"dtm_result":"SUCCESS"}"#.into())
        );
        assert_eq!(answer(DtmResult::Failure.into_response()).await.0, 409);
        assert_eq!(answer(DtmResult::Ongoing.into_response()).await.0, 425);
        let (status, body) = answer(Error::failure("no money").into_response()).await;
        assert_eq!(
            (status, body.as_str()),
            (409, r#"{"dtm_result":"FAILURE","message":"no money"}"#)
        );
        assert_eq!(answer(Error::ongoing("").into_response()).await.0, 425);
        // A FAILURE whose text mentions ONGOING still reads as FAILURE.
        let (status, body) = answer(Error::failure("order still ONGOING").into_response()).await;
        assert_eq!(
            crate::answer::classify("u", status, &body).unwrap(),
            DtmResult::Failure
        );
        let (status, body) = answer(Error::other("db said FAILURE").into_response()).await;
        assert_eq!(status, 500);
        assert!(!body.contains("FAILURE"), "{body}");
        // DTM reads the 500 as a plain, retryable error.
        assert!(crate::answer::classify("u", status, &body).is_err());
    }
}
