//! XA: global transactions whose branches are local XA transactions of resource managers.
//!
//! The client side is [`XaBuilder::run`](crate::model::XaBuilder::run) and
//! [`Xa::call_branch`](crate::model::Xa::call_branch); the resource-manager side
//! (the branch's local XA transaction on its database) lives in the barrier crate and uses
//! [`register_xa_branch`] from here.

use serde::Serialize;

use crate::{BranchInfo, DtmClient, Error, Result, TransType};

/// Options of an XA transaction before it starts; [`run`](crate::model::XaBuilder::run)
/// runs it.
pub type XaBuilder = crate::model::XaBuilder<DtmClient>;

/// The handle of an open XA transaction, given to the closure of
/// [`XaBuilder::run`](crate::model::XaBuilder::run); the payloads are JSON.
pub type Xa = crate::model::Xa<DtmClient>;

/// The body of `registerBranch` for an XA branch ([`api_http.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/api_http.go)).
#[derive(Debug, Serialize)]
struct RegisterXaBranch<'a> {
    gid: &'a str,
    trans_type: TransType,
    branch_id: &'a str,
    url: &'a str,
}

/// Registers an XA branch at the server named in an incoming action call (`info.dtm`), with
/// `info.phase2_url` as the URL the server calls for commit and rollback.
///
/// Resource managers call this inside their local XA transaction, after the business SQL and
/// before preparing it (the barrier crate's XA support does). The HTTP client of `client` is
/// reused; its own server address is not: the request names the server. A missing `dtm` or
/// `phase2_url` gives [`Error::MissingField`]; a transaction that is no longer `prepared`
/// (aborted, timed out) makes the server answer [`Error::Failure`], and the local XA
/// transaction must then roll back.
///
/// ```no_run
/// # async fn demo(dtm: dtmcli::DtmClient, info: dtmcli::BranchInfo) -> dtmcli::Result<()> {
/// // `info` comes from the action request (`BranchInfo` is an axum extractor).
/// dtmcli::register_xa_branch(&dtm, &info).await?;
/// # Ok(()) }
/// ```
pub async fn register_xa_branch(client: &DtmClient, info: &BranchInfo) -> Result<()> {
    let dtm = info.dtm.as_deref().ok_or(Error::MissingField("dtm"))?;
    let url = info
        .phase2_url
        .as_deref()
        .ok_or(Error::MissingField("phase2_url"))?;
    client
        .with_server(dtm)?
        .post("registerBranch", &register_body(info, url))
        .await
}

fn register_body<'a>(info: &'a BranchInfo, url: &'a str) -> RegisterXaBranch<'a> {
    RegisterXaBranch {
        gid: &info.gid,
        trans_type: TransType::Xa,
        branch_id: &info.branch_id,
        url,
    }
}

impl crate::XaRegistrar for DtmClient {
    async fn register_xa_branch(&self, info: &BranchInfo) -> Result<()> {
        register_xa_branch(self, info).await
    }
}

impl DtmClient {
    /// Starts an XA global transaction; set options on the builder, then
    /// [`run`](crate::model::XaBuilder::run) it.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient) -> dtmcli::Result<()> {
    /// let gid = dtm.new_gid().await?;
    /// dtm.xa(gid)
    ///     .timeout_to_fail(std::time::Duration::from_secs(60))
    ///     .run(|xa| async move {
    ///         xa.call_branch(&serde_json::json!({"amount": 30}), "http://localhost:8081/api/busi/TransInXa").await?;
    ///         Ok::<_, dtmcli::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn xa(&self, gid: impl Into<String>) -> XaBuilder {
        XaBuilder::new(self.clone(), gid)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn action_info() -> BranchInfo {
        BranchInfo::from_query(
            "gid=g1&trans_type=xa&branch_id=02&op=action\
             &dtm=http%3A%2F%2F127.0.0.1%3A9%2Fapi%2Fdtmsvr&phase2_url=http%3A%2F%2Frm%2Fxa",
        )
        .unwrap()
    }

    #[test]
    fn register_body_matches_the_reference_client() {
        let info = action_info();
        let body = register_body(&info, info.phase2_url.as_deref().unwrap());
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({"gid": "g1", "trans_type": "xa", "branch_id": "02", "url": "http://rm/xa"})
        );
    }

    #[tokio::test]
    async fn register_needs_dtm_and_phase2_url() {
        let client = DtmClient::new("http://127.0.0.1:9/api/dtmsvr").unwrap();
        let mut info = action_info();
        info.phase2_url = None;
        let err = register_xa_branch(&client, &info).await.unwrap_err();
        assert!(matches!(err, Error::MissingField("phase2_url")), "{err}");
        info.dtm = None;
        let err = register_xa_branch(&client, &info).await.unwrap_err();
        assert!(matches!(err, Error::MissingField("dtm")), "{err}");
    }

    #[tokio::test]
    async fn register_goes_to_the_server_named_in_the_request() {
        // The client points at one server, the request names another (port 9 on loopback): the error
        // names the request's server.
        let client = DtmClient::new("http://127.0.0.1:1/elsewhere").unwrap();
        let err = register_xa_branch(&client, &action_info())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Request { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("127.0.0.1:9/api/dtmsvr/registerBranch"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn failed_prepare_runs_nothing() {
        let client = DtmClient::new("http://127.0.0.1:9/api/dtmsvr").unwrap();
        let ran = Arc::new(Mutex::new(false));
        let flag = Arc::clone(&ran);
        let err = client
            .xa("g")
            .retry_interval(std::time::Duration::from_secs(1))
            .run(|_xa| async move {
                *flag.lock().unwrap() = true;
                Ok::<_, Error>(())
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/prepare"), "{err}");
        assert!(!*ran.lock().unwrap());
    }
}
