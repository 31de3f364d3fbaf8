//! TCC over gRPC: Try-Confirm-Cancel global transactions, including nested ones.

use bytes::Bytes;
use dtmcli::{Error, Result};

use crate::DtmGrpcClient;

/// Options of a TCC transaction before it starts; [`run`](dtmcli::model::TccBuilder::run)
/// runs it.
pub type TccBuilder = dtmcli::model::TccBuilder<DtmGrpcClient>;

/// The handle of an open TCC transaction, given to the closure of
/// [`TccBuilder::run`](dtmcli::model::TccBuilder::run). Payloads are prost messages; try URLs
/// are gRPC URLs (`host:port/package.Service/Method`), checked before anything is sent, and
/// the try's answer is a [`BranchResponse`]. Nested branches:
/// `Tcc::from_branch(&dtm, &dtmgrpc::branch_info(&request)?)`.
pub type Tcc = dtmcli::model::Tcc<DtmGrpcClient>;

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

impl DtmGrpcClient {
    /// Starts a TCC global transaction; set options on the builder, then
    /// [`run`](dtmcli::model::TccBuilder::run) it.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmgrpc::DtmGrpcClient, req: impl dtmgrpc::prost::Message) -> anyhow::Result<()> {
    /// let busi = "localhost:58081/busi.Busi";
    /// let gid = dtm.new_gid().await?;
    /// dtm.tcc(gid)
    ///     .run(|tcc| async move {
    ///         tcc.call_branch(&req, format!("{busi}/TransOutTry"),
    ///             format!("{busi}/TransOutConfirm"), format!("{busi}/TransOutCancel")).await?;
    ///         tcc.call_branch(&req, format!("{busi}/TransInTry"),
    ///             format!("{busi}/TransInConfirm"), format!("{busi}/TransInCancel")).await?;
    ///         Ok::<_, anyhow::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tcc(&self, gid: impl Into<String>) -> TccBuilder {
        TccBuilder::new(self.clone(), gid)
    }
}
