//! Test support for the gRPC suite: the gRPC business service (`dtmgrpc/examples/busi`), one
//! per test binary on its own runtime thread, and clients of the test DTM server's gRPC port.

#![allow(dead_code, unreachable_pub)]

#[path = "../../dtmgrpc/examples/busi/mod.rs"]
pub mod busi;

use std::sync::OnceLock;

use dtmgrpc::DtmGrpcClient;

use crate::support;

/// The gRPC address of this binary's DTM server.
pub fn grpc_addr() -> String {
    format!("127.0.0.1:{}", support::dtm().grpc_port)
}

/// A gRPC client of this binary's DTM server, for the current test's runtime (tonic channels
/// belong to the runtime they were created on, and every test has its own).
pub fn dtm_grpc() -> DtmGrpcClient {
    DtmGrpcClient::connect_lazy(grpc_addr()).expect("a gRPC client inside the test runtime")
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
