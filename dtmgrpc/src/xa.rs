//! XA over gRPC: global XA transactions, and the registration of a local XA branch.

use std::collections::HashMap;

use dtmcli::{BranchInfo, Error, Result, TransType, XaRegistrar};

use crate::{proto, DtmGrpcClient};

/// Options of an XA transaction before it starts; [`run`](dtmcli::model::XaBuilder::run)
/// runs it.
pub type XaBuilder = dtmcli::model::XaBuilder<DtmGrpcClient>;

/// The handle of an open XA transaction, given to the closure of
/// [`XaBuilder::run`](dtmcli::model::XaBuilder::run). Payloads are prost messages; branch
/// URLs are gRPC URLs, which DTM also calls for commit and rollback (`dtm-op`).
pub type Xa = dtmcli::model::Xa<DtmGrpcClient>;

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
    /// [`run`](dtmcli::model::XaBuilder::run) it.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmgrpc::DtmGrpcClient, req: impl dtmgrpc::prost::Message) -> dtmgrpc::Result<()> {
    /// let busi = "localhost:58081/busi.Busi";
    /// dtm.xa(dtm.new_gid().await?)
    ///     .run(|xa| async move {
    ///         xa.call_branch(&req, format!("{busi}/TransOutXa")).await?;
    ///         xa.call_branch(&req, format!("{busi}/TransInXa")).await?;
    ///         Ok::<_, dtmgrpc::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn xa(&self, gid: impl Into<String>) -> XaBuilder {
        XaBuilder::new(self.clone(), gid)
    }
}
