//! Two-phase messages over gRPC: steps the server runs forward until they all succeed.

use std::future::Future;

use dtmcli::{BranchInfo, Error, Op, Result, TransOptions, TransType, TwoPhaseMsg};
use serde::Serialize;

use crate::trans::{bare_request, Step, Steps};
use crate::url::check_branch_url;
use crate::{proto, DtmGrpcClient, GrpcUrl};

/// A two-phase message under construction.
///
/// Either submit it directly, or [`prepare`](Msg::prepare) it, do the local work, then
/// [`submit`](Msg::submit) (or [`abort`](Msg::abort)). While it is prepared, the server calls
/// the `query_prepared` method (with an empty message) once the message times out, to learn
/// whether the local work committed: OK → submit, `Aborted` → drop it, `FailedPrecondition`
/// → ask again later.
///
/// Over gRPC the steps always run in order: the server's gRPC API has no field for msg
/// concurrency.
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
#[derive(Debug)]
#[must_use = "a message does nothing until you submit it"]
pub struct Msg {
    client: DtmGrpcClient,
    gid: String,
    steps: Steps,
    query_prepared: String,
    delay: u64,
    options: TransOptions,
}

#[derive(Serialize)]
struct MsgCustomData {
    delay: u64,
}

fn step(action: String) -> Step {
    Step::from([("action", action)])
}

impl Msg {
    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a step: the server calls `action` with `payload` (protobuf-encoded) until it
    /// succeeds.
    pub fn add<M: prost::Message>(self, action: impl Into<String>, payload: &M) -> Self {
        self.add_bytes(action, payload.encode_to_vec())
    }

    /// Adds a step whose payload is `payload` as JSON, for an `http://` branch.
    pub fn add_json<T: Serialize + ?Sized>(
        mut self,
        action: impl Into<String>,
        payload: &T,
    ) -> Self {
        self.steps.push_json(step(action.into()), payload, "msg");
        self
    }

    /// Adds a step with a payload that is already encoded.
    pub fn add_bytes(mut self, action: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        self.steps.push(step(action.into()), payload.into());
        self
    }

    /// Adds a step for every URL subscribed to `topic` (see [`DtmGrpcClient::subscribe`]).
    pub fn add_topic<M: prost::Message>(self, topic: &str, payload: &M) -> Self {
        self.add_bytes(format!("topic://{topic}"), payload.encode_to_vec())
    }

    /// Calls no step until this long after the message was created (whole seconds, rounded
    /// up).
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.delay = dtmcli::whole_seconds(delay);
        self
    }

    dtmcli::__option_setters!();

    fn request(&self) -> Result<proto::DtmRequest> {
        crate::trans::check_gid(&self.gid)?;
        self.client.check_options(&self.options)?;
        if self.options.concurrent {
            return Err(Error::InvalidArgument(
                "msg concurrency cannot be requested over gRPC (DtmTransOptions has no such field)"
                    .into(),
            ));
        }
        let steps = self.steps.check()?;
        let mut req = bare_request(&self.gid, TransType::Msg, &self.options);
        req.steps = steps;
        req.bin_payloads = self.steps.payloads.clone();
        req.query_prepared = self.query_prepared.clone();
        if self.delay > 0 {
            req.customed_data = serde_json::to_string(&MsgCustomData { delay: self.delay })
                .map_err(Error::other)?;
        }
        Ok(req)
    }

    /// Stores the message as `prepared`, with `query_prepared` as the gRPC (or HTTP) URL the
    /// server asks whether the local work committed.
    pub async fn prepare(&mut self, query_prepared: impl Into<String>) -> Result<()> {
        let query_prepared = dtmcli::query_url(query_prepared.into())?;
        check_branch_url(&query_prepared)?;
        self.query_prepared = query_prepared;
        let req = self.request()?;
        self.client
            .call("Prepare", |mut c| async move { c.prepare(req).await })
            .await
    }

    /// Submits the message: the server calls every step until it succeeds.
    pub async fn submit(&self) -> Result<()> {
        let req = self.request()?;
        self.client.submit(req).await
    }

    /// Drops a prepared message: it ends as `failed` and no step is called.
    pub async fn abort(&self) -> Result<()> {
        let req = self.request()?;
        self.client
            .call("Abort", |mut c| async move { c.abort(req).await })
            .await
    }
}

