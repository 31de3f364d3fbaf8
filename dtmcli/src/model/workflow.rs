//! Workflow: ordinary sequential async code whose branch outcomes DTM records, so that a crash
//! or an unfinished branch is resumed by replaying the function.
//!
//! The engine ([`Workflows`]) is written once for both clients; over HTTP it is
//! `dtmcli::Workflows`, over gRPC `dtmgrpc::Workflows`. The wire flow follows DTM's own client
//! ([`client/workflow`](https://github.com/dtm-labs/dtm/tree/v1.19.0/client/workflow)):
//!
//! 1. `execute` calls `prepareWorkflow`: a new gid is stored as `prepared`; an existing one
//!    answers its status and every recorded branch result.
//! 2. A finished workflow returns its stored result (or its FAILURE) without running.
//! 3. Otherwise the function runs. Every branch action made through the workflow (a local
//!    step, an HTTP call, a gRPC call) is looked up first: a recorded one returns its stored
//!    result instead of running again; a new one runs and its success or FAILURE is recorded
//!    (`registerBranch`). ONGOING and other errors are not recorded.
//! 4. When the function returns success or FAILURE, the branches' `on_commit` or
//!    `on_rollback` callbacks run in reverse order, each recorded once done, and the workflow
//!    is submitted as `succeed` or `failed`. On any other error it stays `prepared`, and DTM
//!    calls the service's resume endpoint later to execute it again.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{GlobalCall, GlobalRequest, Transport};
use crate::{
    BranchIdGen, BranchInfo, BranchStatus, Error, GlobalStatus, Op, Result, TransOptions, TransType,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Handler<C> = Arc<dyn Fn(Workflow<C>, Vec<u8>) -> BoxFuture<Result<Vec<u8>>> + Send + Sync>;
type Phase2<C> = Box<dyn FnOnce(Workflow<C>) -> BoxFuture<Result<()>> + Send>;

/// What `prepareWorkflow` answers: the workflow's stored status and the branch results
/// recorded so far. Produced by [`Transport::prepare_workflow`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WorkflowProgress {
    /// The stored status: `prepared` while it runs, `succeed` or `failed` once submitted.
    pub status: GlobalStatus,
    /// Why it failed, once `failed`.
    pub rollback_reason: String,
    /// The result of a `succeed` workflow, when the transport returns it (DTM's gRPC API
    /// does not).
    pub result: Option<Vec<u8>>,
    /// The recorded branch results.
    pub steps: Vec<RecordedStep>,
}

impl WorkflowProgress {
    /// A progress report.
    pub fn new(
        status: GlobalStatus,
        rollback_reason: String,
        result: Option<Vec<u8>>,
        steps: Vec<RecordedStep>,
    ) -> Self {
        WorkflowProgress {
            status,
            rollback_reason,
            result,
            steps,
        }
    }
}

/// One recorded branch result of a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordedStep {
    /// The branch id (`01`, `02`, ...).
    pub branch_id: String,
    /// The operation: `action`, `commit`, `rollback` (or `business` for a local XA branch).
    pub op: String,
    /// `succeed` or `failed`.
    pub status: BranchStatus,
    /// The result of a success, the message of a FAILURE.
    pub data: Vec<u8>,
}

impl RecordedStep {
    /// A recorded result.
    pub fn new(
        branch_id: impl Into<String>,
        op: impl Into<String>,
        status: BranchStatus,
        data: Vec<u8>,
    ) -> Self {
        RecordedStep {
            branch_id: branch_id.into(),
            op: op.into(),
            status,
            data,
        }
    }
}

/// A branch result to record, for [`Transport::register_workflow_step`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct WorkflowStep<'a> {
    /// The global transaction id.
    pub gid: &'a str,
    /// The branch id.
    pub branch_id: &'a str,
    /// The operation.
    pub op: Op,
    /// `succeed` or `failed`.
    pub status: BranchStatus,
    /// The result of a success, the message of a FAILURE.
    pub data: &'a [u8],
}

impl<'a> WorkflowStep<'a> {
    /// A branch result of workflow `gid`.
    pub fn new(
        gid: &'a str,
        branch_id: &'a str,
        op: Op,
        status: BranchStatus,
        data: &'a [u8],
    ) -> Self {
        WorkflowStep {
            gid,
            branch_id,
            op,
            status,
            data,
        }
    }
}

/// The options of one registered workflow: the transaction options DTM stores with it and
/// whether a branch whose action answered FAILURE is compensated too.
///
/// ```
/// use std::time::Duration;
/// let options = dtmcli::model::WorkflowOptions::new()
///     .retry_interval(Duration::from_secs(5))
///     .compensate_error_branch(true);
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct WorkflowOptions {
    options: TransOptions,
    compensate_error_branch: bool,
    http_answer: Option<HttpAnswer>,
    map_error: Option<MapError>,
}

