//! The compiler's rewrite passes and the pass manager.
//!
//! A pass finds a slow generic pattern in the graph and rewrites it into a
//! faster equivalent that computes the same values. Each pass lives in its own
//! file here and says in its doc comment which pattern it rewrites into what.
//! The manager runs a pipeline of passes to a fixpoint.

mod algebraic;
mod attention;
mod avg_pool;
mod const_fold;
mod conv_affine;
mod conv_epilogue;
mod conv_forward;
mod conv_input_grad;
mod conv_kernel_grad;
mod cse;
mod dce;
mod fuse_elementwise;
mod matmul_transpose;
mod max_pool;
mod patch;
pub mod pattern;
mod permute;
mod pool_match;
mod rewrite;
mod trace;

pub use avg_pool::AvgPool;
pub use const_fold::ConstFold;
pub use cse::Cse;
pub use dce::Dce;
pub use fuse_elementwise::FuseElementwise;
pub use max_pool::MaxPool;

use crate::error::{KilnError, Result};
use crate::graph::Program;
pub use patch::{Patch, Src};
pub use rewrite::Rewriter;
pub use trace::{Firing, RewriteLog, RuleStats};

/// A graph rewrite: finds patterns and proposes [`Patch`]es to the
/// [`Rewriter`], the only thing that edits the graph.
pub trait Pass {
    /// Short name, used in dumps, reports and `--stage` (`permute`, `dce`...).
    fn name(&self) -> &'static str;
    /// The names of its rules, as the trace and the rules table show them
    /// (default: the pass's own name, for a pass that is not made of rules;
    /// the manager then counts each run as one attempt and times it).
    fn rules(&self) -> Vec<&'static str> {
        vec![self.name()]
    }
    /// Passes that must run before this one when both are in a pipeline
    /// (their rewrites produce what this one matches).
    fn after(&self) -> &'static [&'static str] {
        &[]
    }
    /// Passes that must run after this one when both are in a pipeline
    /// (they would destroy what this one matches).
    fn before(&self) -> &'static [&'static str] {
        &[]
    }
    /// Proposes its rewrites through `rw` and returns how many were applied
    /// (0 when the pattern was not found: the program is then unchanged).
    fn run(&self, rw: &mut Rewriter) -> Result<usize>;
}

/// Every pass, in pipeline order: fuse pooling, fold constants and
/// simplify, fuse convolutions, fold transposes into matmuls, fuse attention cores and the
/// convolution gradients, turn the remaining transposes into `Permute`, fold
/// activations into convolutions and element-wise chains into single loops,
/// then merge and prune. Each pass states the order it needs
/// ([`Pass::after`], [`Pass::before`]); [`PassManager::run`] checks it.
pub fn all_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(MaxPool),
        Box::new(AvgPool),
        Box::new(ConstFold),
        Box::new(algebraic::pass()),
        Box::new(conv_forward::pass()),
        Box::new(conv_affine::pass()),
        Box::new(matmul_transpose::pass()),
        Box::new(attention::pass()),
        Box::new(conv_kernel_grad::pass()),
        Box::new(conv_input_grad::pass()),
        Box::new(permute::pass()),
        Box::new(conv_epilogue::pass()),
        Box::new(FuseElementwise),
        Box::new(Cse),
        Box::new(Dce),
    ]
}

/// The passes named in `names`, in pipeline order; `Err` naming an unknown one.
pub fn passes_named(names: &[String]) -> Result<Vec<Box<dyn Pass>>> {
    let known: Vec<&str> = all_passes().iter().map(|p| p.name()).collect();
    if let Some(bad) = names.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(KilnError::Invalid(format!(
            "unknown pass `{bad}`; passes: {}",
            known.join(", ")
        )));
    }
    Ok(all_passes()
        .into_iter()
        .filter(|p| names.iter().any(|n| n == p.name()))
        .collect())
}

/// How many rewrites each pass applied in one pipeline run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// `(pass name, rewrites)` in pipeline order, summed over iterations
    /// (passes that never fired are listed with 0).
    pub rewrites: Vec<(&'static str, usize)>,
    /// Pipeline iterations until nothing changed.
    pub iterations: usize,
    /// Nodes in the graph before the pipeline.
    pub nodes_before: usize,
    /// Nodes in the graph after the pipeline.
    pub nodes_after: usize,
    /// Every rewrite in order, and each rule's statistics.
    pub log: RewriteLog,
}

impl std::fmt::Display for PassReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "nodes: {} before, {} after ({} pipeline iterations)",
            self.nodes_before, self.nodes_after, self.iterations
        )?;
        if self.log.stopped {
            writeln!(
                f,
                "stopped after {} rewrites (the rewrite budget)",
                self.log.applied()
            )?;
        }
        for (name, n) in &self.rewrites {
            writeln!(f, "  {name:18} {n} rewrites")?;
        }
        Ok(())
    }
}

/// Runs a pipeline of passes until none of them rewrites anything.
pub struct PassManager {
    passes: Vec<Box<dyn Pass>>,
    max_iterations: usize,
    stop_after: Option<usize>,
}

impl Default for PassManager {
    fn default() -> Self {
        PassManager {
            passes: Vec::new(),
            max_iterations: 16,
            stop_after: None,
        }
    }
}

