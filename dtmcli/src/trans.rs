//! The transaction body sent to `prepare`, `submit` and `abort`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::client::BranchResponse;
use crate::model::{
    BranchCall, Encode, GlobalRequest, RecordedStep, Step, TccRegistration, Transport,
    WorkflowProgress, WorkflowStep,
};
use crate::{
    BranchStatus, DtmClient, Error, GlobalStatus, Protocol, Result, TransOptions, TransQuery,
    TransType,
};

/// The JSON body of `prepare` / `submit` / `abort` ([`trans_class.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/trans_class.go)).
#[derive(Debug, Serialize)]
pub(crate) struct TransBody<'a> {
    pub(crate) gid: &'a str,
    pub(crate) trans_type: TransType,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) steps: &'a [Step],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) payloads: &'a [&'a str],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) custom_data: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) query_prepared: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) rollback_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) req_extra: Option<BTreeMap<&'static str, &'a str>>,
    pub(crate) protocol: Protocol,
    #[serde(flatten)]
    pub(crate) options: &'a TransOptions,
}

impl<'a> TransBody<'a> {
    /// The body of a request of the transaction model, with its payloads as text.
    pub(crate) fn of(request: &GlobalRequest<'a>, payloads: &'a [&'a str]) -> Self {
        TransBody {
            steps: request.steps,
            payloads,
            custom_data: request.custom_data,
            query_prepared: request.query_prepared,
            rollback_reason: request.rollback_reason,
            req_extra: (!request.req_extra.is_empty()).then(|| {
                request
                    .req_extra
                    .iter()
                    .map(|(k, v)| (*k, v.as_str()))
                    .collect()
            }),
            ..TransBody::bare(request.gid, request.trans_type, request.options)
        }
    }

    /// A body with no steps, payloads or extra data.
    pub(crate) fn bare(gid: &'a str, trans_type: TransType, options: &'a TransOptions) -> Self {
        TransBody {
            gid,
            trans_type,
            steps: &[],
            payloads: &[],
            custom_data: "",
            query_prepared: "",
            rollback_reason: "",
            req_extra: None,
            protocol: Protocol::Http,
            options,
        }
    }
}

/// The body of `registerBranch` for a TCC branch ([`api_http.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/api_http.go)).
#[derive(Serialize)]
struct RegisterTccBranch<'a> {
    gid: &'a str,
    trans_type: TransType,
    branch_id: &'a str,
    data: &'a str,
    confirm: &'a str,
    cancel: &'a str,
}

/// The body of `registerBranch` for a workflow step ([`api.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/api.go)):
/// `sync` makes DTM write it at once.
#[derive(Serialize)]
struct RegisterWorkflowStep<'a> {
    gid: &'a str,
    trans_type: TransType,
    branch_id: &'a str,
    op: &'a str,
    status: &'a str,
    data: &'a str,
    sync: &'a str,
}

/// The answer of `prepareWorkflow`: the stored transaction and its branch rows.
#[derive(Deserialize)]
struct PrepareWorkflowReply {
    transaction: StoredWorkflow,
    #[serde(default)]
    progresses: Option<Vec<StoredStep>>,
}

#[derive(Deserialize)]
struct StoredWorkflow {
    #[serde(default)]
    gid: String,
    trans_type: Option<TransType>,
    status: GlobalStatus,
    #[serde(default)]
    rollback_reason: String,
    #[serde(default)]
    result: String,
}

#[derive(Deserialize)]
struct StoredStep {
    branch_id: String,
    #[serde(default)]
    op: String,
    status: BranchStatus,
    /// Base64, as Go encodes a byte slice.
    #[serde(default)]
    bin_data: String,
}

fn base64_field(what: &str, text: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::InvalidArgument(format!("DTM answered {what} that is not base64: {e}")))
}

/// DTM's HTTP API records a step's data as text. Text is sent as it is (what DTM's own client
/// does); other bytes (a binary answer, a protobuf reply) as a NUL character and their base64,
/// as is text that starts with NUL, so that every result replays exactly.
fn step_text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(data) {
        Ok(text) if !text.starts_with('\0') => text.into(),
        _ => format!(
            "\0{}",
            base64::engine::general_purpose::STANDARD.encode(data)
        )
        .into(),
    }
}

/// The bytes of a step's recorded text ([`step_text`]).
fn step_bytes(text: Vec<u8>) -> Result<Vec<u8>> {
    match text.strip_prefix(b"\0") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| {
                Error::InvalidArgument(format!("a recorded binary step is not base64: {e}"))
            }),
        None => Ok(text),
    }
}

impl PrepareWorkflowReply {
    fn into_progress(self) -> Result<WorkflowProgress> {
        let steps = self
            .progresses
            .unwrap_or_default()
            .into_iter()
            .map(|s| {
                let text = base64_field("branch data", &s.bin_data)?;
                let data = step_bytes(text)?;
                Ok(RecordedStep::new(s.branch_id, s.op, s.status, data))
            })
            .collect::<Result<Vec<_>>>()?;
        let t = self.transaction;
        if let Some(other) = t.trans_type.filter(|t| *t != TransType::Workflow) {
            return Err(Error::InvalidArgument(format!(
                "gid {} is a {other} transaction, not a workflow",
                t.gid
            )));
        }
        let result = base64_field("a workflow result", &t.result)?;
        Ok(WorkflowProgress::new(
            t.status,
            t.rollback_reason,
            Some(result),
            steps,
        ))
    }
}

