//! `Scan`: a loop over a leading time axis whose step is a graph of its own
//! (JAX's `lax.scan`), so a recurrence costs one node however long the
//! sequence is, and compiles once.
//!
//! `scan(body, carry0, xs, consts)` runs `carry = body(carry, xs[t], consts)`
//! for `t = 0..T` (or `T−1..=0` when `reverse`). The op's one output is
//! flat: the first `keep` values of the (flattened) carry after every step,
//! in time order (`[T·keep]`), then the whole last carry (`[C]`).
//! [`crate::OpBuilder::scan`] keeps the whole carry and returns it as
//! `[T, *carry]`.
//!
//! The body is compiled once into its own executable (all passes, one
//! thread) and run per step on views of the operands. Its gradient is a
//! scan running the other way over the body's gradient graph: its carry
//! holds the gradient of the step's input `x`, of the carry, and the sums
//! of the constants' gradients, and it keeps the first per step.

use super::{Arity, Grads, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::dtype::{Feed, FeedData};
use crate::error::{attr_err, shape_err, KilnError, Result};
use crate::exec::Executable;
use crate::graph::Graph;
use crate::shape::checked_numel;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// A scan's step: a graph whose inputs are `carry`, `x` and `c0`, `c1`, ..
/// (the constants) and whose output `out` is the next carry, of the
/// carry's shape. It holds no parameters and no random or mode-dependent
/// op (dropout, `train_eval`): weights come in as constants.
pub struct ScanBody {
    graph: Graph,
    out: NodeId,
    /// The compiled step (one thread, all passes).
    exe: Mutex<Executable>,
}

impl std::fmt::Debug for ScanBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::graph::dump::to_text(&self.graph, &[self.out]))
    }
}

/// The name of constant `k`'s input in a body.
fn const_name(k: usize) -> String {
    format!("c{k}")
}

impl ScanBody {
    /// Builds a step graph with `step(g, carry, x, consts)` on inputs of
    /// shapes `carry`, `x` and `consts`; `Err` if `step` fails, its result
    /// does not have the carry's shape, or the graph holds a parameter or a
    /// random or mode-dependent op.
    pub fn build(
        carry: &[usize],
        x: &[usize],
        consts: &[&[usize]],
        step: impl FnOnce(&mut Graph, NodeId, NodeId, &[NodeId]) -> Result<NodeId>,
    ) -> Result<Arc<ScanBody>> {
        let mut g = Graph::new();
        let c = g.input("carry", carry.to_vec())?;
        let xi = g.input("x", x.to_vec())?;
        let ks = (0..consts.len())
            .map(|k| g.input(&const_name(k), consts[k].to_vec()))
            .collect::<Result<Vec<_>>>()?;
        let out = step(&mut g, c, xi, &ks)?;
        Self::from_graph(g, out)
    }

    fn from_graph(graph: Graph, out: NodeId) -> Result<Arc<ScanBody>> {
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
        let consts = graph.inputs().count().saturating_sub(2);
        let known = |n: &str| n == "carry" || n == "x" || (0..consts).any(|k| const_name(k) == n);
        if let Some((stray, _)) = graph.inputs().find(|(n, _)| !known(n)) {
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
        let exe = crate::compile(&graph, &[out], &options)?;
        Ok(Arc::new(ScanBody {
            graph,
            out,
            exe: Mutex::new(exe),
        }))
    }

    /// The step graph and its output.
    pub fn graph(&self) -> (&Graph, NodeId) {
        (&self.graph, self.out)
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

/// Operands `[carry0, xs [T, ..], consts..]`; see the module docs.
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
#[derive(Debug)]
struct Slice<'a>(&'a [usize], &'a [f32]);

impl Feed for Slice<'_> {
    fn shape(&self) -> &[usize] {
        self.0
    }
    fn data(&self) -> FeedData<'_> {
        FeedData::F32(self.1)
    }
}

/// The step's names for its constants' inputs (more are named on the heap).
const CONST_NAMES: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];

