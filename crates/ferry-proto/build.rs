fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh machine has no protoc: use the vendored one unless the caller chose another.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    // Read at run time, not with env!: a build script compiled for one checkout is reused by
    // another sharing the target directory, and must read that checkout's protos.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files =
        ["ferry/v1/ferry.proto", "ferry/internal/v1/internal.proto"].map(|file| root.join(file));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_prost_build::configure()
        .bytes(".ferry.internal.v1")
        .compile_protos(&files, &[root])?;
    Ok(())
}
