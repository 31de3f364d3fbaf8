//! The gRPC business service of the quick start and the tests: an inter-bank transfer as the
//! tonic service `busi.Busi`.
//!
//! Money leaves an account (`TransOut`) and arrives in another one (`TransIn`), as saga
//! actions with compensations (`...Revert`), as TCC try / confirm / cancel, and as message
//! steps. Accounts are created on first use with [`INITIAL_BALANCE`]. Balances live in memory;
//! like the DTM barrier, the service records which `(gid, branch_id, op)` it applied so that a
//! duplicate call is applied once, a compensation whose forward operation never ran does
//! nothing, and a forward operation arriving after its compensation does nothing.
//!
//! The service is written by hand on tonic's server API so that it needs no build step; a
//! real service would generate the same code from a `.proto` with `tonic-prost-build` (see
//! `dtmgrpc/README.md`). Every method takes a [`BusiReq`] and answers `google.protobuf.Empty`.
//!
//! To try rollbacks, a call can be scripted: `BusiReq::results["TransIn"] = "FAILURE,ONGOING"`
//! (or the metadata `result-transin`, e.g. as a branch header, for calls without a payload
//! such as `QueryPrepared`) makes the n-th call of that method for a branch answer the n-th
//! word: `FAILURE` → `Aborted`, `ONGOING` → `FailedPrecondition`, `ERROR` → `Unknown` (retried),
//! and SUCCESS after the list runs out.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use dtmgrpc::tonic::codegen::{http, Service};
use dtmgrpc::tonic::server::NamedService;
use dtmgrpc::tonic::{self, Request, Response, Status};
use dtmgrpc::{
    branch_info, prost, tonic_prost, BranchInfo, DtmGrpcClient, DtmResult, Error, Op, Tcc,
};

/// The balance of an account the first time it is used.
pub const INITIAL_BALANCE: i64 = 10_000;

/// The gRPC service name.
pub const SERVICE: &str = "busi.Busi";

/// The methods of the service.
pub const METHODS: [&str; 12] = [
    "TransOut",
    "TransOutRevert",
    "TransIn",
    "TransInRevert",
    "TransOutTry",
    "TransOutConfirm",
    "TransOutCancel",
    "TransInTry",
    "TransInConfirm",
    "TransInCancel",
    "TransInTryNested",
    "QueryPrepared",
];

/// The request of every method.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(prost_path = "::dtmgrpc::prost")]
pub struct BusiReq {
    /// The amount to move.
    #[prost(int64, tag = "1")]
    pub amount: i64,
    /// The account the money leaves.
    #[prost(string, tag = "2")]
    pub from: String,
    /// The account the money arrives in.
    #[prost(string, tag = "3")]
    pub to: String,
    /// Result scripts by method name, e.g. `"TransIn" => "FAILURE"`.
    #[prost(map = "string, string", tag = "4")]
    pub results: HashMap<String, String>,
}

impl BusiReq {
    /// `amount` from `from` to `to`.
    pub fn new(amount: i64, from: impl Into<String>, to: impl Into<String>) -> Self {
        BusiReq {
            amount,
            from: from.into(),
            to: to.into(),
            results: HashMap::new(),
        }
    }

    /// The same request with a result script for `method`.
    pub fn script(mut self, method: &str, results: &str) -> Self {
        self.results.insert(method.to_owned(), results.to_owned());
        self
    }
}

/// What the service answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// OK, `Aborted` or `FailedPrecondition`.
    Result(DtmResult),
    /// Any other status.
    Error,
}

/// One call the service received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The method (`TransOut`, `TransInConfirm`, ...).
    pub method: String,
    /// The branch info the call carried.
    pub info: BranchInfo,
    /// The decoded request.
    pub req: BusiReq,
    /// What the service answered.
    pub answer: Answer,
    /// The request metadata (including `content-type`).
    pub metadata: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    balances: HashMap<String, i64>,
    /// `(gid, branch_id, op)` already applied (or blocked by a null compensation).
    applied: HashSet<(String, String, Op)>,
    /// How often each `(gid, branch_id, op, method)` was called.
    counts: HashMap<(String, String, Op, String), usize>,
    calls: HashMap<String, Vec<Call>>,
}

