//! Protobuf definitions of Ferry's gRPC APIs, compiled from `proto/` at build time with a vendored
//! protoc: `ferry.v1` is the public API, `ferry.internal.v1` the node-to-node service.
//!
//! Rule: generated code and thin conversions only; depends on no other Ferry crate.

pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

pub mod internal {
    tonic::include_proto!("ferry.internal.v1");
}
