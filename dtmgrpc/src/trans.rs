//! The gRPC transport of the transaction model: requests, options and branch calls.

use std::collections::HashMap;

use crate::url::{check_branch_url, is_http};
use crate::{proto, BranchResponse, DtmGrpcClient, GrpcUrl};
use bytes::Bytes;
use dtmcli::model::{
    BranchCall, Encode, GlobalCall, GlobalRequest, RecordedStep, TccRegistration, Transport,
    WorkflowProgress, WorkflowStep,
};
use dtmcli::{Error, Result, TransOptions, TransType};

/// The options as the gRPC server takes them. `concurrent` has no field there.
pub(crate) fn proto_options(options: &TransOptions) -> proto::DtmTransOptions {
    let secs = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    proto::DtmTransOptions {
        wait_result: options.wait_result,
        timeout_to_fail: secs(options.timeout_to_fail),
        retry_interval: secs(options.retry_interval),
        branch_headers: options
            .branch_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        request_timeout: secs(options.request_timeout),
        retry_limit: secs(options.retry_limit),
    }
}

/// A request with no steps or extra data.
pub(crate) fn bare_request(
    gid: &str,
    trans_type: TransType,
    options: &TransOptions,
) -> proto::DtmRequest {
    proto::DtmRequest {
        gid: gid.to_owned(),
        trans_type: trans_type.as_str().to_owned(),
        trans_options: Some(proto_options(options)),
        ..proto::DtmRequest::default()
    }
}

/// The `DtmRequest` of a request of the transaction model: steps as JSON text, payloads as
/// bytes. A message's concurrency is refused: the gRPC API has no field for it.
pub(crate) fn dtm_request(request: &GlobalRequest<'_>) -> Result<proto::DtmRequest> {
    if request.trans_type == TransType::Msg && request.options.concurrent {
        return Err(Error::InvalidArgument(
            "msg concurrency cannot be requested over gRPC (DtmTransOptions has no such field)"
                .into(),
        ));
    }
    let steps = if request.steps.is_empty() {
        String::new()
    } else {
        serde_json::to_string(request.steps).map_err(|e| Error::payload("steps", e))?
    };
    Ok(proto::DtmRequest {
        steps,
        bin_payloads: request.payloads.to_vec(),
        customed_data: request.custom_data.to_owned(),
        query_prepared: request.query_prepared.to_owned(),
        rollback_reason: request.rollback_reason.to_owned(),
        req_extra: request
            .req_extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        ..bare_request(request.gid, request.trans_type, request.options)
    })
}

/// Checks a gid a gRPC client is about to give DTM: [`dtmcli::check_gid`], and printable
/// ASCII only, because DTM hands it to gRPC branches in `dtm-gid` metadata, whose values
/// cannot carry anything else.
pub(crate) fn check_gid(gid: &str) -> Result<()> {
    dtmcli::check_gid(gid)?;
    if !gid.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(Error::InvalidArgument(
            "gid holds characters other than printable ASCII, which DTM cannot pass to gRPC \
             branches in metadata"
                .into(),
        ));
    }
    Ok(())
}

impl DtmGrpcClient {
    /// The stored result of a finished workflow, through the HTTP API when the client has one.
    async fn stored_result(&self, gid: &str) -> Option<Vec<u8>> {
        #[cfg(feature = "http-api")]
        if let Some(http) = self.http_api() {
            use base64::Engine as _;
            let stored = http.query(gid).await.ok()?.transaction?;
            return base64::engine::general_purpose::STANDARD
                .decode(stored.result)
                .ok();
        }
        let _ = gid;
        None
    }
}

impl dtmcli::model::sealed::Client for DtmGrpcClient {}

/// gRPC: payloads are protobuf, branch info goes in `dtm-*` metadata, URLs are
/// `host:port/package.Service/Method`.
impl Transport for DtmGrpcClient {
    type BranchResponse = BranchResponse;

    fn server(&self) -> &str {
        DtmGrpcClient::server(self)
    }

    fn check_trans(&self, gid: &str, options: &TransOptions) -> Result<()> {
        check_gid(gid)?;
        self.check_options(options)
    }

    fn check_branch_url(&self, url: &str) -> Result<()> {
        check_branch_url(url)
    }

