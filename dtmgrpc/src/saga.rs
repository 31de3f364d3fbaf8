//! Sagas over gRPC: forward actions, each with a compensation.

use std::collections::BTreeMap;

use dtmcli::{Error, Result, TransOptions, TransType};
use serde::Serialize;

use crate::trans::{bare_request, Step, Steps};
use crate::DtmGrpcClient;

/// A saga under construction; [`Saga::submit`] hands it to the server.
///
/// Step URLs are gRPC URLs (`host:port/package.Service/Method`), `http(s)://` URLs (the
/// server calls those over HTTP with the payload bytes as body, so give them a JSON payload
/// with [`Saga::add_json`]) or empty (never called; counts as success).
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
#[derive(Debug)]
#[must_use = "a saga does nothing until you submit it"]
pub struct Saga {
    client: DtmGrpcClient,
    gid: String,
    steps: Steps,
    orders: BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
    options: TransOptions,
}

#[derive(Serialize)]
struct SagaCustomData<'a> {
    orders: &'a BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
}

fn step(action: String, compensate: String) -> Step {
    Step::from([("action", action), ("compensate", compensate)])
}

impl Saga {
    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a step: the server calls `action`, and on rollback `compensate`, both with
    /// `payload` (protobuf-encoded) as the request message.
    pub fn add<M: prost::Message>(
        self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: &M,
    ) -> Self {
        self.add_bytes(action, compensate, payload.encode_to_vec())
    }

    /// Adds a step whose payload is `payload` as JSON, for `http://` branches in the saga.
    /// A payload that cannot be serialized is reported by [`Saga::submit`].
    pub fn add_json<T: Serialize + ?Sized>(
        mut self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: &T,
    ) -> Self {
        self.steps
            .push_json(step(action.into(), compensate.into()), payload, "saga");
        self
    }

    /// Adds a step with a payload that is already encoded.
    pub fn add_bytes(
        mut self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        self.steps
            .push(step(action.into(), compensate.into()), payload.into());
        self
    }

    /// Runs the steps in parallel instead of one after the other (see
    /// [`Saga::add_branch_order`] to constrain the order).
    pub fn concurrent(mut self) -> Self {
        self.concurrent = true;
        self
    }

    /// In a concurrent saga, lets step `step` (0-based, in the order of `add`) start only after
    /// the actions of the `preceding` steps succeeded; on rollback it is compensated before them.
    pub fn add_branch_order(
        mut self,
        step: usize,
        preceding: impl IntoIterator<Item = usize>,
    ) -> Self {
        self.orders.entry(step).or_default().extend(preceding);
        self
    }

    dtmcli::__option_setters!();

    /// How many times DTM retries a failing action at once (an error or ONGOING, not
    /// FAILURE) before it rolls the saga back; `0`, the default, retries on its cron until the
    /// action succeeds or fails.
    pub fn retry_limit(mut self, limit: u64) -> Self {
        self.options.retry_limit = limit;
        self
    }

    /// Submits the saga. Without `wait_result` this returns once the server stored it.
    ///
    /// With `wait_result` (which needs [`DtmGrpcClientBuilder::http_api`]), it returns once
    /// the server processed it: `Ok(())` if every step succeeded, [`Error::Failure`] if it
    /// rolled back, [`Error::Unfinished`] if DTM still retries a branch (see
    /// [`dtmcli::Saga::submit`]).
    ///
    /// [`DtmGrpcClientBuilder::http_api`]: crate::DtmGrpcClientBuilder::http_api
    ///
    /// Malformed gRPC step URLs and unserializable payloads are reported before any call.
    pub async fn submit(&self) -> Result<()> {
        crate::trans::check_gid(&self.gid)?;
        self.client.check_options(&self.options)?;
        let steps = self.steps.check()?;
        let count = self.steps.steps.len();
        for (step, preceding) in &self.orders {
            if let Some(bad) = std::iter::once(step)
                .chain(preceding)
                .find(|i| **i >= count)
            {
                return Err(Error::InvalidArgument(format!(
                    "branch order names step {bad}, but the saga has {count} steps"
                )));
            }
        }
        // `options.concurrent` (set through `options()`) means the same as `concurrent()`.
        let concurrent = self.concurrent || self.options.concurrent;
        let customed_data = if concurrent || !self.orders.is_empty() {
            serde_json::to_string(&SagaCustomData {
                orders: &self.orders,
                concurrent,
            })
            .map_err(Error::other)?
        } else {
            String::new()
        };
        let mut req = bare_request(&self.gid, TransType::Saga, &self.options);
        req.steps = steps;
        req.bin_payloads = self.steps.payloads.clone();
        req.customed_data = customed_data;
        self.client.submit(req).await
    }
}

impl DtmGrpcClient {
    /// Starts a saga with the given global transaction id.
    pub fn saga(&self, gid: impl Into<String>) -> Saga {
        Saga {
            client: self.clone(),
            gid: gid.into(),
            steps: Steps::default(),
            orders: BTreeMap::new(),
            concurrent: false,
            options: TransOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_json_objects_keyed_by_step_index() {
        let orders = BTreeMap::from([(1usize, vec![0usize])]);
        let json = serde_json::to_string(&SagaCustomData {
            orders: &orders,
            concurrent: true,
        })
        .unwrap();
        assert_eq!(json, r#"{"orders":{"1":[0]},"concurrent":true}"#);
    }

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