type HttpAnswer = Arc<dyn Fn(u16, &[u8]) -> Result<()> + Send + Sync>;
type MapError = Arc<dyn Fn(Error) -> Error + Send + Sync>;

impl fmt::Debug for WorkflowOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowOptions")
            .field("options", &self.options)
            .field("compensate_error_branch", &self.compensate_error_branch)
            .field("http_answer", &self.http_answer.is_some())
            .field("map_error", &self.map_error.is_some())
            .finish()
    }
}

impl WorkflowOptions {
    /// DTM's defaults; a branch whose action answered FAILURE is not compensated.
    pub fn new() -> Self {
        WorkflowOptions::default()
    }

    /// Also run the `on_rollback` of the branch whose action answered FAILURE. Leave it off
    /// when a failing action changes nothing (the usual case); turn it on when a FAILURE may
    /// come after the action took effect (a timeout turned into a FAILURE).
    pub fn compensate_error_branch(mut self, compensate: bool) -> Self {
        self.compensate_error_branch = compensate;
        self
    }

    /// Stored with the workflow like any transaction's `timeout_to_fail` (DTM v1.19.0 does
    /// not time workflows out: it resumes them until they end). Rounded up to whole seconds.
    pub fn timeout_to_fail(mut self, timeout: std::time::Duration) -> Self {
        self.options.timeout_to_fail = crate::whole_seconds(timeout);
        self
    }

    /// Timeout of DTM's call to the resume endpoint. Rounded up to whole seconds.
    pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.options.request_timeout = crate::whole_seconds(timeout);
        self
    }

    /// How long after the workflow is first prepared DTM calls its resume endpoint if it has
    /// not ended by then; later calls follow the server's `RetryInterval` (10 s by default).
    /// DTM makes that first call even while the first run is still going, so choose it well
    /// above the longest run: two runs at once are safe (the second to record a step or end
    /// the workflow gets an error, never a rollback), but do the work twice up to that point.
    /// Rounded up to whole seconds.
    pub fn retry_interval(mut self, interval: std::time::Duration) -> Self {
        self.options.retry_interval = crate::whole_seconds(interval);
        self
    }

    /// Decides what the answer of a recorded HTTP call ([`Workflow::send`]) means, instead of
    /// the status-code rule (200 success, 409 FAILURE, 425 ONGOING, else an error): `Ok(())`
    /// is a success (the body is the result), [`Error::Failure`] a FAILURE (recorded, the
    /// workflow rolls back), any other error is not recorded and the workflow is resumed
    /// later.
    ///
    /// ```
    /// use dtmcli::{model::WorkflowOptions, Error};
    /// // A service that answers 200 with {"dtm_result":"FAILURE"} for a business failure.
    /// let options = WorkflowOptions::new().http_answer(|status, body| {
    ///     let text = String::from_utf8_lossy(body);
    ///     match status {
    ///         200 if text.contains("FAILURE") => Err(Error::failure(text)),
    ///         200 => Ok(()),
    ///         _ => Err(Error::other(format!("status {status}: {text}"))),
    ///     }
    /// });
    /// # let _ = options;
    /// ```
    pub fn http_answer(
        mut self,
        decide: impl Fn(u16, &[u8]) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.http_answer = Some(Arc::new(decide));
        self
    }

    /// Maps the error of every recorded action (local, HTTP or gRPC) before it is judged:
    /// return [`Error::Failure`] for errors that mean the business refused for good (it is
    /// recorded and the workflow rolls back); anything else leaves the workflow to be
    /// resumed. It sees every error of the action, including the SDK's own (a connection
    /// refused, a database error inside a local step): match narrowly.
    ///
    /// ```
    /// use dtmcli::{model::WorkflowOptions, Error};
    /// // A 400 from a branch will not get better on retry.
    /// let options = WorkflowOptions::new().map_error(|e| match e {
    ///     Error::Status { status: 400, body, .. } => Error::failure(body),
    ///     other => other,
    /// });
    /// # let _ = options;
    /// ```
    pub fn map_error(mut self, map: impl Fn(Error) -> Error + Send + Sync + 'static) -> Self {
        self.map_error = Some(Arc::new(map));
        self
    }

    /// A header (metadata over gRPC) DTM sends with its calls to the resume endpoint.
    pub fn branch_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.options
            .branch_headers
            .insert(name.into(), value.into());
        self
    }
}

struct Entry<C> {
    handler: Handler<C>,
    options: WorkflowOptions,
}

