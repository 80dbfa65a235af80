//! Percentiles of latency samples (hdrhistogram, microsecond resolution).

use hdrhistogram::Histogram;

#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    pub n: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.2} ms · p99 {:.2} ms · max {:.2} ms (n={})",
            self.p50, self.p99, self.max, self.n
        )
    }
}

/// Percentiles of samples given in milliseconds; `None` without samples.
pub fn percentiles(samples_ms: &[f64]) -> Option<Percentiles> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok()?;
    for s in samples_ms {
        let us = (s * 1000.0).clamp(1.0, 3_600_000_000.0) as u64;
        let _ = h.record(us);
    }
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Some(Percentiles {
        n: h.len(),
        p50: ms(h.value_at_quantile(0.50)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    })
}
