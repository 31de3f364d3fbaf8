//! Test support for the gRPC suite: the gRPC business service (`dtmgrpc/examples/busi`), one
//! per test binary on its own runtime thread, and clients of the test DTM server's gRPC port.

#![allow(dead_code, unreachable_pub)]

#[path = "../../dtmgrpc/examples/busi/mod.rs"]
pub mod busi;

use std::convert::Infallible;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use dtmgrpc::tonic::codegen::{http, Service};
use dtmgrpc::tonic::server::NamedService;
use dtmgrpc::{tonic, tonic_prost, DtmGrpcClient};
use futures_util::future::BoxFuture;

use crate::support;

/// The gRPC address of this binary's DTM server.
pub fn grpc_addr() -> String {
    format!("127.0.0.1:{}", support::dtm().grpc_port)
}

/// A gRPC client of this binary's DTM server, for the current test's runtime (tonic channels
/// belong to the runtime they were created on, and every test has its own).
///
/// It knows the server's HTTP API too, for outcomes and `wait_result`.
pub fn dtm_grpc() -> DtmGrpcClient {
    DtmGrpcClient::builder(grpc_addr())
        .http_api(&support::dtm().api)
        .build()
        .expect("a gRPC client inside the test runtime")
}

/// The gRPC business service of this test binary, on its own runtime thread so that it
/// outlives every test's runtime.
pub fn busi() -> &'static busi::Busi {
    static BUSI: OnceLock<busi::Busi> = OnceLock::new();
    BUSI.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let addr = grpc_addr();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("gRPC business service runtime");
            rt.block_on(async move {
                let dtm = DtmGrpcClient::connect_lazy(addr).expect("gRPC client");
                let service = busi::Busi::new(dtm);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the gRPC business service");
                let serve = busi::serve(listener, service.clone()).expect("service address");
                tx.send(service).unwrap();
                serve.await.expect("gRPC business service");
            });
        });
        rx.recv().expect("gRPC business service started")
    })
}

/// A tonic service (`busi.SqlBusi`) whose every method decodes a [`busi::BusiReq`] and hands
/// it, with the method's name, to one handler: the scaffolding of the SQL-backed services of
/// the gRPC barrier and XA suites.
#[derive(Clone)]
pub struct SqlBusi {
    handler: Handler,
}

/// The handler of [`SqlBusi`]: `(method, request) -> OK or a status`.
pub type Handler = std::sync::Arc<
    dyn Fn(String, tonic::Request<busi::BusiReq>) -> BoxFuture<'static, Result<(), tonic::Status>>
        + Send
        + Sync,
>;

impl SqlBusi {
    /// The service name in branch URLs.
    pub const SERVICE: &'static str = "busi.SqlBusi";

    /// A service calling `handler` for every method.
    pub fn new(handler: Handler) -> Self {
        SqlBusi { handler }
    }
}

struct Method {
    handler: Handler,
    name: String,
}

impl Service<tonic::Request<busi::BusiReq>> for Method {
    type Response = tonic::Response<()>;
    type Error = tonic::Status;
    type Future = BoxFuture<'static, Result<tonic::Response<()>, tonic::Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), tonic::Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<busi::BusiReq>) -> Self::Future {
        let reply = (self.handler)(self.name.clone(), request);
        Box::pin(async move { reply.await.map(tonic::Response::new) })
    }
}

impl Service<http::Request<tonic::body::Body>> for SqlBusi {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let name = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let handler = self.handler.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<(), busi::BusiReq>::default();
            Ok(tonic::server::Grpc::new(codec)
                .unary(Method { handler, name }, request)
                .await)
        })
    }
}

impl NamedService for SqlBusi {
    const NAME: &'static str = SqlBusi::SERVICE;
}

/// Serves a [`SqlBusi`] calling `handler` on `bank`'s runtime (where its pool lives), behind
/// the gRPC barrier layer when `with_barrier`; returns its address.
pub fn serve_sql<DB: crate::support::busi::Ledger>(
    bank: &crate::support::busi::Bank<DB>,
    with_barrier: bool,
    handler: Handler,
) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let barrier = bank.barrier().clone();
    bank.runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        // The barrier wraps this one service (it keeps the service's name), not the server.
        let service = SqlBusi::new(handler);
        let (guarded, plain) = if with_barrier {
            let layer = dtm_barrier::BarrierLayer::for_grpc(barrier);
            (Some(tower::Layer::layer(&layer, service)), None)
        } else {
            (None, Some(service))
        };
        tonic::transport::Server::builder()
            .add_optional_service(guarded)
            .add_optional_service(plain)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("gRPC SQL service");
    });
    addr
}
