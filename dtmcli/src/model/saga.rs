//! Sagas: forward actions, each with a compensation.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Encode, GlobalCall, GlobalRequest, Step, Transport};
use crate::{Error, Result, TransOptions, TransType};

/// A saga under construction; [`Saga::submit`] hands it to the server. Made by the clients'
/// `saga(gid)`.
///
/// Payloads are JSON over HTTP and prost messages over gRPC (where [`Saga::add_json`] gives
/// an `http://` step its JSON body). An empty URL is never called and counts as success.
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
/// saga.submit().await?; // consumes the saga
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "a saga does nothing until you submit it"]
pub struct Saga<C> {
    client: C,
    gid: String,
    steps: Vec<Step>,
    payloads: Vec<Vec<u8>>,
    orders: BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
    options: TransOptions,
    /// The first payload that could not be encoded, reported by `submit`.
    error: Option<Error>,
}

#[derive(Serialize)]
struct SagaCustomData<'a> {
    orders: &'a BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
}

impl<C: Transport> Saga<C> {
    /// A saga `gid` through `client`; the clients' `saga(gid)` is the usual way.
    pub fn new(client: C, gid: impl Into<String>) -> Self {
        Saga {
            client,
            gid: gid.into(),
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
    /// `payload` as body (JSON over HTTP, the request message over gRPC).
    ///
    /// A payload that cannot be encoded is reported by [`Saga::submit`].
    pub fn add<P: ?Sized>(
        self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: &P,
    ) -> Self
    where
        C: Encode<P>,
    {
        let encoded = C::encode(payload, &format!("saga step {}", self.steps.len()));
        self.push(action.into(), compensate.into(), encoded)
    }

    /// Adds a step whose payload is `payload` as JSON, for `http://` branches of a gRPC saga
    /// (over HTTP it is the same as [`Saga::add`]).
    pub fn add_json<T: Serialize + ?Sized>(
        self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: &T,
    ) -> Self {
        let what = format!("saga step {}", self.steps.len());
        let encoded = serde_json::to_vec(payload).map_err(|e| Error::payload(what, e));
        self.push(action.into(), compensate.into(), encoded)
    }

    /// Adds a step with a payload that is already encoded.
    pub fn add_bytes(
        self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: impl Into<Vec<u8>>,
    ) -> Self {
        self.push(action.into(), compensate.into(), Ok(payload.into()))
    }

    fn push(mut self, action: String, compensate: String, payload: Result<Vec<u8>>) -> Self {
        let payload = payload.unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            Vec::new()
        });
        self.steps
            .push(Step::from([("action", action), ("compensate", compensate)]));
        self.payloads.push(payload);
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
    /// Over gRPC, `wait_result` needs the client's HTTP API (`DtmGrpcClientBuilder::http_api`).
    ///
    /// Submitting consumes the saga, as sending does a request. After a lost answer, read where
    /// the saga stands with the client's `outcome(gid)` (a `wait_result` submit already does);
    /// a saga built again with the same gid and steps may be submitted again: while it is
    /// still `submitted` the server runs its steps again (they must be idempotent), after it
    /// ended it answers FAILURE (with `wait_result`: how it ended). Unusable gids, headers,
    /// URLs and payloads are reported before any call.
    pub async fn submit(self) -> Result<()> {
        self.client.check_trans(&self.gid, &self.options)?;
        if let Some(e) = self.error {
            return Err(e);
        }
        // `options.concurrent` (set through `options()`) means the same as `concurrent()`: the
        // server reads saga concurrency from the custom data only.
        let concurrent = self.concurrent || self.options.concurrent;
        check_orders(&self.orders, self.steps.len(), concurrent)?;
        for url in self.steps.iter().flat_map(|s| s.values()) {
            self.client.check_branch_url(url)?;
        }
        let custom_data = if concurrent || !self.orders.is_empty() {
            serde_json::to_string(&SagaCustomData {
                orders: &self.orders,
                concurrent,
            })
            .map_err(|e| Error::payload("saga custom data", e))?
        } else {
            String::new()
        };
        let request = GlobalRequest {
            steps: &self.steps,
            payloads: &self.payloads,
            custom_data: &custom_data,
            ..GlobalRequest::new(
                GlobalCall::Submit,
                &self.gid,
                TransType::Saga,
                &self.options,
            )
        };
        super::call_global(&self.client, request).await
    }
}

/// Checks branch orders: every step exists; no step waits for itself, for a step that waits
/// for it (a cycle) or, in a sequential saga, for a later step. DTM would wait forever.
fn check_orders(
    orders: &BTreeMap<usize, Vec<usize>>,
    steps: usize,
    concurrent: bool,
) -> Result<()> {
    let invalid = |why: String| Err(Error::InvalidArgument(format!("branch order: {why}")));
    for (step, preceding) in orders {
        if let Some(bad) = std::iter::once(step)
            .chain(preceding)
            .find(|i| **i >= steps)
        {
            return invalid(format!("names step {bad}, but the saga has {steps} steps"));
        }
        if let Some(later) = preceding
            .iter()
            .find(|p| **p >= *step)
            .filter(|_| !concurrent)
        {
            return invalid(format!(
                "step {step} waits for step {later}, which a sequential saga runs after it"
            ));
        }
    }
    // Depth-first search for a cycle (a step waiting for itself is one).
    fn visit(
        step: usize,
        orders: &BTreeMap<usize, Vec<usize>>,
        state: &mut [u8], // 0 unseen, 1 on the path, 2 done
    ) -> Option<usize> {
        match state[step] {
            1 => return Some(step),
            2 => return None,
            _ => {}
        }
        state[step] = 1;
        for next in orders.get(&step).into_iter().flatten() {
            if let Some(cycle) = visit(*next, orders, state) {
                return Some(cycle);
            }
        }
        state[step] = 2;
        None
    }
    let mut state = vec![0u8; steps];
    for step in orders.keys() {
        if let Some(cycle) = visit(*step, orders, &mut state) {
            return invalid(format!("step {cycle} waits for itself through a cycle"));
        }
    }
    Ok(())
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

    #[test]
    fn orders_that_would_make_dtm_wait_forever_are_refused() {
        let orders = |pairs: &[(usize, &[usize])]| -> BTreeMap<usize, Vec<usize>> {
            pairs.iter().map(|(s, p)| (*s, p.to_vec())).collect()
        };
        assert!(check_orders(&orders(&[(1, &[0]), (2, &[0, 1])]), 3, true).is_ok());
        assert!(check_orders(&orders(&[(1, &[0])]), 2, false).is_ok());
        let err = |o, n, c| check_orders(&o, n, c).unwrap_err().to_string();
        assert!(err(orders(&[(1, &[0])]), 1, true).contains("names step 1"));
        assert!(err(orders(&[(1, &[1])]), 2, true).contains("cycle"));
        assert!(err(orders(&[(0, &[1]), (1, &[0])]), 2, true).contains("cycle"));
        assert!(err(orders(&[(0, &[1])]), 2, false).contains("sequential"));
    }
}