struct Registry<C> {
    client: C,
    callback: String,
    entries: RwLock<HashMap<String, Arc<Entry<C>>>>,
    /// The gids this process is executing now.
    running: Mutex<std::collections::HashSet<String>>,
}

/// Marks a gid as running in this process until dropped.
struct Running<'a> {
    set: &'a Mutex<std::collections::HashSet<String>>,
    gid: String,
}

impl<'a> Running<'a> {
    fn enter(set: &'a Mutex<std::collections::HashSet<String>>, gid: &str) -> Option<Self> {
        lock(set).insert(gid.to_owned()).then(|| Running {
            set,
            gid: gid.to_owned(),
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.gid);
    }
}

/// The workflows of a service: a registry of named workflow functions and the engine that
/// executes and resumes them. Cheap to clone (shared).
///
/// Register every workflow at start-up, in every process that may execute or resume it:
/// DTM resumes an unfinished workflow by calling `callback` with the workflow's name, gid and
/// input, and whichever process answers there finds the function by name. Mount the resume
/// endpoint at `callback`: `Workflows::resume_route` (axum) over HTTP,
/// `dtmgrpc::WorkflowServer` over gRPC.
///
/// ```no_run
/// # async fn demo(dtm: dtmcli::DtmClient) -> dtmcli::Result<()> {
/// # #[derive(serde::Serialize, serde::Deserialize, Clone)] struct Transfer { amount: i64 }
/// use dtmcli::Workflows;
///
/// let busi = "http://localhost:8081/api/busi";
/// let workflows = Workflows::new(dtm.clone(), "http://localhost:8081/api/workflow/resume");
/// let http = reqwest::Client::new(); // one client for every call, made at start-up
/// workflows.register("transfer", move |wf, req: Transfer| {
///     let http = http.clone();
///     async move {
///         // Branch 01: its compensation is registered before its action runs.
///         let (h, r) = (http.clone(), req.clone());
///         wf.new_branch()?.on_rollback(move |wf| async move {
///             wf.send(h.post(format!("{busi}/TransOutCompensate")).json(&r)).await?;
///             Ok(())
///         })?;
///         wf.send(http.post(format!("{busi}/TransOut")).json(&req)).await?;
///         // Branch 02.
///         wf.new_branch()?;
///         wf.send(http.post(format!("{busi}/TransIn")).json(&req)).await?;
///         Ok(())
///     }
/// })?;
///
/// let gid = dtm.new_gid().await?;
/// let () = workflows.execute("transfer", &gid, &Transfer { amount: 30 }).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Workflows<C> {
    inner: Arc<Registry<C>>,
}