impl Msg {
    /// Prepares the message, runs the local work `busi`, then submits or drops the message
    /// according to the outcome: see [`dtmcli::do_and_submit`] for the rules. When `busi`
    /// fails with anything but FAILURE, the `query_prepared` method is asked (with an empty
    /// message and the `dtm-*` metadata of branch `00`, op `msg`) whether the local work
    /// committed. With a SQL database, `dtm_barrier`'s `do_and_submit_db` wraps the local work
    /// in the barrier so that the query can tell.
    pub async fn do_and_submit<T, Fut>(
        &mut self,
        query_prepared: impl Into<String>,
        busi: Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        dtmcli::do_and_submit(self, query_prepared.into(), busi).await
    }
}

impl TwoPhaseMsg for Msg {
    fn msg_gid(&self) -> &str {
        &self.gid
    }

    async fn prepare_msg(&mut self, query_prepared: String) -> Result<()> {
        self.prepare(query_prepared).await
    }

    async fn submit_msg(&self) -> Result<()> {
        self.submit().await
    }

    async fn abort_msg(&self) -> Result<()> {
        self.abort().await
    }

    async fn query_local_work(&self) -> Result<()> {
        if crate::url::is_http(&self.query_prepared) {
            // Not FAILURE: the message stays prepared and the server asks the URL itself.
            return Err(Error::InvalidArgument(format!(
                "the gRPC client does not call the HTTP query URL {} itself; the server will \
                 ask it when the message times out",
                self.query_prepared
            )));
        }
        let url = GrpcUrl::parse(&self.query_prepared)?;
        let info = BranchInfo {
            gid: self.gid.clone(),
            trans_type: TransType::Msg,
            branch_id: dtmcli::QUERY_PREPARED_BRANCH_ID.to_owned(),
            op: Op::Msg,
            dtm: Some(self.client.server().to_owned()),
            phase2_url: None,
        };
        self.client
            .call_branch(
                &url,
                &info,
                bytes::Bytes::new(),
                &self.options.branch_headers,
            )
            .await
            .map(drop)
    }
}

impl DtmGrpcClient {
    /// Starts a two-phase message with the given global transaction id.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg {
            client: self.clone(),
            gid: gid.into(),
            steps: Steps::default(),
            query_prepared: String::new(),
            delay: 0,
            options: TransOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_has_topic_steps_and_delay() {
        let dtm = DtmGrpcClient::connect_lazy("127.0.0.1:9").unwrap();
        let msg = dtm
            .msg("g")
            .add_topic("t", &())
            .add_json("http://h/api/TransIn", &serde_json::json!({"a": 1}))
            .delay(std::time::Duration::from_secs(2))
            .retry_interval(std::time::Duration::from_secs(1));
        let req = msg.request().unwrap();
        assert_eq!(req.trans_type, "msg");
        assert_eq!(
            req.steps,
            r#"[{"action":"topic://t"},{"action":"http://h/api/TransIn"}]"#
        );
        assert_eq!(req.bin_payloads, [b"".to_vec(), br#"{"a":1}"#.to_vec()]);
        assert_eq!(req.customed_data, r#"{"delay":2}"#);
        assert_eq!(req.trans_options.unwrap().retry_interval, 1);

        let err = dtm.msg("g").prepare("").await.unwrap_err();
        assert!(err.to_string().contains("query_prepared is empty"), "{err}");

        let mut options = TransOptions::default();
        options.concurrent = true;
        let err = dtm.msg("g").options(options).submit().await.unwrap_err();
        assert!(err.to_string().contains("concurrency"), "{err}");
    }
}