/// The service: balances and the record of calls, shared by all handlers.
#[derive(Clone)]
pub struct Busi {
    state: Arc<Mutex<State>>,
    dtm: DtmGrpcClient,
    addr: Arc<OnceLock<String>>,
}

impl std::fmt::Debug for Busi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busi")
            .field("addr", &self.addr.get())
            .finish_non_exhaustive()
    }
}

impl Busi {
    /// A service whose nested TCC branch reuses `dtm`'s settings and channels.
    pub fn new(dtm: DtmGrpcClient) -> Self {
        Busi {
            state: Arc::default(),
            dtm,
            addr: Arc::default(),
        }
    }

    /// The `host:port` the service listens on, once [`serve`] ran.
    pub fn addr(&self) -> &str {
        self.addr.get().map_or("", String::as_str)
    }

    /// The gRPC URL of `method`, such as `127.0.0.1:58081/busi.Busi/TransIn`, once [`serve`]
    /// ran.
    pub fn url(&self, method: &str) -> String {
        format!("{}/{SERVICE}/{method}", self.addr())
    }

    /// The balance of `account`.
    pub fn balance(&self, account: &str) -> i64 {
        let state = self.state.lock().unwrap();
        state
            .balances
            .get(account)
            .copied()
            .unwrap_or(INITIAL_BALANCE)
    }

    /// The calls received for `gid`, in arrival order.
    pub fn calls(&self, gid: &str) -> Vec<Call> {
        let state = self.state.lock().unwrap();
        state.calls.get(gid).cloned().unwrap_or_default()
    }

    /// The methods called for `gid`, in arrival order.
    pub fn methods(&self, gid: &str) -> Vec<String> {
        self.calls(gid).into_iter().map(|c| c.method).collect()
    }

    async fn handle(&self, method: &str, request: Request<BusiReq>) -> Result<(), Status> {
        let info = branch_info(&request)?;
        let metadata: HashMap<String, String> = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let req = request.into_inner();
        let script = req
            .results
            .get(method)
            .or_else(|| metadata.get(&format!("result-{}", method.to_lowercase())))
            .cloned()
            .unwrap_or_default();
        let word = {
            let mut state = self.state.lock().unwrap();
            let key = (
                info.gid.clone(),
                info.branch_id.clone(),
                info.op,
                method.to_owned(),
            );
            let count = state.counts.entry(key).or_default();
            let word = script
                .split(',')
                .filter(|w| !w.is_empty())
                .nth(*count)
                .map(str::to_owned);
            *count += 1;
            word
        };
        let outcome = match word.as_deref() {
            Some("FAILURE") => Err(Error::failure(format!("{method} scripted to fail"))),
            Some("ONGOING") => Err(Error::ongoing(format!("{method} scripted as not finished"))),
            Some("ERROR") => Err(Error::other(format!("{method} scripted error"))),
            _ => self.apply(method, &info, &req).await,
        };
        let answer = match &outcome {
            Ok(()) => Answer::Result(DtmResult::Success),
            Err(e) if e.is_failure() => Answer::Result(DtmResult::Failure),
            Err(e) if e.is_ongoing() => Answer::Result(DtmResult::Ongoing),
            Err(_) => Answer::Error,
        };
        let gid = info.gid.clone();
        let call = Call {
            method: method.to_owned(),
            info,
            req,
            answer,
            metadata,
        };
        self.state
            .lock()
            .unwrap()
            .calls
            .entry(gid)
            .or_default()
            .push(call);
        outcome.map_err(Status::from)
    }

