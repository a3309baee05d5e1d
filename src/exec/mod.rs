//! Scheduling a (rewritten) program into an [`Executable`] and running it.
//!
//! [`schedule_with`] restricts the graph to what the outputs need, fixes a
//! canonical topological schedule, plans and allocates every buffer once,
//! and loads the parameters. `run` copies the feeds in, executes the
//! schedule and copies the outputs out. Compiling (passes, options, dumps,
//! verification) is [`mod@crate::compile`]'s.

mod plan;
mod pool;
mod profile;

pub use plan::{write_in_place, MemoryPlan, Place, Value};
pub use profile::Profile;

use crate::error::{KilnError, Result};
use crate::graph::order::ancestors_order;
use crate::graph::NodeId;
use crate::graph::Program;
use crate::kernels::scratch;
use crate::ops::{Op, RunCtx, View};
use crate::passes::PassReport;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// One scheduled op with the steps that produce its operands.
#[derive(Clone, Debug)]
struct Step {
    op: Op,
    operands: Vec<usize>,
    shape: Vec<usize>,
    /// Elements of the step's value (all outputs of a multi-output op).
    len: usize,
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
    /// During a run: the address of each fed input's data (else 0).
    feed_ptrs: Vec<usize>,
    /// Input name → step that holds it (only inputs the outputs need).
    feeds: Vec<(String, usize)>,
    /// All input names of the source graph (feeds for unneeded inputs are accepted and ignored).
    known_inputs: Vec<String>,
    /// Their declared shapes (a feed for an input the outputs do not need is
    /// still checked against it).
    known_shapes: Vec<Vec<usize>>,
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
}

/// The most threads a run may use (`CompileOptions::threads`,
/// `KILN_THREADS`): more would start more threads than any machine has cores
/// for and only slow the run down.
pub const MAX_THREADS: usize = 1024;

/// The thread count a run uses: `requested`, else env `KILN_THREADS`, else
/// the machine's available parallelism (at most [`MAX_THREADS`]). `Err` if
/// either is zero or above [`MAX_THREADS`], or `KILN_THREADS` is not a
/// number.
pub fn thread_count(requested: Option<usize>) -> Result<usize> {
    let n = match requested {
        Some(n) => n,
        None => match std::env::var("KILN_THREADS") {
            Ok(v) => v.trim().parse().map_err(|_| {
                KilnError::Invalid(format!("KILN_THREADS=`{v}` is not a thread count"))
            })?,
            Err(_) => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_THREADS),
        },
    };
    if n == 0 || n > MAX_THREADS {
        return Err(KilnError::Invalid(format!(
            "thread count {n} is out of range: it must be 1 to {MAX_THREADS}"
        )));
    }
    Ok(n)
}

/// Fixes the schedule of a (rewritten) program and allocates its buffers,
/// on the default threads (see [`schedule_with`]).
pub fn schedule(program: &Program) -> Result<Executable> {
    schedule_with(program, None)
}

