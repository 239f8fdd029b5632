//! Multi-raft: openraft groups over one RocksDB and one gRPC transport.