impl crate::model::sealed::Client for DtmClient {}

/// HTTP: bodies are JSON, branch info goes in the query string.
impl Transport for DtmClient {
    type BranchResponse = BranchResponse;

    fn server(&self) -> &str {
        DtmClient::server(self)
    }

    fn check_trans(&self, gid: &str, options: &TransOptions) -> Result<()> {
        crate::check_gid(gid)?;
        options.check()
    }

    fn check_branch_url(&self, url: &str) -> Result<()> {
        if url.is_empty() {
            return Ok(()); // never called; counts as success
        }
        self.check_call_url(url)
    }

    fn check_call_url(&self, url: &str) -> Result<()> {
        match reqwest::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
            _ => Err(Error::InvalidArgument(format!(
                "branch URL {url:?} is not an http:// or https:// URL"
            ))),
        }
    }

    fn for_server(&self, server: &str) -> Result<Self> {
        self.with_server(server)
    }

    async fn global_call(&self, request: GlobalRequest<'_>) -> Result<()> {
        let payloads = payload_texts(request.payloads)?;
        self.post_trans(request.call.as_str(), &TransBody::of(&request, &payloads))
            .await
    }

    /// DTM answered (FAILURE, ONGOING or another status), or the request failed after it was
    /// sent (a timeout, a reset connection); only a connection never made means it did not.
    fn may_have_reached_dtm(&self, error: &Error) -> bool {
        match error {
            Error::Failure { .. } | Error::Ongoing { .. } | Error::Status { .. } => true,
            Error::Request { cause, .. } => !cause.is_connect() && !cause.is_builder(),
            _ => false,
        }
    }

    async fn stored(&self, gid: &str) -> Result<TransQuery> {
        self.query(gid).await
    }

    async fn register_tcc_branch(&self, branch: TccRegistration<'_>) -> Result<()> {
        let data = std::str::from_utf8(branch.payload).map_err(|e| {
            Error::InvalidArgument(format!("a TCC branch payload is not JSON text: {e}"))
        })?;
        self.post(
            "registerBranch",
            &RegisterTccBranch {
                gid: branch.gid,
                trans_type: TransType::Tcc,
                branch_id: branch.branch_id,
                data,
                confirm: branch.confirm,
                cancel: branch.cancel,
            },
        )
        .await
    }

    async fn prepare_workflow(&self, request: GlobalRequest<'_>) -> Result<WorkflowProgress> {
        let reply: PrepareWorkflowReply = self
            .post_reply("prepareWorkflow", &TransBody::of(&request, &[]))
            .await?;
        reply.into_progress()
    }

    async fn register_workflow_step(&self, step: WorkflowStep<'_>) -> Result<()> {
        let data = step_text(step.data);
        self.post(
            "registerBranch",
            &RegisterWorkflowStep {
                gid: step.gid,
                trans_type: TransType::Workflow,
                branch_id: step.branch_id,
                op: step.op.as_str(),
                status: step.status.as_str(),
                data: &data,
                sync: "1",
            },
        )
        .await
    }

    async fn query_prepared(&self, call: BranchCall<'_>) -> Result<()> {
        DtmClient::call_branch(self, call.url, call.info, None, call.headers)
            .await
            .map(drop)
    }

    async fn call_branch(&self, call: BranchCall<'_>, payload: Vec<u8>) -> Result<BranchResponse> {
        DtmClient::call_branch(self, call.url, call.info, Some(payload), call.headers).await
    }
}

/// Payloads are JSON.
impl<P: Serialize + ?Sized> Encode<P> for DtmClient {
    fn encode(payload: &P, what: &str) -> Result<Vec<u8>> {
        serde_json::to_vec(payload).map_err(|e| Error::payload(what, e))
    }
}

/// The step payloads as the JSON texts DTM's HTTP API takes.
pub(crate) fn payload_texts(payloads: &[Vec<u8>]) -> Result<Vec<&str>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            std::str::from_utf8(p).map_err(|e| {
                Error::InvalidArgument(format!("the payload of step {i} is not JSON text: {e}"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_data_round_trips_text_and_bytes() {
        for data in [
            &b"{\"a\":1}"[..],
            b"",
            b"\x08\x96\x01", // a protobuf varint: not UTF-8
            b"\0starts with NUL",
        ] {
            let text = step_text(data);
            assert_eq!(step_bytes(text.as_bytes().to_vec()).unwrap(), data);
        }
        assert_eq!(
            step_text(b"plain"),
            "plain",
            "text is recorded as DTM's client does"
        );
    }

    #[test]
    fn bare_body_matches_the_reference_client() {
        let options = TransOptions::default();
        let body = TransBody::bare("g", TransType::Tcc, &options);
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"gid": "g", "trans_type": "tcc", "protocol": "http", "concurrent": false})
        );
    }
}
