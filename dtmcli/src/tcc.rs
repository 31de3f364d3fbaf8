//! TCC: Try-Confirm-Cancel global transactions, including nested ones.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde::Serialize;

use crate::client::BranchResponse;
use crate::run_global;
use crate::trans::{payload_json, HttpGlobal, OpenTrans};
use crate::{BranchIdGen, BranchInfo, DtmClient, Error, Op, Result, TransOptions, TransType};

/// Options of a TCC transaction before it starts; [`TccBuilder::run`] runs it.
#[derive(Debug)]
#[must_use = "a TCC transaction does nothing until you run it"]
pub struct TccBuilder {
    client: DtmClient,
    gid: String,
    options: TransOptions,
}

/// The handle of an open TCC transaction, given to the closure of [`TccBuilder::run`].
///
/// Cheap to clone; clones register branches of the same transaction with distinct ids.
#[derive(Debug, Clone)]
pub struct Tcc {
    inner: Arc<OpenTrans>,
}

#[derive(Serialize)]
struct RegisterTccBranch<'a> {
    gid: &'a str,
    trans_type: TransType,
    branch_id: &'a str,
    data: &'a str,
    confirm: &'a str,
    cancel: &'a str,
}

impl TccBuilder {
    crate::__option_setters!();

    /// Runs the global transaction: prepares it on the server, runs `f` with the handle
    /// (which registers branches and calls their try), then submits it.
    ///
    /// If `f` returns an error — including a try that answered FAILURE, ONGOING or an error —
    /// the transaction is aborted with the error's text as rollback reason (the server then
    /// cancels every registered branch) and that error is returned. If `f` panics, the
    /// transaction is aborted and the panic resumes. Errors of the SDK itself convert into
    /// `E` through `From<Error>` (`anyhow::Error` and [`Error`] both work).
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient) -> anyhow::Result<()> {
    /// let busi = "http://localhost:8081/api/busi";
    /// let body = serde_json::json!({"amount": 30});
    /// let gid = dtm.new_gid().await?;
    /// dtm.tcc(gid)
    ///     .run(|tcc| async move {
    ///         tcc.call_branch(&body, &format!("{busi}/TransOutTry"),
    ///             &format!("{busi}/TransOutConfirm"), &format!("{busi}/TransOutCancel")).await?;
    ///         tcc.call_branch(&body, &format!("{busi}/TransInTry"),
    ///             &format!("{busi}/TransInConfirm"), &format!("{busi}/TransInCancel")).await?;
    ///         Ok::<_, anyhow::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<F, Fut, T, E>(self, f: F) -> std::result::Result<T, E>
    where
        F: FnOnce(Tcc) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: From<Error> + fmt::Display,
    {
        crate::check_gid(&self.gid)?;
        self.options.check()?;
        let handle = Tcc {
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
            trans_type: TransType::Tcc,
            options: self.options,
        };
        run_global(&calls, move || f(handle)).await
    }
}

impl Tcc {
    /// Rebuilds the transaction inside a try handler, to register nested branches below the
    /// current one (`02` → `0201`, `0202`, ...).
    ///
    /// Needs the `dtm` field of the request, which only the client's try call carries: nesting
    /// is possible in `try` only. The HTTP client of `client` is reused; the server is the one
    /// named by the request.
    pub fn from_branch(client: &DtmClient, info: &BranchInfo) -> Result<Tcc> {
        let dtm = info.dtm.as_deref().ok_or(Error::MissingField("dtm"))?;
        if info.trans_type != TransType::Tcc {
            return Err(Error::InvalidArgument(format!(
                "a nested TCC needs a tcc branch, this one is {}",
                info.trans_type
            )));
        }
        Ok(Tcc {
            inner: Arc::new(OpenTrans::new(
                client.with_server(dtm)?,
                info.gid.clone(),
                BTreeMap::new(),
                BranchIdGen::new(info.branch_id.clone()),
            )),
        })
    }

    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// Registers a branch and calls its try.
    ///
    /// The branch gets the next id; the server will call `confirm_url` (on submit) or
    /// `cancel_url` (on abort, even if the try failed) with `payload` as body. The try is a
    /// POST of `payload` to `try_url` with `dtm`, `gid`, `branch_id`, `trans_type` and `op=try`
    /// in the query and the transaction's branch headers. Anything but a 200 SUCCESS answer is
    /// an error ([`Error::Failure`], [`Error::Ongoing`], ...).
    pub async fn call_branch<T: Serialize + ?Sized>(
        &self,
        payload: &T,
        try_url: impl AsRef<str>,
        confirm_url: impl AsRef<str>,
        cancel_url: impl AsRef<str>,
    ) -> Result<BranchResponse> {
        let (try_url, confirm_url, cancel_url) =
            (try_url.as_ref(), confirm_url.as_ref(), cancel_url.as_ref());
        let data = payload_json(payload, || "a TCC branch".to_owned())?;
        let info = self.register(&data, confirm_url, cancel_url).await?;
        let inner = &self.inner;
        inner
            .client
            .call_branch(
                try_url,
                &info,
                Some(data.into_bytes()),
                &inner.branch_headers,
            )
            .await
    }

    /// Registers a branch without calling its try, for callers that call the try themselves;
    /// returns the branch info a try call must carry (`op=try`, with `dtm`).
    /// [`Tcc::call_branch`] is the usual way.
    pub async fn register_branch<T: Serialize + ?Sized>(
        &self,
        payload: &T,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<BranchInfo> {
        let data = payload_json(payload, || "a TCC branch".to_owned())?;
        self.register(&data, confirm_url, cancel_url).await
    }

    async fn register(
        &self,
        data: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<BranchInfo> {
        let inner = &self.inner;
        let branch_id = inner.next_branch_id()?;
        inner
            .client
            .post(
                "registerBranch",
                &RegisterTccBranch {
                    gid: &inner.gid,
                    trans_type: TransType::Tcc,
                    branch_id: &branch_id,
                    data,
                    confirm: confirm_url,
                    cancel: cancel_url,
                },
            )
            .await?;
        Ok(BranchInfo {
            gid: inner.gid.clone(),
            trans_type: TransType::Tcc,
            branch_id,
            op: Op::Try,
            dtm: Some(inner.client.server().to_owned()),
            phase2_url: None,
        })
    }
}

impl DtmClient {
    /// Starts a TCC global transaction; set options on the builder, then
    /// [`run`](TccBuilder::run) it.
    pub fn tcc(&self, gid: impl Into<String>) -> TccBuilder {
        TccBuilder {
            client: self.clone(),
            gid: gid.into(),
            options: TransOptions::default(),
        }
    }
}
