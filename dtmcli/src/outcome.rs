//! Where a global transaction stands, read from the status DTM stored.

use crate::{BranchTrans, Error, GlobalStatus, GlobalTrans, Op, TransQuery};

/// Where a global transaction stands, decided from the status DTM stored for it, never from
/// the text of an answer.
///
/// DTM answers a `wait_result` submit that did not succeed with FAILURE both when the
/// transaction rolled back and when it is still retrying a branch; the SDK reads the stored
/// status to tell them apart ([`Error::Failure`] vs [`Error::Unfinished`]). Later, read where
/// a transaction stands with [`DtmClient::outcome`](crate::DtmClient::outcome), or wait for
/// its end with [`DtmClient::wait_final`](crate::DtmClient::wait_final).
///
/// ```no_run
/// # async fn demo(dtm: dtmcli::DtmClient, gid: String) -> dtmcli::Result<()> {
/// use dtmcli::Outcome;
/// // `gid` was submitted earlier, for example by a request that timed out.
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

/// Decides a `wait_result` submit that DTM did not answer with SUCCESS from the transaction
/// as DTM stored it afterwards (`read`): see [`settle`]. When it could not be read, the
/// outcome is unknown ([`Error::OutcomeUnknown`]), never DTM's ambiguous answer.
pub(crate) fn settle_wait_result_read(
    gid: &str,
    answer: Error,
    read: crate::Result<TransQuery>,
) -> crate::Result<()> {
    match read {
        Ok(stored) => settle(answer, &stored),
        Err(cause) => {
            tracing::warn!(gid, error = %cause, "cannot read the transaction's status after a wait_result submit");
            Err(Error::OutcomeUnknown {
                gid: gid.to_owned(),
                answer: answer_text(&answer),
                cause: cause.to_string(),
            })
        }
    }
}

/// `Ok` if the stored transaction succeeded after all, [`Error::Failure`] with the stored
/// rollback reason if it rolled back, [`Error::Unfinished`] if DTM still retries it. Without a
/// stored transaction the answer stands.
fn settle(answer: Error, stored: &TransQuery) -> crate::Result<()> {
    let Some(trans) = &stored.transaction else {
        return Err(answer);
    };
    match Outcome::of(trans) {
        Outcome::Succeeded => Ok(()),
        Outcome::Failed { reason } => Err(Error::Failure {
            message: if reason.is_empty() {
                answer_text(&answer)
            } else {
                reason
            },
        }),
        Outcome::Running { status } => Err(Error::Unfinished {
            gid: trans.gid.clone(),
            status,
            pending: pending_urls(status, &stored.branches),
            answer: answer_text(&answer),
        }),
    }
}

/// What DTM said, without the `FAILURE: ` / `ONGOING: ` prefix of the variants' texts.
fn answer_text(answer: &Error) -> String {
    match answer {
        Error::Failure { message } | Error::Ongoing { message } => message.clone(),
        other => other.to_string(),
    }
}

/// The URLs of the branches DTM has not finished in the direction `status` goes: forward
/// (action, confirm, commit) while `submitted` or `prepared`, backward (compensate, cancel,
/// rollback) while `aborting`; a saga compensation whose action never ran is not pending.
fn pending_urls(status: GlobalStatus, branches: &[BranchTrans]) -> Vec<String> {
    let backward = status == GlobalStatus::Aborting;
    let never_ran = |b: &BranchTrans| {
        branches.iter().any(|a| {
            a.op == Op::Action
                && a.branch_id == b.branch_id
                && a.status == crate::BranchStatus::Prepared
        })
    };
    branches
        .iter()
        .filter(|b| b.status == crate::BranchStatus::Prepared)
        .filter(|b| match b.op {
            Op::Action | Op::Confirm | Op::Commit => !backward,
            Op::Compensate => backward && !never_ran(b),
            Op::Cancel | Op::Rollback => backward,
            _ => false,
        })
        .map(|b| b.url.clone())
        .filter(|url| !url.is_empty())
        .collect()
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

    fn stored(status: GlobalStatus, branches: &[(&str, &str, &str)]) -> TransQuery {
        let branches: Vec<_> = branches
            .iter()
            .map(|(id, op, st)| {
                serde_json::json!({"gid": "g", "branch_id": id, "op": op, "status": st,
                    "url": format!("http://b/{op}{id}")})
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "transaction": {"gid": "g", "trans_type": "saga", "status": status.as_str(),
                "rollback_reason": if status == GlobalStatus::Failed { "url:x return failed" } else { "" }},
            "branches": branches,
        }))
        .unwrap()
    }

    #[test]
    fn a_wait_result_answer_is_settled_by_the_stored_status() {
        let answer = || Error::failure("wait result not return success");
        assert!(settle(answer(), &stored(GlobalStatus::Succeed, &[])).is_ok());

        let err = settle(answer(), &stored(GlobalStatus::Failed, &[])).unwrap_err();
        assert_eq!(err.to_string(), "FAILURE: url:x return failed");

        // Submitted saga: step 01 done, 02 failing, 03 not tried.
        let q = stored(
            GlobalStatus::Submitted,
            &[
                ("01", "compensate", "prepared"),
                ("01", "action", "succeed"),
                ("02", "compensate", "prepared"),
                ("02", "action", "prepared"),
                ("03", "compensate", "prepared"),
                ("03", "action", "prepared"),
            ],
        );
        let err = settle(answer(), &q).unwrap_err();
        match &err {
            Error::Unfinished {
                status, pending, ..
            } => {
                assert_eq!(*status, GlobalStatus::Submitted);
                assert_eq!(pending, &["http://b/action02", "http://b/action03"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "transaction g is not finished: still submitted, waiting on http://b/action02, \
             http://b/action03; DTM answered: wait result not return success"
        );

        // Aborting saga: only the compensations of steps whose action ran are pending.
        let q = stored(
            GlobalStatus::Aborting,
            &[
                ("01", "compensate", "prepared"),
                ("01", "action", "succeed"),
                ("02", "compensate", "prepared"),
                ("02", "action", "failed"),
                ("03", "compensate", "prepared"),
                ("03", "action", "prepared"),
            ],
        );
        match settle(answer(), &q).unwrap_err() {
            Error::Unfinished { pending, .. } => {
                assert_eq!(pending, ["http://b/compensate01", "http://b/compensate02"]);
            }
            other => panic!("{other:?}"),
        }

        // The status cannot be read: the outcome is unknown, not DTM's ambiguous FAILURE.
        let err = settle_wait_result_read(
            "g",
            answer(),
            Err(Error::InvalidArgument("unreachable".into())),
        )
        .unwrap_err();
        assert!(err.is_outcome_unknown() && !err.is_failure(), "{err:?}");
        assert!(
            err.to_string()
                .contains("outcome of transaction g is unknown"),
            "{err}"
        );

        // Nothing stored: DTM's answer stands.
        let none: TransQuery =
            serde_json::from_str(r#"{"transaction":null,"branches":null}"#).unwrap();
        assert!(settle(answer(), &none).unwrap_err().is_failure());
    }
}
