//! The transaction model shared by the HTTP and gRPC clients.
//!
//! Each transaction type ([`Saga`], [`Msg`], TCC and XA) is written once here, generic over a
//! [`Transport`]: the client of DTM that knows how a call travels (HTTP
//! with reqwest in this crate, gRPC with tonic in `dtmgrpc`) and how a payload is encoded
//! ([`Encode`]). TCC and XA share one [`Builder`] and one [`Handle`], told apart by their
//! [`Mode`]. The clients name the instances: `dtmcli::Tcc` is `Handle<DtmClient, TccMode>`,
//! `dtmgrpc::Xa` is `Handle<DtmGrpcClient, XaMode>`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

mod msg;
mod saga;
mod workflow;

pub use msg::Msg;
pub use saga::Saga;
pub use workflow::{
    RecordedStep, Workflow, WorkflowOptions, WorkflowProgress, WorkflowStep, Workflows,
};

use crate::global::{run_global, GlobalCalls, OpenTrans};
use crate::{BranchIdGen, BranchInfo, Error, Op, Result, TransOptions, TransQuery, TransType};

/// What a transaction of the model asks of DTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GlobalCall {
    /// Store the transaction as `prepared`.
    Prepare,
    /// Submit it: DTM runs every branch's second phase forward.
    Submit,
    /// Abort it: DTM runs every branch's second phase backward.
    Abort,
}

impl GlobalCall {
    /// The name of the call in DTM's API (`prepare`, `submit`, `abort`).
    pub const fn as_str(self) -> &'static str {
        match self {
            GlobalCall::Prepare => "prepare",
            GlobalCall::Submit => "submit",
            GlobalCall::Abort => "abort",
        }
    }
}

/// A call of [`Transport::global_call`]. Build it with [`GlobalRequest::new`] and struct
/// update syntax.
#[derive(Debug, Clone, Copy)]
pub struct GlobalRequest<'a> {
    /// Prepare, submit or abort.
    pub call: GlobalCall,
    /// The global transaction id.
    pub gid: &'a str,
    /// The transaction type.
    pub trans_type: TransType,
    /// The transaction's options.
    pub options: &'a TransOptions,
    /// The reason an abort gives (empty otherwise).
    pub rollback_reason: &'a str,
    /// The steps of a saga or message (empty for TCC and XA).
    pub steps: &'a [Step],
    /// The encoded payload of each step.
    pub payloads: &'a [Vec<u8>],
    /// Type-specific data: a saga's concurrency and branch orders, a message's delay (JSON).
    pub custom_data: &'a str,
    /// A message's query URL; a workflow's resume URL.
    pub query_prepared: &'a str,
    /// A workflow submit's outcome: `status`, `rollback_reason` and `result` (base64).
    pub req_extra: &'a [(&'static str, String)],
}

impl<'a> GlobalRequest<'a> {
    /// A request without steps or extra data.
    pub fn new(
        call: GlobalCall,
        gid: &'a str,
        trans_type: TransType,
        options: &'a TransOptions,
    ) -> Self {
        GlobalRequest {
            call,
            gid,
            trans_type,
            options,
            rollback_reason: "",
            steps: &[],
            payloads: &[],
            custom_data: "",
            query_prepared: "",
            req_extra: &[],
        }
    }
}

/// One saga or message step as DTM stores it: `{"action": URL, "compensate": URL}` (a
/// message step has an action only).
pub type Step = BTreeMap<&'static str, String>;

/// A TCC branch for [`Transport::register_tcc_branch`].
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct TccRegistration<'a> {
    /// The global transaction id.
    pub gid: &'a str,
    /// The branch id.
    pub branch_id: &'a str,
    /// The encoded payload DTM sends to confirm and cancel.
    pub payload: &'a [u8],
    /// The URL DTM calls on submit.
    pub confirm: &'a str,
    /// The URL DTM calls on abort.
    pub cancel: &'a str,
}

/// A call the SDK makes to a branch itself, as DTM would make it: the URL, the branch info
/// it carries and the transaction's branch headers. Its `Debug` hides the header values.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct BranchCall<'a> {
    /// The branch URL.
    pub url: &'a str,
    /// The branch info the call carries.
    pub info: &'a BranchInfo,
    /// The transaction's branch headers (metadata over gRPC).
    pub headers: &'a BTreeMap<String, String>,
}

