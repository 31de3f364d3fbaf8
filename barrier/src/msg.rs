//! Two-phase messages whose local work is a SQL transaction guarded by the barrier.

use std::future::Future;

use dtmcli::{BranchInfo, Op, TransType, TwoPhaseMsg, QUERY_PREPARED_BRANCH_ID};
use sqlx::Transaction;

use crate::call::Business;
use crate::{Barrier, BarrierDatabase, Error};

/// `do_and_submit_db` for two-phase messages: the HTTP [`dtmcli::Msg`] and the gRPC
/// `dtmgrpc::Msg` (any [`TwoPhaseMsg`]).
pub trait MsgBarrierExt {
    /// Prepares the message, runs `business` in a local transaction guarded by the barrier
    /// (`trans_type=msg`, branch `00`, op `msg`), then submits the message — or drops it when
    /// `business` answered FAILURE or the query shows the local transaction did not commit
    /// ([`dtmcli::do_and_submit`] has the rules).
    ///
    /// Answer the server's query at `query_prepared` with [`Barrier::query_prepared`]. If the
    /// query ran first (the server timed the message out), the local transaction is refused
    /// with [`dtmcli::Error::Duplicated`] and the message ends as `failed`.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient, barrier: dtm_barrier::Barrier<sqlx::Sqlite>) -> dtmcli::Result<()> {
    /// use dtm_barrier::MsgBarrierExt;
    /// let busi = "http://localhost:8081/api/busi";
    /// let mut msg = dtm.msg(dtm.new_gid().await?)
    ///     .add(format!("{busi}/TransIn"), &serde_json::json!({"amount": 30}));
    /// msg.do_and_submit_db(format!("{busi}/QueryPrepared"), &barrier, |tx| Box::pin(async move {
    ///     sqlx::query("update account set balance = balance - 30 where id = 1")
    ///         .execute(&mut **tx).await.map_err(dtmcli::Error::other)?;
    ///     Ok(())
    /// })).await?;
    /// # Ok(()) }
    /// ```
    fn do_and_submit_db<DB, T, F>(
        &mut self,
        query_prepared: impl Into<String> + Send,
        barrier: &Barrier<DB>,
        business: F,
    ) -> impl Future<Output = dtmcli::Result<T>> + Send
    where
        DB: BarrierDatabase,
        T: Send,
        F: for<'c> FnOnce(&'c mut Transaction<'static, DB>) -> Business<'c, T, dtmcli::Error>
            + Send;
}

impl<M: TwoPhaseMsg> MsgBarrierExt for M {
    async fn do_and_submit_db<DB, T, F>(
        &mut self,
        query_prepared: impl Into<String> + Send,
        barrier: &Barrier<DB>,
        business: F,
    ) -> dtmcli::Result<T>
    where
        DB: BarrierDatabase,
        T: Send,
        F: for<'c> FnOnce(&'c mut Transaction<'static, DB>) -> Business<'c, T, dtmcli::Error>
            + Send,
    {
        let branch = barrier.branch(BranchInfo {
            gid: self.msg_gid().to_owned(),
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
                .await?
                .ok_or_else(|| Error::Dtm(dtmcli::Error::Duplicated).into())
        };
        dtmcli::do_and_submit(self, query_prepared.into(), local).await
    }
}
