//! Prometheus metrics: requests by upstream, operation class and decision; latency histograms.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a finished request (the class and decision are fixed words, so only the upstream's
/// name is copied to look a counter up).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) upstream: String,
    pub(crate) class: &'static str,
    pub(crate) decision: &'static str,
}

/// Labels of the latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LatencyLabels {
    pub(crate) upstream: String,
}

/// The gateway's metrics and their registry.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) requests: Family<RequestLabels, Counter>,
    pub(crate) decision_seconds: Histogram,
    pub(crate) upstream_seconds: Family<LatencyLabels, Histogram>,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("blastwall");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Proxied requests by upstream, strictest operation class and decision",
            requests.clone(),
        );
        let decision_seconds = Histogram::new(exponential_buckets(0.000_005, 2.0, 16));
        registry.register(
            "decision_seconds",
            "Time from request to decision (authenticate, classify, authorize)",
            decision_seconds.clone(),
        );
        let upstream_seconds = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
        });
        registry.register(
            "upstream_seconds",
            "Time until the upstream's response headers",
            upstream_seconds.clone(),
        );
        Self {
            registry,
            requests,
            decision_seconds,
            upstream_seconds,
        }
    }

    /// Counts a finished request.
    pub(crate) fn count(&self, upstream: &str, class: &'static str, decision: &'static str) {
        self.requests
            .get_or_create(&RequestLabels {
                upstream: upstream.to_owned(),
                class,
                decision,
            })
            .inc();
    }

    /// The text exposition.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
