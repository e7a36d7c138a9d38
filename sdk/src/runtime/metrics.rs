//! Counters, gauges and latency histograms of one runtime: relaxed atomics, cheap enough for
//! the hot path. [`Runtime::metrics`](crate::Runtime::metrics) takes a [`MetricsSnapshot`];
//! the HTTP API renders it in Prometheus' text format at `GET /metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A latency histogram with fixed buckets ([`BUCKETS`] plus +Inf).
#[derive(Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len());
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let count = cumulative + self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

/// The live metrics of a runtime, shared by its actors.
#[derive(Default)]
pub(crate) struct Metrics {
    pub(crate) turns: AtomicU64,
    pub(crate) turn_commits: AtomicU64,
    pub(crate) turn_commit_failures: AtomicU64,
    pub(crate) replays: AtomicU64,
    pub(crate) instances_completed: AtomicU64,
    pub(crate) instances_failed: AtomicU64,
    pub(crate) instances_terminated: AtomicU64,
    pub(crate) activities_completed: AtomicU64,
    pub(crate) activities_failed: AtomicU64,
    pub(crate) activities_timed_out: AtomicU64,
    pub(crate) activities_cancelled: AtomicU64,
    pub(crate) activity_heartbeats: AtomicU64,
    pub(crate) activity_claims: AtomicU64,
    pub(crate) activities_quick: AtomicU64,
    pub(crate) instances_loaded: AtomicI64,
    pub(crate) activities_running: AtomicI64,
    pub(crate) activities_queued: AtomicI64,
    pub(crate) turn_latency: Histogram,
    pub(crate) activity_latency: Histogram,
}

impl Metrics {
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let gauge = |gauge: &AtomicI64| u64::try_from(gauge.load(Ordering::Relaxed)).unwrap_or(0);
        MetricsSnapshot {
            turns: get(&self.turns),
            turn_commits: get(&self.turn_commits),
            turn_commit_failures: get(&self.turn_commit_failures),
            replays: get(&self.replays),
            instances_completed: get(&self.instances_completed),
            instances_failed: get(&self.instances_failed),
            instances_terminated: get(&self.instances_terminated),
            activities_completed: get(&self.activities_completed),
            activities_failed: get(&self.activities_failed),
            activities_timed_out: get(&self.activities_timed_out),
            activities_cancelled: get(&self.activities_cancelled),
            activity_heartbeats: get(&self.activity_heartbeats),
            activity_claims: get(&self.activity_claims),
            activities_quick: get(&self.activities_quick),
            instances_loaded: gauge(&self.instances_loaded),
            activities_running: gauge(&self.activities_running),
            activities_queued: gauge(&self.activities_queued),
            turn_latency: self.turn_latency.snapshot(),
            activity_latency: self.activity_latency.snapshot(),
        }
    }
}

/// A point-in-time copy of a runtime's metrics ([`Runtime::metrics`](crate::Runtime::metrics)).
///
/// Counters count since the runtime started; gauges are current values.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Orchestration turns committed.
    pub turns: u64,
    /// Commits of orchestration turns: fewer than [`turns`](Self::turns) when turns held for
    /// their in-memory calls' results shared a commit (see "One operation at a time" in
    /// docs/architecture.md).
    pub turn_commits: u64,
    /// Turn commits that failed (the turn was retried or the instance unloaded).
    pub turn_commit_failures: u64,
    /// Instances loaded from history and replayed (after being unloaded, or a restart).
    pub replays: u64,
    /// Instances this worker finished as Completed.
    pub instances_completed: u64,
    /// Instances this worker finished as Failed.
    pub instances_failed: u64,
    /// Instances this worker finished as Terminated.
    pub instances_terminated: u64,
    /// Activity executions that returned a value.
    pub activities_completed: u64,
    /// Activity executions that returned an error or panicked (timeouts included).
    pub activities_failed: u64,
    /// Activity attempts stopped by a start-to-close, heartbeat or schedule-to-close timeout.
    pub activities_timed_out: u64,
    /// Activity attempts told to stop because their orchestration no longer needed them.
    pub activities_cancelled: u64,
    /// Activity heartbeats stored (the latest details of an attempt, a few times a second).
    pub activity_heartbeats: u64,
    /// Claims of activity work items sent to the store: the fallback poll's, after a
    /// recovery, and those of a worker with flow-controlled activities (when one of their
    /// calls is queued, when a limited attempt ends, and every 20 ms while their limits hold
    /// work back; none while nothing of theirs waits).
    pub activity_claims: u64,
    /// Activity attempts of quick activities started on the runtime's thread, where their
    /// instance runs, instead of the activity worker's
    /// ([`RuntimeBuilder::quick_activities`](crate::RuntimeBuilder::quick_activities)).
    pub activities_quick: u64,
    /// Gauge: instances held in memory now.
    pub instances_loaded: u64,
    /// Gauge: activities running now.
    pub activities_running: u64,
    /// Gauge: activities waiting in this worker for a free slot.
    pub activities_queued: u64,
    /// From the start of a turn to its commit.
    pub turn_latency: HistogramSnapshot,
    /// How long activity functions ran.
    pub activity_latency: HistogramSnapshot,
}

/// A latency histogram: cumulative counts per upper bound, Prometheus-style.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, ascending; the `+Inf`
    /// bucket is [`count`](Self::count).
    pub buckets: Vec<(f64, u64)>,
    /// All observations.
    pub count: u64,
    /// The sum of all observations, in seconds.
    pub sum_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_cumulatively() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(100));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 3);
        assert_eq!(snapshot.buckets[0], (0.0005, 1));
        assert_eq!(snapshot.buckets[3], (0.005, 2));
        assert_eq!(snapshot.buckets.last().map(|b| b.1), Some(2));
        assert!((snapshot.sum_seconds - 100.0033).abs() < 1e-6);
    }
}
