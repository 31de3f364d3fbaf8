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
    /// let msg = dtm.msg(dtm.new_gid().await?)
    ///     .add(format!("{busi}/TransIn"), &serde_json::json!({"amount": amount}));
    /// barrier.do_and_submit(msg, format!("{busi}/QueryPrepared"), async |conn| {
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
        msg: M,
        query_prepared: impl Into<String>,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, Error>,
    ) -> Result<T, Error>
    where
        M: TwoPhaseMsg,
    {
        let branch = self.branch(msg_branch_info(msg.msg_gid()));
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

impl<DB: BarrierDatabase> Barrier<DB> {
    /// The begin/commit form of [`Barrier::do_and_submit`], for callers that keep control of
    /// the local transaction: prepares the message, begins the local transaction with the
    /// message's barrier row in it, and returns it. Write the local work through it (it
    /// derefs to the connection: `.execute(&mut *tx)`), then [`MsgTx::commit`] (commits and
    /// submits the message) or [`MsgTx::rollback`] (rolls back and drops the message).
    ///
    /// Dropping it without either rolls the local transaction back and leaves the message
    /// prepared: DTM's query then finds nothing committed and drops the message. If DTM's
    /// query already ran (the message timed out), this fails with
    /// [`dtmcli::Error::Duplicated`] and the message is dropped.
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient, barrier: dtm_barrier::Barrier<sqlx::Sqlite>) -> Result<(), dtm_barrier::Error> {
    /// let busi = "http://localhost:8081/api/busi";
    /// let msg = dtm.msg(dtm.new_gid().await?)
    ///     .add(format!("{busi}/TransIn"), &serde_json::json!({"amount": 30}));
    /// let mut tx = barrier.begin_msg(msg, format!("{busi}/QueryPrepared")).await?;
    /// let done = sqlx::query("update account set balance = balance - 30 where id = 1 and balance >= 30")
    ///     .execute(&mut *tx)
    ///     .await?;
    /// if done.rows_affected() == 1 {
    ///     tx.commit().await?; // the local work and the message go together
    /// } else {
    ///     tx.rollback().await?; // neither happens
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn begin_msg<M>(
        &self,
        mut msg: M,
        query_prepared: impl Into<String>,
    ) -> Result<MsgTx<DB, M>, Error>
    where
        M: TwoPhaseMsg,
    {
        msg.prepare_msg(query_prepared.into()).await?;
        let info = msg_branch_info(msg.msg_gid());
        match self.begin_checked(&info, "01").await {
            // With op `msg` the barrier never skips: it proceeds or refuses with Duplicated.
            Ok((tx, decision)) if decision.proceeds() => Ok(MsgTx { tx, msg }),
            Ok(_) => Err(finish_failed(msg, dtmcli::Error::Duplicated.into()).await),
            Err(e) => Err(finish_failed(msg, e).await),
        }
    }
}

/// The local transaction of a prepared two-phase message, from [`Barrier::begin_msg`]; it
/// derefs to the transaction's connection.
#[must_use = "dropping it rolls the local work back, and DTM then drops the message"]
pub struct MsgTx<DB: BarrierDatabase, M> {
    tx: sqlx::Transaction<'static, DB>,
    msg: M,
}

impl<DB: BarrierDatabase, M> std::fmt::Debug for MsgTx<DB, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgTx").finish_non_exhaustive()
    }
}

impl<DB: BarrierDatabase, M> std::ops::Deref for MsgTx<DB, M> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: BarrierDatabase, M> std::ops::DerefMut for MsgTx<DB, M> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

impl<DB: BarrierDatabase, M: TwoPhaseMsg> MsgTx<DB, M> {
    /// Commits the local transaction, then submits the message. If the commit's outcome is
    /// unknown (its error), the message's query URL decides, as in
    /// [`Barrier::do_and_submit`].
    pub async fn commit(self) -> Result<(), Error> {
        let MsgTx { tx, msg } = self;
        match tx.commit().await {
            Ok(()) => Ok(dtmcli::finish_msg(msg, Ok(())).await?),
            Err(e) => Err(finish_failed(msg, e.into()).await),
        }
    }

    /// Rolls the local transaction back and drops the message.
    pub async fn rollback(self) -> Result<(), Error> {
        let MsgTx { tx, msg } = self;
        if let Err(e) = tx.rollback().await {
            // The connection drops the transaction; the message's query will find nothing.
            tracing::warn!(error = %e, "rollback of a message's local transaction failed");
        }
        Ok(msg.abort_msg().await?)
    }
}