impl<C: fmt::Debug> fmt::Debug for Workflows<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = read(&self.inner.entries).keys().cloned().collect();
        f.debug_struct("Workflows")
            .field("client", &self.inner.client)
            .field("callback", &self.inner.callback)
            .field("workflows", &names)
            .finish()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<C: Transport> Workflows<C> {
    /// The workflows of a service that talks to DTM through `client` and is resumed by DTM
    /// at `callback`: the URL of the resume endpoint over HTTP, `host:port/workflow.Workflow/Execute`
    /// over gRPC (`dtmgrpc::workflow_callback` builds it).
    pub fn new(client: C, callback: impl Into<String>) -> Self {
        Workflows {
            inner: Arc::new(Registry {
                client,
                callback: callback.into(),
                entries: RwLock::new(HashMap::new()),
                running: Mutex::default(),
            }),
        }
    }

    /// The client the workflows talk to DTM through.
    pub fn client(&self) -> &C {
        &self.inner.client
    }

    /// Where DTM calls to resume a workflow.
    pub fn callback(&self) -> &str {
        &self.inner.callback
    }

    /// Registers the workflow `name` with DTM's default options: `function` receives the
    /// workflow handle and its input, decoded from JSON, and returns a result, recorded as
    /// JSON. A name registered twice is an error.
    ///
    /// The function runs again whenever the workflow is resumed, so everything it does
    /// that must happen once goes through the handle's recorded steps
    /// ([`Workflow::local`], [`Workflow::send`], `dtmgrpc`'s `WorkflowGrpc::grpc`). Branch ids
    /// are positional (`01`, `02`, ... in the order of `new_branch`), so the function must be
    /// deterministic: its path may depend on its input and on recorded results only, not on
    /// the clock or on reads made outside recorded steps.
    pub fn register<T, R, F, Fut>(&self, name: impl Into<String>, function: F) -> Result<()>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Workflow<C>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        self.register_with(name, WorkflowOptions::default(), function)
    }

    /// [`Workflows::register`] with options.
    pub fn register_with<T, R, F, Fut>(
        &self,
        name: impl Into<String>,
        options: WorkflowOptions,
        function: F,
    ) -> Result<()>
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Workflow<C>, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let name = name.into();
        let what = format!("the input of workflow {name}");
        let function = Arc::new(function);
        let handler: Handler<C> = Arc::new(move |wf, input| {
            let function = Arc::clone(&function);
            let what = what.clone();
            Box::pin(async move {
                let input = if input.is_empty() {
                    b"null".to_vec()
                } else {
                    input
                };
                let input: T = serde_json::from_slice(&input).map_err(|e| {
                    // Not a FAILURE: branches may be recorded already, with no compensation
                    // registered; the workflow stays prepared until a fixed build resumes it.
                    Error::InvalidArgument(format!("cannot decode {what} from JSON: {e}"))
                })?;
                let result = function(wf, input).await?;
                serde_json::to_vec(&result).map_err(|e| Error::payload("the workflow result", e))
            })
        });
        self.insert(name, handler, options)
    }

    /// Registers the workflow `name` over raw bytes: the input as DTM stores it, and a result
    /// returned as is (protobuf-encoded messages of a gRPC service, for example).
    pub fn register_bytes<F, Fut>(
        &self,
        name: impl Into<String>,
        options: WorkflowOptions,
        function: F,
    ) -> Result<()>
    where
        F: Fn(Workflow<C>, Vec<u8>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>>> + Send + 'static,
    {
        let handler: Handler<C> = Arc::new(move |wf, input| Box::pin(function(wf, input)));
        self.insert(name.into(), handler, options)
    }

    fn insert(&self, name: String, handler: Handler<C>, options: WorkflowOptions) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("a workflow needs a name".into()));
        }
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if entries.contains_key(&name) {
            return Err(Error::InvalidArgument(format!(
                "workflow {name:?} is already registered"
            )));
        }
        entries.insert(name, Arc::new(Entry { handler, options }));
        Ok(())
    }

    /// Executes the workflow `name` as `gid` with `input` (JSON), or resumes it if DTM knows
    /// `gid` already, and decodes its JSON result.
    ///
    /// - `Ok(result)`: it succeeded (now, or earlier: then the stored result is returned
    ///   without running anything; over gRPC DTM does not return it, and `R` is decoded from
    ///   JSON `null`).
    /// - [`Error::Failure`]: it failed (now, or earlier: the stored reason), after its
    ///   branches' `on_rollback` callbacks ran.
    /// - any other error (ONGOING, an unreachable branch, a lost connection): it stays
    ///   `prepared`, and DTM resumes it through the callback later.
    pub async fn execute<T, R>(&self, name: &str, gid: &str, input: &T) -> Result<R>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let input = serde_json::to_vec(input)
            .map_err(|e| Error::payload(format!("the input of workflow {name}"), e))?;
        let result = self.execute_bytes(name, gid, input).await?;
        let result = if result.is_empty() {
            b"null".as_slice()
        } else {
            &result
        };
        serde_json::from_slice(result).map_err(|e| {
            Error::InvalidArgument(format!(
                "the result of workflow {name} ({gid}) is not the JSON of the requested type: {e}"
            ))
        })
    }

    /// [`Workflows::execute`] over raw bytes: the input as given, the result as recorded.
    /// The resume endpoints call this with what DTM sends.
    ///
    /// A workflow this process is executing already is not executed again at the same time:
    /// the second call answers [`Error::Ongoing`] (DTM calls again later).
    pub async fn execute_bytes(&self, name: &str, gid: &str, input: Vec<u8>) -> Result<Vec<u8>> {
        let Some(_running) = Running::enter(&self.inner.running, gid) else {
            return Err(Error::ongoing(format!(
                "workflow {gid} is being executed by this process already"
            )));
        };
        self.execute_once(name, gid, input).await
    }

    async fn execute_once(&self, name: &str, gid: &str, input: Vec<u8>) -> Result<Vec<u8>> {
        let entry = read(&self.inner.entries)
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "workflow {name:?} is not registered: register every workflow at start-up, in \
                 every process DTM may call to resume it"
                ))
            })?;
        let client = &self.inner.client;
        let options = &entry.options.options;
        client.check_trans(gid, options)?;
        client.check_branch_url(&self.inner.callback)?;
        let custom_data = serde_json::to_string(&CustomData {
            name,
            data: (!input.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&input)),
        })
        .map_err(|e| Error::payload("workflow custom data", e))?;
        let request = GlobalRequest {
            custom_data: &custom_data,
            query_prepared: &self.inner.callback,
            ..GlobalRequest::new(GlobalCall::Prepare, gid, TransType::Workflow, options)
        };
        let progress = client.prepare_workflow(request).await?;
        match progress.status {
            GlobalStatus::Succeed => return Ok(progress.result.unwrap_or_default()),
            GlobalStatus::Failed => return Err(Error::failure(progress.rollback_reason)),
            GlobalStatus::Prepared => {}
            other => {
                return Err(Error::InvalidArgument(format!(
                    "gid {gid} is a transaction in status {other}, not a workflow DTM can resume"
                )))
            }
        }
        tracing::debug!(gid, name, recorded = progress.steps.len(), "workflow runs");
        let wf = Workflow::new(client.clone(), gid, name, &entry.options, progress.steps);
        let outcome = (entry.handler)(wf.clone(), input).await;
        if let Err(e) = &outcome {
            if !e.is_failure() {
                tracing::debug!(gid, name, error = %e, "workflow left prepared for DTM to resume");
                return outcome;
            }
        }
        wf.phase2(outcome.is_ok()).await?;
        let (status, reason, result) = match &outcome {
            Ok(result) => (BranchStatus::Succeed, String::new(), result.as_slice()),
            Err(e) => (BranchStatus::Failed, failure_message(e), &[][..]),
        };
        let req_extra = [
            ("status", status.as_str().to_owned()),
            ("rollback_reason", reason),
            (
                "result",
                base64::engine::general_purpose::STANDARD.encode(result),
            ),
        ];
        let request = GlobalRequest {
            req_extra: &req_extra,
            ..GlobalRequest::new(GlobalCall::Submit, gid, TransType::Workflow, options)
        };
        client.global_call(request).await?;
        outcome
    }
}

