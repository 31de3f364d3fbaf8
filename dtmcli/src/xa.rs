//! XA: global transactions whose branches are local XA transactions of resource managers.
//!
//! The client side is [`XaBuilder::run`] and [`Xa::call_branch`]; the resource-manager side
//! (the branch's local XA transaction on its database) lives in the barrier crate and uses
//! [`register_xa_branch`] from here.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;

use crate::client::BranchResponse;
use crate::run_global;
use crate::trans::{payload_json, HttpGlobal, OpenTrans};
use crate::{BranchIdGen, BranchInfo, DtmClient, Error, Op, Result, TransOptions, TransType};

/// Options of an XA transaction before it starts; [`XaBuilder::run`] runs it.
#[derive(Debug)]
#[must_use = "an XA transaction does nothing until you run it"]
pub struct XaBuilder {
    client: DtmClient,
    gid: String,
    options: TransOptions,
}

/// The handle of an open XA transaction, given to the closure of [`XaBuilder::run`].
///
/// Cheap to clone; clones call branches of the same transaction with distinct ids.
#[derive(Debug, Clone)]
pub struct Xa {
    inner: Arc<OpenTrans>,
}

/// The body of `registerBranch` for an XA branch ([`api_http.go`](https://github.com/dtm-labs/dtm/blob/v1.19.0/dtmsvr/api_http.go)).
#[derive(Debug, Serialize)]
struct RegisterXaBranch<'a> {
    gid: &'a str,
    trans_type: TransType,
    branch_id: &'a str,
    url: &'a str,
}

impl XaBuilder {
    crate::__option_setters!();

    /// Runs the global transaction: prepares it on the server, runs `f` with the handle
    /// (which calls the branches' actions), then submits it; the server then commits every
    /// branch in registration order.
    ///
    /// If `f` returns an error — including an action that answered FAILURE, ONGOING or an
    /// error — the transaction is aborted with the error's text as rollback reason (the
    /// server then rolls back every registered branch) and that error is returned. If `f`
    /// panics, the transaction is aborted and the panic resumes. Errors of the SDK itself
    /// convert into `E` through `From<Error>` (`anyhow::Error` and [`Error`] both work).
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient) -> anyhow::Result<()> {
    /// let busi = "http://localhost:8081/api/busi";
    /// let body = serde_json::json!({"amount": 30});
    /// let gid = dtm.new_gid().await?;
    /// dtm.xa(gid)
    ///     .run(|xa| async move {
    ///         xa.call_branch(&body, &format!("{busi}/TransOutXa")).await?;
    ///         xa.call_branch(&body, &format!("{busi}/TransInXa")).await?;
    ///         Ok::<_, anyhow::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<F, Fut, T, E>(self, f: F) -> std::result::Result<T, E>
    where
        F: FnOnce(Xa) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: From<Error> + fmt::Display,
    {
        crate::check_gid(&self.gid)?;
        self.options.check()?;
        let handle = Xa {
            inner: Arc::new(OpenTrans::new(
                self.client.clone(),
                self.gid.clone(),
                self.options.branch_headers.clone(),
                BranchIdGen::default(),
            )),
        };
        let calls = HttpGlobal {
            client: self.client,
            gid: self.gid,
            trans_type: TransType::Xa,
            options: self.options,
        };
        run_global(&calls, move || f(handle)).await
    }
}

impl Xa {
    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// Calls the action of the next branch.
    ///
    /// The branch gets the next id (`01`, `02`, ...). The call is a POST of `payload` as JSON
    /// to `url` with `dtm`, `gid`, `branch_id`, `trans_type=xa`, `op=action` and
    /// `phase2_url=<url>` in the query and the transaction's branch headers. The resource
    /// manager runs its local XA transaction, registers the branch at the server with `url`
    /// as phase-2 URL ([`register_xa_branch`]) and prepares; the server later calls `url`
    /// again with `op=commit` or `op=rollback`. Anything but a 200 SUCCESS answer is an
    /// error ([`Error::Failure`], [`Error::Ongoing`], ...).
    ///
    /// ```no_run
    /// # async fn demo(xa: dtmcli::Xa) -> dtmcli::Result<()> {
    /// let reply = xa
    ///     .call_branch(&serde_json::json!({"amount": 30}), "http://localhost:8081/api/busi/TransInXa")
    ///     .await?;
    /// assert_eq!(reply.status(), 200);
    /// # Ok(()) }
    /// ```
    pub async fn call_branch<T: Serialize + ?Sized>(
        &self,
        payload: &T,
        url: impl AsRef<str>,
    ) -> Result<BranchResponse> {
        let url = url.as_ref();
        let inner = &self.inner;
        let branch_id = inner.next_branch_id()?;
        let data = payload_json(payload, || format!("XA branch {branch_id}"))?;
        let info = BranchInfo {
            gid: inner.gid.clone(),
            trans_type: TransType::Xa,
            branch_id,
            op: Op::Action,
            dtm: Some(inner.client.server().to_owned()),
            phase2_url: Some(url.to_owned()),
        };
        inner
            .client
            .call_branch(url, &info, Some(data.into_bytes()), &inner.branch_headers)
            .await
    }
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
    /// [`run`](XaBuilder::run) it.
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
        XaBuilder {
            client: self.clone(),
            gid: gid.into(),
            options: TransOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

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
