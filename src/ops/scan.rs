//! `Scan`: a loop over a leading time axis whose step is a graph of its own
//! (JAX's `lax.scan`), so a recurrence costs one node however long the
//! sequence is, and compiles once.
//!
//! `scan(body, carry0, xs, consts)` runs `carry = body(carry, xs[t], consts)`
//! for `t = 0..T` (or `T−1..=0` when `reverse`); a step may read several
//! per-step operands `xs[t], xs1[t], ..` of the same `T`. The op's one
//! output is flat: the first `keep` values of the (flattened) carry after
//! every step, in time order (`[T·keep]`), then the whole last carry
//! (`[C]`), then each of the step's per-step outputs in time order
//! (`[T·Y_j]` each), so that each is a contiguous range.
//! [`crate::OpBuilder::scan`] keeps the whole carry and returns it as
//! `[T, *carry]`.
//!
//! The body is compiled once into its own executable (all passes) and run
//! per step on views of the operands, nested in the run it is in (its
//! levels and kernels on that run's threads). Its gradient
//! (`src/ops/scan_grad.rs`) is a scan running the other way over the part of
//! the body's gradient graph that depends on the upstream gradient, reading
//! the step's residuals that a copy of the forward scan keeps as per-step
//! outputs.

use super::{Arity, Grads, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::dtype::{Feed, FeedData};
use crate::error::{attr_err, shape_err, KilnError, Result};
use crate::exec::Executable;
use crate::graph::Graph;
use crate::shape::checked_numel;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// A scan's step: a graph whose inputs are `carry`, the per-step inputs
/// `x`, `x1`, `x2`, .. and the constants `c0`, `c1`, .., and whose outputs
/// are `out`, the next carry (of the carry's shape), and the per-step
/// outputs `ys` (none for a step [`ScanBody::build`] makes). It holds no
/// parameters and no random or mode-dependent op (dropout, `train_eval`):
/// weights come in as constants.
pub struct ScanBody {
    graph: Graph,
    out: NodeId,
    ys: Vec<NodeId>,
    /// The inputs' names in feed order: carry, per-step inputs, constants.
    names: Vec<String>,
    /// How many per-step inputs.
    xs: usize,
    /// Identifies the step: copies for another batch size keep it.
    id: u64,
    /// For a step that adds per-step outputs (residuals) to another's
    /// computation, the other's `id`: a scan of this step computes the
    /// other's scan as the prefix of its output (CSE merges the two).
    extends: Option<u64>,
    /// The compiled step.
    exe: Mutex<Executable>,
}

impl std::fmt::Debug for ScanBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outs: Vec<NodeId> = std::iter::once(self.out).chain(self.ys.clone()).collect();
        f.write_str(&crate::graph::dump::to_text(&self.graph, &outs))
    }
}

/// The name of constant `k`'s input in a body.
pub(super) fn const_name(k: usize) -> String {
    format!("c{k}")
}

/// The name of per-step input `i` in a body (`x`, `x1`, `x2`, ..).
pub(super) fn x_name(i: usize) -> String {
    match i {
        0 => "x".to_string(),
        i => format!("x{i}"),
    }
}

impl ScanBody {
    /// Builds a step graph with `step(g, carry, xs, consts)` on inputs of
    /// shapes `carry`, `xs` (one per per-step input, at least one) and
    /// `consts`; `Err` if there is no per-step input, `step` fails, its
    /// result does not have the carry's shape, or the graph holds a
    /// parameter or a random or mode-dependent op.
    pub fn build(
        carry: &[usize],
        xs: &[&[usize]],
        consts: &[&[usize]],
        step: impl FnOnce(&mut Graph, NodeId, &[NodeId], &[NodeId]) -> Result<NodeId>,
    ) -> Result<Arc<ScanBody>> {
        let mut g = Graph::new();
        let c = g.input("carry", carry.to_vec())?;
        let xi = (xs.iter().enumerate())
            .map(|(i, x)| g.input(&x_name(i), x.to_vec()))
            .collect::<Result<Vec<_>>>()?;
        let ks = (0..consts.len())
            .map(|k| g.input(&const_name(k), consts[k].to_vec()))
            .collect::<Result<Vec<_>>>()?;
        let out = step(&mut g, c, &xi, &ks)?;
        Self::from_graph(g, out, Vec::new(), None, None)
    }

