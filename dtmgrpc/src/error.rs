//! How gRPC answers become [`Error`](dtmcli::Error)s: `dtmcli::grpc`, re-exported.

pub use dtmcli::grpc::{result_of, GrpcError};
