//! Workflows over HTTP: the engine of [`crate::model::Workflows`] with the HTTP client, and
//! the axum endpoint DTM calls to resume them.

use crate::DtmClient;

/// The workflows of a service over HTTP; see [`crate::model::Workflows`].
pub type Workflows = crate::model::Workflows<DtmClient>;

/// The handle a workflow function receives over HTTP; see [`crate::model::Workflow`].
pub type Workflow = crate::model::Workflow<DtmClient>;

#[cfg(feature = "axum")]
mod route {
    use std::collections::HashMap;

    use axum::body::Bytes;
    use axum::extract::Query;
    use axum::response::{IntoResponse, Response};

    use crate::model::{Transport, Workflows};
    use crate::{DtmResult, Error};

    impl<C: Transport> Workflows<C> {
        /// The axum endpoint DTM calls to resume an unfinished workflow: mount it at the
        /// callback URL given to [`Workflows::new`]. DTM sends `?gid=<gid>&op=<name>` (and
        /// `trans_type=workflow&branch_id=00`) with the workflow's input as body (POST, or GET
        /// without input); the endpoint executes the workflow again, which replays what was
        /// recorded and goes on from there.
        ///
        /// It answers 200 when the workflow succeeded, 409 when it failed, 400 for a request
        /// without `gid` or `op` or with an unknown name, and 425 or 500 while it is unfinished
        /// (DTM ignores the answer: only the workflow's own submit ends it). The workflow runs
        /// on a task of its own, so DTM giving up on the call (after its `request_timeout`)
        /// does not cancel it.
        ///
        /// ```no_run
        /// # fn demo(workflows: dtmcli::Workflows) {
        /// let app: axum::Router = axum::Router::new()
        ///     .route("/api/workflow/resume", workflows.resume_route());
        /// # let _ = app; }
        /// ```
        pub fn resume_route<S>(&self) -> axum::routing::MethodRouter<S>
        where
            S: Clone + Send + Sync + 'static,
        {
            let workflows = self.clone();
            axum::routing::any(
                move |Query(query): Query<HashMap<String, String>>, body: Bytes| async move {
                    workflows.resume(&query, body.to_vec()).await
                },
            )
        }

        async fn resume(&self, query: &HashMap<String, String>, input: Vec<u8>) -> Response {
            let field = |name: &'static str| {
                query
                    .get(name)
                    .filter(|v| !v.is_empty())
                    .ok_or(Error::MissingField(name))
            };
            let (gid, name) = match (field("gid"), field("op")) {
                (Ok(gid), Ok(name)) => (gid, name),
                (Err(e), _) | (_, Err(e)) => return e.into_response(),
            };
            // On a task of its own: DTM gives up on the call after its request timeout, which
            // must not cancel the run halfway.
            let (workflows, name, gid) = (self.clone(), name.clone(), gid.clone());
            let run =
                tokio::spawn(async move { workflows.execute_bytes(&name, &gid, input).await });
            match run.await {
                Ok(Ok(_)) => DtmResult::Success.into_response(),
                Ok(Err(e)) => e.into_response(),
                Err(e) => {
                    Error::other(format!("the resumed workflow's task failed: {e}")).into_response()
                }
            }
        }
    }
}
