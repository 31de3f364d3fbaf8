//! Local XA transactions as workflow steps (DTM's `DoXa`).

use dtmcli::model::{Transport, Workflow};
use dtmcli::Op;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::xa::{XaDatabase, XaStep, Xid};
use crate::{Barrier, Error};

impl<DB: XaDatabase> Barrier<DB> {
    /// Runs `business` as the action of the workflow's current branch, inside a local XA
    /// transaction that stays prepared until the workflow ends: committed if it succeeds,
    /// rolled back if it fails (DTM's `DoXa`). Its result is recorded (as JSON), so a resumed
    /// workflow returns it without running it again.
    ///
    /// The XA id is `<gid>-<branch_id>`; the transaction holds the barrier row
    /// `(workflow, gid, branch_id, action, 01)` and the record of op `business`, written before
    /// it is prepared. A resumed workflow that finds `business` recorded without the action
    /// (the process died between the two) cannot know the transaction's fate and answers
    /// FAILURE: the workflow rolls back, which rolls the prepared transaction back too.
    /// The XA commit and rollback run beside any `on_commit` / `on_rollback` of the branch.
    /// MySQL/MariaDB and PostgreSQL (`max_prepared_transactions > 0`).
    ///
    /// ```no_run
    /// # async fn demo(barrier: dtm_barrier::Barrier<sqlx::Postgres>, wf: dtmcli::Workflow) -> dtmcli::Result<()> {
    /// wf.new_branch()?;
    /// barrier
    ///     .workflow_xa(&wf, async |conn| {
    ///         sqlx::query("update account set balance = balance - 30 where id = 1 and balance >= 30")
    ///             .execute(&mut *conn)
    ///             .await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn workflow_xa<C, T>(
        &self,
        wf: &Workflow<C>,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, Error>,
    ) -> dtmcli::Result<T>
    where
        C: Transport,
        T: Serialize + DeserializeOwned,
    {
        let info = wf.branch_info();
        if info.op != Op::Action || info.branch_id.is_empty() {
            return Err(dtmcli::Error::InvalidArgument(
                "workflow_xa is a branch's action: call new_branch() first, and not in a \
                 phase-2 callback"
                    .into(),
            ));
        }
        let outcome = wf
            .local_bytes(async |info| {
                if wf.is_recorded(Op::Business) {
                    return Err(dtmcli::Error::failure(format!(
                        "the local XA transaction of branch {} was interrupted after its \
                         business was recorded: not resumable, rolling back",
                        info.branch_id
                    )));
                }
                let xid = Xid::new(&info.gid, &info.branch_id).map_err(dtmcli::Error::from)?;
                let value = self
                    .run_local_xa(xid, &info, business, async || {
                        wf.record_success(Op::Business, b"").await
                    })
                    .await
                    .map_err(dtmcli::Error::from)?;
                serde_json::to_vec(&value)
                    .map_err(|e| dtmcli::Error::payload("a workflow XA step's result", e))
            })
            .await;
        // Registered after the action, beside any callback of the user's, so that a FAILURE
        // of it still rolls the transaction back (absent, or prepared by an interrupted run),
        // as DTM's client does.
        let finish = |step: XaStep| {
            let barrier = self.clone();
            move |wf: Workflow<C>| async move {
                let info = wf.branch_info();
                barrier
                    .finish_xa(&info.gid, &info.branch_id, step)
                    .await
                    .map_err(dtmcli::Error::from)
            }
        };
        wf.add_step_phase2(finish(XaStep::Commit), finish(XaStep::Rollback))?;
        let bytes = outcome?;
        serde_json::from_slice(&bytes).map_err(|e| {
            dtmcli::Error::InvalidArgument(format!(
                "the recorded result of a workflow XA step is not the JSON of the requested \
                 type: {e}"
            ))
        })
    }
}
