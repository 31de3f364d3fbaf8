//! Compiles `proto/dtmgimp.proto` (the DTM server's gRPC API) and `proto/wf.proto` (the
//! workflow resume service) without a system `protoc`:
//! `protox` parses it into a `FileDescriptorSet` in pure Rust (it ships the well-known types,
//! so `google/protobuf/empty.proto` resolves), and `tonic-prost-build` generates the prost
//! messages and the tonic client from that set. `google.protobuf.Empty` becomes `()`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["dtmgimp.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    // The resume service of gRPC workflows: DTM is its client, the SDK serves it.
    let fds = protox::compile(["wf.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
