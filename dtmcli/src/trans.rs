//! The transaction body sent to `prepare`, `submit` and `abort`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{DtmClient, GlobalCalls, Protocol, Result, TransOptions, TransType};

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

/// The server calls of a TCC or XA transaction over HTTP.
#[derive(Debug)]
pub(crate) struct HttpGlobal {
    pub(crate) client: DtmClient,
    pub(crate) gid: String,
    pub(crate) trans_type: TransType,
    pub(crate) options: TransOptions,
}

impl HttpGlobal {
    fn body(&self) -> TransBody<'_> {
        TransBody::bare(&self.gid, self.trans_type, &self.options)
    }
}

impl GlobalCalls for HttpGlobal {
    fn gid(&self) -> &str {
        &self.gid
    }

    async fn prepare(&self) -> Result<()> {
        self.client.post_trans("prepare", &self.body()).await
    }

    async fn submit(&self) -> Result<()> {
        self.client.post_trans("submit", &self.body()).await
    }

    async fn abort(&self, reason: String) -> Result<()> {
        let body = TransBody {
            rollback_reason: &reason,
            ..self.body()
        };
        self.client.post_trans("abort", &body).await
    }
}

/// Serializes a step payload, or keeps the error for `submit` to return.
pub(crate) fn payload_json<T: Serialize + ?Sized>(
    payload: &T,
    what: impl FnOnce() -> String,
) -> Result<String, crate::Error> {
    serde_json::to_string(payload).map_err(|e| crate::Error::payload(what(), e))
}

/// The open-transaction state of this client's TCC and XA handles.
pub(crate) type OpenTrans = crate::OpenTrans<DtmClient>;

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
