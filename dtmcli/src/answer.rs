//! How an HTTP answer is read as SUCCESS / FAILURE / ONGOING / error.
//!
//! These are the reference client's rules ([`dtmcli/utils.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/client/dtmcli/utils.go)), which the DTM server
//! applies to branch answers too:
//! 1. status 425, or a body containing `ONGOING` → ONGOING;
//! 2. status 409, or a body containing `FAILURE` → FAILURE;
//! 3. any other status but 200 → an ordinary (retryable) error;
//! 4. 200 → SUCCESS.

use crate::{DtmResult, Error, Result};

/// The HTTP status DTM reads as `FAILURE`.
pub const STATUS_FAILURE: u16 = 409;
/// The HTTP status DTM reads as `ONGOING`.
pub const STATUS_ONGOING: u16 = 425;

/// Reads an HTTP answer the way DTM does.
///
/// Returns the [`DtmResult`] it means, or [`Error::Status`] for a status without protocol
/// meaning.
pub fn classify(url: &str, status: u16, body: &str) -> Result<DtmResult> {
    if status == STATUS_ONGOING || body.contains(DtmResult::Ongoing.as_str()) {
        Ok(DtmResult::Ongoing)
    } else if status == STATUS_FAILURE || body.contains(DtmResult::Failure.as_str()) {
        Ok(DtmResult::Failure)
    } else if status != 200 {
        Err(Error::Status {
            url: url.to_owned(),
            status,
            body: body.to_owned(),
        })
    } else {
        Ok(DtmResult::Success)
    }
}

/// Like [`classify`], but anything other than SUCCESS becomes an error:
/// [`Error::Failure`] / [`Error::Ongoing`] carrying the answer's `message` (the whole body
/// when it is not a JSON object with one), or [`Error::Status`].
pub fn expect_success(url: &str, status: u16, body: &str) -> Result<()> {
    match classify(url, status, body)? {
        DtmResult::Success => Ok(()),
        DtmResult::Failure => Err(Error::failure(message_of(body))),
        DtmResult::Ongoing => Err(Error::ongoing(message_of(body))),
    }
}

/// The `message` of a JSON answer such as `{"dtm_result":"FAILURE","message":"..."}`, or the
/// body itself: an error's text should not embed escaped JSON.
fn message_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| body.to_owned())
}

/// An error text DTM will not read as a result: the words `FAILURE` and `ONGOING` in lower
/// case. For bodies of answers that are neither (400, 500), since DTM reads those words in any
/// body (rule 1 and 2 above).
pub fn neutral(message: &str) -> String {
    message
        .replace(DtmResult::Failure.as_str(), "failure")
        .replace(DtmResult::Ongoing.as_str(), "ongoing")
}

/// The text of a FAILURE answer: `ONGOING` in lower case, since DTM checks for that word first.
pub fn failure_text(message: &str) -> String {
    message.replace(DtmResult::Ongoing.as_str(), "ongoing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_texts_are_the_answer_s_message() {
        let body = r#"{"dtm_result":"FAILURE","message":"insufficient \"balance\""}"#;
        let err = expect_success("u", 409, body).unwrap_err();
        assert_eq!(err.to_string(), r#"FAILURE: insufficient "balance""#);
        let err = expect_success("u", 409, "plain text").unwrap_err();
        assert_eq!(err.to_string(), "FAILURE: plain text");
        let err = expect_success("u", 425, r#"{"dtm_result":"ONGOING"}"#).unwrap_err();
        assert!(err.is_ongoing(), "{err}");
    }

    #[test]
    fn status_and_body_rules_in_order() {
        let c = |status, body| classify("u", status, body).map_err(|e| e.to_string());
        assert_eq!(c(200, "{}"), Ok(DtmResult::Success));
        assert_eq!(c(425, ""), Ok(DtmResult::Ongoing));
        assert_eq!(c(409, ""), Ok(DtmResult::Failure));
        // Legacy answers: 200 with the result in the body.
        assert_eq!(
            c(200, r#"{"dtm_result":"FAILURE"}"#),
            Ok(DtmResult::Failure)
        );
        assert_eq!(
            c(200, r#"{"dtm_result":"ONGOING"}"#),
            Ok(DtmResult::Ongoing)
        );
        // ONGOING is checked before FAILURE, and body words win over the status.
        assert_eq!(c(409, "ONGOING"), Ok(DtmResult::Ongoing));
        assert_eq!(c(500, "upstream said FAILURE"), Ok(DtmResult::Failure));
        assert_eq!(c(500, "boom"), Err("u answered HTTP 500: boom".to_owned()));
        assert_eq!(c(404, ""), Err("u answered HTTP 404: ".to_owned()));
    }

    #[test]
    fn neutral_texts_do_not_change_the_meaning() {
        assert!(classify("u", 500, &neutral("db said FAILURE, still ONGOING")).is_err());
        let body = failure_text("order still ONGOING");
        assert_eq!(classify("u", 409, &body).unwrap(), DtmResult::Failure);
    }

    #[test]
    fn expect_success_keeps_the_body() {
        let err = expect_success("u", 409, "no money").unwrap_err();
        assert!(err.is_failure());
        assert_eq!(err.to_string(), "FAILURE: no money");
        assert!(expect_success("u", 425, "").unwrap_err().is_ongoing());
        assert!(expect_success("u", 200, "{}").is_ok());
    }
}