/// Fixes the schedule of a (rewritten) program and allocates its buffers,
/// for runs on `threads` threads (see [`thread_count`]). `Err` if the
/// program is malformed ([`Program::check`]) or its values cannot be
/// allocated.
pub fn schedule_with(program: &Program, threads: Option<usize>) -> Result<Executable> {
    program.check()?;
    let threads = thread_count(threads)?;
    let (graph, outputs, updates) = (&program.graph, &program.outputs, &program.updates);
    let order = ancestors_order(graph, &program.roots());
    let step_of: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut steps = Vec::with_capacity(order.len());
    let (mut feeds, mut params) = (Vec::new(), Vec::new());
    for (i, &n) in order.iter().enumerate() {
        let node = graph.node(n)?;
        match &node.op {
            Op::Input { name } => feeds.push((name.clone(), i)),
            Op::Param { name } => params.push((name.clone(), i)),
            _ => {}
        }
        steps.push(Step {
            op: node.op.clone(),
            operands: graph.operands(n).iter().map(|o| step_of[o]).collect(),
            shape: node.shape.dims().to_vec(),
            len: node.shape.numel() * node.op.num_outputs(),
        });
    }
    let outputs: Vec<usize> = outputs.iter().map(|o| step_of[o]).collect();
    let updates: Vec<(usize, usize)> = updates
        .iter()
        .map(|(p, v)| (step_of[p], step_of[v]))
        .collect();
    // every value's size fits (checked when its node was built); so must
    // all of them together, for the plan's offsets
    steps
        .iter()
        .try_fold(0usize, |t, s| {
            t.checked_add(s.len.checked_next_multiple_of(64)?)
        })
        .filter(|&t| t <= crate::shape::MAX_ELEMENTS)
        .ok_or_else(|| {
            KilnError::Invalid(format!(
                "compile: the graph's values together hold more than {} elements",
                crate::shape::MAX_ELEMENTS
            ))
        })?;
    let plan = plan_memory(&steps, &outputs, &updates);
    let mut arena = crate::kernels::arena::Arena::try_zeros(
        "compile: the memory plan's arena",
        plan.arena_len,
    )?;
    for (name, step) in &params {
        let value = graph
            .param_value(name)
            .expect("every param node has a value");
        let Place::Arena(at) = plan.place[*step] else {
            unreachable!("parameters own arena memory")
        };
        arena[at..at + value.numel()].copy_from_slice(value.data());
    }
    let levels = level_groups(&steps, &plan);
    // updated parameters read after the updates start: another update's
    // new value, or an output; their old values are held meanwhile
    let mut held_at = vec![None; steps.len()];
    let mut held_len = 0usize;
    for &(p, _) in &updates {
        let read_later = updates.iter().any(|&(q, v)| v == p && q != p) || outputs.contains(&p);
        if read_later {
            held_at[p] = Some(held_len);
            held_len += steps[p].len;
        }
    }
    let held = crate::tensor::try_zeros("compile: held parameter values", held_len)?;
    let fed = plan
        .place
        .iter()
        .filter_map(|p| match p {
            Place::Feed { feed, .. } => Some(feed + 1),
            Place::Arena(_) => None,
        })
        .max()
        .unwrap_or(0);
    Ok(Executable {
        steps,
        plan,
        arena,
        levels,
        feed_ptrs: vec![0; fed],
        feeds,
        known_inputs: graph.inputs().map(|(n, _)| n.to_string()).collect(),
        known_shapes: graph
            .inputs()
            .map(|(_, id)| graph.shape(id).map(<[usize]>::to_vec))
            .collect::<Result<_>>()?,
        params,
        outputs,
        updates,
        ctx: RunCtx::default(),
        report: PassReport::default(),
        profile: None,
        threads,
        scratch_seen: 0,
        held_at,
        held,
    })
}

/// Each step's level: inputs and parameters 0, a view its base's, any other
/// step one more than its highest operand.
fn step_levels(steps: &[Step], values: &[Value]) -> Vec<usize> {
    let mut level: Vec<usize> = Vec::with_capacity(steps.len());
    for (s, v) in steps.iter().zip(values) {
        let l = match v {
            Value::View { of, .. } => level[*of],
            _ => match s.op {
                Op::Input { .. } | Op::Param { .. } => 0,
                _ => 1 + s.operands.iter().map(|&o| level[o]).max().unwrap_or(0),
            },
        };
        level.push(l);
    }
    level
}

