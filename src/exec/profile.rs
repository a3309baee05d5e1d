//! Per-op timing of an executable's runs (off unless asked for).

use std::time::Duration;

/// Accumulated run time per op kind, in the order kinds first ran.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    /// `(op name, calls, total time)`.
    pub ops: Vec<(&'static str, u64, Duration)>,
    /// Runs profiled.
    pub runs: u64,
}

impl Profile {
    pub(crate) fn record(&mut self, op: &'static str, took: Duration) {
        match self.ops.iter_mut().find(|(name, _, _)| *name == op) {
            Some(entry) => {
                entry.1 += 1;
                entry.2 += took;
            }
            None => self.ops.push((op, 1, took)),
        }
    }

    /// Total time over all ops.
    pub fn total(&self) -> Duration {
        self.ops.iter().map(|o| o.2).sum()
    }
}

impl std::fmt::Display for Profile {
    /// The op kinds by time spent, with their share and time per run.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.total().as_secs_f64().max(f64::MIN_POSITIVE);
        let runs = self.runs.max(1) as f64;
        let mut ops = self.ops.clone();
        ops.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
        writeln!(
            f,
            "{:24} {:>7} {:>12} {:>7}",
            "op", "calls", "ms/run", "share"
        )?;
        for (name, calls, took) in ops {
            let s = took.as_secs_f64();
            writeln!(
                f,
                "{name:24} {:>7} {:>12.3} {:>6.1}%",
                calls as f64 / runs,
                s * 1e3 / runs,
                100.0 * s / total
            )?;
        }
        Ok(())
    }
}
