//! Workflows over gRPC: the engine of [`dtmcli::model::Workflows`] with the gRPC client, the
//! recorded gRPC call ([`WorkflowGrpc::grpc`]) and the `workflow.Workflow/Execute` service
//! DTM calls to resume them ([`workflow_server`]).

use std::future::Future;

use dtmcli::model::Transport;
use dtmcli::{Error, Result};

use crate::DtmGrpcClient;

/// The workflows of a service over gRPC; see [`dtmcli::model::Workflows`]. Give
/// [`Workflows::new`](dtmcli::model::Workflows::new) the callback
/// [`workflow_callback`]`("host:port")` of the server that serves [`workflow_server`].
pub type Workflows = dtmcli::model::Workflows<DtmGrpcClient>;

/// The handle a workflow function receives over gRPC; see [`dtmcli::model::Workflow`].
pub type Workflow = dtmcli::model::Workflow<DtmGrpcClient>;

/// The path of the resume method DTM calls on a gRPC workflow service.
pub const WORKFLOW_EXECUTE: &str = "/workflow.Workflow/Execute";

/// The callback of a gRPC service reachable at `host` (`host:port`) that serves
/// [`workflow_server`]: `host/workflow.Workflow/Execute`.
///
/// ```
/// assert_eq!(
///     dtmgrpc::workflow_callback("localhost:58081"),
///     "localhost:58081/workflow.Workflow/Execute"
/// );
/// ```
pub fn workflow_callback(host: &str) -> String {
    format!("{host}{WORKFLOW_EXECUTE}")
}

/// The recorded gRPC call of a workflow branch, for any workflow handle.
pub trait WorkflowGrpc {
    /// Makes a gRPC call as the current branch's action and records its outcome: the request
    /// carries the branch info in `dtm-*` metadata (so the branch can use the barrier), and a
    /// resumed workflow decodes the recorded reply instead of calling again. In a phase-2
    /// callback it is called with op `commit` / `rollback` and not recorded.
    ///
    /// `call` makes the call with the request it is given, typically through a generated
    /// client. `Aborted` is a FAILURE (recorded, the workflow rolls back),
    /// `FailedPrecondition` is ONGOING; any other error is not recorded, and the workflow is
    /// resumed later.
    ///
    /// ```no_run
    /// # use dtmgrpc::prost;
    /// # #[derive(Clone, PartialEq, prost::Message)] #[prost(prost_path = "::dtmgrpc::prost")] struct Req {}
    /// # async fn client_call(r: dtmgrpc::tonic::Request<Req>) -> Result<dtmgrpc::tonic::Response<()>, dtmgrpc::tonic::Status> { todo!() }
    /// use dtmgrpc::WorkflowGrpc as _;
    /// # async fn demo(wf: dtmgrpc::Workflow) -> dtmgrpc::Result<()> {
    /// wf.new_branch()?;
    /// // With a generated client: `|r| async move { client.trans_out(r).await }`.
    /// let () = wf.grpc(Req {}, client_call).await?;
    /// # Ok(()) }
    /// ```
    fn grpc<Q, R, F, Fut>(&self, message: Q, call: F) -> impl Future<Output = Result<R>> + Send
    where
        Q: Send,
        R: prost::Message + Default,
        F: FnOnce(tonic::Request<Q>) -> Fut + Send,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>> + Send;
}

impl<C: Transport> WorkflowGrpc for dtmcli::model::Workflow<C> {
    async fn grpc<Q, R, F, Fut>(&self, message: Q, call: F) -> Result<R>
    where
        Q: Send,
        R: prost::Message + Default,
        F: FnOnce(tonic::Request<Q>) -> Fut + Send,
        Fut: Future<Output = std::result::Result<tonic::Response<R>, tonic::Status>> + Send,
    {
        let bytes = self
            .local_bytes(async |info| {
                let mut request = tonic::Request::new(message);
                crate::branch::write_metadata(request.metadata_mut(), &info, &Default::default())?;
                match call(request).await {
                    Ok(reply) => Ok(reply.into_inner().encode_to_vec()),
                    Err(status) => Err(Error::from_grpc(
                        "its service",
                        &format!("of workflow branch {}", info.branch_id),
                        status,
                    )),
                }
            })
            .await?;
        R::decode(bytes.as_slice()).map_err(|e| {
            Error::InvalidArgument(format!(
                "the recorded reply of branch {} is not the requested message: {e}",
                self.branch_info().branch_id
            ))
        })
    }
}

/// The generated `workflow` package: the `Workflow` service DTM calls and its message.
#[cfg(feature = "server")]
#[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub)]
pub mod wfpb {
    tonic::include_proto!("workflow");
}

#[cfg(feature = "server")]
pub use server::{workflow_server, WorkflowService};

#[cfg(feature = "server")]
mod server {
    use super::wfpb;
    use crate::keys;
    use dtmcli::model::{Transport, Workflows};
    use dtmcli::Error;

    /// The `workflow.Workflow` service of [`workflow_server`].
    #[derive(Debug)]
    pub struct WorkflowService<C> {
        workflows: Workflows<C>,
    }

    /// The tonic service DTM calls to resume an unfinished workflow
    /// (`workflow.Workflow/Execute`): add it to the server whose address is in the
    /// workflows' callback ([`super::workflow_callback`]). DTM sends the workflow's name in
    /// `dtm-op` and its gid in `dtm-gid` metadata with the input; the service executes the
    /// workflow again, which replays what was recorded and goes on from there.
    ///
    /// It answers OK when the workflow succeeded, `Aborted` when it failed,
    /// `InvalidArgument` for a call without `dtm-gid` / `dtm-op` or with an unknown name, and
    /// another error while it is unfinished (DTM ignores the answer: only the workflow's own
    /// submit ends it). The workflow runs on a task of its own, so the deadline of DTM's call
    /// (its `request_timeout`) does not cancel it.
    ///
    /// ```no_run
    /// # async fn demo(workflows: dtmgrpc::Workflows, listener: tokio::net::TcpListener) -> Result<(), Box<dyn std::error::Error>> {
    /// dtmgrpc::tonic::transport::Server::builder()
    ///     .add_service(dtmgrpc::workflow_server(workflows))
    ///     .serve_with_incoming(dtmgrpc::tonic::transport::server::TcpIncoming::from(listener))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn workflow_server<C: Transport>(
        workflows: Workflows<C>,
    ) -> wfpb::workflow_server::WorkflowServer<WorkflowService<C>> {
        wfpb::workflow_server::WorkflowServer::new(WorkflowService { workflows })
    }

    #[tonic::async_trait]
    impl<C: Transport> wfpb::workflow_server::Workflow for WorkflowService<C> {
        async fn execute(
            &self,
            request: tonic::Request<wfpb::WorkflowData>,
        ) -> std::result::Result<tonic::Response<()>, tonic::Status> {
            let field = |name: &'static str| {
                request
                    .metadata()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .ok_or(Error::MissingField(name))
            };
            let gid = field(keys::GID)?;
            let name = field(keys::OP)?;
            let input = request.into_inner().data;
            // On a task of its own: DTM's call has a deadline (its request timeout), which
            // must not cancel the run halfway.
            let workflows = self.workflows.clone();
            let run =
                tokio::spawn(async move { workflows.execute_bytes(&name, &gid, input).await });
            match run.await {
                Ok(outcome) => outcome
                    .map(|_| tonic::Response::new(()))
                    .map_err(tonic::Status::from),
                Err(e) => Err(tonic::Status::internal(format!(
                    "the resumed workflow's task failed: {e}"
                ))),
            }
        }
    }
}
