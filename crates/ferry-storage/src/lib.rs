//! RocksDB storage: Raft logs and queue state of every group on a node.
