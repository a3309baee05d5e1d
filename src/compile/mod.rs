//! Compiling: a graph and its outputs (and parameter updates) become an
//! [`Executable`]. [`CompileOptions`] select the passes, the dump folder,
//! verification and the rewrite budget; [`optimize`] runs the pass pipeline
//! on a copy of the program (dumping and verifying as asked) and
//! [`crate::exec::schedule_with`] plans and allocates the result.
//! [`first_difference`] and [`bisect`] compare programs on seeded inputs.

#[cfg(feature = "html")]
pub mod html;

use crate::error::{KilnError, Result};
use crate::exec::{schedule_with, Batching, Executable};
use crate::graph::dump::to_text;
use crate::graph::{Graph, NodeId, Program};
use crate::passes::{self, Firing, PassManager, PassReport};
use crate::tensor::Tensor;
use std::path::PathBuf;

/// Which rewrite passes compilation runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PassSelection {
    /// The whole pipeline (default).
    All,
    /// No passes: the unrewritten graph.
    None,
    /// Only these passes (by name), in pipeline order.
    Named(Vec<String>),
}

/// How to compile.
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Which passes run.
    pub passes: PassSelection,
    /// Run the graph before and after every pass on seeded random inputs and
    /// fail compilation, naming the pass, if any output or update differs by
    /// more than `1e-4 · (1 + |value|)`. Default: env `KILN_VERIFY=1`.
    pub verify: bool,
    /// Write the graph before the pipeline (`00-input.txt`) and after every
    /// pass that changed it (`01-permute.txt`, ...). Default: env `KILN_DUMP`
    /// (ignored when empty). An empty path is refused by `compile`.
    pub dump_dir: Option<PathBuf>,
    /// Threads a run uses (`None`: env `KILN_THREADS`, else every core). With
    /// one thread a run stays on the calling thread; with more, the calling
    /// thread joins a rayon pool of that size as one of its workers on its first
    /// run (rayon calls it makes later run in that pool too) and shares each
    /// run's work with the pool's other threads.
    pub threads: Option<usize>,
    /// Stop the pipeline after this many rewrites (`None`: run it to its
    /// fixpoint). With [`verify`](Self::verify) or
    /// [`first_difference`], this bisects a rewrite that changes results
    /// (`kiln dump --stop-after N`, `kiln dump --bisect`).
    pub stop_after: Option<usize>,
    /// Compile for training (PyTorch's `module.train()`): dropout draws
    /// masks and every [`train_eval`](crate::ops::OpBuilder::train_eval)
    /// takes its training value (BatchNorm's batch statistics). `false`,
    /// the default, compiles for evaluation (`module.eval()`). The mode is
    /// bound before the passes run, so each mode compiles to its own graph
    /// (dumped as `01-train.txt` / `01-eval.txt` when that changed it).
    /// [`crate::Trainer`] compiles its step for training.
    pub training: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            passes: PassSelection::All,
            verify: std::env::var("KILN_VERIFY").is_ok_and(|v| v == "1"),
            // an empty KILN_DUMP means none (not the current directory)
            dump_dir: std::env::var_os("KILN_DUMP")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            threads: None,
            stop_after: None,
            training: false,
        }
    }
}

impl CompileOptions {
    /// Options that run no pass (the unrewritten graph).
    pub fn unrewritten() -> Self {
        CompileOptions {
            passes: PassSelection::None,
            ..Self::default()
        }
    }
    /// The thread count these options resolve to (see
    /// [`crate::exec::thread_count`]).
    pub fn thread_count(&self) -> Result<usize> {
        crate::exec::thread_count(self.threads)
    }
    /// The pass pipeline these options select.
    pub fn pipeline(&self) -> Result<PassManager> {
        let passes = match &self.passes {
            PassSelection::All => passes::all_passes(),
            PassSelection::None => vec![],
            PassSelection::Named(names) => passes::passes_named(names)?,
        };
        Ok(PassManager::from_passes(passes).stop_after(self.stop_after))
    }
}