    /// The step of `graph` (inputs `carry`, `x`, `x1`, .., `c0`, ..) with
    /// next carry `out` and per-step outputs `ys`; `id` is a fresh one when
    /// `None`.
    pub(super) fn from_graph(
        graph: Graph,
        out: NodeId,
        ys: Vec<NodeId>,
        id: Option<u64>,
        extends: Option<u64>,
    ) -> Result<Arc<ScanBody>> {
        let carry = graph.shape(input(&graph, "carry")?)?;
        if graph.shape(out)? != carry {
            return shape_err(
                "scan",
                format!(
                    "the step returns shape {:?}; the carry has {carry:?}",
                    graph.shape(out)?
                ),
            );
        }
        let has = |n: &str| graph.inputs().any(|(m, _)| m == n);
        let xs = (0..).take_while(|&i| has(&x_name(i))).count();
        let consts = graph.inputs().count().saturating_sub(1 + xs);
        let mut names = vec!["carry".to_string()];
        names.extend((0..xs).map(x_name));
        names.extend((0..consts).map(const_name));
        if xs == 0 {
            return attr_err("scan", "the step has no per-step input `x`");
        }
        if let Some((stray, _)) = graph.inputs().find(|(n, _)| !names.iter().any(|m| m == n)) {
            return attr_err(
                "scan",
                format!("the step declares an input `{stray}`: a step reads only its carry, x and constants"),
            );
        }
        for id in graph.node_ids() {
            let op = &graph.node(id)?.op;
            if matches!(op, super::Op::Param(_) | super::Op::TrainEval) || op.is_random() {
                return attr_err(
                    "scan",
                    format!(
                        "the step holds a `{}`: pass weights in as constants; dropout and train/eval switches do not run inside a scan",
                        op.name()
                    ),
                );
            }
        }
        let options = crate::CompileOptions {
            threads: Some(1),
            verify: false,
            dump_dir: None,
            ..crate::CompileOptions::default()
        };
        let outs: Vec<NodeId> = std::iter::once(out).chain(ys.iter().copied()).collect();
        let exe = crate::compile(&graph, &outs, &options)?;
        static IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(Arc::new(ScanBody {
            graph,
            out,
            ys,
            names,
            xs,
            id: id.unwrap_or_else(|| IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            extends,
            exe: Mutex::new(exe),
        }))
    }

    /// The step graph and its output.
    pub fn graph(&self) -> (&Graph, NodeId) {
        (&self.graph, self.out)
    }

    /// The step's identity (kept by its copies for other batch sizes).
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Whether the step has per-step outputs.
    pub(super) fn has_ys(&self) -> bool {
        !self.ys.is_empty()
    }

    /// How many per-step inputs the step reads.
    pub(super) fn xs(&self) -> usize {
        self.xs
    }

    /// Whether a scan of `self` computes a scan of `plain` (same operands,
    /// direction and `keep`) as the prefix of its output.
    pub(crate) fn extends(&self, plain: &ScanBody) -> bool {
        self.extends == Some(plain.id) && plain.ys.is_empty()
    }

    /// Values of each per-step output.
    fn y_lens(&self) -> impl Iterator<Item = usize> + '_ {
        (self.ys.iter()).map(|&y| self.graph.shape(y).map_or(0, |s| s.iter().product()))
    }

    fn shape_of(&self, name: &str) -> Vec<usize> {
        input(&self.graph, name)
            .and_then(|id| self.graph.shape(id).map(<[usize]>::to_vec))
            .unwrap_or_default()
    }
}

/// The input `name` of `g`.
fn input(g: &Graph, name: &str) -> Result<NodeId> {
    g.inputs()
        .find(|(n, _)| *n == name)
        .map(|(_, id)| id)
        .ok_or_else(|| KilnError::Invalid(format!("scan body: no input `{name}`")))
}