    fn check_call_url(&self, url: &str) -> Result<()> {
        GrpcUrl::parse(url).map(drop)
    }

    fn for_server(&self, server: &str) -> Result<Self> {
        DtmGrpcClient::for_server(self, server)
    }

    async fn global_call(&self, request: GlobalRequest<'_>) -> Result<()> {
        let req = dtm_request(&request)?;
        match request.call {
            GlobalCall::Prepare => {
                self.call("Prepare", |mut c| async move { c.prepare(req).await })
                    .await
            }
            GlobalCall::Abort => {
                self.call("Abort", |mut c| async move { c.abort(req).await })
                    .await
            }
            GlobalCall::Submit => {
                self.call("Submit", |mut c| async move { c.submit(req).await })
                    .await
            }
            other => Err(Error::InvalidArgument(format!(
                "the gRPC client does not know the call {other:?}"
            ))),
        }
    }

    /// DTM answered with a status (`Aborted`, `FailedPrecondition`, `Unknown`, a deadline, ...);
    /// `Unavailable` is taken as "not reached".
    fn may_have_reached_dtm(&self, error: &Error) -> bool {
        match error {
            Error::Failure { .. } | Error::Ongoing { .. } => true,
            Error::Grpc(e) => e
                .status()
                .is_some_and(|s| s.code() != tonic::Code::Unavailable),
            _ => false,
        }
    }

    /// Read through the HTTP API: DTM's gRPC API has no query.
    async fn stored(&self, gid: &str) -> Result<dtmcli::TransQuery> {
        #[cfg(feature = "http-api")]
        if let Some(http) = self.http_api() {
            return http.query(gid).await;
        }
        Err(Error::InvalidArgument(format!(
            "cannot read transaction {gid}: DTM's gRPC API has no query, and the client has no \
             HTTP API (DtmGrpcClientBuilder::http_api)"
        )))
    }

    async fn register_tcc_branch(&self, branch: TccRegistration<'_>) -> Result<()> {
        let register = proto::DtmBranchRequest {
            gid: branch.gid.to_owned(),
            trans_type: TransType::Tcc.as_str().to_owned(),
            branch_id: branch.branch_id.to_owned(),
            op: String::new(),
            data: HashMap::from([
                ("confirm".to_owned(), branch.confirm.to_owned()),
                ("cancel".to_owned(), branch.cancel.to_owned()),
            ]),
            busi_payload: branch.payload.to_vec(),
        };
        self.call("RegisterBranch", |mut c| async move {
            c.register_branch(register).await
        })
        .await
    }

