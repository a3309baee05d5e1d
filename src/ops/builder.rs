//! [`OpBuilder`]: the builder methods, one per generic op, for anything that
//! adds op nodes (a [`crate::Graph`]; the VJP rules build through it, so the
//! ops do not depend on the graph). Each checks its operands' shapes and
//! attributes and returns an `Err` naming the op when they do not fit. Axes
//! may be negative (counted from the end), as in numpy.

use crate::dtype::DType;
use crate::error::{attr_err, Result};
use crate::ops::{BinaryOp, Op, ReduceKind, UnaryOp, Window};
use crate::ops::{
    Broadcast, Cast, Concat, Constant, Dropout, Fill, FirstMaxMask, Fold, Gather, MatMul,
    Normalize, NormalizeBackward, OneHot, Output, Pad, Reduce, Reshape, Scan, ScanBody, Slice,
    Softmax, SoftmaxBackward, Stack, Transpose, Unfold,
};
use crate::shape::normalize_axis;
use crate::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;

macro_rules! unary_builders {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        fn $name(&mut self, x: NodeId) -> Result<NodeId> {
            self.add_op(Op::Unary(UnaryOp::$op), &[x])
        }
    )*};
}

macro_rules! binary_builders {
    ($($(#[$doc:meta])* $name:ident => $op:ident),* $(,)?) => {$(
        $(#[$doc])*
        fn $name(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
            self.add_op(Op::Binary(BinaryOp::$op), &[a, b])
        }
    )*};
}

/// A handle to a node of a [`crate::Graph`]: its index and the graph's
/// identity (a graph and its clones share one), so a handle from another
/// graph is refused rather than taken for whichever node has its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeId(pub(crate) NodeIndex, pub(crate) u32);

/// Hashes the index alone: ids of one graph (the only ones a map mixes in
/// practice) differ in it, and equal ids have equal indices.
impl std::hash::Hash for NodeId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl NodeId {
    /// The raw index (stable for the node's lifetime; not the dump number).
    pub fn index(self) -> usize {
        self.0.index()
    }
}

/// Adds op nodes: [`add_op`](Self::add_op) and [`shape`](Self::shape) are
/// what an implementor provides; every builder method (`g.add(a, b)`,
/// `g.sum(x, &[1], false)`, ...) is built on them. [`crate::Graph`]
/// implements it (bring it into scope with `use kiln::OpBuilder` or
/// `use kiln::prelude::*`).
pub trait OpBuilder {
    /// Adds a node applying `op` to `operands`, inferring its shape; `Err`
    /// if the operands do not fit the op (see [`crate::Graph::add_op`]).
    fn add_op(&mut self, op: Op, operands: &[NodeId]) -> Result<NodeId>;

    /// The shape of node `id`; `Err` if it is not a node of this graph.
    fn shape(&self, id: NodeId) -> Result<&[usize]>;

    unary_builders! {
        /// `-x`
        neg => Neg,
        /// `e^x`
        exp => Exp,
        /// natural logarithm
        log => Log,
        /// square root
        sqrt => Sqrt,
        /// `1/x`
        recip => Recip,
        /// `max(x, 0)`
        relu => Relu,
        /// logistic sigmoid
        sigmoid => Sigmoid,
        /// hyperbolic tangent
        tanh => Tanh,
        /// absolute value
        abs => Abs,
        /// Gauss error function (`torch.erf`)
        erf => Erf,
        /// GELU, exact (`torch.nn.functional.gelu(x)`)
        gelu => Gelu,
        /// GELU, tanh approximation (`torch.nn.functional.gelu(x, approximate='tanh')`)
        gelu_tanh => GeluTanh,
        /// SiLU, `x·sigmoid(x)` (`torch.nn.functional.silu`)
        silu => Silu,
    }

    /// `x` where `x > 0`, else `negative_slope·x`
    /// (`torch.nn.functional.leaky_relu`; PyTorch's default slope is 0.01).
    fn leaky_relu(&mut self, x: NodeId, negative_slope: f32) -> Result<NodeId> {
        self.add_op(Op::Unary(UnaryOp::LeakyRelu(negative_slope)), &[x])
    }

    binary_builders! {
        /// `a + b` (broadcasting)
        add => Add,
        /// `a - b` (broadcasting)
        sub => Sub,
        /// `a * b` (broadcasting)
        mul => Mul,
        /// `a / b` (broadcasting)
        div => Div,
        /// element-wise maximum (broadcasting)
        maximum => Max,
        /// element-wise minimum (broadcasting)
        minimum => Min,
        /// `a == b` as 1/0
        eq => Eq,
        /// `a != b` as 1/0
        ne => Ne,
        /// `a < b` as 1/0
        lt => Lt,
        /// `a <= b` as 1/0
        le => Le,
        /// `a > b` as 1/0
        gt => Gt,
        /// `a >= b` as 1/0
        ge => Ge,
    }

    /// A constant tensor.
    fn constant(&mut self, value: Tensor) -> Result<NodeId> {
        self.add_op(Op::Constant(Constant { value }), &[])
    }

    /// A tensor of `shape` filled with `value`.
    fn fill(&mut self, shape: &[usize], value: f32) -> Result<NodeId> {
        self.add_op(
            Op::Fill(Fill {
                shape: shape.to_vec(),
                value,
            }),
            &[],
        )
    }

    /// A scalar constant (broadcasts against anything).
    fn scalar(&mut self, value: f32) -> Result<NodeId> {
        self.fill(&[], value)
    }

    /// `x * c` for a scalar `c`.
    fn mul_scalar(&mut self, x: NodeId, c: f32) -> Result<NodeId> {
        let s = self.scalar(c)?;
        self.mul(x, s)
    }

    /// `x + c` for a scalar `c`.
    fn add_scalar(&mut self, x: NodeId, c: f32) -> Result<NodeId> {
        let s = self.scalar(c)?;
        self.add(x, s)
    }

    /// `train` when the graph is compiled for training, `eval` when for
    /// evaluation (see [`crate::ops::TrainEval`]); equal shapes.
    fn train_eval(&mut self, train: NodeId, eval: NodeId) -> Result<NodeId> {
        self.add_op(Op::TrainEval, &[train, eval])
    }

    /// `a` where `cond != 0`, else `b` (all three broadcast).
    fn select(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.add_op(Op::Select, &[cond, a, b])
    }

    /// Sum over `axes`.
    fn sum(&mut self, x: NodeId, axes: &[isize], keepdims: bool) -> Result<NodeId> {
        reduce(self, ReduceKind::Sum, x, axes, keepdims)
    }

    /// Mean over `axes`.
    fn mean(&mut self, x: NodeId, axes: &[isize], keepdims: bool) -> Result<NodeId> {
        reduce(self, ReduceKind::Mean, x, axes, keepdims)
    }

    /// Maximum over `axes`.
    fn max(&mut self, x: NodeId, axes: &[isize], keepdims: bool) -> Result<NodeId> {
        reduce(self, ReduceKind::Max, x, axes, keepdims)
    }

    /// Sum of all elements, as a scalar.
    fn sum_all(&mut self, x: NodeId) -> Result<NodeId> {
        let axes: Vec<isize> = (0..self.shape(x)?.len() as isize).collect();
        if axes.is_empty() {
            return Ok(x);
        }
        self.sum(x, &axes, false)
    }

    /// 1 at the argmax along `axis`, 0 elsewhere: the first maximum, or the
    /// last NaN where there is one (PyTorch's max-pooling rule; see `Op::FirstMaxMask`).
    fn first_max_mask(&mut self, x: NodeId, axis: isize) -> Result<NodeId> {
        let axis = normalize_axis("first_max_mask", axis, self.shape(x)?.len())?;
        self.add_op(Op::FirstMaxMask(FirstMaxMask { axis }), &[x])
    }

    /// `x`, with no gradient flowing back through it.
    fn stop_gradient(&mut self, x: NodeId) -> Result<NodeId> {
        self.add_op(Op::StopGradient, &[x])
    }

    /// Output `index` of the multi-output node `x` (e.g. 1: the indices of a max pool with indices).
    fn output(&mut self, x: NodeId, index: usize) -> Result<NodeId> {
        self.add_op(Op::Output(Output { index }), &[x])
    }

    /// The same data with `shape` (one entry may be -1: inferred).
    fn reshape(&mut self, x: NodeId, shape: &[isize]) -> Result<NodeId> {
        let numel: usize = self.shape(x)?.iter().product();
        let shape = resolve_shape(numel, shape)?;
        self.add_op(Op::Reshape(Reshape { shape }), &[x])
    }

    /// Element-wise transpose: output dim `i` is input dim `perm[i]`.
    fn transpose(&mut self, x: NodeId, perm: &[usize]) -> Result<NodeId> {
        self.add_op(
            Op::Transpose(Transpose {
                perm: perm.to_vec(),
            }),
            &[x],
        )
    }

    /// Numpy broadcast to `shape`.
    fn broadcast_to(&mut self, x: NodeId, shape: &[usize]) -> Result<NodeId> {
        self.add_op(
            Op::Broadcast(Broadcast {
                shape: shape.to_vec(),
            }),
            &[x],
        )
    }

    /// `start..end` with `step` along `axis`.
    fn slice(
        &mut self,
        x: NodeId,
        axis: isize,
        start: usize,
        end: usize,
        step: usize,
    ) -> Result<NodeId> {
        let axis = normalize_axis("slice", axis, self.shape(x)?.len())?;
        self.add_op(
            Op::Slice(Slice {
                axis,
                start,
                end,
                step,
            }),
            &[x],
        )
    }

    /// Constant padding with `(before, after)` per dimension.
    fn pad(&mut self, x: NodeId, pads: &[(usize, usize)], value: f32) -> Result<NodeId> {
        self.add_op(
            Op::Pad(Pad {
                pads: pads.to_vec(),
                value,
            }),
            &[x],
        )
    }

    /// Concatenation along an existing axis.
    fn concat(&mut self, xs: &[NodeId], axis: isize) -> Result<NodeId> {
        let rank = match xs.first() {
            Some(&x) => self.shape(x)?.len(),
            None => return attr_err("concat", "needs at least one operand"),
        };
        let axis = normalize_axis("concat", axis, rank)?;
        self.add_op(Op::Concat(Concat { axis }), xs)
    }

    /// Stacking along a new axis (`-1` appends it last).
    fn stack(&mut self, xs: &[NodeId], axis: isize) -> Result<NodeId> {
        let rank = match xs.first() {
            Some(&x) => self.shape(x)?.len(),
            None => return attr_err("stack", "needs at least one operand"),
        };
        let axis = normalize_axis("stack", axis, rank + 1)?;
        self.add_op(Op::Stack(Stack { axis }), xs)
    }

    /// im2col: `[N, C, *S]` → `[N, C, K, L]`.
    fn unfold(&mut self, x: NodeId, window: Window) -> Result<NodeId> {
        self.add_op(Op::Unfold(Unfold(window)), &[x])
    }

    /// col2im (scatter-add): `[N, C, K, L]` → `[N, C, *spatial]`.
    fn fold(&mut self, x: NodeId, window: Window, spatial: &[usize]) -> Result<NodeId> {
        self.add_op(
            Op::Fold(Fold {
                window,
                spatial: spatial.to_vec(),
            }),
            &[x],
        )
    }

    /// Batched matrix product.
    fn matmul(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        self.matmul_t(a, b, false, false)
    }

    /// Batched matrix product with either operand read transposed (last two axes).
    fn matmul_t(&mut self, a: NodeId, b: NodeId, trans_a: bool, trans_b: bool) -> Result<NodeId> {
        self.add_op(Op::MatMul(MatMul { trans_a, trans_b }), &[a, b])
    }

    /// `x` as f32 values (`x.float()` in PyTorch): `i64` indices become
    /// their values; an f32 `x` is returned as it is. No gradient flows
    /// into indices.
    fn to_f32(&mut self, x: NodeId) -> Result<NodeId> {
        self.add_op(Op::Cast(Cast { to: DType::F32 }), &[x])
    }

    /// Slices of `data` along `axis` picked by the `i64` `indices`, of
    /// shape `data[..axis] ++ indices ++ data[axis+1..]`
    /// (`torch.index_select` generalised to n-d indices; ONNX `Gather`
    /// without negative indices). Runs refuse a feed holding an index
    /// outside `0..data.shape[axis]`. `Err` if `indices` is not `i64`, the
    /// axis is out of range or its size exceeds 2^24.
    fn gather(&mut self, data: NodeId, indices: NodeId, axis: isize) -> Result<NodeId> {
        let axis = normalize_axis("gather", axis, self.shape(data)?.len())?;
        self.add_op(Op::Gather(Gather { axis }), &[data, indices])
    }

    /// Softmax along `axis`, `exp(x − max) / Σ exp(x − max)`, as one op
    /// (`torch.softmax`; see [`crate::ops::softmax`] for NaN and `±∞`
    /// rows). The result has `x`'s shape. `Err` if `axis` is not an axis of
    /// `x`.
    fn softmax(&mut self, x: NodeId, axis: isize) -> Result<NodeId> {
        softmax_along(self, x, axis, false)
    }

    /// Log-softmax along `axis`, `(x − max) − ln Σ exp(x − max)`, as one op
    /// (`torch.log_softmax`). `Err` if `axis` is not an axis of `x`.
    fn log_softmax(&mut self, x: NodeId, axis: isize) -> Result<NodeId> {
        softmax_along(self, x, axis, true)
    }

    /// The gradient of a softmax (`log` false) or log-softmax along `axis`
    /// (normalised) from its result `y` and upstream gradient `g`, both of
    /// one shape: `y·(g − Σ g·y)` or `g − exp(y)·Σ g`. `Err` if the shapes
    /// differ or `axis` is out of range.
    fn softmax_backward(&mut self, y: NodeId, g: NodeId, axis: usize, log: bool) -> Result<NodeId> {
        self.add_op(Op::SoftmaxBackward(SoftmaxBackward { axis, log }), &[y, g])
    }

    /// `(x − mean) / √(var + eps)` over the last axis, biased variance, as
    /// one op (the normalisation of `torch.nn.functional.layer_norm`, no
    /// weight or bias; see [`crate::ops::norm`]). `Err` if `x` is a scalar
    /// or `eps` is negative or not finite.
    fn normalize(&mut self, x: NodeId, eps: f32) -> Result<NodeId> {
        let channels = false;
        self.add_op(Op::Normalize(Normalize { eps, channels }), &[x])
    }

    /// The gradient of [`normalize`](Self::normalize) at `x` for upstream
    /// gradient `g` (one shape). `Err` as `normalize`, or if the shapes differ.
    fn normalize_backward(&mut self, x: NodeId, g: NodeId, eps: f32) -> Result<NodeId> {
        let channels = false;
        self.add_op(
            Op::NormalizeBackward(NormalizeBackward { eps, channels }),
            &[x, g],
        )
    }

    /// `i64` class labels `[..]` as f32 rows `[.., classes]`: 1 at the
    /// label, 0 elsewhere, all 0 for `ignore_index`
    /// (`torch.nn.functional.one_hot`, as f32). Runs refuse a feed holding a
    /// label outside `0..classes` that is not `ignore_index`. `Err` if
    /// `labels` is not `i64` or `classes` is 0 or above 2^24.
    fn one_hot(
        &mut self,
        labels: NodeId,
        classes: usize,
        ignore_index: Option<i64>,
    ) -> Result<NodeId> {
        let op = OneHot {
            classes,
            ignore_index,
        };
        self.add_op(Op::OneHot(op), &[labels])
    }

    /// `body` run over the leading axis of the per-step inputs `xs`
    /// (`[T, ..]` each, one per input the body declares) from `carry0`,
    /// with `consts` (JAX's `lax.scan`): the carry after every step,
    /// `[T, *carry]`, in time order (steps `T−1..=0` when `reverse`). The
    /// graph holds one `scan` node however long `T` is. `Err` if the shapes
    /// do not fit the body's inputs.
    fn scan(
        &mut self,
        body: &std::sync::Arc<ScanBody>,
        carry0: NodeId,
        xs: &[NodeId],
        consts: &[NodeId],
        reverse: bool,
    ) -> Result<NodeId> {
        let carry = self.shape(carry0)?.to_vec();
        let c = carry.iter().product::<usize>();
        let first = xs.first().ok_or_else(|| {
            crate::KilnError::Invalid("scan: no per-step input (xs is empty)".into())
        })?;
        let t = self.shape(*first)?.first().copied().unwrap_or(0);
        let op = Scan {
            body: body.clone(),
            reverse,
            keep: c,
        };
        let mut operands = vec![carry0];
        operands.extend(xs);
        operands.extend(consts);
        let flat = self.add_op(Op::Scan(op), &operands)?;
        let seq = self.slice(flat, 0, 0, t * c, 1)?;
        let mut shape = vec![t as isize];
        shape.extend(carry.iter().map(|&d| d as isize));
        self.reshape(seq, &shape)
    }

    /// Inverted dropout with probability `p` and mask seed `seed`
    /// (identity when the executable runs in evaluation mode).
    fn dropout(&mut self, x: NodeId, p: f32, seed: u64) -> Result<NodeId> {
        self.add_op(Op::Dropout(Dropout { p, seed }), &[x])
    }
}

/// `softmax` / `log_softmax` of `x` along `axis`; a scalar is a row of one
/// (axis 0 or −1, as PyTorch: softmax 1, log-softmax 0).
fn softmax_along<B: OpBuilder + ?Sized>(
    b: &mut B,
    x: NodeId,
    axis: isize,
    log: bool,
) -> Result<NodeId> {
    let name = if log { "log_softmax" } else { "softmax" };
    if b.shape(x)?.is_empty() && (axis == 0 || axis == -1) {
        let row = b.reshape(x, &[1])?;
        let y = b.add_op(Op::Softmax(Softmax { axis: 0, log }), &[row])?;
        return b.reshape(y, &[]);
    }
    let axis = normalize_axis(name, axis, b.shape(x)?.len())?;
    b.add_op(Op::Softmax(Softmax { axis, log }), &[x])
}

/// A reduction over `axes` (negative axes count from the end; sorted, no repeats).
fn reduce<B: OpBuilder + ?Sized>(
    g: &mut B,
    kind: ReduceKind,
    x: NodeId,
    axes: &[isize],
    keepdims: bool,
) -> Result<NodeId> {
    let rank = g.shape(x)?.len();
    let mut ax = axes
        .iter()
        .map(|&a| normalize_axis(kind.name(), a, rank))
        .collect::<Result<Vec<_>>>()?;
    ax.sort_unstable();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        return attr_err(
            kind.name(),
            format!("axes {axes:?} name the same axis twice"),
        );
    }
    g.add_op(
        Op::Reduce(Reduce {
            kind,
            axes: ax,
            keepdims,
        }),
        &[x],
    )
}

/// Resolves a target shape with at most one `-1` against `numel` elements.
pub(crate) fn resolve_shape(numel: usize, shape: &[isize]) -> Result<Vec<usize>> {
    let infer: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] == -1).collect();
    if infer.len() > 1 || shape.iter().any(|&d| d < -1) {
        return attr_err(
            "reshape",
            format!("shape {shape:?} may hold non-negative sizes and at most one -1"),
        );
    }
    let known_dims: Vec<usize> = shape
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as usize)
        .collect();
    let known = crate::shape::checked_numel("reshape", &known_dims)?;
    let mut out: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(&i) = infer.first() {
        if known == 0 || numel % known != 0 {
            return attr_err(
                "reshape",
                format!("cannot infer the -1 in {shape:?} for an operand of {numel} elements"),
            );
        }
        out[i] = numel / known;
    }
    Ok(out)
}