/// Operands `[carry0, xs [T, ..] (one per per-step input of the step), consts..]`;
/// see the module docs.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The step.
    pub body: Arc<ScanBody>,
    /// Run from the last step back.
    pub reverse: bool,
    /// Values of the flattened carry kept per step.
    pub keep: usize,
}

impl PartialEq for Scan {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.body, &other.body)
            && self.reverse == other.reverse
            && self.keep == other.keep
    }
}

/// The serde form: the step's text dump and the attributes (a scan is
/// written in dumps, never read back).
impl Serialize for Scan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Scan", 3)?;
        st.serialize_field("body", &format!("{:?}", self.body))?;
        st.serialize_field("reverse", &self.reverse)?;
        st.serialize_field("keep", &self.keep)?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Scan {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
        Err(serde::de::Error::custom(
            "a scan's step graph cannot be read back from a dump",
        ))
    }
}

/// A borrowed f32 value fed to the step.
#[derive(Clone, Copy, Debug)]
struct Slice<'a>(&'a [usize], &'a [f32]);

impl Feed for Slice<'_> {
    fn shape(&self) -> &[usize] {
        self.0
    }
    fn data(&self) -> FeedData<'_> {
        FeedData::F32(self.1)
    }
}

/// Feeds of a step held on the stack (more go on the heap).
const STACK_FEEDS: usize = 16;

/// Calls `f` with step `t`'s feeds, named as the body's inputs: the carry,
/// each per-step operand's row `t`, the constants (on the stack for up to
/// [`STACK_FEEDS`], so that a steady-state run allocates nothing).
fn with_feeds<'a, R>(
    names: &[String],
    (carry, ins, xs, t): (Slice<'a>, &'a [View<'a>], usize, usize),
    f: impl FnOnce(&[(&str, &dyn Feed)]) -> R,
) -> R {
    const NONE: Slice<'static> = Slice(&[], &[]);
    let value = |i: usize| -> Slice<'a> {
        let v = &ins[i];
        match i {
            0 => carry,
            i if i <= xs => {
                let n = v.data.len().checked_div(v.shape[0]).unwrap_or(0);
                Slice(&v.shape[1..], &v.data[t * n..(t + 1) * n])
            }
            _ => Slice(v.shape, v.data),
        }
    };
    let mut stack = [NONE; STACK_FEEDS];
    let heap: Vec<Slice>;
    let values: &[Slice] = match ins.len() {
        n if n <= STACK_FEEDS => {
            (0..n).for_each(|i| stack[i] = value(i));
            &stack[..n]
        }
        n => {
            heap = (0..n).map(value).collect();
            &heap
        }
    };
    let mut feeds: [(&str, &dyn Feed); STACK_FEEDS] = [("", &NONE); STACK_FEEDS];
    let named = names.iter().zip(values);
    match values.len() {
        n if n <= STACK_FEEDS => {
            for (slot, (name, v)) in feeds.iter_mut().zip(named) {
                *slot = (name.as_str(), v);
            }
            f(&feeds[..n])
        }
        _ => f(&named
            .map(|(n, v)| (n.as_str(), v as &dyn Feed))
            .collect::<Vec<_>>()),
    }
}