impl fmt::Debug for BranchCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BranchCall")
            .field("url", &self.url)
            .field("info", &self.info)
            .field("headers", &crate::RedactedHeaders(self.headers))
            .finish()
    }
}

/// A client of DTM over some transport, as the transaction model uses it. Implemented by
/// `dtmcli::DtmClient` (HTTP) and `dtmgrpc::DtmGrpcClient` (gRPC) only: it is sealed, so that
/// methods can be added to it without breaking anyone.
pub trait Transport: sealed::Client + Clone + fmt::Debug + Send + Sync + 'static {
    /// A branch's answer to a call the SDK made itself (a TCC try, an XA action).
    type BranchResponse: Send;

    /// The server's address as branches receive it in `dtm` (for nested TCC and XA).
    fn server(&self) -> &str;

    /// Checks, before anything is sent, what DTM or this transport could not use: the gid and
    /// the options.
    fn check_trans(&self, gid: &str, options: &TransOptions) -> Result<()>;

    /// Checks a branch URL that DTM will call (the gRPC client checks its syntax).
    fn check_branch_url(&self, url: &str) -> Result<()>;

    /// Checks a URL the SDK will call itself (a TCC try, an XA action) before anything is
    /// registered (the gRPC client needs a gRPC URL there).
    fn check_call_url(&self, url: &str) -> Result<()>;

    /// A client of the server a branch request names, sharing this one's settings.
    fn for_server(&self, server: &str) -> Result<Self>;

    /// Prepares, submits or aborts a transaction of any type (the steps, payloads and custom
    /// data of a saga or message are in the request), and reads DTM's answer. A `wait_result`
    /// submit's answer is then settled by the model ([`Transport::stored`]).
    fn global_call(&self, request: GlobalRequest<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Whether a failed call may have reached DTM: it answered, or the answer was lost after
    /// the request was sent. Only then is the stored status worth reading.
    fn may_have_reached_dtm(&self, error: &Error) -> bool;

    /// The transaction `gid` as DTM stored it, to decide what a `wait_result` submit that did
    /// not succeed means (DTM answers the same for a rollback and for a transaction it still
    /// retries).
    fn stored(&self, gid: &str) -> impl Future<Output = Result<TransQuery>> + Send;

    /// Registers a TCC branch: DTM calls its confirm URL on submit and its cancel URL on
    /// abort, each with the payload.
    fn register_tcc_branch(
        &self,
        branch: TccRegistration<'_>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Asks a prepared message's query URL, as DTM would, whether the local work committed
    /// (branch `00`, op `msg`, no payload); success means it did.
    fn query_prepared(&self, call: BranchCall<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Stores a workflow as `prepared` (`prepareWorkflow`; the name and input are in the
    /// request's custom data, the resume URL in `query_prepared`), or reads the stored one:
    /// its status and recorded branch results.
    fn prepare_workflow(
        &self,
        request: GlobalRequest<'_>,
    ) -> impl Future<Output = Result<WorkflowProgress>> + Send;

    /// Records a workflow branch's outcome, synchronously: `sync` is sent, because DTM
    /// v1.19.0's asynchronous branch writer does not save anything on its default boltdb
    /// store.
    fn register_workflow_step(
        &self,
        step: WorkflowStep<'_>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Calls a branch the way DTM would, with `payload`; anything but success is an error.
    fn call_branch(
        &self,
        call: BranchCall<'_>,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<Self::BranchResponse>> + Send;
}

/// How a [`Transport`] encodes a payload of type `P`: JSON (`serde::Serialize`) over HTTP,
/// protobuf (`prost::Message`) over gRPC.
#[diagnostic::on_unimplemented(
    message = "this client cannot send a `{P}` as a branch payload",
    note = "HTTP payloads are `serde::Serialize` values; gRPC payloads are prost messages (use `add_json` for the JSON body of an http:// step, or `add_bytes` for encoded bytes)"
)]
pub trait Encode<P: ?Sized> {
    /// The payload's bytes; `what` names the payload in an error.
    fn encode(payload: &P, what: &str) -> Result<Vec<u8>>;
}

/// The server calls of one TCC or XA transaction.
struct Global<'a, C> {
    client: &'a C,
    gid: &'a str,
    trans_type: TransType,
    options: &'a TransOptions,
}

impl<C: Transport> GlobalCalls for Global<'_, C> {
    fn gid(&self) -> &str {
        self.gid
    }

    async fn prepare(&self) -> Result<()> {
        self.call(GlobalCall::Prepare, "").await
    }

    async fn submit(&self) -> Result<()> {
        self.call(GlobalCall::Submit, "").await
    }

    async fn abort(&self, reason: String) -> Result<()> {
        self.call(GlobalCall::Abort, &reason).await
    }
}

impl<C: Transport> Global<'_, C> {
    async fn call(&self, call: GlobalCall, rollback_reason: &str) -> Result<()> {
        let request = GlobalRequest {
            rollback_reason,
            ..GlobalRequest::new(call, self.gid, self.trans_type, self.options)
        };
        call_global(self.client, request).await
    }
}

