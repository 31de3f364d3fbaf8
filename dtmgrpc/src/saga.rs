//! Sagas over gRPC: forward actions, each with a compensation.

use crate::DtmGrpcClient;

/// A saga under construction over gRPC; see [`dtmcli::model::Saga`].
///
/// Payloads are prost messages. Step URLs are gRPC URLs (`host:port/package.Service/Method`),
/// `http(s)://` URLs (the server calls those over HTTP with the payload bytes as body, so give
/// them a JSON payload with [`add_json`](dtmcli::model::Saga::add_json)) or empty (never
/// called; counts as success); they are checked before anything is sent.
///
/// ```no_run
/// # async fn demo(dtm: dtmgrpc::DtmGrpcClient, req: impl dtmgrpc::prost::Message) -> dtmgrpc::Result<()> {
/// // `req` is a prost message: the request type of the branch methods.
/// let busi = "localhost:58081/busi.Busi";
/// let saga = dtm
///     .saga(dtm.new_gid().await?)
///     .add(format!("{busi}/TransOut"), format!("{busi}/TransOutRevert"), &req)
///     .add(format!("{busi}/TransIn"), format!("{busi}/TransInRevert"), &req)
///     .retry_interval(std::time::Duration::from_secs(5));
/// saga.submit().await?;
/// # Ok(()) }
/// ```
pub type Saga = dtmcli::model::Saga<DtmGrpcClient>;

impl DtmGrpcClient {
    /// Starts a saga with the given global transaction id.
    pub fn saga(&self, gid: impl Into<String>) -> Saga {
        Saga::new(self.clone(), gid)
    }
}

#[cfg(test)]
mod tests {
    use crate::DtmGrpcClient;

    #[tokio::test]
    async fn bad_steps_fail_before_any_call() {
        let dtm = DtmGrpcClient::connect_lazy("127.0.0.1:9").unwrap();
        let saga = dtm
            .saga("g")
            .add_bytes("h:1/a.B/C", "", vec![])
            .add_branch_order(1, [0]);
        let err = saga.submit().await.unwrap_err();
        assert!(err.to_string().contains("names step 1"), "{err}");

        let saga = dtm.saga("g").add_bytes("localhost:1/busi", "", vec![]);
        let err = saga.submit().await.unwrap_err();
        assert!(err.to_string().contains("invalid gRPC branch URL"), "{err}");
    }
}