/// Calls `f` with the feeds of one step (on the stack for up to six
/// constants, so a steady-state run allocates nothing).
fn with_feeds<R>(
    carry: &Slice,
    x: &Slice,
    consts: &[View],
    f: impl FnOnce(&[(&str, &dyn Feed)]) -> R,
) -> R {
    const NONE: Slice<'static> = Slice(&[], &[]);
    if consts.len() <= CONST_NAMES.len() {
        let mut views = [NONE; 6];
        for (v, k) in views.iter_mut().zip(consts) {
            *v = Slice(k.shape, k.data);
        }
        let mut feeds: [(&str, &dyn Feed); 8] = [("", &NONE); 8];
        feeds[0] = ("carry", carry);
        feeds[1] = ("x", x);
        for (k, v) in views.iter().enumerate().take(consts.len()) {
            feeds[2 + k] = (CONST_NAMES[k], v);
        }
        f(&feeds[..2 + consts.len()])
    } else {
        let names: Vec<String> = (0..consts.len()).map(const_name).collect();
        let views: Vec<Slice> = consts.iter().map(|k| Slice(k.shape, k.data)).collect();
        let mut feeds: Vec<(&str, &dyn Feed)> = vec![("carry", carry), ("x", x)];
        feeds.extend(
            names
                .iter()
                .zip(&views)
                .map(|(n, v)| (n.as_str(), v as &dyn Feed)),
        );
        f(&feeds)
    }
}

impl OpDef for Scan {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let steps = self.body.graph.len();
        vec![
            ("keep", self.keep.to_string()),
            ("reverse", self.reverse.to_string()),
            ("step_nodes", steps.to_string()),
        ]
    }
    fn arity(&self) -> Arity {
        Arity::Between(2, usize::MAX)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let carry = self.body.shape_of("carry");
        let x = self.body.shape_of("x");
        let consts = ins.len() - 2;
        let want_consts = self.body.graph.inputs().count() - 2;
        let fits = ins[0] == carry
            && ins[1].len() == x.len() + 1
            && ins[1][1..] == x[..]
            && consts == want_consts
            && (0..consts).all(|k| ins[2 + k] == self.body.shape_of(&const_name(k)));
        if !fits {
            return shape_err(
                "scan",
                format!(
                    "operands {ins:?} do not fit the step: carry {carry:?}, xs [T, {x:?}..], {want_consts} constant(s)"
                ),
            );
        }
        let c = checked_numel("scan", &carry)?;
        if self.keep > c {
            return attr_err("scan", format!("keeps {} of a carry of {c}", self.keep));
        }
        let kept = checked_numel("scan", &[ins[1][0], self.keep])?;
        Ok(vec![crate::shape::checked_size(
            "scan",
            "output",
            kept.checked_add(c),
        )?])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let (carry_shape, x_shape) = (ins[0].shape, &ins[1].shape[1..]);
        let (c, t_len) = (ins[0].data.len(), ins[1].shape[0]);
        let xn = ins[1].data.len().checked_div(t_len).unwrap_or(0);
        let (kept, last) = out.split_at_mut(t_len * self.keep);
        last.copy_from_slice(ins[0].data);
        let Ok(mut exe) = self.body.exe.lock() else {
            return out.fill(f32::NAN);
        };
        for i in 0..t_len {
            let t = if self.reverse { t_len - 1 - i } else { i };
            let (cf, xf) = (
                Slice(carry_shape, last),
                Slice(x_shape, &ins[1].data[t * xn..(t + 1) * xn]),
            );
            let ok = with_feeds(&cf, &xf, &ins[2..], |feeds| exe.run_in_place(feeds)).is_ok();
            match exe.output(0) {
                Some((_, data)) if ok && data.len() == c => last.copy_from_slice(data),
                _ => return out.fill(f32::NAN),
            }
            kept[t * self.keep..(t + 1) * self.keep].copy_from_slice(&last[..self.keep]);
        }
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        super::scan_grad::vjp(self, g, xs, y, gy)
    }
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<super::Op> {
        let program = crate::Program {
            graph: self.body.graph.clone(),
            outputs: vec![self.body.out],
            updates: vec![],
        };
        if !program.is_symbolic() {
            return None;
        }
        let p = program.specialise(f(crate::BATCH)).ok()?;
        let body = ScanBody::from_graph(p.graph, p.outputs[0]).ok()?;
        Some(super::Op::Scan(Scan {
            body,
            reverse: self.reverse,
            keep: f(self.keep),
        }))
    }
}
