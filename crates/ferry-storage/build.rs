//! Builds RocksDB's CRC32C for this CPU when the node links the system's RocksDB.
//!
//! Debian's `librocksdb.a` (see `.cargo/config.toml`) is built portable: its CRC32C, which checksums
//! every WAL and blob-file record, is the table-driven software one, about 7% of a node's CPU under
//! batched sends (docs/benchmarks.md, thirty-fourth pass). Building all of RocksDB for the CPU costs
//! 20+ minutes on two cores; this compiles only its `util/crc32c.cc`, from the sources the
//! `librocksdb-sys` crate carries, with SSE4.2 and carry-less multiply enabled, and links it whole
//! ahead of the archive, so the linker never takes the archive's portable copy (the two define the
//! same functions: a mismatch fails the link, it cannot mix them). The compiled code still checks
//! the CPU at start-up (cpuid) and falls back to the table on CPUs without SSE4.2.
//!
//! Without `ROCKSDB_LIB_DIR`, `librocksdb-sys` builds RocksDB itself, with its own CRC32C (built for
//! SSE4.2 when the target enables it): nothing to do then, and on targets other than x86-64 neither.

use std::{env, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    let system_rocksdb = env::var_os("ROCKSDB_LIB_DIR").is_some();
    let x86_64 = env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    if !(system_rocksdb && x86_64) {
        return;
    }
    let sources = PathBuf::from(
        env::var_os("DEP_ROCKSDB_CARGO_MANIFEST_DIR")
            .expect("librocksdb-sys names its sources' directory"),
    )
    .join("rocksdb");
    let crc32c = sources.join("util/crc32c.cc");
    println!("cargo:rerun-if-changed={}", crc32c.display());
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file(&crc32c)
        .include(&sources)
        .include(sources.join("include"))
        .define("ROCKSDB_PLATFORM_POSIX", None)
        .define("OS_LINUX", None)
        .define("HAVE_SSE42", None)
        .define("HAVE_PCLMUL", None)
        .flag("-msse4.2")
        .flag("-mpclmul")
        .warnings(false)
        .link_lib_modifier("+whole-archive")
        .compile("ferry_rocksdb_crc32c");
}