#[derive(Serialize)]
struct CustomData<'a> {
    name: &'a str,
    /// Base64, as Go encodes a byte slice; `null` for no input.
    data: Option<String>,
}

/// The text a FAILURE is recorded with.
fn failure_message(error: &Error) -> String {
    match error {
        Error::Failure { message } => message.clone(),
        other => other.to_string(),
    }
}

/// Where the handle stands: the current branch and operation, and what was registered.
struct State<C> {
    ids: BranchIdGen,
    branch: String,
    op: Op,
    action_added: bool,
    commit_added: bool,
    rollback_added: bool,
    recorded: HashMap<(String, String), RecordedStep>,
    on_commit: Vec<(String, Phase2<C>)>,
    on_rollback: Vec<(String, Phase2<C>)>,
}

struct Shared<C> {
    client: C,
    gid: String,
    name: String,
    compensate_error_branch: bool,
    /// Read by `send`, which needs the `http` feature.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    http_answer: Option<HttpAnswer>,
    map_error: Option<MapError>,
    state: Mutex<State<C>>,
}

/// The handle a workflow function receives: it opens branches, registers their phase-2
/// callbacks, and makes the recorded calls. Cheap to clone (shared); the clones are the same
/// workflow.
#[derive(Clone)]
pub struct Workflow<C> {
    inner: Arc<Shared<C>>,
}

impl<C> fmt::Debug for Workflow<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("Workflow")
            .field("gid", &self.inner.gid)
            .field("name", &self.inner.name)
            .field("branch", &state.branch)
            .field("op", &state.op)
            .finish_non_exhaustive()
    }
}