/// Makes a global call through `client`. A `wait_result` submit that did not succeed, and
/// may have reached DTM, is decided from the status DTM stored, for every transaction type and
/// transport alike ([`crate::outcome::settle_wait_result_read`]).
pub(crate) async fn call_global<C: Transport>(
    client: &C,
    request: GlobalRequest<'_>,
) -> Result<()> {
    match client.global_call(request).await {
        Err(answer)
            if request.call == GlobalCall::Submit
                && request.options.wait_result
                && client.may_have_reached_dtm(&answer) =>
        {
            let stored = client.stored(request.gid).await;
            crate::outcome::settle_wait_result_read(request.gid, answer, stored)
        }
        other => other,
    }
}

/// The mode of a [`Builder`] and its [`Handle`]: [`TccMode`] or [`XaMode`].
pub trait Mode: sealed::Sealed + Send + Sync + 'static {
    /// The transaction type.
    const TRANS_TYPE: TransType;
}

#[doc(hidden)]
pub mod sealed {
    /// Seals [`Mode`](super::Mode).
    pub trait Sealed {}
    impl Sealed for super::TccMode {}
    impl Sealed for super::XaMode {}

    /// Seals [`Transport`](super::Transport): implemented by the SDK's clients only.
    pub trait Client {}
}

/// TCC: the closure registers branches and calls their try; DTM confirms or cancels them.
#[derive(Debug, Clone, Copy)]
pub struct TccMode;

impl Mode for TccMode {
    const TRANS_TYPE: TransType = TransType::Tcc;
}

/// XA: the closure calls the branches' actions, each a local XA transaction its resource
/// manager prepares and registers; DTM commits or rolls them back.
#[derive(Debug, Clone, Copy)]
pub struct XaMode;

impl Mode for XaMode {
    const TRANS_TYPE: TransType = TransType::Xa;
}

/// Options of a TCC or XA transaction before it starts; [`Builder::run`] runs it. Made by the
/// clients' `tcc(gid)` and `xa(gid)`.
#[derive(Debug)]
#[must_use = "a transaction does nothing until you run it"]
pub struct Builder<C, M> {
    client: C,
    gid: String,
    options: TransOptions,
    mode: PhantomData<M>,
}

/// The handle of an open TCC or XA transaction, given to the closure of [`Builder::run`].
///
/// Cheap to clone; clones register or call branches of the same transaction with distinct
/// ids.
#[derive(Debug)]
pub struct Handle<C, M> {
    inner: Arc<OpenTrans<C>>,
    mode: PhantomData<M>,
}

impl<C, M> Clone for Handle<C, M> {
    fn clone(&self) -> Self {
        Handle {
            inner: Arc::clone(&self.inner),
            mode: PhantomData,
        }
    }
}

/// A TCC transaction's builder: `dtm.tcc(gid)`.
pub type TccBuilder<C> = Builder<C, TccMode>;
/// An open TCC transaction.
pub type Tcc<C> = Handle<C, TccMode>;
/// An XA transaction's builder: `dtm.xa(gid)`.
pub type XaBuilder<C> = Builder<C, XaMode>;
/// An open XA transaction.
pub type Xa<C> = Handle<C, XaMode>;

