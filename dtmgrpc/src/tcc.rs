//! TCC over gRPC: Try-Confirm-Cancel global transactions, including nested ones.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use dtmcli::{BranchIdGen, BranchInfo, Error, Op, Result, TransOptions, TransType};

use crate::trans::{GrpcGlobal, OpenTrans};
use crate::url::check_branch_url;
use crate::{proto, DtmGrpcClient, GrpcUrl};

/// Options of a TCC transaction before it starts; [`TccBuilder::run`] runs it.
#[derive(Debug)]
#[must_use = "a TCC transaction does nothing until you run it"]
pub struct TccBuilder {
    client: DtmGrpcClient,
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

/// A branch's reply to a call the SDK made itself (a TCC try, an XA action).
#[derive(Debug, Clone)]
pub struct BranchResponse {
    bytes: Bytes,
}

impl BranchResponse {
    pub(crate) fn new(bytes: Bytes) -> Self {
        BranchResponse { bytes }
    }

    /// The reply message, still encoded.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The reply decoded as `R`.
    pub fn decode<R: prost::Message + Default>(&self) -> Result<R> {
        R::decode(self.bytes.clone()).map_err(Error::other)
    }
}

impl TccBuilder {
    dtmcli::__option_setters!();

    /// Runs the global transaction: prepares it on the server, runs `f` with the handle
    /// (which registers branches and calls their try), then submits it.
    ///
    /// If `f` returns an error — including a try that answered `Aborted` (FAILURE),
    /// `FailedPrecondition` (ONGOING) or another error — the transaction is aborted with the
    /// error's text as rollback reason (the server then cancels every registered branch) and
    /// that error is returned. If `f` panics, the transaction is aborted and the panic
    /// resumes. Errors of the SDK itself convert into `E` through `From<Error>`
    /// (`anyhow::Error`, [`Error`] and `tonic::Status` all work).
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmgrpc::DtmGrpcClient, req: impl dtmgrpc::prost::Message) -> anyhow::Result<()> {
    /// let busi = "localhost:58081/busi.Busi";
    /// let gid = dtm.new_gid().await?;
    /// dtm.tcc(gid)
    ///     .run(|tcc| async move {
    ///         tcc.call_branch(&req, &format!("{busi}/TransOutTry"),
    ///             &format!("{busi}/TransOutConfirm"), &format!("{busi}/TransOutCancel")).await?;
    ///         tcc.call_branch(&req, &format!("{busi}/TransInTry"),
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
        crate::trans::check_gid(&self.gid)?;
        self.client.check_options(&self.options)?;
        let tcc = Tcc {
            inner: Arc::new(OpenTrans::new(
                self.client.clone(),
                self.gid.clone(),
                self.options.branch_headers.clone(),
                BranchIdGen::default(),
            )),
        };
        let calls = GrpcGlobal::new(self.client, &self.gid, TransType::Tcc, &self.options);
        dtmcli::run_global(&calls, move || f(tcc)).await
    }
}

impl Tcc {
    /// Rebuilds the transaction inside a try handler, to register nested branches below the
    /// current one (`02` → `0201`, `0202`, ...).
    ///
    /// Needs the `dtm-dtm` metadata of the request, which only the client's try call carries:
    /// nesting is possible in `try` only. `client`'s settings and channels are reused; the
    /// server is the one named by the request.
    ///
    /// ```no_run
    /// # async fn try_handler(dtm: &dtmgrpc::DtmGrpcClient, request: dtmgrpc::tonic::Request<()>) -> Result<(), dtmgrpc::tonic::Status> {
    /// let info = dtmgrpc::branch_info(&request)?;
    /// let tcc = dtmgrpc::Tcc::from_branch(dtm, &info)?;
    /// let busi = "localhost:58081/busi.Busi";
    /// tcc.call_branch(request.get_ref(), &format!("{busi}/TransInTry"),
    ///     &format!("{busi}/TransInConfirm"), &format!("{busi}/TransInCancel")).await?;
    /// # Ok(()) }
    /// ```
    pub fn from_branch(client: &DtmGrpcClient, info: &BranchInfo) -> Result<Tcc> {
        let dtm = info.dtm.as_deref().ok_or(Error::MissingField("dtm"))?;
        if info.trans_type != TransType::Tcc {
            return Err(Error::InvalidArgument(format!(
                "a nested TCC needs a tcc branch, this one is {}",
                info.trans_type
            )));
        }
        Ok(Tcc {
            inner: Arc::new(OpenTrans::new(
                client.for_server(dtm)?,
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
    /// `cancel_url` (on abort, even if the try failed) with `payload` as message. The try is a
    /// unary call of `try_url` (a gRPC URL, `host:port/package.Service/Method`) with
    /// `payload` and the metadata `dtm-gid`, `dtm-trans_type`, `dtm-branch_id`, `dtm-op=try`,
    /// `dtm-dtm` (this client's server) and the transaction's branch headers. Anything but OK
    /// is an error ([`Error::Failure`] for `Aborted`, [`Error::Ongoing`] for
    /// `FailedPrecondition`, else a [`GrpcError`](crate::GrpcError)).
    pub async fn call_branch<M: prost::Message>(
        &self,
        payload: &M,
        try_url: impl AsRef<str>,
        confirm_url: impl AsRef<str>,
        cancel_url: impl AsRef<str>,
    ) -> Result<BranchResponse> {
        let (confirm_url, cancel_url) = (confirm_url.as_ref(), cancel_url.as_ref());
        let try_url = GrpcUrl::parse(try_url.as_ref())?;
        check_branch_url(confirm_url)?;
        check_branch_url(cancel_url)?;
        let inner = &self.inner;
        let branch_id = inner.next_branch_id()?;
        let payload = Bytes::from(payload.encode_to_vec());
        let register = proto::DtmBranchRequest {
            gid: inner.gid.clone(),
            trans_type: TransType::Tcc.as_str().to_owned(),
            branch_id: branch_id.clone(),
            op: String::new(),
            data: HashMap::from([
                ("confirm".to_owned(), confirm_url.to_owned()),
                ("cancel".to_owned(), cancel_url.to_owned()),
            ]),
            busi_payload: payload.to_vec(),
        };
        inner
            .client
            .call("RegisterBranch", |mut c| async move {
                c.register_branch(register).await
            })
            .await?;
        let info = BranchInfo {
            gid: inner.gid.clone(),
            trans_type: TransType::Tcc,
            branch_id,
            op: Op::Try,
            dtm: Some(inner.client.server().to_owned()),
            phase2_url: None,
        };
        let bytes = inner
            .client
            .call_branch(&try_url, &info, payload, &inner.branch_headers)
            .await?;
        Ok(BranchResponse { bytes })
    }
}

impl DtmGrpcClient {
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