impl OpDef for Scan {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let steps = self.body.graph.len();
        let mut attrs = vec![
            ("keep", self.keep.to_string()),
            ("reverse", self.reverse.to_string()),
            ("step_nodes", steps.to_string()),
        ];
        if self.body.has_ys() {
            let lens: Vec<String> = self.body.y_lens().map(|n| n.to_string()).collect();
            attrs.push(("step_outputs", lens.join(",")));
        }
        attrs
    }
    fn arity(&self) -> Arity {
        Arity::Between(2, usize::MAX)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let b = &self.body;
        let carry = b.shape_of("carry");
        let xs: Vec<Vec<usize>> = (0..b.xs).map(|i| b.shape_of(&x_name(i))).collect();
        let want_consts = b.names.len() - 1 - b.xs;
        let t = ins.get(1).and_then(|s| s.first()).copied().unwrap_or(0);
        let fits = ins.len() == b.names.len()
            && ins[0] == carry
            && (xs.iter().zip(&ins[1..]))
                .all(|(x, i)| i.len() == x.len() + 1 && i[0] == t && i[1..] == x[..])
            && (0..want_consts).all(|k| ins[1 + b.xs + k] == b.shape_of(&const_name(k)));
        if !fits {
            let xs: Vec<String> = xs.iter().map(|x| format!("[T, {x:?}..]")).collect();
            return shape_err(
                "scan",
                format!(
                    "operands {ins:?} do not fit the step: carry {carry:?}, per-step {}, {want_consts} constant(s)",
                    xs.join(", ")
                ),
            );
        }
        let c = checked_numel("scan", &carry)?;
        if self.keep > c {
            return attr_err("scan", format!("keeps {} of a carry of {c}", self.keep));
        }
        let mut len = Some(c);
        for n in std::iter::once(self.keep).chain(b.y_lens()) {
            let part = checked_numel("scan", &[t, n])?;
            len = len.and_then(|l| l.checked_add(part));
        }
        Ok(vec![crate::shape::checked_size("scan", "output", len)?])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let b = &self.body;
        let (carry_shape, c, t_len) = (ins[0].shape, ins[0].data.len(), ins[1].shape[0]);
        let (kept, rest) = out.split_at_mut(t_len * self.keep);
        let (last, ys) = rest.split_at_mut(c);
        last.copy_from_slice(ins[0].data);
        let Ok(mut exe) = b.exe.lock() else {
            return out.fill(f32::NAN);
        };
        // with the whole carry kept, each step's carry is read from where
        // the step before kept it
        let whole = self.keep == c;
        let mut prev: Option<usize> = None;
        let ok = (0..t_len).all(|i| {
            let t = if self.reverse { t_len - 1 - i } else { i };
            let carry = match prev {
                Some(p) if whole => &kept[p * c..(p + 1) * c],
                _ => &*last,
            };
            let step = (Slice(carry_shape, carry), ins, b.xs, t);
            let ran = with_feeds(&b.names, step, |feeds| exe.run_nested(feeds));
            match exe.output(0) {
                Some((_, data)) if ran.is_ok() && data.len() == c => match whole {
                    true => kept[t * c..(t + 1) * c].copy_from_slice(data),
                    false => {
                        last.copy_from_slice(data);
                        kept[t * self.keep..(t + 1) * self.keep]
                            .copy_from_slice(&last[..self.keep]);
                    }
                },
                _ => return false,
            }
            prev = Some(t);
            // per-step output j of step t at t·n_j in its [T, n_j] region
            let mut region = &mut *ys;
            for j in 0..b.ys.len() {
                let Some((_, data)) = exe.output(1 + j) else {
                    return false;
                };
                let n = data.len();
                let (mine, after) = std::mem::take(&mut region).split_at_mut(t_len * n);
                mine[t * n..(t + 1) * n].copy_from_slice(data);
                region = after;
            }
            true
        });
        match (ok, prev) {
            (false, _) => out.fill(f32::NAN),
            (true, Some(p)) if whole => last.copy_from_slice(&kept[p * c..(p + 1) * c]),
            _ => {}
        }
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        super::scan_grad::vjp(self, g, xs, y, gy)
    }
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<super::Op> {
        let b = &self.body;
        let program = crate::Program {
            graph: b.graph.clone(),
            outputs: std::iter::once(b.out).chain(b.ys.clone()).collect(),
            updates: vec![],
        };
        if !program.is_symbolic() {
            return None;
        }
        let p = program.specialise(f(crate::BATCH)).ok()?;
        let ys = p.outputs[1..].to_vec();
        let body = ScanBody::from_graph(p.graph, p.outputs[0], ys, Some(b.id), b.extends).ok()?;
        Some(super::Op::Scan(Scan {
            body,
            reverse: self.reverse,
            keep: f(self.keep),
        }))
    }
}