impl<C: Transport> Workflow<C> {
    fn new(
        client: C,
        gid: &str,
        name: &str,
        options: &WorkflowOptions,
        steps: Vec<RecordedStep>,
    ) -> Self {
        let recorded = steps
            .into_iter()
            .map(|s| ((s.branch_id.clone(), s.op.clone()), s))
            .collect();
        Workflow {
            inner: Arc::new(Shared {
                client,
                gid: gid.to_owned(),
                name: name.to_owned(),
                compensate_error_branch: options.compensate_error_branch,
                http_answer: options.http_answer.clone(),
                map_error: options.map_error.clone(),
                state: Mutex::new(State {
                    ids: BranchIdGen::new(""),
                    branch: String::new(),
                    op: Op::Action,
                    action_added: false,
                    commit_added: false,
                    rollback_added: false,
                    recorded,
                    on_commit: Vec::new(),
                    on_rollback: Vec::new(),
                }),
            }),
        }
    }

    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }

    /// The workflow's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The client the workflow talks to DTM through.
    pub fn client(&self) -> &C {
        &self.inner.client
    }

    /// The branch info of the current branch and operation (`action`, or `commit` /
    /// `rollback` in a phase-2 callback), as the recorded calls carry it: a resource manager
    /// uses it with the barrier like any branch's.
    pub fn branch_info(&self) -> BranchInfo {
        let state = lock(&self.inner.state);
        BranchInfo {
            gid: self.inner.gid.clone(),
            trans_type: TransType::Workflow,
            branch_id: state.branch.clone(),
            op: state.op,
            dtm: Some(self.inner.client.server().to_owned()),
            phase2_url: None,
        }
    }

    /// Starts the next branch (`01`, `02`, ...): the following action and callbacks belong
    /// to it. Refused inside a phase-2 callback.
    pub fn new_branch(&self) -> Result<&Self> {
        let mut state = lock(&self.inner.state);
        if state.op != Op::Action {
            return Err(Error::InvalidArgument(
                "new_branch() cannot be called in a phase-2 callback".into(),
            ));
        }
        state.branch = state.ids.next_id()?;
        state.action_added = false;
        state.commit_added = false;
        state.rollback_added = false;
        Ok(self)
    }

    /// Registers what undoes the current branch if the workflow fails (a saga's
    /// compensation, a TCC cancel). Register it before the branch's action: an action that
    /// errors in flight may still have taken effect. Callbacks run in reverse order of
    /// registration, each recorded (op `rollback`) once it returned `Ok`; an error leaves the
    /// workflow to be resumed. A callback must not answer FAILURE: it is retried, never given up.
    pub fn on_rollback<F, Fut>(&self, callback: F) -> Result<&Self>
    where
        F: FnOnce(Workflow<C>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.add_phase2(false, Box::new(move |wf| Box::pin(callback(wf))))
    }

    /// Registers what completes the current branch once the workflow succeeded (a TCC
    /// confirm). Run in reverse order of registration, recorded (op `commit`) once done.
    pub fn on_commit<F, Fut>(&self, callback: F) -> Result<&Self>
    where
        F: FnOnce(Workflow<C>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        self.add_phase2(true, Box::new(move |wf| Box::pin(callback(wf))))
    }

    /// Registers `callback` both ways; its second argument says whether the workflow is
    /// rolling back.
    pub fn on_finish<F, Fut>(&self, callback: F) -> Result<&Self>
    where
        F: Fn(Workflow<C>, bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let callback = Arc::new(callback);
        let commit = Arc::clone(&callback);
        self.on_commit(move |wf| commit(wf, false))?
            .on_rollback(move |wf| callback(wf, true))
    }

    /// Registers both phase-2 callbacks of a step that owns its phase 2 (the barrier's local
    /// XA step), beside any the user registered for the branch, as DTM's client does.
    #[doc(hidden)]
    pub fn add_step_phase2<F, G, FutF, FutG>(&self, commit: F, rollback: G) -> Result<()>
    where
        F: FnOnce(Workflow<C>) -> FutF + Send + 'static,
        FutF: Future<Output = Result<()>> + Send + 'static,
        G: FnOnce(Workflow<C>) -> FutG + Send + 'static,
        FutG: Future<Output = Result<()>> + Send + 'static,
    {
        let mut state = lock(&self.inner.state);
        if state.branch.is_empty() || state.op != Op::Action {
            return Err(Error::InvalidArgument(
                "a step with a phase 2 belongs to a branch: call new_branch() first (and not in \
                 a phase-2 callback)"
                    .into(),
            ));
        }
        let branch = state.branch.clone();
        state
            .on_commit
            .push((branch.clone(), Box::new(move |wf| Box::pin(commit(wf)))));
        state
            .on_rollback
            .push((branch, Box::new(move |wf| Box::pin(rollback(wf)))));
        Ok(())
    }

    fn add_phase2(&self, commit: bool, callback: Phase2<C>) -> Result<&Self> {
        let mut state = lock(&self.inner.state);
        let branch = state.branch.clone();
        if branch.is_empty() || state.op != Op::Action {
            return Err(Error::InvalidArgument(
                "phase-2 callbacks belong to a branch: call new_branch() first (and not in a \
                 phase-2 callback)"
                    .into(),
            ));
        }
        let (added, list) = if commit {
            (&mut state.commit_added, "on_commit")
        } else {
            (&mut state.rollback_added, "on_rollback")
        };
        if std::mem::replace(added, true) {
            return Err(Error::InvalidArgument(format!(
                "branch {branch} already has its {list} callback"
            )));
        }
        if commit {
            state.on_commit.push((branch, callback));
        } else {
            state.on_rollback.push((branch, callback));
        }
        Ok(self)
    }

    /// Runs a local action as the current branch's action and records its outcome, so a
    /// resumed workflow returns the recorded result instead of running it again. `action`
    /// receives the branch info (for the barrier); its result is recorded as JSON.
    ///
    /// ```no_run
    /// # async fn demo(wf: dtmcli::model::Workflow<dtmcli::DtmClient>) -> dtmcli::Result<()> {
    /// wf.new_branch()?;
    /// let id: u64 = wf.local(async |_info| Ok(42)).await?; // 42 on every replay
    /// # let _ = id; Ok(()) }
    /// ```
    pub async fn local<R>(&self, action: impl AsyncFnOnce(BranchInfo) -> Result<R>) -> Result<R>
    where
        R: Serialize + DeserializeOwned,
    {
        let bytes = self
            .local_bytes(async |info| {
                let result = action(info).await?;
                serde_json::to_vec(&result).map_err(|e| Error::payload("a local step's result", e))
            })
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "the recorded result of branch {} is not the JSON of the requested type: {e}",
                self.branch_info().branch_id
            ))
        })
    }

    /// [`Workflow::local`] over raw bytes: the action's result is recorded as is.
    ///
    /// This is the primitive the recorded HTTP and gRPC calls are made of. In a phase-2
    /// callback it runs without recording (the callback is recorded as a whole).
    pub async fn local_bytes(
        &self,
        action: impl AsyncFnOnce(BranchInfo) -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let info = self.branch_info();
        if info.op != Op::Action {
            return action(info).await;
        }
        let replayed = {
            let mut state = lock(&self.inner.state);
            if info.branch_id.is_empty() {
                return Err(Error::InvalidArgument(
                    "a recorded step belongs to a branch: call new_branch() first".into(),
                ));
            }
            if std::mem::replace(&mut state.action_added, true) {
                return Err(Error::InvalidArgument(format!(
                    "branch {} already has its action: call new_branch() before the next one",
                    info.branch_id
                )));
            }
            state
                .recorded
                .get(&(info.branch_id.clone(), Op::Action.as_str().to_owned()))
                .cloned()
        };
        let outcome = match replayed {
            Some(step) => {
                tracing::debug!(gid = %info.gid, branch = %info.branch_id, "recorded step replayed");
                step_outcome(step)
            }
            None => {
                let mut outcome = action(info.clone()).await;
                if let (Err(e), Some(map)) = (&mut outcome, &self.inner.map_error) {
                    let error = std::mem::replace(e, Error::Duplicated);
                    *e = map(error);
                }
                self.record(&info.branch_id, Op::Action, &outcome).await?;
                outcome
            }
        };
        if matches!(&outcome, Err(e) if e.is_failure()) && !self.inner.compensate_error_branch {
            // The failed action changed nothing: its own compensation is not run.
            let mut state = lock(&self.inner.state);
            if state
                .on_rollback
                .last()
                .is_some_and(|(b, _)| *b == info.branch_id)
            {
                state.on_rollback.pop();
            }
        }
        outcome
    }

    /// Whether the current branch has a recorded result for `op` (for integrations that
    /// record more than the action, such as the barrier's local XA step, which records
    /// `business`).
    pub fn is_recorded(&self, op: Op) -> bool {
        let state = lock(&self.inner.state);
        let key = (state.branch.clone(), op.as_str().to_owned());
        state.recorded.contains_key(&key)
    }

    /// Records a success of `op` on the current branch, with `data` (for integrations such
    /// as the barrier's local XA step; the action and the phase-2 callbacks are recorded by
    /// the workflow itself).
    pub async fn record_success(&self, op: Op, data: &[u8]) -> Result<()> {
        let branch = self.branch_info().branch_id;
        self.record(&branch, op, &Ok(data.to_vec())).await
    }

    /// Records a definite outcome (success or FAILURE); others are not recorded.
    async fn record(&self, branch_id: &str, op: Op, outcome: &Result<Vec<u8>>) -> Result<()> {
        let (status, data) = match outcome {
            Ok(data) => (BranchStatus::Succeed, data.clone()),
            Err(e) if e.is_failure() => (BranchStatus::Failed, failure_message(e).into_bytes()),
            Err(_) => return Ok(()),
        };
        let recorded = self
            .inner
            .client
            .register_workflow_step(WorkflowStep {
                gid: &self.inner.gid,
                branch_id,
                op,
                status,
                data: &data,
            })
            .await;
        match recorded {
            // DTM answers FAILURE when the workflow is no longer prepared: another run of it
            // (DTM's resume call, a second execute) finished it. That is no business FAILURE:
            // this run must not roll anything back.
            Err(e) if e.is_failure() => Err(Error::other(format!(
                "DTM refused to record {op} of branch {branch_id} of workflow {}: {e} (it is no \
                 longer prepared: another run of it has ended it; read its outcome)",
                self.inner.gid
            ))),
            other => other,
        }
    }

    /// Runs the phase-2 callbacks in reverse order, skipping those already recorded.
    async fn phase2(&self, commit: bool) -> Result<()> {
        let (op, callbacks) = {
            let mut state = lock(&self.inner.state);
            state.op = if commit { Op::Commit } else { Op::Rollback };
            let callbacks = if commit {
                std::mem::take(&mut state.on_commit)
            } else {
                std::mem::take(&mut state.on_rollback)
            };
            (state.op, callbacks)
        };
        for (branch, callback) in callbacks.into_iter().rev() {
            let done = {
                let mut state = lock(&self.inner.state);
                state.branch = branch.clone();
                state
                    .recorded
                    .contains_key(&(branch.clone(), op.as_str().to_owned()))
            };
            if done {
                continue;
            }
            let outcome = callback(self.clone()).await;
            if let Err(e) = outcome {
                if e.is_failure() {
                    // Not the workflow's FAILURE: its outcome is decided; the callback is
                    // retried when DTM resumes the workflow.
                    tracing::error!(gid = %self.inner.gid, branch, %op, error = %e,
                        "a phase-2 callback answered FAILURE; it is retried, never given up");
                    return Err(Error::other(format!(
                        "the {op} callback of branch {branch} answered FAILURE ({e}); phase-2 \
                         callbacks are retried until they succeed, and the workflow stays \
                         prepared until then"
                    )));
                }
                return Err(e);
            }
            self.record(&branch, op, &Ok(Vec::new())).await?;
        }
        Ok(())
    }
}