/// Plans the arena. Outputs, multi-output results and, except of parameters
/// (whose memory updates rewrite between runs), reshapes and stop-gradients
/// are views; inputs are read from the caller's tensors unless a result the
/// run returns is (a view of) one, which is then copied in.
fn plan_memory(steps: &[Step], outputs: &[usize], updates: &[(usize, usize)]) -> MemoryPlan {
    let mut owner: Vec<usize> = Vec::with_capacity(steps.len());
    let mut values: Vec<Value> = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let view = |of: usize, offset: usize| Value::View { of, offset };
        let v = match s.op {
            Op::Output { index } => view(s.operands[0], index * s.len),
            // same data, new shape: a view of the operand's memory, no copy
            Op::Reshape { .. } | Op::StopGradient
                if !matches!(steps[owner[s.operands[0]]].op, Op::Param { .. }) =>
            {
                view(s.operands[0], 0)
            }
            Op::Input { .. } => Value::Feed,
            _ => Value::Owned(s.len),
        };
        owner.push(match v {
            Value::View { of, .. } => owner[of],
            _ => i,
        });
        values.push(v);
    }
    let mut pinned = vec![false; steps.len()];
    for &o in outputs.iter().chain(updates.iter().map(|u| &u.1)) {
        pinned[o] = true;
        if matches!(steps[owner[o]].op, Op::Input { .. }) {
            values[owner[o]] = Value::Owned(steps[owner[o]].len);
        }
    }
    for (i, s) in steps.iter().enumerate() {
        pinned[i] |= matches!(s.op, Op::Param { .. });
    }
    let levels = step_levels(steps, &values);
    let reads: Vec<Vec<usize>> = steps.iter().map(|s| s.operands.clone()).collect();
    let candidates: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            if s.operands.len() > MAX_INLINE_OPERANDS {
                return vec![]; // run_step keeps in-place operands on the stack
            }
            let shapes: Vec<&[usize]> = s.operands.iter().map(|&o| &steps[o].shape[..]).collect();
            s.op.in_place_operands(&shapes, &s.shape)
        })
        .collect();
    let in_place = write_in_place(&mut values, &levels, &reads, &pinned, &candidates);
    let mut plan = MemoryPlan::build(&values, &levels, &reads, &pinned);
    plan.in_place = in_place;
    plan
}

