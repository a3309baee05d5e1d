//! Running an [`Executable`]: feeds in, every level's steps (in parallel
//! where threads allow) computed into the arena, updates applied, outputs
//! out.

use super::plan::Place;
use super::{pool, Executable, Profile};
use crate::error::{KilnError, Result};
use crate::kernels::scratch;
use crate::ops::View;
use crate::tensor::Tensor;

/// Operands a step's views hold on the stack (more go to the heap, and such
/// steps never write in place).
pub(super) const MAX_INLINE_OPERANDS: usize = 8;

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
        self.select_batch(feeds)?;
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
