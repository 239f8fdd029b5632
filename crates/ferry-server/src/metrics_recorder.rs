//! The process's Prometheus recorder, and the upkeep it needs.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// How often histograms are drained into their summaries. Until drained, every recorded sample is
/// kept, so a node nobody scrapes would grow without bound.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the recorder every `metrics::*!` macro of the process writes to, and a thread that
/// keeps it in shape. A series (any kind) left unchanged for `idle_timeout` is dropped from
/// `/metrics` at the next scrape: a deleted queue's series go, where they would otherwise stay
/// until a restart.
pub fn install_metrics(idle_timeout: Duration) -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::ALL, Some(idle_timeout))
        .install_recorder()?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })?;
    Ok(handle)
}
