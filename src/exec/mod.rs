//! Scheduling a (rewritten) program into an [`Executable`] and running it.
//!
//! [`schedule_with`] restricts the graph to what the outputs need, fixes a
//! canonical topological schedule, plans and allocates every buffer once,
//! and loads the parameters. `run` copies the feeds in, executes the
//! schedule and copies the outputs out. Compiling (passes, options, dumps,
//! verification) is [`mod@crate::compile`]'s.

mod batch;
mod example;
mod plan;
mod pool;
mod profile;
mod run;
mod schedule;

pub use batch::{Batching, Specialiser};
pub use example::feed_refs;
pub use plan::{write_in_place, MemoryPlan, Place, Value};
pub use profile::Profile;
pub use schedule::{schedule, schedule_with, thread_count, MAX_THREADS};

use crate::error::{KilnError, Result};
use crate::ops::{Op, RunCtx};
use crate::passes::PassReport;
use crate::tensor::Tensor;

/// One scheduled op with the steps that produce its operands.
#[derive(Clone, Debug)]
struct Step {
    op: Op,
    operands: Vec<usize>,
    shape: Vec<usize>,
    /// Elements of the step's value (all outputs of a multi-output op).
    len: usize,
    /// The value's element type (an `i64` input is converted into the arena).
    dtype: crate::DType,
}

/// A range every fed value of an `i64` input must lie in: an op reads the
/// input's values (possibly moved) as indices.
#[derive(Clone, Debug)]
struct IndexCheck {
    /// The input.
    input: String,
    /// The values it may hold.
    range: crate::ops::IndexRange,
    /// The op that reads them (`gather %12`), for messages.
    reader: String,
}

/// A compiled graph, ready to run many times.
#[derive(Debug)]
pub struct Executable {
    steps: Vec<Step>,
    plan: MemoryPlan,
    /// Every value the plan places in memory (parameters included).
    arena: crate::kernels::arena::Arena,
    /// Computing steps by level (see [`MemoryPlan`]).
    levels: Vec<Vec<usize>>,
    /// Each level's written and read arena regions, checked disjoint.
    checked: crate::kernels::arena::CheckedLevels,
    /// Fed inputs read in place (not copied into the arena).
    fed_slots: usize,
    /// Input name → step that holds it (only inputs the outputs need).
    feeds: Vec<(String, usize)>,
    /// All input names of the source graph (feeds for unneeded inputs are accepted and ignored).
    known_inputs: Vec<String>,
    /// Their declared shapes (a feed for an input the outputs do not need is
    /// still checked against it).
    known_shapes: Vec<Vec<usize>>,
    /// Their declared element types.
    known_dtypes: Vec<crate::DType>,
    /// The index ranges `i64` feeds are checked against before a run.
    index_checks: Vec<IndexCheck>,
    /// Parameter name → step that holds it.
    params: Vec<(String, usize)>,
    outputs: Vec<usize>,
    /// `(parameter step, value step)`: after each run the value is written into the parameter.
    updates: Vec<(usize, usize)>,
    ctx: RunCtx,
    report: PassReport,
    profile: Option<Profile>,
    /// Threads a run uses (1: the caller's alone; see [`pool`] for more).
    threads: usize,
    /// [`scratch::grown`] when every pool thread last reserved the scratch
    /// any thread has needed.
    scratch_seen: usize,
    /// Per step: where an updated parameter's value before the updates is
    /// held while they are applied (for parameters that are another
    /// update's new value or an output: a run reads and returns old values).
    held_at: Vec<Option<usize>>,
    /// The held values.
    held: Vec<f32>,
    /// For a program with a symbolic batch: the other batches' executables.
    batching: Option<Box<Batching>>,
}

impl Executable {
    /// The mode the program was compiled for ([`crate::CompileOptions::training`]).
    pub(crate) fn set_training(&mut self, training: bool) {
        self.ctx.training = training;
    }

    /// Names of the parameters (and state) this executable holds.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|(n, _)| n.as_str())
    }

    /// The current value of parameter `name`, borrowed (no copy).
    pub fn param_data(&self, name: &str) -> Option<&[f32]> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, s)| self.data(s))
    }

    /// The current value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<Tensor> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, s)| self.value(s))
    }

    /// Replaces the value of parameter `name`; `Err` if unknown or of another shape.
    pub fn set_param(&mut self, name: &str, value: &Tensor) -> Result<()> {
        self.check_param_shape(name, value.shape())?;
        self.set_param_data(name, value.data())
    }

    /// Replaces the value of parameter `name` from row-major data of its size.
    pub fn set_param_data(&mut self, name: &str, data: &[f32]) -> Result<()> {
        let step = self.check_param_len(name, data.len())?;
        let at = self.arena_at(step);
        self.arena[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn check_param_len(&self, name: &str, len: usize) -> Result<usize> {
        let &(_, step) = self.params.iter().find(|(n, _)| n == name).ok_or_else(|| {
            KilnError::Invalid(format!("no parameter named `{name}` in this executable"))
        })?;
        let want: usize = self.steps[step].shape.iter().product();
        if len != want {
            return Err(KilnError::Shape {
                op: "param".into(),
                message: format!(
                    "value for `{name}` has {len} elements, the parameter {:?} has {want}",
                    self.steps[step].shape
                ),
            });
        }
        Ok(step)
    }

    fn check_param_shape(&self, name: &str, shape: &[usize]) -> Result<()> {
        let &(_, step) = self.params.iter().find(|(n, _)| n == name).ok_or_else(|| {
            KilnError::Invalid(format!("no parameter named `{name}` in this executable"))
        })?;
        let want = &self.steps[step].shape;
        if shape != want.as_slice() {
            return Err(KilnError::Shape {
                op: "param".into(),
                message: format!(
                    "value for `{name}` has shape {shape:?}, the parameter has {want:?}"
                ),
            });
        }
        Ok(())
    }

    /// Number of scheduled ops (including inputs and parameters).
    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// What the compiler's passes did to the graph.
    pub fn report(&self) -> &PassReport {
        &self.report
    }

    /// Replaces the record of what the passes did (for executables built with [`schedule_with`]).
    pub fn set_report(&mut self, report: PassReport) {
        self.report = report;
    }

    /// Steps that write their result over an operand nothing reads afterwards
    /// (element-wise ops; see [`write_in_place`]).
    pub fn in_place_steps(&self) -> usize {
        self.plan.in_place.iter().filter(|p| p.is_some()).count()
    }

    /// Threads a run uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes the arena would need if no two values shared memory (compare
    /// with [`planned_bytes`](Self::planned_bytes)).
    pub fn unshared_bytes(&self) -> usize {
        self.plan.unshared_len * std::mem::size_of::<f32>()
    }

    /// Peak bytes of the arena planned at compile time: every intermediate,
    /// output and parameter (fed inputs are read in place).
    pub fn planned_bytes(&self) -> usize {
        self.plan.bytes()
    }
}
