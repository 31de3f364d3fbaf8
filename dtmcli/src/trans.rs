//! The transaction body sent to `prepare`, `submit` and `abort`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::client::BranchResponse;
use crate::model::{Encode, GlobalRequest, TccRegistration, Transport};
use crate::{BranchInfo, DtmClient, Error, Protocol, Result, TransOptions, TransType};

/// One saga or msg step on the wire: `{"action": URL, "compensate": URL}`.
pub(crate) type Step = BTreeMap<&'static str, String>;

/// The JSON body of `prepare` / `submit` / `abort` ([`trans_class.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/trans_class.go)).
#[derive(Debug, Serialize)]
pub(crate) struct TransBody<'a> {
    pub(crate) gid: &'a str,
    pub(crate) trans_type: TransType,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) steps: &'a [Step],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) payloads: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) custom_data: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) query_prepared: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub(crate) rollback_reason: &'a str,
    pub(crate) protocol: Protocol,
    #[serde(flatten)]
    pub(crate) options: &'a TransOptions,
}

impl<'a> TransBody<'a> {
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

    fn check_branch_url(&self, _url: &str) -> Result<()> {
        Ok(())
    }

    fn for_server(&self, server: &str) -> Result<Self> {
        self.with_server(server)
    }

    async fn global_call(&self, request: GlobalRequest<'_>) -> Result<()> {
        let body = TransBody {
            rollback_reason: request.rollback_reason,
            ..TransBody::bare(request.gid, request.trans_type, request.options)
        };
        self.post_trans(request.call.as_str(), &body).await
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

    async fn call_branch(
        &self,
        url: &str,
        info: &BranchInfo,
        payload: Vec<u8>,
        headers: &BTreeMap<String, String>,
    ) -> Result<BranchResponse> {
        DtmClient::call_branch(self, url, info, Some(payload), headers).await
    }
}

/// Payloads are JSON.
impl<P: Serialize + ?Sized> Encode<P> for DtmClient {
    fn encode(payload: &P, what: &str) -> Result<Vec<u8>> {
        serde_json::to_vec(payload).map_err(|e| Error::payload(what, e))
    }
}

/// Serializes a step payload, or keeps the error for `submit` to return.
pub(crate) fn payload_json<T: Serialize + ?Sized>(
    payload: &T,
    what: impl FnOnce() -> String,
) -> Result<String, crate::Error> {
    serde_json::to_string(payload).map_err(|e| crate::Error::payload(what(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

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