/// The outcome a recorded step stands for.
fn step_outcome(step: RecordedStep) -> Result<Vec<u8>> {
    match step.status {
        BranchStatus::Failed => Err(Error::failure(
            String::from_utf8_lossy(&step.data).into_owned(),
        )),
        _ => Ok(step.data),
    }
}

#[cfg(feature = "http")]
mod http {
    use super::*;

    impl<C: Transport> Workflow<C> {
        /// Sends an HTTP request as the current branch's action and records its outcome:
        /// the request gets the branch info in its query (`gid`, `trans_type=workflow`,
        /// `branch_id`, `op`), so the branch can use the barrier, and a resumed workflow
        /// returns the recorded answer instead of sending it again. In a phase-2 callback
        /// it is sent with op `commit` / `rollback` and not recorded.
        ///
        /// The answer is judged by its status only, as DTM's workflow client does: 200 →
        /// the body; 409 → [`Error::Failure`] (recorded, the workflow rolls back); 425 →
        /// [`Error::Ongoing`]; anything else or no answer → an error (not recorded; the
        /// workflow is resumed later). [`WorkflowOptions::http_answer`] replaces the rule.
        pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>> {
            self.local_bytes(async |info| {
                let (client, request) = request.build_split();
                let mut request = request.map_err(|cause| {
                    Error::InvalidArgument(format!("a workflow request cannot be built: {cause}"))
                })?;
                request
                    .url_mut()
                    .query_pairs_mut()
                    .extend_pairs(info.query_pairs());
                let url = crate::client::strip_query(request.url().as_str());
                let request = reqwest::RequestBuilder::from_parts(client, request);
                let (status, body) = crate::client::send_bytes(&url, request).await?;
                match &self.inner.http_answer {
                    Some(decide) => decide(status, &body).map(|()| body),
                    None => judge(url, status, body),
                }
            })
            .await
        }
    }