/// The branch info of a message's local transaction: branch `00`, op `msg`.
pub(crate) fn msg_branch_info(gid: &str) -> BranchInfo {
    BranchInfo {
        gid: gid.to_owned(),
        trans_type: TransType::Msg,
        branch_id: QUERY_PREPARED_BRANCH_ID.to_owned(),
        op: Op::Msg,
        dtm: None,
        phase2_url: None,
    }
}

/// Settles a message whose local work failed with `error` (by the query, unless it is a
/// FAILURE) and returns the error.
async fn finish_failed<M: TwoPhaseMsg>(msg: M, error: Error) -> Error {
    let outcome: Result<(), dtmcli::Error> = Err(error.into());
    // `finish_msg` returns the outcome's error when there is one.
    dtmcli::finish_msg(msg, outcome)
        .await
        .err()
        .map_or(Error::Dtm(dtmcli::Error::Duplicated), Error::from)
}

/// The message query an incoming request must be: `op=msg` on branch `00`.
#[cfg(any(feature = "axum", feature = "tonic"))]
fn check_msg_query(info: &BranchInfo) -> Result<(), Error> {
    let field = if info.op != Op::Msg {
        "op"
    } else if info.branch_id != QUERY_PREPARED_BRANCH_ID {
        "branch_id"
    } else {
        return Ok(());
    };
    Err(Error::Dtm(dtmcli::Error::InvalidField {
        field,
        reason: format!(
            "is not that of DTM's query of a prepared message (op=msg, branch {QUERY_PREPARED_BRANCH_ID}), which this route answers"
        ),
    }))
}

#[cfg(feature = "axum")]
impl<DB: BarrierDatabase> Barrier<DB> {
    /// A ready-made route for a two-phase message's query URL, the `query_prepared` of
    /// [`Barrier::do_and_submit`]: it answers DTM's query with [`Barrier::query_prepared`]
    /// (200 if the local transaction committed, 409 if it did not and now cannot, 500 on a
    /// database error, which DTM retries; 400 for a request that is not a message query).
    ///
    /// Mount it outside the [`BarrierLayer`](crate::BarrierLayer)'s router or inside it:
    /// the layer lets message queries through.
    ///
    /// ```no_run
    /// # async fn demo(pool: sqlx::SqlitePool) {
    /// use axum::Router;
    /// let barrier = dtm_barrier::Barrier::new(pool);
    /// let app: Router = Router::new()
    ///     .route("/api/busi/QueryPrepared", barrier.query_prepared_route());
    /// # }
    /// ```
    pub fn query_prepared_route<S>(&self) -> axum::routing::MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let barrier = self.clone();
        axum::routing::any(move |info: BranchInfo| {
            let barrier = barrier.clone();
            async move {
                check_msg_query(&info)?;
                barrier.query_prepared(&info.gid).await
            }
        })
    }
}

#[cfg(feature = "tonic")]
impl<DB: BarrierDatabase> Barrier<DB> {
    /// Answers DTM's query of a prepared message in a tonic method, the gRPC counterpart of
    /// [`Barrier::query_prepared_route`]: OK if the local transaction committed, `Aborted` if
    /// it did not and now cannot, `Internal` on a database error (DTM retries),
    /// `InvalidArgument` for a request that is not a message query. The method's response
    /// message is its default (`()` or an empty message).
    ///
    /// ```no_run
    /// # async fn demo(barrier: dtm_barrier::Barrier<sqlx::Sqlite>, request: tonic::Request<()>)
    /// #     -> Result<tonic::Response<()>, tonic::Status> {
    /// // inside `async fn query_prepared(&self, request: Request<Req>) -> Result<Response<()>, Status>`
    /// barrier.query_prepared_grpc(&request).await
    /// # }
    /// ```
    pub async fn query_prepared_grpc<T, R: Default>(
        &self,
        request: &tonic::Request<T>,
    ) -> Result<tonic::Response<R>, tonic::Status> {
        let info = crate::layer::branch_info_from_metadata(request.metadata().as_ref())
            .map_err(tonic::Status::from)?;
        check_msg_query(&info)?;
        self.query_prepared(&info.gid)
            .await?
            .into_grpc()
            .map(|()| tonic::Response::new(R::default()))
    }
}
