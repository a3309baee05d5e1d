//! The compiler's rewrite passes and the pass manager.
//!
//! A pass finds a slow generic pattern in the graph and rewrites it into a
//! faster equivalent. The manager runs a pipeline of passes to a fixpoint.
//! The rewrites themselves (Transpose → Permute, conv gradient patterns,
//! pooling with indices, fusion, clean-ups) each live in their own file here.

use crate::error::{KilnError, Result};
use crate::graph::Graph;

/// A graph rewrite.
pub trait Pass {
    /// Short name, used in dumps and reports (`permute`, `dce`...).
    fn name(&self) -> &'static str;
    /// Rewrites `graph` in place and returns how many rewrites it applied
    /// (0 when the pattern was not found: the graph is then unchanged).
    fn run(&self, graph: &mut Graph) -> Result<usize>;
}

/// How many rewrites each pass applied in one pipeline run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// `(pass name, rewrites)` in pipeline order, summed over iterations.
    pub rewrites: Vec<(&'static str, usize)>,
    /// Pipeline iterations until nothing changed.
    pub iterations: usize,
}

/// Runs a pipeline of passes until none of them rewrites anything.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    max_iterations: usize,
}

impl Default for PassManager {
    fn default() -> Self {
        PassManager {
            passes: Vec::new(),
            max_iterations: 16,
        }
    }
}

impl PassManager {
    /// An empty pipeline (runs nothing: the unrewritten graph).
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a pass to the pipeline.
    pub fn with(mut self, pass: impl Pass + 'static) -> Self {
        self.passes.push(Box::new(pass));
        self
    }
    /// Caps the number of pipeline iterations (the fixpoint watchdog).
    pub fn max_iterations(mut self, n: usize) -> Self {
        self.max_iterations = n;
        self
    }
    /// Runs the pipeline to a fixpoint. `Err` naming the passes that still
    /// rewrote on the last allowed iteration if no fixpoint is reached.
    pub fn run(&self, graph: &mut Graph) -> Result<PassReport> {
        let mut report = PassReport {
            rewrites: self.passes.iter().map(|p| (p.name(), 0)).collect(),
            iterations: 0,
        };
        for _ in 0..self.max_iterations {
            report.iterations += 1;
            let mut fired = Vec::new();
            for (i, pass) in self.passes.iter().enumerate() {
                let n = pass.run(graph)?;
                report.rewrites[i].1 += n;
                if n > 0 {
                    fired.push(pass.name());
                }
            }
            if fired.is_empty() {
                return Ok(report);
            }
            if report.iterations == self.max_iterations {
                return Err(KilnError::Invalid(format!(
                    "pass pipeline reached no fixpoint after {} iterations; still rewriting: {}",
                    self.max_iterations,
                    fired.join(", ")
                )));
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Rewrites `left` times, then finds nothing more to do.
    struct Countdown {
        left: Cell<usize>,
    }
    impl Pass for Countdown {
        fn name(&self) -> &'static str {
            "countdown"
        }
        fn run(&self, _: &mut Graph) -> Result<usize> {
            let n = self.left.get();
            self.left.set(n.saturating_sub(1));
            Ok(usize::from(n > 0))
        }
    }

    /// Claims a rewrite every time: never reaches a fixpoint.
    struct Oscillate;
    impl Pass for Oscillate {
        fn name(&self) -> &'static str {
            "oscillate"
        }
        fn run(&self, _: &mut Graph) -> Result<usize> {
            Ok(1)
        }
    }

    #[test]
    fn runs_to_a_fixpoint_and_counts_rewrites() {
        let pm = PassManager::new().with(Countdown { left: Cell::new(3) });
        let report = pm.run(&mut Graph::new()).unwrap();
        assert_eq!(report.rewrites, vec![("countdown", 3)]);
        assert_eq!(
            report.iterations, 4,
            "three rewriting iterations and one that finds nothing"
        );
    }

    #[test]
    fn watchdog_names_the_pass_that_never_settles() {
        let pm = PassManager::new()
            .with(Countdown { left: Cell::new(1) })
            .with(Oscillate)
            .max_iterations(5);
        let err = pm.run(&mut Graph::new()).unwrap_err().to_string();
        assert!(
            err.contains("5 iterations") && err.contains("oscillate") && !err.contains("countdown"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_pipeline_leaves_the_graph_alone() {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        g.relu(x).unwrap();
        let report = PassManager::new().run(&mut g).unwrap();
        assert_eq!((report.iterations, g.len()), (1, 2));
    }
}