    async fn prepare_workflow(&self, request: GlobalRequest<'_>) -> Result<WorkflowProgress> {
        let req = dtm_request(&request)?;
        let reply = self
            .call("PrepareWorkflow", |mut c| async move {
                c.prepare_workflow(req).await
            })
            .await?;
        let transaction = reply.transaction.unwrap_or_default();
        let steps = reply
            .progresses
            .into_iter()
            .map(|p| {
                Ok(RecordedStep::new(
                    p.branch_id,
                    p.op,
                    p.status.parse()?,
                    p.bin_data,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // DTM's gRPC answer never holds the result of a finished workflow; its HTTP API does.
        let status: dtmcli::GlobalStatus = transaction.status.parse()?;
        let result = match status {
            dtmcli::GlobalStatus::Succeed => self.stored_result(request.gid).await,
            _ => None,
        };
        Ok(WorkflowProgress::new(
            status,
            transaction.rollback_reason,
            result,
            steps,
        ))
    }

    async fn register_workflow_step(&self, step: WorkflowStep<'_>) -> Result<()> {
        let register = proto::DtmBranchRequest {
            gid: step.gid.to_owned(),
            trans_type: TransType::Workflow.as_str().to_owned(),
            branch_id: step.branch_id.to_owned(),
            op: String::new(),
            data: HashMap::from([
                ("status".to_owned(), step.status.as_str().to_owned()),
                ("op".to_owned(), step.op.as_str().to_owned()),
                ("sync".to_owned(), "1".to_owned()),
            ]),
            busi_payload: step.data.to_vec(),
        };
        self.call("RegisterBranch", |mut c| async move {
            c.register_branch(register).await
        })
        .await
    }

    async fn query_prepared(&self, call: BranchCall<'_>) -> Result<()> {
        if is_http(call.url) {
            // Not FAILURE: the message stays prepared and the server asks the URL itself.
            return Err(Error::InvalidArgument(format!(
                "the gRPC client does not call the HTTP query URL {} itself; the server will \
                 ask it when the message times out",
                call.url
            )));
        }
        let url = GrpcUrl::parse(call.url)?;
        DtmGrpcClient::call_branch(self, &url, call.info, Bytes::new(), call.headers)
            .await
            .map(drop)
    }

    async fn call_branch(&self, call: BranchCall<'_>, payload: Vec<u8>) -> Result<BranchResponse> {
        let url = GrpcUrl::parse(call.url)?;
        let bytes =
            DtmGrpcClient::call_branch(self, &url, call.info, Bytes::from(payload), call.headers)
                .await?;
        Ok(BranchResponse::new(bytes))
    }
}

/// Payloads are protobuf messages.
impl<P: prost::Message> Encode<P> for DtmGrpcClient {
    fn encode(payload: &P, _what: &str) -> Result<Vec<u8>> {
        Ok(payload.encode_to_vec())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use dtmcli::model::Step;

    use super::*;

    #[test]
    fn options_map_to_the_proto_fields() {
        let mut o = TransOptions::default();
        o.wait_result = true;
        o.retry_interval = 2;
        o.timeout_to_fail = 3;
        o.request_timeout = 4;
        o.retry_limit = 5;
        o.branch_headers.insert("k".into(), "v".into());
        let p = proto_options(&o);
        assert!(p.wait_result);
        assert_eq!(
            (
                p.retry_interval,
                p.timeout_to_fail,
                p.request_timeout,
                p.retry_limit
            ),
            (2, 3, 4, 5)
        );
        assert_eq!(p.branch_headers["k"], "v");
        let r = bare_request("g", TransType::Tcc, &o);
        assert_eq!((r.gid.as_str(), r.trans_type.as_str()), ("g", "tcc"));
    }

    #[test]
    fn requests_carry_steps_as_json_text_and_payloads_as_bytes() {
        let mut options = TransOptions::default();
        options.retry_interval = 1;
        let steps = [
            Step::from([("action", "topic://t".to_owned())]),
            Step::from([("action", "http://h/api/TransIn".to_owned())]),
        ];
        let payloads = [b"".to_vec(), br#"{"a":1}"#.to_vec()];
        let request = GlobalRequest {
            steps: &steps,
            payloads: &payloads,
            custom_data: r#"{"delay":2}"#,
            ..GlobalRequest::new(GlobalCall::Submit, "g", TransType::Msg, &options)
        };
        let req = dtm_request(&request).unwrap();
        assert_eq!(req.trans_type, "msg");
        assert_eq!(
            req.steps,
            r#"[{"action":"topic://t"},{"action":"http://h/api/TransIn"}]"#
        );
        assert_eq!(req.bin_payloads, [b"".to_vec(), br#"{"a":1}"#.to_vec()]);
        assert_eq!(req.customed_data, r#"{"delay":2}"#);
        assert_eq!(req.trans_options.unwrap().retry_interval, 1);
    }

    #[tokio::test]
    async fn bad_steps_and_msg_concurrency_fail_before_any_call() {
        // Nothing listens on port 9: a call would fail differently.
        let dtm = DtmGrpcClient::connect_lazy("127.0.0.1:9").unwrap();
        let err = dtm
            .saga("g")
            .add_bytes("h:1", "", vec![])
            .submit()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("invalid gRPC branch URL"), "{err}");

        let map = BTreeMap::from([(vec![1u8], 1)]); // non-string keys cannot be JSON
        let err = dtm.msg("g").add_json("", &map).submit().await.unwrap_err();
        assert!(matches!(err, Error::Payload { .. }), "{err:?}");
        assert!(err.to_string().contains("msg step 0"), "{err}");

        let err = dtm.msg("g").prepare("").await.unwrap_err();
        assert!(err.to_string().contains("query_prepared is empty"), "{err}");

        let mut options = TransOptions::default();
        options.concurrent = true;
        let err = dtm.msg("g").options(options).submit().await.unwrap_err();
        assert!(err.to_string().contains("concurrency"), "{err}");
    }
}