impl<C: Transport, M: Mode> Builder<C, M> {
    /// A transaction `gid` through `client`; the clients' `tcc(gid)` and `xa(gid)` are the
    /// usual way.
    pub fn new(client: C, gid: impl Into<String>) -> Self {
        Builder {
            client,
            gid: gid.into(),
            options: TransOptions::default(),
            mode: PhantomData,
        }
    }

    crate::__option_setters!();

    /// Runs the global transaction: prepares it on the server, runs `f` with the handle,
    /// then submits it. In TCC the handle registers branches and calls their try; in XA it
    /// calls the branches' actions, each resource manager preparing a local XA transaction
    /// and registering it, and DTM commits them in registration order.
    ///
    /// If `f` returns an error — including a branch call that answered FAILURE, ONGOING or
    /// an error — the transaction is aborted with the error's text as rollback reason (DTM
    /// then cancels or rolls back every registered branch) and that error is returned. If
    /// `f` panics, the transaction is aborted and the panic resumes. Errors of the SDK itself
    /// convert into `E` through `From<Error>` (`anyhow::Error` and [`Error`] both work; over
    /// gRPC, `tonic::Status` too).
    ///
    /// ```no_run
    /// # async fn demo(dtm: dtmcli::DtmClient) -> anyhow::Result<()> {
    /// let busi = "http://localhost:8081/api/busi";
    /// let body = &serde_json::json!({"amount": 30});
    /// dtm.tcc(dtm.new_gid().await?)
    ///     .run(|tcc| async move {
    ///         tcc.call_branch(body, format!("{busi}/TransOutTry"),
    ///             format!("{busi}/TransOutConfirm"), format!("{busi}/TransOutCancel")).await?;
    ///         tcc.call_branch(body, format!("{busi}/TransInTry"),
    ///             format!("{busi}/TransInConfirm"), format!("{busi}/TransInCancel")).await?;
    ///         Ok::<_, anyhow::Error>(())
    ///     })
    ///     .await?;
    /// dtm.xa(dtm.new_gid().await?)
    ///     .run(|xa| async move {
    ///         xa.call_branch(body, format!("{busi}/TransOutXa")).await?;
    ///         xa.call_branch(body, format!("{busi}/TransInXa")).await?;
    ///         Ok::<_, anyhow::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<F, Fut, T, E>(self, f: F) -> std::result::Result<T, E>
    where
        F: FnOnce(Handle<C, M>) -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
        E: From<Error> + fmt::Display,
    {
        let Builder {
            client,
            gid,
            options,
            ..
        } = self;
        client.check_trans(&gid, &options)?;
        let handle = Handle {
            inner: Arc::new(OpenTrans::new(
                client.clone(),
                gid.clone(),
                options.branch_headers.clone(),
                BranchIdGen::default(),
            )),
            mode: PhantomData,
        };
        let calls = Global {
            client: &client,
            gid: &gid,
            trans_type: M::TRANS_TYPE,
            options: &options,
        };
        run_global(&calls, move || f(handle)).await
    }
}

impl<C, M> Handle<C, M> {
    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.inner.gid
    }
}

impl<C, M> Builder<C, M> {
    /// The global transaction id.
    pub fn gid(&self) -> &str {
        &self.gid
    }
}

impl<C: Transport> Handle<C, TccMode> {
    /// Rebuilds the transaction inside a try handler, to register nested branches below the
    /// current one (`02` → `0201`, `0202`, ...).
    ///
    /// Needs the `dtm` field of the request (`dtm-dtm` metadata over gRPC), which only the
    /// client's try call carries: nesting is possible in `try` only. `client`'s settings are
    /// reused; the server is the one the request names. The parent transaction's branch
    /// headers are not known here: the nested try calls carry none.
    pub fn from_branch(client: &C, info: &BranchInfo) -> Result<Self> {
        let dtm = info.dtm.as_deref().ok_or(Error::MissingField("dtm"))?;
        if info.trans_type != TransType::Tcc {
            return Err(Error::InvalidArgument(format!(
                "a nested TCC needs a tcc branch, this one is {}",
                info.trans_type
            )));
        }
        Ok(Handle {
            inner: Arc::new(OpenTrans::new(
                client.for_server(dtm)?,
                info.gid.clone(),
                BTreeMap::new(),
                BranchIdGen::new(info.branch_id.clone()),
            )),
            mode: PhantomData,
        })
    }

