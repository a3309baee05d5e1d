//! Fixing a program's schedule: steps in canonical order, their levels
//! (steps of a level may run at once), the memory plan, the arena and the
//! parameters loaded into it; and the thread count a run uses.

use super::plan::{write_in_place, MemoryPlan, Place, Value};
use super::run::MAX_INLINE_OPERANDS;
use super::{Executable, IndexCheck, Step};
use crate::dtype::DType;
use crate::error::{KilnError, Result};
use crate::graph::order::ancestors_order;
use crate::graph::{NodeId, Program};
use crate::kernels::arena::{CheckedLevels, StepRegions};
use crate::ops::{Input, Param};
use crate::ops::{Op, RunCtx};
use crate::passes::PassReport;
use std::collections::HashMap;

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
            Op::Input(Input { name }) => feeds.push((name.clone(), i)),
            Op::Param(Param { name }) => params.push((name.clone(), i)),
            _ => {}
        }
        steps.push(Step {
            op: node.op.clone(),
            operands: graph.operands(n).iter().map(|o| step_of[o]).collect(),
            shape: node.shape.dims().to_vec(),
            len: node.shape.numel() * node.op.num_outputs(),
            dtype: node.dtype,
        });
    }
    let index_checks = index_checks(&steps);
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
    let checked = check_levels(&steps, &plan, &levels, arena.len())?;
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
        checked,
        fed_slots: fed,
        feeds,
        known_inputs: graph.inputs().map(|(n, _)| n.to_string()).collect(),
        known_shapes: graph
            .inputs()
            .map(|(_, id)| graph.shape(id).map(<[usize]>::to_vec))
            .collect::<Result<_>>()?,
        known_dtypes: graph
            .inputs()
            .map(|(_, id)| graph.dtype(id))
            .collect::<Result<_>>()?,
        index_checks,
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
        batching: None,
    })
}

/// The index ranges each `i64` input must satisfy: for every op that reads
/// an operand as indices, the inputs that operand's values come from
/// (through movement ops).
fn index_checks(steps: &[Step]) -> Vec<IndexCheck> {
    let mut checks = Vec::new();
    for s in steps {
        let shapes: Vec<&[usize]> = s.operands.iter().map(|&o| &steps[o].shape[..]).collect();
        let Some((k, range)) = s.op.def().index_operand(&shapes) else {
            continue;
        };
        let mut todo = vec![s.operands[k]];
        let mut seen = std::collections::HashSet::new();
        while let Some(at) = todo.pop() {
            if !seen.insert(at) {
                continue;
            }
            match &steps[at].op {
                Op::Input(Input { name }) => checks.push(IndexCheck {
                    input: name.clone(),
                    range,
                    reader: s.op.name().to_string(),
                }),
                _ => todo.extend(
                    steps[at]
                        .operands
                        .iter()
                        .filter(|&&o| steps[o].dtype == DType::I64),
                ),
            }
        }
    }
    checks
}

/// Each step's level: inputs and parameters 0, a view its base's, any other
/// step one more than its highest operand.
fn step_levels(steps: &[Step], values: &[Value]) -> Vec<usize> {
    let mut level: Vec<usize> = Vec::with_capacity(steps.len());
    for (s, v) in steps.iter().zip(values) {
        let l = match v {
            Value::View { of, .. } => level[*of],
            _ if s.op.is_interface() => 0,
            _ => 1 + s.operands.iter().map(|&o| level[o]).max().unwrap_or(0),
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
        // an output of a multi-output op is always a view; a reshape or
        // stop-gradient (same data, new shape) one unless it reads a
        // parameter, whose memory the updates rewrite between runs
        let param = |o: usize| matches!(steps[owner[o]].op, Op::Param(_));
        let part_of = |o: usize| steps[o].op.num_outputs() > 1;
        let input = s.operands.first().map_or(&[][..], |&o| &steps[o].shape[..]);
        let v = match (s.op.view_offset(input, s.len), &s.op) {
            (Some(at), _) if part_of(s.operands[0]) => view(s.operands[0], at),
            (Some(at), _) if !param(s.operands[0]) => view(s.operands[0], at),
            // an i64 input is converted into the arena, an f32 one read in place
            (_, Op::Input(_)) if s.dtype == DType::F32 => Value::Feed,
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
        if matches!(steps[owner[o]].op, Op::Input(_)) {
            values[owner[o]] = Value::Owned(steps[owner[o]].len);
        }
    }
    for (i, s) in steps.iter().enumerate() {
        pinned[i] |= matches!(s.op, Op::Param(_));
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
/// The regions each level's steps write and read, checked disjoint (see
/// [`CheckedLevels`]); `Err` if the plan breaks that rule.
fn check_levels(
    steps: &[Step],
    plan: &MemoryPlan,
    levels: &[Vec<usize>],
    len: usize,
) -> Result<CheckedLevels> {
    let region = |o: usize| match plan.place[o] {
        Place::Arena(at) => Some((at, steps[o].len)),
        Place::Feed { .. } => None,
    };
    let regions = levels
        .iter()
        .map(|level| {
            level
                .iter()
                .map(|&i| StepRegions {
                    write: region(i).expect("computing steps own arena memory"),
                    reads: (steps[i].operands.iter().enumerate())
                        .map(|(k, &o)| region(o).filter(|_| plan.in_place[i] != Some(k)))
                        .collect(),
                })
                .collect()
        })
        .collect();
    CheckedLevels::new(len, regions).map_err(KilnError::Invalid)
}

fn level_groups(steps: &[Step], plan: &MemoryPlan) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> =
        vec![Vec::new(); plan.level.iter().max().map_or(0, |m| m + 1)];
    for (i, s) in steps.iter().enumerate() {
        if !plan.is_view(i) && !s.op.is_interface() {
            groups[plan.level[i]].push(i);
        }
    }
    groups.retain(|g| !g.is_empty());
    groups
}
