//! Two-phase messages: steps the server runs forward until they all succeed.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use super::{BranchCall, Encode, GlobalCall, GlobalRequest, Step, Transport};
use crate::{BranchInfo, Error, Op, Result, TransOptions, TransType, TwoPhaseMsg};

/// A two-phase message under construction. Made by the clients' `msg(gid)`.
///
/// Either submit it directly, or [`prepare`](Msg::prepare) it, do the local work, then
/// [`submit`](Msg::submit) (or [`abort`](Msg::abort)); [`Msg::do_and_submit`] does the three
/// in order. While it is prepared, the server asks the `query_prepared` URL whether the local
/// work committed once the message times out.
///
/// ```no_run
/// # async fn demo(dtm: dtmcli::DtmClient) -> dtmcli::Result<()> {
/// let busi = "http://localhost:8081/api/busi";
/// let mut msg = dtm
///     .msg(dtm.new_gid().await?)
///     .add(format!("{busi}/TransIn"), &serde_json::json!({"amount": 30}));
/// msg.prepare(format!("{busi}/QueryPrepared")).await?;
/// // ... commit the local transaction ...
/// msg.submit().await?; // consumes the message
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a message does nothing until you submit it"]
pub struct Msg<C> {
    client: C,
    gid: String,
    steps: Vec<Step>,
    payloads: Vec<Vec<u8>>,
    query_prepared: String,
    delay: u64,
    options: TransOptions,
    /// The first payload that could not be encoded: reported by the first call, and every
    /// later call refuses to send the message.
    error: Option<Error>,
}

#[derive(Serialize)]
struct MsgCustomData {
    delay: u64,
}