/// Compiles the part of `graph` that `outputs` depend on: the way in.
/// `options` select the passes, dumps, verification, threads and rewrite
/// budget ([`CompileOptions::default`]: every pass, the `KILN_*`
/// environment). The passes rewrite a copy of the graph; the result is
/// scheduled with its memory planned ([`Executable::run`] runs it).
///
/// `Err` if an output is no node of `graph`, there are no outputs, a pass
/// fails (naming it and its rule), verification finds a difference, or the
/// plan's memory cannot be allocated.
pub fn compile(graph: &Graph, outputs: &[NodeId], options: &CompileOptions) -> Result<Executable> {
    let program = Program {
        graph: graph.clone(),
        outputs: outputs.to_vec(),
        updates: vec![],
    };
    compile_program(program, options)
}

/// [`compile`] for a [`Program`], whose parameter updates are applied after
/// every run: the value of each `(param, value)` pair's `value` node becomes
/// the parameter's new value (all reads in that run see the old value). This
/// is how a training step applies its optimiser ([`crate::Trainer`]).
///
/// A program with a symbolic batch ([`crate::BATCH`]) is specialised for
/// batch 1 (2 when compiling for training, where batch statistics need two
/// values) and compiled; a run with another batch compiles (once) and runs
/// that batch's specialisation, sharing parameters and state (see
/// [`Executable::batch`]). With a dump folder, each batch dumps into its
/// own subfolder `batch-N`.
pub fn compile_program(program: Program, options: &CompileOptions) -> Result<Executable> {
    if program.is_symbolic() {
        return compile_symbolic(program, options);
    }
    let (program, report) = optimize(program, options)?;
    let mut exe = schedule_with(&program, options.threads)?;
    exe.set_training(options.training);
    exe.set_report(report);
    Ok(exe)
}

/// [`compile_program`] for a program with a symbolic batch.
fn compile_symbolic(program: Program, options: &CompileOptions) -> Result<Executable> {
    program.check()?;
    let inputs = program
        .graph
        .inputs()
        .map(|(n, id)| Ok((n.to_string(), program.graph.shape(id)?.to_vec())))
        .collect::<Result<_>>()?;
    let options = options.clone();
    let training = options.training;
    let build = move |b: usize| {
        let dump_dir = options
            .dump_dir
            .as_ref()
            .map(|d| d.join(format!("batch-{b}")));
        let o = CompileOptions {
            dump_dir,
            ..options.clone()
        };
        compile_program(program.specialise(b)?, &o)
    };
    let first = if training { 2 } else { 1 };
    let mut exe = build(first)?;
    exe.set_batching(Batching::new(Box::new(build), inputs, first));
    Ok(exe)
}

/// Runs the pipeline the options select on `program`, dumping and verifying as they ask.
pub fn optimize(program: Program, options: &CompileOptions) -> Result<(Program, PassReport)> {
    optimize_with(program, &options.pipeline()?, options)
}

/// Runs `pipeline` on `program`, dumping and verifying as `options` ask
/// (their pass selection is ignored).
pub fn optimize_with(
    mut program: Program,
    pipeline: &PassManager,
    options: &CompileOptions,
) -> Result<(Program, PassReport)> {
    program.check()?;
    let mut dumped = 0usize;
    let mut dump = |name: &str, p: &Program| -> Result<()> {
        if let Some(dir) = &options.dump_dir {
            if dir.as_os_str().is_empty() {
                return Err(KilnError::Invalid(
                    "dump_dir is empty: name a directory for the pass dumps (KILN_DUMP)".into(),
                ));
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| KilnError::Invalid(format!("{}: {e}", dir.display())))?;
            let path = dir.join(format!("{dumped:02}-{name}.txt"));
            std::fs::write(&path, to_text(&p.graph, &p.roots()))
                .map_err(|e| KilnError::Invalid(format!("{}: {e}", path.display())))?;
            dumped += 1;
        }
        Ok(())
    };
    dump("input", &program)?;
    if program.bind_mode(options.training)? > 0 {
        dump(if options.training { "train" } else { "eval" }, &program)?;
    }
    let mut before = options.verify.then(|| program.clone());
    let report = pipeline.run_observed(&mut program, |name, _, p| {
        dump(name, p)?;
        if let Some(prev) = before.as_mut() {
            verify(name, prev, p, options)?;
            *prev = p.clone();
        }
        Ok(())
    })?;
    Ok((program, report))
}

/// What [`bisect`] found.
#[derive(Clone, Debug)]
pub struct Bisection {
    /// Rewrites the pipeline applies in all.
    pub total: usize,
    /// The first rewrite after which the results differ from the
    /// unrewritten graph's, and how they differ; `None` if none does.
    pub first_bad: Option<(Firing, String)>,
}

