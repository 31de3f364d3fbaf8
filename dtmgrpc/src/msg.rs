//! Two-phase messages over gRPC: steps the server runs forward until they all succeed.

use crate::DtmGrpcClient;

/// A two-phase message under construction over gRPC; see [`dtmcli::model::Msg`].
///
/// Payloads are prost messages ([`add_json`](dtmcli::model::Msg::add_json) for `http://`
/// steps). While it is prepared, the server calls the `query_prepared` method (with an empty
/// message) once the message times out, to learn whether the local work committed: OK →
/// submit, `Aborted` → drop it, `FailedPrecondition` → ask again later. The steps always run
/// in order: the server's gRPC API has no field for msg concurrency.
///
/// ```no_run
/// # async fn demo(dtm: dtmgrpc::DtmGrpcClient, req: impl dtmgrpc::prost::Message) -> dtmgrpc::Result<()> {
/// let busi = "localhost:58081/busi.Busi";
/// let mut msg = dtm
///     .msg(dtm.new_gid().await?)
///     .add(format!("{busi}/TransIn"), &req);
/// msg.prepare(format!("{busi}/QueryPrepared")).await?;
/// // ... commit the local transaction ...
/// msg.submit().await?;
/// # Ok(()) }
/// ```
pub type Msg = dtmcli::model::Msg<DtmGrpcClient>;

impl DtmGrpcClient {
    /// Starts a two-phase message with the given global transaction id.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg::new(self.clone(), gid)
    }
}
