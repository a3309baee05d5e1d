//! Running an [`Executable`]: feeds in, every level's steps (in parallel
//! where threads allow) computed into the arena, updates applied, outputs
//! out.

use super::plan::Place;
use super::{pool, Executable, Profile};
use crate::dtype::{DType, Feed, FeedData};
use crate::error::{KilnError, Result};
use crate::kernels::arena::Reads;
use crate::kernels::scratch;
use crate::ops::View;
use crate::tensor::Tensor;

/// Operands a step's views hold on the stack (more go to the heap, and such
/// steps never write in place).
pub(super) const MAX_INLINE_OPERANDS: usize = 8;

/// Fed inputs a run reads through slices on the stack (more go to the heap;
/// a scan's step reads its carry, per-step values and constants).
const MAX_INLINE_FEEDS: usize = 16;

impl Executable {
    /// Runs the graph on `feeds` (input name, value) and returns the outputs in
    /// the order they were passed to `compile`.
    ///
    /// `Err` if an input the outputs need has no feed, a name is no input of the
    /// graph, a name is fed twice, or a feed's shape differs from the input's.
    pub fn run(&mut self, feeds: &[(&str, &dyn Feed)]) -> Result<Vec<Tensor>> {
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
    pub fn run_in_place(&mut self, feeds: &[(&str, &dyn Feed)]) -> Result<()> {
        self.run_fed(feeds, |exe, fed| {
            if exe.threads > 1 {
                let pool = pool::for_this_thread(exe.threads)?;
                pool.install(|| exe.execute(fed, true));
                // a thread that takes a step first run by another then finds
                // its scratch already grown, so steady-state runs allocate
                // nothing
                let grown = scratch::grown();
                if grown != exe.scratch_seen {
                    pool.broadcast(|_| scratch::reserve_seen());
                    exe.scratch_seen = grown;
                }
            } else {
                crate::kernels::par::sequential(|| exe.execute(fed, false));
            }
            Ok(())
        })
    }

    /// [`run_in_place`](Self::run_in_place) from inside a step of another
    /// run (a scan's body), on the threads of the caller's run: a level's
    /// steps run in parallel and each kernel splits its work as the
    /// caller's own kernels do (all on the calling thread when the caller
    /// runs sequentially).
    pub(crate) fn run_nested(&mut self, feeds: &[(&str, &dyn Feed)]) -> Result<()> {
        self.run_fed(feeds, |exe, fed| {
            exe.execute(fed, crate::kernels::par::threads() > 1);
            Ok(())
        })
    }

    /// Loads `feeds` (on the stack when few: a steady-state run allocates
    /// nothing), computes the steps with `run`, then applies the updates.
    fn run_fed(
        &mut self,
        feeds: &[(&str, &dyn Feed)],
        run: impl FnOnce(&mut Self, &[&[f32]]) -> Result<()>,
    ) -> Result<()> {
        self.select_batch(feeds)?;
        // the fed inputs are read in place, by slot
        let mut inline: [&[f32]; MAX_INLINE_FEEDS] = [&[]; MAX_INLINE_FEEDS];
        let mut heap = Vec::new();
        let fed: &mut [&[f32]] = match self.fed_slots {
            n if n <= MAX_INLINE_FEEDS => &mut inline[..n],
            n => {
                heap.resize(n, &[][..]);
                &mut heap
            }
        };
        self.load_feeds(feeds, fed)?;
        run(self, fed)?;
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

    /// Checks the feeds, copies those the plan keeps in the arena there, and
    /// puts the data of those read in place into `fed`, by feed slot.
    fn load_feeds<'f>(
        &mut self,
        feeds: &[(&str, &'f dyn Feed)],
        fed: &mut [&'f [f32]],
    ) -> Result<()> {
        for (i, (name, t)) in feeds.iter().enumerate() {
            if feeds[..i].iter().any(|(n, _)| n == name) {
                return Err(KilnError::Invalid(format!("feed `{name}` is given twice")));
            }
            if let Some(k) = self.known_inputs.iter().position(|k| k == name) {
                if t.shape() != self.known_shapes[k].as_slice() {
                    return Err(KilnError::FeedShape {
                        name: name.to_string(),
                        expected: self.known_shapes[k].clone(),
                        got: t.shape().to_vec(),
                    });
                }
                let want = self.known_dtypes[k];
                if t.dtype() != want {
                    let tensor = match want {
                        DType::F32 => "a Tensor",
                        DType::I64 => "an I64Tensor",
                    };
                    return Err(KilnError::Type {
                        op: "feed".into(),
                        message: format!(
                            "feed `{name}` is {}, but the input was declared {want}: feed {tensor}",
                            t.dtype()
                        ),
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
        self.check_indices(feeds)?;
        for (name, step) in &self.feeds {
            let t = feeds
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| *t)
                .expect("checked above");
            match (self.plan.place[*step], t.data()) {
                (Place::Arena(at), FeedData::F32(d)) => {
                    self.arena[at..at + d.len()].copy_from_slice(d)
                }
                // indices are carried as f32 values (exact: the checks
                // bound every index by 2^24)
                (Place::Arena(at), FeedData::I64(d)) => {
                    for (a, &v) in self.arena[at..at + d.len()].iter_mut().zip(d) {
                        *a = v as f32;
                    }
                }
                (Place::Feed { feed, .. }, FeedData::F32(d)) => fed[feed] = d,
                (Place::Feed { .. }, FeedData::I64(_)) => {
                    unreachable!("the plan puts every i64 input in the arena")
                }
            }
        }
        Ok(())
    }

    /// `Err` naming the feed, the position, the value and the op if a fed
    /// index is outside the range of an op that reads it.
    fn check_indices(&self, feeds: &[(&str, &dyn Feed)]) -> Result<()> {
        for c in &self.index_checks {
            let Some((_, t)) = feeds.iter().find(|(n, _)| *n == c.input) else {
                continue;
            };
            let FeedData::I64(data) = t.data() else {
                continue;
            };
            if let Some(i) = data.iter().position(|&v| !c.range.contains(v)) {
                return Err(KilnError::Index {
                    feed: c.input.clone(),
                    message: format!(
                        "element {} is {}, but `{}` reads this input's values (all of them, through any reshape or slice) as indices in {}",
                        unravel(i, t.shape()),
                        data[i],
                        c.reader,
                        c.range
                    ),
                });
            }
        }
        Ok(())
    }

    /// Runs every level's steps, reading fed inputs in place from `fed`: a
    /// level's steps in parallel when `parallel` (inside a rayon pool) and
    /// the level has several, one at a time while profiling.
    fn execute(&mut self, fed: &[&[f32]], parallel: bool) {
        let mut arena = std::mem::take(&mut self.arena);
        let parallel = parallel && self.profile.is_none();
        let times = std::sync::Mutex::new(Vec::new());
        for (l, level) in self.levels.iter().enumerate() {
            self.checked
                .for_each(&mut arena, l, parallel, |k, out, reads| {
                    let started = self.profile.is_some().then(std::time::Instant::now);
                    self.run_step(level[k], out, &reads, fed);
                    if let (Ok(mut t), Some(at)) = (times.lock(), started) {
                        t.push((level[k], at.elapsed()));
                    }
                });
        }
        self.arena = arena;
        if let Some(p) = self.profile.as_mut() {
            for (i, t) in times.into_inner().unwrap_or_default() {
                p.record(self.steps[i].op.name(), t);
            }
            p.runs += 1;
        }
    }

    /// Computes step `i` into `out`, its arena region, from its operands'
    /// memory (`reads`, or `fed` for inputs read in place).
    fn run_step(&self, i: usize, out: &mut [f32], reads: &Reads, fed: &[&[f32]]) {
        const NONE: View = View {
            shape: &[],
            data: &[],
        };
        let step = &self.steps[i];
        let view = |k: usize| {
            let o = step.operands[k];
            let data = match self.plan.place[o] {
                Place::Feed { feed, offset } => &fed[feed][offset..offset + self.steps[o].len],
                Place::Arena(_) => reads
                    .operand(k)
                    .expect("arena operands are checked regions"),
            };
            View {
                shape: &self.steps[o].shape,
                data,
            }
        };
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
                    view(k)
                };
            }
            let ins = &views[..step.operands.len()];
            return step.op.eval_in_place(ins, aliased, out, &step.shape);
        }
        if step.operands.len() <= MAX_INLINE_OPERANDS {
            let mut views = [NONE; MAX_INLINE_OPERANDS];
            for (k, v) in views.iter_mut().take(step.operands.len()).enumerate() {
                *v = view(k);
            }
            step.op
                .eval(&views[..step.operands.len()], out, &step.shape, &self.ctx);
        } else {
            let views: Vec<View> = (0..step.operands.len()).map(view).collect();
            step.op.eval(&views, out, &step.shape, &self.ctx);
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
    pub(super) fn output_data(&self, step: usize) -> &[f32] {
        match self.held_at[step] {
            Some(at) => &self.held[at..at + self.steps[step].len],
            None => self.data(step),
        }
    }

    /// Where step `step`'s value starts in the arena (outputs, update values
    /// and parameters always live there).
    pub(super) fn arena_at(&self, step: usize) -> usize {
        match self.plan.place[step] {
            Place::Arena(at) => at,
            Place::Feed { .. } => unreachable!("results and parameters live in the arena"),
        }
    }

    /// The arena memory holding the value of `step` (a result or parameter).
    pub(super) fn data(&self, step: usize) -> &[f32] {
        let at = self.arena_at(step);
        &self.arena[at..at + self.steps[step].len]
    }

    pub(super) fn value(&self, step: usize) -> Tensor {
        Tensor::from_vec(self.steps[step].shape.clone(), self.data(step).to_vec())
            .expect("buffer sizes are planned from shapes")
    }
}

/// The multi-index `[i, j, ..]` of flat row-major position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> String {
    let mut idx = vec![0; shape.len()];
    for (x, &d) in idx.iter_mut().zip(shape).rev() {
        if d > 0 {
            *x = flat % d;
            flat /= d;
        }
    }
    format!("{idx:?}")
}
