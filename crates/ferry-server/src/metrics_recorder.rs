//! The process's Prometheus recorder, and the upkeep it needs.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::RouterBuilder;
use metrics_util::MetricKindMask;

/// How often histograms are drained into their summaries. Until drained, every recorded sample is
/// kept, so a node nobody scrapes would grow without bound.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The prefix of every series labelled by queue (docs/metrics.md).
const PER_QUEUE_PREFIX: &str = "ferry_queue_";

/// What `/metrics` renders: the node-wide series, kept for the life of the process, then the
/// per-queue ones, each dropped once unchanged for the idle timeout.
#[derive(Clone)]
pub struct MetricsHandle {
    node_wide: PrometheusHandle,
    per_queue: PrometheusHandle,
}

impl MetricsHandle {
    /// The Prometheus text of every series.
    pub fn render(&self) -> String {
        let mut text = self.node_wide.render();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&self.per_queue.render());
        text
    }

    fn run_upkeep(&self) {
        self.node_wide.run_upkeep();
        self.per_queue.run_upkeep();
    }
}

/// Installs the recorder every `metrics::*!` macro of the process writes to, and a thread that
/// keeps it in shape. A per-queue series left unchanged for `idle_timeout` is dropped at the next
/// scrape: a deleted queue's series go, where they would otherwise stay until a restart (a live
/// queue's are touched every 10 s). Node-wide series are never dropped: a counter that reappeared
/// after a quiet spell would start again from its first increment, which `increase()` and `rate()`
/// cannot see, so an alert on a rare event (a refused cluster key, a campaign) would miss it.
pub fn install_metrics(idle_timeout: Duration) -> anyhow::Result<MetricsHandle> {
    let node_wide = PrometheusBuilder::new().build_recorder();
    let per_queue = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::ALL, Some(idle_timeout))
        .build_recorder();
    let handle = MetricsHandle {
        node_wide: node_wide.handle(),
        per_queue: per_queue.handle(),
    };
    let mut router = RouterBuilder::from_recorder(node_wide);
    router.add_route(MetricKindMask::ALL, PER_QUEUE_PREFIX, per_queue);
    metrics::set_global_recorder(router.build())
        .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })?;
    Ok(handle)
}