    /// Runs the business effect of a call once per `(gid, branch_id, op)`.
    async fn apply(&self, method: &str, info: &BranchInfo, req: &BusiReq) -> Result<(), Error> {
        if method == "QueryPrepared" {
            return Ok(());
        }
        if req.amount <= 0 {
            return Err(Error::failure(format!(
                "amount must be positive, got {}",
                req.amount
            )));
        }
        if method == "TransInTryNested" {
            return self.nested_try(info, req).await;
        }
        let (account, delta) = match method {
            "TransOut" | "TransOutTry" => (&req.from, -req.amount),
            "TransOutRevert" | "TransOutCancel" => (&req.from, req.amount),
            "TransIn" | "TransInConfirm" => (&req.to, req.amount),
            "TransInRevert" => (&req.to, -req.amount),
            // TransInTry reserves nothing; TransOutConfirm keeps what the try took;
            // TransInCancel has nothing to undo.
            _ => (&req.to, 0),
        };
        let mut state = self.state.lock().unwrap();
        let balance = state
            .balances
            .get(account)
            .copied()
            .unwrap_or(INITIAL_BALANCE);
        if !info.op.is_compensation() && balance + delta < 0 {
            return Err(Error::failure(format!("insufficient balance in {account}")));
        }
        let gid = info.gid.clone();
        let branch = info.branch_id.clone();
        let origin_new = info
            .op
            .origin()
            .is_some_and(|o| state.applied.insert((gid.clone(), branch.clone(), o)));
        let current_new = state.applied.insert((gid, branch, info.op));
        if (info.op.is_compensation() && origin_new) || !current_new {
            // Null compensation, duplicate, or a forward operation after its compensation.
            return Ok(());
        }
        *state
            .balances
            .entry(account.clone())
            .or_insert(INITIAL_BALANCE) += delta;
        Ok(())
    }

    /// A try that opens a nested TCC branch: the money arrives through sub-branch `<id>01`.
    async fn nested_try(&self, info: &BranchInfo, req: &BusiReq) -> Result<(), Error> {
        let tcc = Tcc::from_branch(&self.dtm, info)?;
        let sub = BusiReq::new(req.amount, req.from.clone(), req.to.clone());
        tcc.call_branch(
            &sub,
            &self.url("TransInTry"),
            &self.url("TransInConfirm"),
            &self.url("TransInCancel"),
        )
        .await?;
        Ok(())
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// One method of the service, as tonic's unary handler.
struct Method {
    busi: Busi,
    name: &'static str,
}

impl Service<Request<BusiReq>> for Method {
    type Response = Response<()>;
    type Error = Status;
    type Future = BoxFuture<Response<()>, Status>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<BusiReq>) -> Self::Future {
        let (busi, name) = (self.busi.clone(), self.name);
        Box::pin(async move { busi.handle(name, request).await.map(Response::new) })
    }
}

impl<B> Service<http::Request<B>> for Busi
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let name = request
            .uri()
            .path()
            .strip_prefix(&format!("/{SERVICE}/"))
            .and_then(|m| METHODS.into_iter().find(|known| *known == m));
        let busi = self.clone();
        Box::pin(async move {
            let Some(name) = name else {
                return Ok(Status::unimplemented("no such method").into_http());
            };
            let codec = tonic_prost::ProstCodec::<(), BusiReq>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.unary(Method { busi, name }, request).await)
        })
    }
}

impl NamedService for Busi {
    const NAME: &'static str = SERVICE;
}

/// Serves `busi` on `listener` until the process ends. The service knows its URLs
/// ([`Busi::url`]) as soon as this returns, before the future is first polled.
pub fn serve(
    listener: tokio::net::TcpListener,
    busi: Busi,
) -> std::io::Result<impl Future<Output = Result<(), tonic::transport::Error>>> {
    let addr = listener.local_addr()?;
    let _ = busi.addr.set(addr.to_string());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    Ok(tonic::transport::Server::builder()
        .add_service(busi)
        .serve_with_incoming(incoming))
}

/// Calls `method` of the service over `channel` (create the channel once and clone it: it is
/// cheap to clone and shares its connection). A generated tonic client does the same in one
/// line (`client.trans_out(request).await`); this service is hand-written, so it has none.
pub async fn call(
    channel: tonic::transport::Channel,
    method: &str,
    request: Request<BusiReq>,
) -> Result<Response<()>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = format!("/{SERVICE}/{method}")
        .parse()
        .map_err(|_| Status::invalid_argument(format!("bad method name {method:?}")))?;
    grpc.unary(
        request,
        path,
        tonic_prost::ProstCodec::<BusiReq, ()>::default(),
    )
    .await
}

/// A lazily connecting channel to the service at `addr` (`host:port`).
pub fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid service address")
        .connect_lazy()
}
