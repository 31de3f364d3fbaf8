//! Two-phase messages: steps the server runs forward until they all succeed.

use std::time::Duration;

use serde::Serialize;

use crate::options::whole_seconds;
use crate::trans::{payload_json, Step, TransBody};
use std::future::Future;

use crate::{BranchInfo, DtmClient, Error, Op, Result, TransOptions, TransType, TwoPhaseMsg};

/// A two-phase message under construction.
///
/// Either submit it directly, or [`prepare`](Msg::prepare) it, do the local work, then
/// [`submit`](Msg::submit) (or [`abort`](Msg::abort)). While it is prepared, the server asks
/// the `query_prepared` URL whether the local work committed once the message times out.
///
/// ```no_run
/// # async fn demo(dtm: dtmcli::DtmClient) -> dtmcli::Result<()> {
/// let busi = "http://localhost:8081/api/busi";
/// let mut msg = dtm
///     .msg(dtm.new_gid().await?)
///     .add(format!("{busi}/TransIn"), &serde_json::json!({"amount": 30}));
/// msg.prepare(format!("{busi}/QueryPrepared")).await?;
/// // ... commit the local transaction ...
/// msg.submit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a message does nothing until you submit it"]
pub struct Msg {
    client: DtmClient,
    gid: String,
    steps: Vec<Step>,
    payloads: Vec<String>,
    query_prepared: String,
    delay: u64,
    options: TransOptions,
    error: Option<Error>,
}

#[derive(Serialize)]
struct MsgCustomData {
    delay: u64,
}

impl Msg {
    pub(crate) fn new(client: DtmClient, gid: String) -> Self {
        Msg {
            client,
            gid,
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

    /// Adds a step: the server POSTs `payload` as JSON to `action` until it succeeds.
    pub fn add<T: Serialize + ?Sized>(self, action: impl Into<String>, payload: &T) -> Self {
        self.push(action.into(), payload)
    }

    /// Adds a step for every URL subscribed to `topic` (see [`DtmClient::subscribe`]).
    pub fn add_topic<T: Serialize + ?Sized>(self, topic: &str, payload: &T) -> Self {
        self.push(format!("topic://{topic}"), payload)
    }

    fn push<T: Serialize + ?Sized>(mut self, action: String, payload: &T) -> Self {
        let index = self.steps.len();
        match payload_json(payload, || format!("msg step {index}")) {
            Ok(json) => self.payloads.push(json),
            Err(e) => {
                self.error.get_or_insert(e);
                self.payloads.push(String::new());
            }
        }
        self.steps.push(Step::from([("action", action)]));
        self
    }

    /// Calls the steps in parallel instead of in order.
    pub fn concurrent(mut self) -> Self {
        self.options.concurrent = true;
        self
    }

    /// Calls no step until this long after the message was created (whole seconds, rounded up).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = whole_seconds(delay);
        self
    }

    crate::__option_setters!();

    fn body(&self) -> Result<(TransBody<'_>, String)> {
        crate::check_gid(&self.gid)?;
        self.options.check()?;
        if let Some(e) = &self.error {
            return Err(e.clone_payload());
        }
        let custom_data = if self.delay > 0 {
            serde_json::to_string(&MsgCustomData { delay: self.delay })
                .map_err(|e| Error::payload("msg custom data", e))?
        } else {
            String::new()
        };
        let body = TransBody {
            steps: &self.steps,
            payloads: &self.payloads,
            query_prepared: &self.query_prepared,
            ..TransBody::bare(&self.gid, TransType::Msg, &self.options)
        };
        Ok((body, custom_data))
    }

    async fn send(&self, path: &str) -> Result<()> {
        let (body, custom_data) = self.body()?;
        let body = TransBody {
            custom_data: &custom_data,
            ..body
        };
        self.client.post_trans(path, &body).await
    }

    /// Stores the message as `prepared`, with `query_prepared` as the URL the server asks
    /// (GET, with the branch info in the query) whether the local work committed:
    /// 200 → submit the message, 409 → drop it, 425 → ask again later.
    ///
    /// An empty URL is refused: the server would read it as "committed" and submit the message
    /// even when the local work rolled back.
    pub async fn prepare(&mut self, query_prepared: impl Into<String>) -> Result<()> {
        self.query_prepared = crate::two_phase::query_url(query_prepared.into())?;
        self.send("prepare").await
    }

    /// Submits the message: the server calls every step until it succeeds.
    pub async fn submit(&self) -> Result<()> {
        self.send("submit").await
    }

    /// Drops a prepared message: it ends as `failed` and no step is called.
    pub async fn abort(&self) -> Result<()> {
        self.send("abort").await
    }

    /// Prepares the message, runs the local work `busi`, then submits or drops the message
    /// according to the outcome: see [`crate::do_and_submit`] for the rules. With a SQL
    /// database, `dtm_barrier`'s `do_and_submit_db` wraps the local work in the barrier so that
    /// the query can tell whether it committed.
    pub async fn do_and_submit<T, Fut>(
        &mut self,
        query_prepared: impl Into<String>,
        busi: Fut,
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        crate::do_and_submit(self, query_prepared.into(), busi).await
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
            .call_branch(
                &self.query_prepared,
                &info,
                None,
                &self.options.branch_headers,
            )
            .await
            .map(drop)
    }
}

impl DtmClient {
    /// Starts a two-phase message with the given global transaction id.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg::new(self.clone(), gid.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_query_url_is_refused_before_any_call() {
        // Nothing listens on port 9: a call would fail differently.
        let dtm = DtmClient::new("http://127.0.0.1:9/api").unwrap();
        let mut msg = dtm.msg("g").add("http://h/TransIn", &1);
        let err = msg.prepare("").await.unwrap_err();
        assert!(err.to_string().contains("query_prepared is empty"), "{err}");
        let err = msg.do_and_submit(" ", async { Ok(()) }).await.unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }

    #[test]
    fn body_has_delay_and_topic_steps() {
        let dtm = DtmClient::new("http://127.0.0.1:9/api").unwrap();
        let msg = dtm
            .msg("g")
            .add_topic("t", &serde_json::json!({"a": 1}))
            .delay(Duration::from_millis(1500))
            .concurrent();
        let (body, custom) = msg.body().unwrap();
        let body = TransBody {
            custom_data: &custom,
            ..body
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "gid": "g", "trans_type": "msg",
                "steps": [{"action": "topic://t"}], "payloads": ["{\"a\":1}"],
                "custom_data": "{\"delay\":2}", "protocol": "http", "concurrent": true
            })
        );
    }
}
