//! Protobuf definitions of the public and internal gRPC APIs.