impl PassManager {
    /// An empty pipeline (runs nothing: the unrewritten graph).
    pub fn new() -> Self {
        Self::default()
    }
    /// A pipeline of the given passes.
    pub fn from_passes(passes: Vec<Box<dyn Pass>>) -> Self {
        PassManager {
            passes,
            ..Self::default()
        }
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
    /// Stops after the `n`-th rewrite (`None`: run to the fixpoint), to
    /// bisect a bad rewrite.
    pub fn stop_after(mut self, n: Option<usize>) -> Self {
        self.stop_after = n;
        self
    }
    /// The rewrite budget (`None`: none).
    pub fn budget(&self) -> Option<usize> {
        self.stop_after
    }
    /// Sets the rewrite budget in place (see [`stop_after`](Self::stop_after)).
    pub fn set_stop_after(&mut self, n: Option<usize>) {
        self.stop_after = n;
    }
    /// Runs the pipeline to a fixpoint (see [`PassManager::run_observed`]).
    pub fn run(&self, program: &mut Program) -> Result<PassReport> {
        self.run_observed(program, |_, _, _| Ok(()))
    }
    /// `Err` naming two passes of the pipeline in an order one of them
    /// forbids ([`Pass::after`], [`Pass::before`]).
    fn check_order(&self) -> Result<()> {
        let at = |name: &str| self.passes.iter().position(|p| p.name() == name);
        for (i, pass) in self.passes.iter().enumerate() {
            let late = pass.after().iter().find(|a| at(a).is_some_and(|j| j > i));
            let early = pass.before().iter().find(|b| at(b).is_some_and(|j| j < i));
            if let Some(other) = late.or(early) {
                let (first, second) = match late.is_some() {
                    true => (*other, pass.name()),
                    false => (pass.name(), *other),
                };
                return Err(KilnError::Invalid(format!(
                    "pass `{second}` must run after `{first}`, but the pipeline puts it before"
                )));
            }
        }
        Ok(())
    }
    /// Runs the pipeline to a fixpoint, calling `after(pass name, round,
    /// program)` after every pass application that rewrote something (for dumps and
    /// verification). `Err` if the pipeline's order breaks a pass's declared
    /// needs, or naming the passes that still rewrote on the last allowed
    /// iteration if no fixpoint is reached. With a rewrite budget
    /// ([`stop_after`](Self::stop_after)), stops once it is spent.
    pub fn run_observed(
        &self,
        program: &mut Program,
        mut after: impl FnMut(&str, usize, &Program) -> Result<()>,
    ) -> Result<PassReport> {
        self.check_order()?;
        if self.max_iterations == 0 {
            return Err(KilnError::Invalid(
                "the pass pipeline needs at least one iteration (max_iterations)".into(),
            ));
        }
        let mut log = RewriteLog::stop_after(self.stop_after);
        for pass in &self.passes {
            for rule in pass.rules() {
                log.stats(pass.name(), rule);
            }
        }
        let mut report = PassReport {
            rewrites: self.passes.iter().map(|p| (p.name(), 0)).collect(),
            iterations: 0,
            nodes_before: program.graph.len(),
            nodes_after: 0,
            log: RewriteLog::default(),
        };
        for round in 1..=self.max_iterations {
            report.iterations = round;
            let mut fired = Vec::new();
            for (i, pass) in self.passes.iter().enumerate() {
                let started = std::time::Instant::now();
                let n = pass.run(&mut Rewriter::new(program, &mut log, pass.name(), round))?;
                if pass.rules() == [pass.name()] {
                    let s = log.stats(pass.name(), pass.name());
                    s.attempts += 1;
                    s.time += started.elapsed();
                }
                report.rewrites[i].1 += n;
                if n > 0 {
                    fired.push(pass.name());
                    after(pass.name(), round, program)?;
                }
                if log.stopped {
                    break;
                }
            }
            if fired.is_empty() || log.stopped {
                break;
            }
            if round == self.max_iterations {
                return Err(KilnError::Invalid(format!(
                    "pass pipeline reached no fixpoint after {} iterations; still rewriting: {}",
                    self.max_iterations,
                    fired.join(", ")
                )));
            }
        }
        report.nodes_after = program.graph.len();
        report.log = log;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;
    use crate::ops::OpBuilder;
    use std::cell::Cell;

    fn empty() -> Program {
        Program {
            graph: Graph::new(),
            outputs: vec![],
            updates: vec![],
        }
    }

    /// Rewrites `left` times, then finds nothing more to do.
    struct Countdown {
        left: Cell<usize>,
    }
    impl Pass for Countdown {
        fn name(&self) -> &'static str {
            "countdown"
        }
        fn run(&self, _: &mut Rewriter) -> Result<usize> {
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
        fn run(&self, _: &mut Rewriter) -> Result<usize> {
            Ok(1)
        }
    }

    #[test]
    fn runs_to_a_fixpoint_and_counts_rewrites() {
        let pm = PassManager::new().with(Countdown { left: Cell::new(3) });
        let report = pm.run(&mut empty()).unwrap();
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
        let err = pm.run(&mut empty()).unwrap_err().to_string();
        assert!(
            err.contains("5 iterations") && err.contains("oscillate") && !err.contains("countdown"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_pipeline_leaves_the_graph_alone() {
        let mut g = Graph::new();
        let x = g.input("x", [2]).unwrap();
        let y = g.relu(x).unwrap();
        let mut p = Program {
            graph: g,
            outputs: vec![y],
            updates: vec![],
        };
        let report = PassManager::new().run(&mut p).unwrap();
        assert_eq!((report.iterations, p.graph.len()), (1, 2));
    }
}
