//! Where a global transaction stands, read from the status DTM stored.

use crate::{GlobalStatus, GlobalTrans};

/// Where a global transaction stands, decided from the status DTM stored for it, never from
/// the text of an answer.
///
/// A `wait_result` submit that does not succeed answers FAILURE both when the transaction
/// rolled back and when DTM is still retrying a branch (it answered ONGOING or an error, or
/// was unreachable); only the stored status tells them apart. Read it with
/// [`DtmClient::outcome`](crate::DtmClient::outcome), or wait for the end with
/// [`DtmClient::wait_final`](crate::DtmClient::wait_final).
///
/// ```no_run
/// # async fn demo(dtm: dtmcli::DtmClient, saga: dtmcli::Saga) -> dtmcli::Result<()> {
/// use dtmcli::Outcome;
/// let gid = saga.gid().to_owned();
/// if let Err(e) = saga.wait_result(true).submit().await {
///     if !e.is_failure() {
///         return Err(e); // DTM was not reached, or refused the saga
///     }
/// }
/// match dtm.outcome(&gid).await? {
///     Outcome::Succeeded => { /* every step done: final */ }
///     Outcome::Failed { reason } => { /* rolled back: final */ let _ = reason; }
///     Outcome::Running { .. } => { /* not finished: DTM retries until it ends */ }
///     _ => {}
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
#[must_use = "a transaction may have failed or still be running"]
pub enum Outcome {
    /// `succeed`: every branch's forward operation is done. Final.
    Succeeded,
    /// `failed`: rolled back (compensated, cancelled or aborted). Final.
    Failed {
        /// The rollback reason DTM stored (empty if it stored none).
        reason: String,
    },
    /// Not finished: DTM keeps processing it and retrying failing branches until it ends,
    /// as succeeded or failed.
    Running {
        /// The stored status: `prepared`, `submitted` or `aborting`.
        status: GlobalStatus,
    },
}

impl Outcome {
    /// The outcome a stored transaction stands at.
    pub fn of(trans: &GlobalTrans) -> Self {
        match trans.status {
            GlobalStatus::Succeed => Outcome::Succeeded,
            GlobalStatus::Failed => Outcome::Failed {
                reason: trans.rollback_reason.clone(),
            },
            status => Outcome::Running { status },
        }
    }

    /// Whether the transaction has ended (succeeded or failed): nothing will change any more.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Running { .. })
    }
}

#[cfg(feature = "http")]
impl crate::DtmClient {
    /// Where transaction `gid` stands now. An unknown gid is an
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument).
    pub async fn outcome(&self, gid: &str) -> crate::Result<Outcome> {
        let q = self.query(gid).await?;
        let trans = q.transaction.ok_or_else(|| {
            crate::Error::InvalidArgument(format!("DTM has no transaction {gid:?}"))
        })?;
        Ok(Outcome::of(&trans))
    }

    /// Waits until transaction `gid` ends, polling its stored status (every 100 ms at first,
    /// then less often), for at most `timeout`; then returns the outcome reached, which is
    /// [`Outcome::Running`] if it has not ended yet.
    pub async fn wait_final(
        &self,
        gid: &str,
        timeout: std::time::Duration,
    ) -> crate::Result<Outcome> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            let outcome = self.outcome(gid).await?;
            let now = tokio::time::Instant::now();
            if outcome.is_final() || now >= deadline {
                return Ok(outcome);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trans(status: GlobalStatus, reason: &str) -> GlobalTrans {
        serde_json::from_value(serde_json::json!({
            "gid": "g", "trans_type": "saga", "status": status.as_str(),
            "rollback_reason": reason,
        }))
        .unwrap()
    }

    #[test]
    fn decided_by_the_stored_status() {
        assert_eq!(
            Outcome::of(&trans(GlobalStatus::Succeed, "")),
            Outcome::Succeeded
        );
        assert_eq!(
            Outcome::of(&trans(GlobalStatus::Failed, "no money")),
            Outcome::Failed {
                reason: "no money".into()
            }
        );
        for status in [
            GlobalStatus::Prepared,
            GlobalStatus::Submitted,
            GlobalStatus::Aborting,
        ] {
            let outcome = Outcome::of(&trans(status, "branch said FAILURE"));
            assert_eq!(outcome, Outcome::Running { status });
            assert!(!outcome.is_final());
        }
    }
}