impl<C: Transport> Msg<C> {
    /// A message `gid` through `client`; the clients' `msg(gid)` is the usual way.
    pub fn new(client: C, gid: impl Into<String>) -> Self {
        Msg {
            client,
            gid: gid.into(),
            steps: Vec::new(),
            payloads: Vec::new(),
            query_prepared: String::new(),
            delay: 0,
            options: TransOptions::default(),
            error: None,
        }
    }

    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a step: the server calls `action` with `payload` (JSON over HTTP, the request
    /// message over gRPC) until it succeeds.
    pub fn add<P: ?Sized>(self, action: impl Into<String>, payload: &P) -> Self
    where
        C: Encode<P>,
    {
        let encoded = C::encode(payload, &format!("msg step {}", self.steps.len()));
        self.push(action.into(), encoded)
    }

    /// Adds a step for every URL subscribed to `topic` (see the clients' `subscribe`).
    pub fn add_topic<P: ?Sized>(self, topic: &str, payload: &P) -> Self
    where
        C: Encode<P>,
    {
        let encoded = C::encode(payload, &format!("msg step {}", self.steps.len()));
        self.push(format!("topic://{topic}"), encoded)
    }

    /// Adds a step whose payload is `payload` as JSON, for an `http://` branch of a gRPC
    /// message (over HTTP it is the same as [`Msg::add`]).
    pub fn add_json<T: Serialize + ?Sized>(self, action: impl Into<String>, payload: &T) -> Self {
        let what = format!("msg step {}", self.steps.len());
        let encoded = serde_json::to_vec(payload).map_err(|e| Error::payload(what, e));
        self.push(action.into(), encoded)
    }

    /// Adds a step with a payload that is already encoded.
    pub fn add_bytes(self, action: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        self.push(action.into(), Ok(payload.into()))
    }

    fn push(mut self, action: String, payload: Result<Vec<u8>>) -> Self {
        let payload = payload.unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            Vec::new()
        });
        self.steps.push(Step::from([("action", action)]));
        self.payloads.push(payload);
        self
    }

    /// Calls the steps in parallel instead of in order. HTTP only: DTM's gRPC API has no field
    /// for it, and the gRPC client refuses the message.
    pub fn concurrent(mut self) -> Self {
        self.options.concurrent = true;
        self
    }

    /// Calls no step until this long after the message was created (whole seconds, rounded up).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = crate::whole_seconds(delay);
        self
    }

    crate::__option_setters!();

    /// Checks the message before anything is sent; returns its custom data (the delay).
    pub(crate) fn checked_custom_data(&mut self) -> Result<String> {
        self.client.check_trans(&self.gid, &self.options)?;
        if let Some(e) = self.error.take() {
            // Reported once with its cause; later calls still refuse the message.
            let later = match &e {
                Error::InvalidArgument(text) => text.clone(),
                _ => format!("{e} (reported by an earlier call)"),
            };
            self.error = Some(Error::InvalidArgument(later));
            return Err(e);
        }
        for url in self.steps.iter().flat_map(|s| s.values()) {
            if !url.starts_with("topic://") {
                self.client.check_branch_url(url)?;
            }
        }
        if self.delay == 0 {
            return Ok(String::new());
        }
        serde_json::to_string(&MsgCustomData { delay: self.delay })
            .map_err(|e| Error::payload("msg custom data", e))
    }

    /// The request of `call` for this message.
    pub(crate) fn request<'a>(
        &'a self,
        call: GlobalCall,
        custom_data: &'a str,
    ) -> GlobalRequest<'a> {
        GlobalRequest {
            steps: &self.steps,
            payloads: &self.payloads,
            custom_data,
            query_prepared: &self.query_prepared,
            ..GlobalRequest::new(call, &self.gid, TransType::Msg, &self.options)
        }
    }

    async fn send(&mut self, call: GlobalCall) -> Result<()> {
        let custom_data = self.checked_custom_data()?;
        super::call_global(&self.client, self.request(call, &custom_data)).await
    }

    /// Stores the message as `prepared`, with `query_prepared` as the URL the server asks
    /// (with the branch info of branch `00`, op `msg`) whether the local work committed:
    /// success → submit the message, FAILURE (409 / `Aborted`) → drop it, ONGOING → ask again
    /// later.
    ///
    /// An empty URL is refused: the server would read it as "committed" and submit the message
    /// even when the local work rolled back.
    pub async fn prepare(&mut self, query_prepared: impl Into<String>) -> Result<()> {
        let query_prepared = crate::two_phase::query_url(query_prepared.into())?;
        self.client.check_branch_url(&query_prepared)?;
        self.query_prepared = query_prepared;
        self.send(GlobalCall::Prepare).await
    }

    /// Submits the message, consuming it: the server calls every step until it succeeds. With
    /// `wait_result`, see [`Saga::submit`](super::Saga::submit) for what the result says.
    pub async fn submit(mut self) -> Result<()> {
        self.send(GlobalCall::Submit).await
    }

    /// Drops a prepared message, consuming it: it ends as `failed` and no step is called.
    pub async fn abort(mut self) -> Result<()> {
        self.send(GlobalCall::Abort).await
    }

    /// Prepares the message, runs the local work `busi`, then submits or drops the message
    /// according to the outcome: see [`crate::do_and_submit`] for the rules. With a SQL
    /// database, `dtm_barrier`'s `Barrier::do_and_submit` guards the local work with the
    /// barrier so that the query can tell whether it committed.
    pub async fn do_and_submit<T, Fut>(
        self,
        query_prepared: impl Into<String>,
        busi: Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        crate::do_and_submit(self, query_prepared.into(), busi).await
    }
}

impl<C: Transport> TwoPhaseMsg for Msg<C> {
    fn msg_gid(&self) -> &str {
        &self.gid
    }

    async fn prepare_msg(&mut self, query_prepared: String) -> Result<()> {
        self.prepare(query_prepared).await
    }

    async fn submit_msg(self) -> Result<()> {
        self.submit().await
    }

    async fn abort_msg(self) -> Result<()> {
        self.abort().await
    }

    /// Calls `query_prepared` as the server would, with the branch info of the message query.
    async fn query_local_work(&self) -> Result<()> {
        let info = BranchInfo {
            gid: self.gid.clone(),
            trans_type: TransType::Msg,
            branch_id: crate::QUERY_PREPARED_BRANCH_ID.to_owned(),
            op: Op::Msg,
            dtm: Some(self.client.server().to_owned()),
            phase2_url: None,
        };
        self.client
            .query_prepared(BranchCall {
                url: &self.query_prepared,
                info: &info,
                headers: &self.options.branch_headers,
            })
            .await
    }
}