/// The steps that compute something (not inputs, parameters or views),
/// grouped by level: the steps of one group may run at the same time.
fn level_groups(steps: &[Step], plan: &MemoryPlan) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> =
        vec![Vec::new(); plan.level.iter().max().map_or(0, |m| m + 1)];
    for (i, s) in steps.iter().enumerate() {
        if !plan.is_view(i) && !matches!(s.op, Op::Input { .. } | Op::Param { .. }) {
            groups[plan.level[i]].push(i);
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}

/// Operands a step's views hold on the stack (more go to the heap, and such
/// steps never write in place).
const MAX_INLINE_OPERANDS: usize = 8;

/// The arena's base pointer, shared by the steps of one level (each writes
/// only its own value's region, disjoint from every value it can overlap in time).
#[derive(Clone, Copy)]
struct ArenaPtr(*mut f32);
// SAFETY: the memory plan gives values computed or read in one level disjoint
// regions, so steps of a level on different threads never touch the same element.
unsafe impl Send for ArenaPtr {}
// SAFETY: as for `Send`: shared between the level's steps, each touching its own regions.
unsafe impl Sync for ArenaPtr {}

impl Executable {
    /// Runs the graph on `feeds` (input name, value) and returns the outputs in
    /// the order they were passed to `compile`.
    ///
    /// `Err` if an input the outputs need has no feed, a name is no input of the
    /// graph, a name is fed twice, or a feed's shape differs from the input's.
    pub fn run(&mut self, feeds: &[(&str, &Tensor)]) -> Result<Vec<Tensor>> {
        self.run_in_place(feeds)?;
        Ok(self
            .outputs
            .iter()
            .map(|&o| {
                Tensor::from_vec(self.steps[o].shape.clone(), self.output_data(o).to_vec())
                    .expect("buffer sizes are planned from shapes")
            })
            .collect())
    }

    /// Runs the graph like [`run`](Self::run) but leaves the outputs in the
    /// executable's buffers, to be read with [`output`](Self::output) until the
    /// next run. Once warm (after the first run on a thread), this makes no
    /// heap allocation.
    ///
    /// With more than one thread, the calling thread joins a pool of that many
    /// threads on its first run and does part of the work (see
    /// [`CompileOptions::threads`](crate::compile::CompileOptions::threads); `Err` if the pool's threads cannot start).
    pub fn run_in_place(&mut self, feeds: &[(&str, &Tensor)]) -> Result<()> {
        self.load_feeds(feeds)?;
        if self.threads > 1 {
            let pool = pool::for_this_thread(self.threads)?;
            pool.install(|| self.execute());
            // a thread that takes a step first run by another then finds its
            // scratch already grown, so steady-state runs allocate nothing
            let grown = scratch::grown();
            if grown != self.scratch_seen {
                pool.broadcast(|_| scratch::reserve_seen());
                self.scratch_seen = grown;
            }
        } else {
            crate::kernels::par::sequential(|| self.execute());
        }
        self.apply_updates();
        self.ctx.step += 1;
        Ok(())
    }

    /// Output `i` of the last run (in the order passed to `compile`), borrowed:
    /// its shape and row-major data. `None` if there is no output `i`.
    pub fn output(&self, i: usize) -> Option<(&[usize], &[f32])> {
        let &step = self.outputs.get(i)?;
        Some((&self.steps[step].shape, self.output_data(step)))
    }

    /// Number of outputs.
    pub fn num_outputs(&self) -> usize {
        self.outputs.len()
    }

    fn load_feeds(&mut self, feeds: &[(&str, &Tensor)]) -> Result<()> {
        for (i, (name, t)) in feeds.iter().enumerate() {
            if let Some(k) = self.known_inputs.iter().position(|k| k == name) {
                if t.shape() != self.known_shapes[k].as_slice() {
                    return Err(KilnError::FeedShape {
                        name: name.to_string(),
                        expected: self.known_shapes[k].clone(),
                        got: t.shape().to_vec(),
                    });
                }
            } else {
                let is_param = self.params.iter().any(|(p, _)| p == name);
                if is_param {
                    return Err(KilnError::Invalid(format!(
                        "`{name}` is a parameter, not an input: use Executable::set_param to change it"
                    )));
                }
                return Err(KilnError::UnknownFeed {
                    name: name.to_string(),
                    known: self.known_inputs.clone(),
                });
            }
            if feeds[..i].iter().any(|(n, _)| n == name) {
                return Err(KilnError::Invalid(format!("feed `{name}` is given twice")));
            }
        }
        for (name, step) in &self.feeds {
            let (_, t) = feeds
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| KilnError::MissingFeed(name.clone()))?;
            let want = &self.steps[*step].shape;
            if t.shape() != want.as_slice() {
                return Err(KilnError::FeedShape {
                    name: name.clone(),
                    expected: want.clone(),
                    got: t.shape().to_vec(),
                });
            }
        }
        for (name, step) in &self.feeds {
            let t = feeds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t)
                .expect("checked above");
            match self.plan.place[*step] {
                Place::Arena(at) => self.arena[at..at + t.numel()].copy_from_slice(t.data()),
                Place::Feed { feed, .. } => self.feed_ptrs[feed] = t.data().as_ptr() as usize,
            }
        }
        Ok(())
    }

    /// Runs every level's steps (in parallel when the level has several and
    /// there are threads; one at a time while profiling).
    fn execute(&mut self) {
        let mut arena = std::mem::take(&mut self.arena);
        let base = ArenaPtr(arena.as_mut_ptr());
        let parallel = self.threads > 1 && self.profile.is_none();
        for level in &self.levels {
            if parallel && level.len() > 1 {
                use rayon::prelude::*;
                level.par_iter().for_each(|&i| self.run_step(i, base));
            } else {
                for &i in level {
                    let started = self.profile.is_some().then(std::time::Instant::now);
                    self.run_step(i, base);
                    if let (Some(p), Some(t)) = (self.profile.as_mut(), started) {
                        p.record(self.steps[i].op.name(), t.elapsed());
                    }
                }
            }
        }
        self.arena = arena;
        self.feed_ptrs.iter_mut().for_each(|p| *p = 0);
        if let Some(p) = self.profile.as_mut() {
            p.runs += 1;
        }
    }

    /// Computes step `i` into its arena region from its operands' memory.
    fn run_step(&self, i: usize, base: ArenaPtr) {
        const NONE: View = View {
            shape: &[],
            data: &[],
        };
        let step = &self.steps[i];
        let view = |o: usize| View {
            shape: &self.steps[o].shape,
            data: self.read(o, base),
        };
        let Place::Arena(at) = self.plan.place[i] else {
            unreachable!("computing steps own arena memory")
        };
        // SAFETY: the plan gives this step's value a region of `len` elements
        // inside the arena that no value live in this level overlaps, so no
        // other reference to it exists while the step runs.
        let out = unsafe { std::slice::from_raw_parts_mut(base.0.add(at), step.len) };
        if let Some(aliased) = self.plan.in_place[i] {
            // `out` is the overwritten operand's memory (the plan made this step
            // its last reader), so that operand is passed by shape only
            let mut views = [NONE; MAX_INLINE_OPERANDS];
            for (k, (v, &o)) in views.iter_mut().zip(&step.operands).enumerate() {
                *v = if k == aliased {
                    View {
                        shape: &self.steps[o].shape,
                        data: &[],
                    }
                } else {
                    view(o)
                };
            }
            let ins = &views[..step.operands.len()];
            return step.op.eval_in_place(ins, aliased, out, &step.shape);
        }
        if step.operands.len() <= MAX_INLINE_OPERANDS {
            let mut views = [NONE; MAX_INLINE_OPERANDS];
            for (v, &o) in views.iter_mut().zip(&step.operands) {
                *v = view(o);
            }
            step.op
                .eval(&views[..step.operands.len()], out, &step.shape, &self.ctx);
        } else {
            let views: Vec<View> = step.operands.iter().map(|&o| view(o)).collect();
            step.op.eval(&views, out, &step.shape, &self.ctx);
        }
    }

    /// The memory of step `o`'s value during a run.
    fn read(&self, o: usize, base: ArenaPtr) -> &[f32] {
        let len = self.steps[o].len;
        // SAFETY: an arena region is only written by its own step, which ran in
        // an earlier level; a feed pointer is the caller's tensor, borrowed for
        // the whole run and at least `len` elements long (shapes were checked).
        unsafe {
            match self.plan.place[o] {
                Place::Arena(at) => std::slice::from_raw_parts(base.0.add(at), len),
                Place::Feed { feed, offset } => std::slice::from_raw_parts(
                    (self.feed_ptrs[feed] as *const f32).add(offset),
                    len,
                ),
            }
        }
    }

    /// Starts (or, with `false`, stops and clears) timing every op of every run.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(Profile::default);
    }

    /// The time per op kind since profiling started, if it is on.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref()
    }

    /// Writes every update's new value into its parameter, all as of the
    /// run (an update whose value is another updated parameter reads that
    /// parameter's old value, held before any is written).
    fn apply_updates(&mut self) {
        for (step, at) in self.held_at.iter().enumerate() {
            if let Some(at) = *at {
                let (src, len) = (self.arena_at(step), self.steps[step].len);
                self.held[at..at + len].copy_from_slice(&self.arena[src..src + len]);
            }
        }
        for &(param, value) in &self.updates {
            let (dst, len) = (self.arena_at(param), self.steps[value].len);
            match self.held_at[value] {
                Some(at) if value != param => {
                    self.arena[dst..dst + len].copy_from_slice(&self.held[at..at + len])
                }
                _ => {
                    let src = self.arena_at(value);
                    if dst != src {
                        self.arena.copy_within(src..src + len, dst);
                    }
                }
            }
        }
    }

    /// Output step `step`'s value as the run computed it: an updated
    /// parameter's old value.
    fn output_data(&self, step: usize) -> &[f32] {
        match self.held_at[step] {
            Some(at) => &self.held[at..at + self.steps[step].len],
            None => self.data(step),
        }
    }

    /// Where step `step`'s value starts in the arena (outputs, update values
    /// and parameters always live there).
    fn arena_at(&self, step: usize) -> usize {
        match self.plan.place[step] {
            Place::Arena(at) => at,
            Place::Feed { .. } => unreachable!("results and parameters live in the arena"),
        }
    }

    /// The arena memory holding the value of `step` (a result or parameter).
    fn data(&self, step: usize) -> &[f32] {
        let at = self.arena_at(step);
        &self.arena[at..at + self.steps[step].len]
    }

    fn value(&self, step: usize) -> Tensor {
        Tensor::from_vec(self.steps[step].shape.clone(), self.data(step).to_vec())
            .expect("buffer sizes are planned from shapes")
    }

    /// Training mode applies dropout masks; evaluation mode (the default) makes dropout the identity.
    pub fn set_training(&mut self, training: bool) {
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
