//! The public gRPC service (ferry.v1) over the broker.
