//! What the transaction builders share: steps, payloads, options and the `DtmRequest`.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::collections::HashMap;

use bytes::Bytes;
use dtmcli::model::{Encode, GlobalCall, GlobalRequest, TccRegistration, Transport};
use dtmcli::{BranchInfo, Error, Result, TransOptions, TransType};
use serde::Serialize;

use crate::url::check_branch_url;
use crate::{proto, BranchResponse, DtmGrpcClient, GrpcUrl};

/// One saga or msg step: `{"action": URL, "compensate": URL}`, sent as JSON text in `Steps`.
pub(crate) type Step = BTreeMap<&'static str, String>;

/// The steps and their payloads, with the first payload that could not be serialized.
#[derive(Debug, Default)]
pub(crate) struct Steps {
    pub(crate) steps: Vec<Step>,
    pub(crate) payloads: Vec<Vec<u8>>,
    error: Option<(String, Arc<serde_json::Error>)>,
}

impl Steps {
    pub(crate) fn push(&mut self, step: Step, payload: Vec<u8>) {
        self.steps.push(step);
        self.payloads.push(payload);
    }

    /// A step whose payload is `payload` as JSON (for `http://` branches).
    pub(crate) fn push_json<T: Serialize + ?Sized>(&mut self, step: Step, payload: &T, kind: &str) {
        let index = self.steps.len();
        let bytes = serde_json::to_vec(payload).unwrap_or_else(|e| {
            self.error
                .get_or_insert_with(|| (format!("{kind} step {index}"), Arc::new(e)));
            Vec::new()
        });
        self.push(step, bytes);
    }

    /// The deferred payload error, the steps' URLs checked, and the steps as JSON text.
    pub(crate) fn check(&self) -> Result<String> {
        if let Some((what, source)) = &self.error {
            return Err(Error::Payload {
                what: what.clone(),
                cause: Arc::clone(source),
            });
        }
        for url in self.steps.iter().flat_map(|s| s.values()) {
            if !url.starts_with("topic://") {
                check_branch_url(url)?;
            }
        }
        serde_json::to_string(&self.steps).map_err(|e| Error::Payload {
            what: "steps".into(),
            cause: Arc::new(e),
        })
    }
}

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

    fn for_server(&self, server: &str) -> Result<Self> {
        DtmGrpcClient::for_server(self, server)
    }

    async fn global_call(&self, request: GlobalRequest<'_>) -> Result<()> {
        let mut req = bare_request(request.gid, request.trans_type, request.options);
        req.rollback_reason = request.rollback_reason.to_owned();
        match request.call {
            GlobalCall::Prepare => {
                self.call("Prepare", |mut c| async move { c.prepare(req).await })
                    .await
            }
            GlobalCall::Abort => {
                self.call("Abort", |mut c| async move { c.abort(req).await })
                    .await
            }
            _ => self.submit(req).await,
        }
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

    async fn call_branch(
        &self,
        url: &str,
        info: &BranchInfo,
        payload: Vec<u8>,
        headers: &BTreeMap<String, String>,
    ) -> Result<BranchResponse> {
        let url = GrpcUrl::parse(url)?;
        let bytes =
            DtmGrpcClient::call_branch(self, &url, info, Bytes::from(payload), headers).await?;
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
    fn steps_are_json_text_and_urls_are_checked() {
        let mut s = Steps::default();
        s.push(
            Step::from([
                ("action", "h:1/busi.Busi/TransOut".into()),
                ("compensate", "".into()),
            ]),
            vec![1, 2],
        );
        s.push_json(
            Step::from([("action", "http://h/api/TransIn".into())]),
            &[1],
            "saga",
        );
        assert_eq!(
            s.check().unwrap(),
            r#"[{"action":"h:1/busi.Busi/TransOut","compensate":""},{"action":"http://h/api/TransIn"}]"#
        );
        assert_eq!(s.payloads[1], b"[1]");

        let mut bad = Steps::default();
        bad.push(Step::from([("action", "h:1".into())]), vec![]);
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("invalid gRPC branch URL"));

        let mut bad = Steps::default();
        let map = BTreeMap::from([(vec![1u8], 1)]); // non-string keys cannot be JSON
        bad.push_json(Step::from([("action", "".into())]), &map, "msg");
        let err = bad.check().unwrap_err();
        assert!(matches!(err, Error::Payload { .. }), "{err:?}");
        assert!(err.to_string().contains("msg step 0"), "{err}");
    }
}
