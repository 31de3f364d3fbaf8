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
