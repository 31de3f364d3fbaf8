//! Two-phase messages whose local work is a SQL transaction guarded by the barrier.

use dtmcli::{BranchInfo, Op, TransType, TwoPhaseMsg, QUERY_PREPARED_BRANCH_ID};

use crate::{Barrier, BarrierDatabase, Error};

impl<DB: BarrierDatabase> Barrier<DB> {
    /// DoAndSubmit for a two-phase message (the HTTP [`dtmcli::Msg`] or the gRPC
    /// `dtmgrpc::Msg`, any [`TwoPhaseMsg`]): prepares the message, runs `business` in a local
    /// transaction guarded by the barrier (`trans_type=msg`, branch `00`, op `msg`), then
    /// submits the message — or drops it when `business` answered FAILURE or the query shows
    /// the local transaction did not commit ([`dtmcli::do_and_submit`] has the rules).
    ///
    /// `business` is an async closure over the transaction's connection, like
    /// [`BranchBarrier::call`](crate::BranchBarrier::call)'s: it may borrow from the caller,
    /// and `?` works on sqlx calls. Return `Err(dtmcli::Error::failure(..).into())` for a
    /// business failure.
    ///
    /// Answer the server's query at `query_prepared` with [`Barrier::query_prepared`]. If the
    /// query ran first (the server timed the message out), the local transaction is refused
    /// with [`dtmcli::Error::Duplicated`] and the message ends as `failed`.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient, barrier: dtm_barrier::Barrier<sqlx::Sqlite>) -> Result<(), dtm_barrier::Error> {
    /// let busi = "http://localhost:8081/api/busi";
    /// let amount = 30;
    /// let mut msg = dtm.msg(dtm.new_gid().await?)
    ///     .add(format!("{busi}/TransIn"), &serde_json::json!({"amount": amount}));
    /// barrier.do_and_submit(&mut msg, format!("{busi}/QueryPrepared"), async |conn| {
    ///     sqlx::query("update account set balance = balance - ? where id = 1")
    ///         .bind(amount) // borrowed from the caller
    ///         .execute(&mut *conn)
    ///         .await?;
    ///     Ok(())
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn do_and_submit<M, T>(
        &self,
        msg: &mut M,
        query_prepared: impl Into<String>,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, Error>,
    ) -> Result<T, Error>
    where
        M: TwoPhaseMsg,
    {
        let branch = self.branch(BranchInfo {
            gid: msg.msg_gid().to_owned(),
            trans_type: TransType::Msg,
            branch_id: QUERY_PREPARED_BRANCH_ID.to_owned(),
            op: Op::Msg,
            dtm: None,
            phase2_url: None,
        });
        let local = async move {
            // With op `msg` the barrier never skips: it proceeds or refuses with Duplicated.
            branch
                .call(business)
                .await
                .map_err(dtmcli::Error::from)?
                .ok_or(dtmcli::Error::Duplicated)
        };
        Ok(dtmcli::do_and_submit(msg, query_prepared.into(), local).await?)
    }
}