/// Finds the first rewrite of `pipeline` after which `program` computes
/// something else than unrewritten ([`first_difference`] on seeded random
/// inputs), by binary search over the rewrite budget (a rewrite that
/// changes results is taken to stay visible). `pipeline`'s budget is used
/// as the upper end and left as it was.
pub fn bisect(
    program: &Program,
    pipeline: &mut PassManager,
    options: &CompileOptions,
) -> Result<Bisection> {
    let mut program = program.clone();
    program.bind_mode(options.training)?;
    let program = &program;
    let budget = pipeline.budget();
    let mut upto = |n: Option<usize>| -> Result<(Program, PassReport)> {
        pipeline.set_stop_after(n);
        let mut p = program.clone();
        let report = pipeline.run(&mut p);
        pipeline.set_stop_after(budget);
        Ok((p, report?))
    };
    let total = upto(budget)?.1.log.applied();
    let mut differs = |n: usize| -> Result<Option<(Firing, String)>> {
        let (p, report) = upto(Some(n))?;
        let what = first_difference(program, &p, options)?;
        Ok(what.and_then(|w| report.log.firings.last().map(|f| (f.clone(), w))))
    };
    let Some(mut bad) = differs(total)? else {
        return Ok(Bisection {
            total,
            first_bad: None,
        });
    };
    // no rewrites: the unrewritten graph itself; `hi` differs
    let (mut lo, mut hi) = (0, total);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match differs(mid)? {
            Some(found) => (hi, bad) = (mid, found),
            None => lo = mid,
        }
    }
    Ok(Bisection {
        total,
        first_bad: Some(bad),
    })
}

/// `Err` naming `pass` if [`first_difference`] finds one.
fn verify(pass: &str, before: &Program, after: &Program, options: &CompileOptions) -> Result<()> {
    match first_difference(before, after, options)? {
        None => Ok(()),
        Some(what) => Err(KilnError::Invalid(format!(
            "verification failed after pass `{pass}`: {what}"
        ))),
    }
}

/// Runs `before` and `after` unrewritten on the same seeded random inputs
/// (uniform in [−1, 1), seeded by each input's name) and compares every
/// output and update value: `None` when all match (both NaN, or within
/// `1e-4 · (1 + |before|)`), else what differs first (`result 0 changed,
/// first at element 3: 1 before, -1 after`). `Err` if either cannot run.
pub fn first_difference(
    before: &Program,
    after: &Program,
    options: &CompileOptions,
) -> Result<Option<String>> {
    let feeds = schedule_with(before, options.threads)?.example_feeds()?;
    let run = |p: &Program| -> Result<Vec<Tensor>> {
        let values: Vec<NodeId> = p
            .outputs
            .iter()
            .copied()
            .chain(p.updates.iter().map(|u| u.1))
            .collect();
        let probe = Program {
            graph: p.graph.clone(),
            outputs: values,
            updates: vec![],
        };
        schedule_with(&probe, options.threads)?.run(&crate::exec::feed_refs(&feeds))
    };
    let (want, got) = (run(before)?, run(after)?);
    if want.len() != got.len() {
        return Ok(Some(format!(
            "{} results before, {} after",
            want.len(),
            got.len()
        )));
    }
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        if w.shape() != g.shape() {
            return Ok(Some(format!(
                "result {i} changed shape from {:?} to {:?}",
                w.shape(),
                g.shape()
            )));
        }
        let first_bad = w
            .data()
            .iter()
            .zip(g.data())
            .position(|(&a, &b)| !same_value(a, b));
        if let Some(k) = first_bad {
            return Ok(Some(format!(
                "result {i} changed, first at element {k}: {} before, {} after",
                w.data()[k],
                g.data()[k]
            )));
        }
    }
    Ok(None)
}

/// Whether `verify` takes `got` for `want`: both NaN, or equal (infinities
/// included), or within `1e-4 · (1 + |want|)`. A NaN against a number never
/// matches (`|a − b| > tol` is false for NaN, so it is tested apart).
fn same_value(want: f32, got: f32) -> bool {
    if want.is_nan() || got.is_nan() {
        return want.is_nan() && got.is_nan();
    }
    want == got || (want - got).abs() <= 1e-4 * (1.0 + want.abs())
}
