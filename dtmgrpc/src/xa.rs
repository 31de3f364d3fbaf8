//! XA over gRPC: global XA transactions, and the registration of a local XA branch.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use dtmcli::{BranchIdGen, BranchInfo, Error, Op, Result, TransOptions, TransType, XaRegistrar};

use crate::tcc::BranchResponse;
use crate::trans::{GrpcGlobal, OpenTrans};
use crate::{proto, DtmGrpcClient, GrpcUrl};

/// Options of an XA transaction before it starts; [`XaBuilder::run`] runs it.
#[derive(Debug)]
#[must_use = "an XA transaction does nothing until you run it"]
pub struct XaBuilder {
    client: DtmGrpcClient,
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

impl XaBuilder {
    dtmcli::__option_setters!();

    /// Runs the global transaction: prepares it on the server, runs `f` with the handle
    /// (which calls the branches' actions; each resource manager prepares a local XA
    /// transaction and registers it), then submits it; the server then commits every branch
    /// in registration order.
    ///
    /// If `f` returns an error — including an action that answered `Aborted` (FAILURE) — the
    /// transaction is aborted with the error's text as rollback reason (the server rolls back
    /// every registered branch) and that error is returned. If `f` panics, the transaction is
    /// aborted and the panic resumes.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmgrpc::DtmGrpcClient, req: impl dtmgrpc::prost::Message) -> dtmgrpc::Result<()> {
    /// let busi = "localhost:58081/busi.Busi";
    /// dtm.xa(dtm.new_gid().await?)
    ///     .run(|xa| async move {
    ///         xa.call_branch(&req, &format!("{busi}/TransOutXa")).await?;
    ///         xa.call_branch(&req, &format!("{busi}/TransInXa")).await?;
    ///         Ok::<_, dtmgrpc::Error>(())
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
        crate::trans::check_gid(&self.gid)?;
        self.client.check_options(&self.options)?;
        let xa = Xa {
            inner: Arc::new(OpenTrans::new(
                self.client.clone(),
                self.gid.clone(),
                self.options.branch_headers.clone(),
                BranchIdGen::default(),
            )),
        };
        let calls = GrpcGlobal::new(self.client, &self.gid, TransType::Xa, &self.options);
        dtmcli::run_global(&calls, move || f(xa)).await
    }
}

impl Xa {
    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// Calls the action of a branch: a unary call of `url` (`host:port/package.Service/Method`)
    /// with `payload` and the metadata `dtm-gid`, `dtm-trans_type=xa`, `dtm-branch_id` (the
    /// next id), `dtm-op=action`, `dtm-dtm` (this client's server), `dtm-phase2_url` (`url`
    /// itself, which the server calls with `dtm-op` commit or rollback) and the branch
    /// headers. The resource manager registers the branch itself, inside its local XA
    /// transaction. Anything but OK is an error.
    pub async fn call_branch<M: prost::Message>(
        &self,
        payload: &M,
        url: impl AsRef<str>,
    ) -> Result<BranchResponse> {
        let url = url.as_ref();
        let parsed = GrpcUrl::parse(url)?;
        let inner = &self.inner;
        let branch_id = inner.next_branch_id()?;
        let info = BranchInfo {
            gid: inner.gid.clone(),
            trans_type: TransType::Xa,
            branch_id,
            op: Op::Action,
            dtm: Some(inner.client.server().to_owned()),
            phase2_url: Some(url.to_owned()),
        };
        let bytes = inner
            .client
            .call_branch(
                &parsed,
                &info,
                Bytes::from(payload.encode_to_vec()),
                &inner.branch_headers,
            )
            .await?;
        Ok(BranchResponse::new(bytes))
    }
}

/// Registers a local XA branch over gRPC (`RegisterBranch` with `Data {"url": phase2_url}`)
/// at the server named by the action call's `dtm-dtm`, reusing this client's settings; the
/// barrier's `xa_local` takes it.
impl XaRegistrar for DtmGrpcClient {
    async fn register_xa_branch(&self, info: &BranchInfo) -> Result<()> {
        let dtm = info.dtm.as_deref().ok_or(Error::MissingField("dtm"))?;
        let url = info
            .phase2_url
            .as_deref()
            .ok_or(Error::MissingField("phase2_url"))?;
        let request = proto::DtmBranchRequest {
            gid: info.gid.clone(),
            trans_type: TransType::Xa.as_str().to_owned(),
            branch_id: info.branch_id.clone(),
            op: String::new(),
            data: HashMap::from([("url".to_owned(), url.to_owned())]),
            busi_payload: Vec::new(),
        };
        self.for_server(dtm)?
            .call("RegisterBranch", |mut c| async move {
                c.register_branch(request).await
            })
            .await
    }
}

impl DtmGrpcClient {
    /// Starts an XA global transaction; set options on the builder, then
    /// [`run`](XaBuilder::run) it.
    pub fn xa(&self, gid: impl Into<String>) -> XaBuilder {
        XaBuilder {
            client: self.clone(),
            gid: gid.into(),
            options: TransOptions::default(),
        }
    }
}
