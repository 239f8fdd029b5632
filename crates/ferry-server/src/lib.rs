//! The ferry node: configuration, startup and shutdown, and the local development cluster. The
//! `ferry` binary is a thin clap front end over [`run`] and [`dev`]; tests drive that binary.
//!
//! Rule: wiring only; behaviour lives in the library crates.

pub mod config;
mod dev;
mod metrics_recorder;
mod node;

pub use dev::dev;
pub use metrics_recorder::{install_metrics, MetricsHandle};
pub use node::run;
