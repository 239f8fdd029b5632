//! The ferry node: configuration, startup, shutdown and the ferry binary.
