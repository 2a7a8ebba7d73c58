//! Compiles wiretrail.v1 with protox (pure Rust; no system protoc needed).
//! The tonic clients and services are generated only with the `grpc` feature.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/wiretrail/v1/record.proto", "proto/wiretrail/v1/collector.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(grpc).build_server(grpc).compile_fds(fds)?;
    Ok(())
}
