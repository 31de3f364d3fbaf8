//! Sagas: forward actions, each with a compensation.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::trans::{payload_json, Step, TransBody};
use crate::{DtmClient, Error, Result, TransOptions, TransType};

/// A saga under construction; [`Saga::submit`] hands it to the server.
///
/// ```no_run
/// # async fn demo(dtm: dtmcli::DtmClient) -> dtmcli::Result<()> {
/// # #[derive(serde::Serialize)] struct Transfer { amount: i64 }
/// let busi = "http://localhost:8081/api/busi";
/// let req = Transfer { amount: 30 };
/// let saga = dtm
///     .saga(dtm.new_gid().await?)
///     .add(format!("{busi}/TransOut"), format!("{busi}/TransOutCompensate"), &req)
///     .add(format!("{busi}/TransIn"), format!("{busi}/TransInCompensate"), &req)
///     .retry_interval(std::time::Duration::from_secs(5));
/// saga.submit().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a saga does nothing until you submit it"]
pub struct Saga {
    client: DtmClient,
    gid: String,
    steps: Vec<Step>,
    payloads: Vec<String>,
    orders: BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
    options: TransOptions,
    error: Option<Error>,
}

#[derive(Serialize)]
struct SagaCustomData<'a> {
    orders: &'a BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
}

impl Saga {
    pub(crate) fn new(client: DtmClient, gid: String) -> Self {
        Saga {
            client,
            gid,
            steps: Vec::new(),
            payloads: Vec::new(),
            orders: BTreeMap::new(),
            concurrent: false,
            options: TransOptions::default(),
            error: None,
        }
    }

    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Adds a step: the server calls `action`, and on rollback `compensate`, both with
    /// `payload` as JSON body. An empty URL is never called and counts as success.
    ///
    /// A payload that cannot be serialized is reported by [`Saga::submit`].
    pub fn add<T: Serialize + ?Sized>(
        mut self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: &T,
    ) -> Self {
        let index = self.steps.len();
        match payload_json(payload, || format!("saga step {index}")) {
            Ok(json) => self.payloads.push(json),
            Err(e) => {
                self.error.get_or_insert(e);
                self.payloads.push(String::new());
            }
        }
        self.steps.push(Step::from([
            ("action", action.into()),
            ("compensate", compensate.into()),
        ]));
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

    crate::__option_setters!();

    /// How many times DTM retries a failing action at once (an error or ONGOING, not
    /// FAILURE) before it rolls the saga back; `0`, the default, retries on its cron until the
    /// action succeeds or fails.
    pub fn retry_limit(mut self, limit: u64) -> Self {
        self.options.retry_limit = limit;
        self
    }

    /// Submits the saga. Without `wait_result` this returns once the server stored it.
    ///
    /// With `wait_result`, it returns once the server processed it, and the result says
    /// where it stands, as DTM stored it:
    /// - `Ok(())`: every step succeeded (final);
    /// - [`Error::Failure`]: it rolled back, with the stored rollback reason (final);
    /// - [`Error::Unfinished`]: a branch answered ONGOING or an error, or could not be
    ///   reached; DTM keeps retrying it, and the saga ends by itself later.
    ///
    /// Submitting again while the saga is still `submitted` makes the server run its steps
    /// again (they must be idempotent); after it ended the server answers FAILURE.
    pub async fn submit(&self) -> Result<()> {
        crate::check_gid(&self.gid)?;
        self.options.check()?;
        if let Some(e) = &self.error {
            return Err(e.clone_payload());
        }
        for (step, preceding) in &self.orders {
            if let Some(bad) = std::iter::once(step)
                .chain(preceding)
                .find(|i| **i >= self.steps.len())
            {
                return Err(Error::InvalidArgument(format!(
                    "branch order names step {bad}, but the saga has {} steps",
                    self.steps.len()
                )));
            }
        }
        // `options.concurrent` (set through `options()`) means the same as `concurrent()`: the
        // server reads saga concurrency from `custom_data` only.
        let concurrent = self.concurrent || self.options.concurrent;
        let custom_data = if concurrent || !self.orders.is_empty() {
            serde_json::to_string(&SagaCustomData {
                orders: &self.orders,
                concurrent,
            })
            .map_err(|e| Error::payload("saga custom data", e))?
        } else {
            String::new()
        };
        let body = TransBody {
            steps: &self.steps,
            payloads: &self.payloads,
            custom_data: &custom_data,
            ..TransBody::bare(&self.gid, TransType::Saga, &self.options)
        };
        self.client.post_trans("submit", &body).await
    }
}

impl DtmClient {
    /// Starts a saga with the given global transaction id.
    pub fn saga(&self, gid: impl Into<String>) -> Saga {
        Saga::new(self.clone(), gid.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_json_objects_keyed_by_step_index() {
        let orders = BTreeMap::from([(1usize, vec![0usize]), (2, vec![0, 1])]);
        let json = serde_json::to_string(&SagaCustomData {
            orders: &orders,
            concurrent: true,
        })
        .unwrap();
        assert_eq!(json, r#"{"orders":{"1":[0],"2":[0,1]},"concurrent":true}"#);
    }

    #[tokio::test]
    async fn bad_orders_and_payloads_fail_before_any_call() {
        let dtm = DtmClient::new("http://127.0.0.1:9/api").unwrap();
        let saga = dtm.saga("g").add("a", "c", &1).add_branch_order(1, [0]);
        let err = saga.submit().await.unwrap_err();
        assert!(err.to_string().contains("names step 1"), "{err}");

        let bad = BTreeMap::from([(vec![1u8], 1)]); // non-string map keys cannot be JSON
        let saga = dtm.saga("g").add("a", "c", &bad);
        let err = saga.submit().await.unwrap_err();
        assert!(matches!(err, Error::Payload { .. }), "{err:?}");
        assert!(err.to_string().contains("saga step 0"));
    }
}