    /// DTM's workflow rule: the status code alone.
    fn judge(url: String, status: u16, body: Vec<u8>) -> Result<Vec<u8>> {
        let text = || String::from_utf8_lossy(&body).into_owned();
        match status {
            200 => Ok(body),
            409 => Err(Error::failure(text())),
            425 => Err(Error::ongoing(text())),
            _ => Err(Error::Status {
                url,
                status,
                body: text(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_data_is_what_the_server_reads() {
        let json = serde_json::to_string(&CustomData {
            name: "wf",
            data: Some(base64::engine::general_purpose::STANDARD.encode(b"{\"a\":1}")),
        })
        .unwrap();
        assert_eq!(json, r#"{"name":"wf","data":"eyJhIjoxfQ=="}"#);
        let none = serde_json::to_string(&CustomData {
            name: "wf",
            data: None,
        })
        .unwrap();
        assert_eq!(none, r#"{"name":"wf","data":null}"#);
    }

    #[test]
    fn a_recorded_failure_replays_as_failure() {
        let step = RecordedStep::new("01", "action", BranchStatus::Failed, b"no money".to_vec());
        let err = step_outcome(step).unwrap_err();
        assert!(err.is_failure());
        assert!(err.to_string().contains("no money"));
        let ok = RecordedStep::new("01", "action", BranchStatus::Succeed, b"7".to_vec());
        assert_eq!(step_outcome(ok).unwrap(), b"7");
    }
}