    /// Registers a branch and calls its try.
    ///
    /// The branch gets the next id; the server will call `confirm_url` (on submit) or
    /// `cancel_url` (on abort, even if the try failed) with `payload`. The try carries
    /// `payload` (a JSON body over HTTP, a prost message over gRPC) with `dtm`, `gid`,
    /// `branch_id`, `trans_type` and `op=try` (query string over HTTP, `dtm-*` metadata over
    /// gRPC) and the transaction's branch headers. Anything but success is an error
    /// ([`Error::Failure`], [`Error::Ongoing`], ...).
    pub async fn call_branch<P: ?Sized>(
        &self,
        payload: &P,
        try_url: impl AsRef<str>,
        confirm_url: impl AsRef<str>,
        cancel_url: impl AsRef<str>,
    ) -> Result<C::BranchResponse>
    where
        C: Encode<P>,
    {
        self.inner.client.check_call_url(try_url.as_ref())?;
        let data = C::encode(payload, "a TCC branch")?;
        let info = self
            .register(&data, confirm_url.as_ref(), cancel_url.as_ref())
            .await?;
        let inner = &self.inner;
        let call = BranchCall {
            url: try_url.as_ref(),
            info: &info,
            headers: &inner.branch_headers,
        };
        inner.client.call_branch(call, data).await
    }

    /// Registers a branch without calling its try, for callers that call the try themselves;
    /// returns the branch info a try call must carry (`op=try`, with `dtm`).
    /// [`Tcc::call_branch`] is the usual way.
    pub async fn register_branch<P: ?Sized>(
        &self,
        payload: &P,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<BranchInfo>
    where
        C: Encode<P>,
    {
        let data = C::encode(payload, "a TCC branch")?;
        self.register(&data, confirm_url, cancel_url).await
    }

    async fn register(
        &self,
        data: &[u8],
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<BranchInfo> {
        let inner = &self.inner;
        inner.client.check_branch_url(confirm_url)?;
        inner.client.check_branch_url(cancel_url)?;
        let branch_id = inner.next_branch_id()?;
        inner
            .client
            .register_tcc_branch(TccRegistration {
                gid: &inner.gid,
                branch_id: &branch_id,
                payload: data,
                confirm: confirm_url,
                cancel: cancel_url,
            })
            .await?;
        Ok(BranchInfo {
            gid: inner.gid.clone(),
            trans_type: TransType::Tcc,
            branch_id,
            op: Op::Try,
            dtm: Some(inner.client.server().to_owned()),
            phase2_url: None,
        })
    }
}

impl<C: Transport> Handle<C, XaMode> {
    /// Calls the action of the next branch (`01`, `02`, ...).
    ///
    /// The call carries `payload` with `dtm`, `gid`, `branch_id`, `trans_type=xa`,
    /// `op=action` and `phase2_url=<url>` (query string over HTTP, `dtm-*` metadata over
    /// gRPC) and the transaction's branch headers. The resource manager runs its local XA
    /// transaction, registers the branch at the server with `url` as phase-2 URL and
    /// prepares (`dtm_barrier`'s `xa_local` does all three); the server later calls `url`
    /// again with `op=commit` or `op=rollback`. Anything but success is an error
    /// ([`Error::Failure`], [`Error::Ongoing`], ...).
    pub async fn call_branch<P: ?Sized>(
        &self,
        payload: &P,
        url: impl AsRef<str>,
    ) -> Result<C::BranchResponse>
    where
        C: Encode<P>,
    {
        let url = url.as_ref();
        let inner = &self.inner;
        inner.client.check_call_url(url)?;
        let branch_id = inner.next_branch_id()?;
        let data = C::encode(payload, &format!("XA branch {branch_id}"))?;
        let info = BranchInfo {
            gid: inner.gid.clone(),
            trans_type: TransType::Xa,
            branch_id,
            op: Op::Action,
            dtm: Some(inner.client.server().to_owned()),
            phase2_url: Some(url.to_owned()),
        };
        let call = BranchCall {
            url,
            info: &info,
            headers: &inner.branch_headers,
        };
        inner.client.call_branch(call, data).await
    }
}
