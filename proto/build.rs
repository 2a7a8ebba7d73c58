//! Compiles wiretrail.v1 with protox (pure Rust; no system protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/wiretrail/v1/record.proto", "proto/wiretrail/v1/collector.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
