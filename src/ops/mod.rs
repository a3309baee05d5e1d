//! The op set. [`Op`] is a closed enum whose variants each hold one op's
//! attributes; everything kiln knows about an op (name, dump attributes,
//! arity, shape rule, reference kernel, in-place/view/element-wise facts,
//! identities, VJP) lives in that op's family file as its [`OpDef`]
//! implementation. [`Op::def`] is the one dispatch; passes, the memory plan
//! and autodiff read these facts, never lists of op names.

/// An [`OpDef::attrs`] listing the named fields as `(name, Debug form)`.
macro_rules! debug_attrs {
    ($($k:ident),*) => {
        fn attrs(&self) -> Vec<(&'static str, String)> {
            vec![$((stringify!($k), format!("{:?}", self.$k))),*]
        }
    };
}

pub mod attention;
pub mod builder;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod fused;
pub mod index;
pub mod matmul;
pub mod mode;
pub mod movement;
pub mod norm;
pub mod pool;
pub mod reduce;
pub mod scan;
mod scan_grad;
pub mod softmax;
pub mod source;
pub mod window;

pub use attention::{Attention, ScoreMask};
pub use builder::{NodeId, OpBuilder};
pub use conv::{Conv, ConvInputGrad, ConvKernelGrad};
pub use dropout::Dropout;
pub use elementwise::{BinaryOp, Select, UnaryOp};
pub use fused::Fused;
pub use index::{Cast, Gather, GatherBackward, OneHot};
pub use matmul::MatMul;
pub use mode::TrainEval;
pub use movement::{
    Broadcast, Concat, Output, Pad, Permute, Reshape, Slice, Stack, StopGradient, Transpose,
};
pub use norm::{ChannelMoments, Normalize, NormalizeBackward};
pub use pool::{
    AvgDivisor, AvgPool, AvgPoolBackward, MaxPool, MaxPoolBackward, MaxPoolWithIndices, PoolWindow,
};
pub use reduce::{FirstMaxMask, Reduce, ReduceKind};
pub use scan::{Scan, ScanBody};
pub use softmax::{Softmax, SoftmaxBackward};
pub use source::{Constant, Fill, Input, Param};
pub use window::{Fold, Unfold, Window};

use crate::dtype::DType;
use crate::error::{shape_err, KilnError, Result};
use serde::{Deserialize, Serialize};

/// A read-only view of an operand: its shape and row-major data.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// Dimensions.
    pub shape: &'a [usize],
    /// Row-major data, `shape.iter().product()` elements.
    pub data: &'a [f32],
}

/// Per-run context handed to kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunCtx {
    /// Training mode: dropout masks are applied. In evaluation mode dropout is the identity.
    pub training: bool,
    /// How many runs the executable has done before this one (varies dropout masks per step).
    pub step: u64,
}

/// An operation of the graph: one variant per op, holding its attributes
/// (the serde form, used by JSON dumps, is `{"Variant": {attributes}}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A value fed at run time by name.
    Input(Input),
    /// A trainable parameter; its value lives in the graph / executable.
    Param(Param),
    /// A constant tensor.
    Constant(Constant),
    /// A tensor of one value (a compact constant).
    Fill(Fill),
    /// Element-wise unary op.
    Unary(UnaryOp),
    /// Element-wise binary op with numpy broadcasting.
    Binary(BinaryOp),
    /// `select(cond, a, b)`: `a` where `cond != 0`, else `b`; all three broadcast.
    Select,
    /// Reduction (sum, mean, max) over sorted, unique axes.
    Reduce(Reduce),
    /// 1 at the first argmax along an axis (see [`FirstMaxMask`]).
    FirstMaxMask(FirstMaxMask),
    /// Same data, new shape of equal size.
    Reshape(Reshape),
    /// Element-wise transpose (index arithmetic per element).
    Transpose(Transpose),
    /// The fused form of `Transpose`: a blocked copy kernel.
    Permute(Permute),
    /// Numpy broadcast to a shape.
    Broadcast(Broadcast),
    /// A strided range along one axis.
    Slice(Slice),
    /// Constant padding.
    Pad(Pad),
    /// Concatenation of all operands along an existing axis.
    Concat(Concat),
    /// Stacking of equally shaped operands along a new axis.
    Stack(Stack),
    /// im2col: `[N, C, *S]` → `[N, C, K, L]`, zero padding.
    Unfold(Unfold),
    /// col2im: `[N, C, K, L]` → `[N, C, *spatial]`, scatter-adding.
    Fold(Fold),
    /// Batched matrix product, either operand read transposed.
    MatMul(MatMul),
    /// Fused convolution `[x, w]` or `[x, w, b]`, with an element-wise epilogue.
    Conv(Conv),
    /// Fused convolution weight gradient.
    ConvKernelGrad(ConvKernelGrad),
    /// Fused convolution input gradient (transposed convolution).
    ConvInputGrad(ConvInputGrad),
    /// A chain of element-wise ops in one loop.
    Fused(Fused),
    /// The identity whose gradient is zero (`torch.Tensor.detach`).
    StopGradient,
    /// One output of a multi-output op: a view of part of its buffer.
    Output(Output),
    /// Fused max pooling with two outputs: maxima and argmax plane indices.
    MaxPoolWithIndices(MaxPoolWithIndices),
    /// Fused max pooling, the maxima only.
    MaxPool(MaxPool),
    /// Fused max-pooling gradient `[gy, indices]`.
    MaxPoolBackward(MaxPoolBackward),
    /// Fused average pooling.
    AvgPool(AvgPool),
    /// Fused average-pooling gradient `[gy]`.
    AvgPoolBackward(AvgPoolBackward),
    /// Inverted dropout (identity in evaluation mode).
    Dropout(Dropout),
    /// The first operand in training mode, the second in evaluation mode.
    TrainEval,
    /// Element-type conversion (`i64` indices to f32 values).
    Cast(Cast),
    /// Slices picked by `i64` indices (an embedding lookup).
    Gather(Gather),
    /// The gradient of `Gather`: slices scatter-added at their indices.
    GatherBackward(GatherBackward),
    /// `i64` class labels as one-hot f32 rows.
    OneHot(OneHot),
    /// A loop over a time axis whose step is a graph (`lax.scan`).
    Scan(Scan),
    /// Softmax or log-softmax along one axis.
    Softmax(Softmax),
    /// The gradient of `Softmax`.
    SoftmaxBackward(SoftmaxBackward),
    /// `(x − mean) / √(var + eps)` over the last axis.
    Normalize(Normalize),
    /// The gradient of `Normalize`.
    NormalizeBackward(NormalizeBackward),
    /// The fused attention core `softmax(mask(scale·q·kᵀ))·v`.
    Attention(Attention),
    /// Each channel's mean and biased variance (BatchNorm's batch statistics).
    ChannelMoments(ChannelMoments),
}

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exact(usize),
    /// One or more.
    AtLeastOne,
    /// Between the two counts, inclusive.
    Between(usize, usize),
}

/// Gradients of an op's operands, one entry per operand (`None`: zero).
pub type Grads = Result<Vec<Option<NodeId>>>;

/// Everything kiln knows about one op, implemented by the op's attribute
/// type in its family file. Defaults describe a single-output, one-operand
/// op that is neither a view, element-wise, in-place, constant nor random.
pub trait OpDef {
    /// The op's name in dumps and error messages (`add`, `conv2d`).
    fn name(&self) -> &'static str;
    /// Attributes for dumps as `(key, value)` pairs ([`Op::attrs`] sorts them).
    fn attrs(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Number of operands.
    fn arity(&self) -> Arity {
        Arity::Exact(1)
    }
    /// Number of outputs; all of a multi-output op's outputs share its
    /// node's shape, and other ops read them through `Output` nodes.
    fn num_outputs(&self) -> usize {
        1
    }
    /// The shape rule: the output shape for operands of shapes `ins` (their
    /// count already checked against [`arity`](Self::arity)), or an `Err`
    /// naming the op, the offending operand and the shapes.
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>>;
    /// The type rule: the result's element type for operands of types `ins`
    /// (their count already checked). The default, for ops that compute:
    /// every operand f32 and so the result; `Err` naming an `i64` operand.
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        all_f32(self.name(), ins)
    }
    /// For an op that reads an operand as indices: its position and the
    /// range its values must lie in, for operands of shapes `ins`. Every
    /// run checks the feeds that operand comes from against it.
    fn index_operand(&self, _ins: &[&[usize]]) -> Option<(usize, IndexRange)> {
        None
    }
    /// The reference kernel: writes the result for operands `ins` into `out`
    /// (non-empty, of shape `out_shape`; a multi-output op writes its
    /// outputs back to back).
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], ctx: &RunCtx);
    /// The VJP rule: given operands `xs`, the op's output `y` and the
    /// upstream gradient `gy`, builds one gradient per operand. A gradient
    /// may have the broadcast output shape; autodiff sums it to the operand's.
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads;
    /// The operand positions whose memory the result may take over
    /// (element-wise ops reading that operand at the output's shape).
    fn in_place_operands(&self, _ins: &[&[usize]], _out_shape: &[usize]) -> Vec<usize> {
        Vec::new()
    }
    /// [`eval`](Self::eval) writing over operand `aliased`: `out` holds its
    /// value on entry. Called only for positions
    /// [`in_place_operands`](Self::in_place_operands) names.
    fn eval_in_place(&self, _ins: &[View], _aliased: usize, _out: &mut [f32], _shape: &[usize]) {
        unreachable!("{} has no in-place kernel", self.name())
    }
    /// Where the result lies in operand 0's memory when it is a view of it
    /// (no data of its own); `input` is operand 0's shape, `len` the
    /// elements of one output.
    fn view_offset(&self, _input: &[usize], _len: usize) -> Option<usize> {
        None
    }
    /// Part of the graph's interface (input, parameter): never merged,
    /// replaced or removed by passes; fed or loaded by the executor.
    fn is_interface(&self) -> bool {
        false
    }
    /// Value known at compile time from the attributes alone.
    fn is_constant(&self) -> bool {
        false
    }
    /// Value may change from run to run for the same operands: never folded.
    fn is_random(&self) -> bool {
        false
    }
    /// Output element `i` depends only on element `i` of each (broadcast)
    /// operand, so chains of such ops fuse into one loop.
    fn is_elementwise(&self) -> bool {
        false
    }
    /// The op with every size attribute `n` replaced by `f(n)` (for
    /// specialising a symbolic batch, see [`crate::BATCH`]), or `None` if
    /// it has no size attributes that can carry the batch.
    fn map_sizes(&self, _f: &dyn Fn(usize) -> usize) -> Option<Op> {
        None
    }
    /// `e` with `x op e` bit-identical to `x` for every `x` (NaN, ±0.0 included).
    fn right_identity(&self) -> Option<f32> {
        None
    }
    /// `e` with `e op x` bit-identical to `x` for every `x`.
    fn left_identity(&self) -> Option<f32> {
        None
    }
}

/// The values an index operand may hold: `0..size`, and `ignore` when set
/// (a label that selects nothing, PyTorch's `ignore_index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexRange {
    /// Indices run from 0 to `size − 1`.
    pub size: usize,
    /// One more value allowed outside that range.
    pub ignore: Option<i64>,
}

impl IndexRange {
    /// Whether `v` is in the range.
    pub fn contains(&self, v: i64) -> bool {
        (v >= 0 && (v as u64) < self.size as u64) || self.ignore == Some(v)
    }
}

impl std::fmt::Display for IndexRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0..{}", self.size)?;
        match self.ignore {
            Some(i) => write!(f, " or the ignore_index {i}"),
            None => Ok(()),
        }
    }
}

/// The type rule of an op that computes in f32: every operand must be f32.
pub(crate) fn all_f32(op: &str, ins: &[DType]) -> Result<DType> {
    match ins.iter().position(|&d| d != DType::F32) {
        Some(k) => Err(KilnError::Type {
            op: op.into(),
            message: format!(
                "operand {k} is {}, but `{op}` computes in f32: convert indices with to_f32 first",
                ins[k]
            ),
        }),
        None => Ok(DType::F32),
    }
}

/// The type rule of a movement op: the operands' one type, passed through.
pub(crate) fn same_dtype(op: &str, ins: &[DType]) -> Result<DType> {
    let first = ins.first().copied().unwrap_or_default();
    match ins.iter().position(|&d| d != first) {
        Some(k) => Err(KilnError::Type {
            op: op.into(),
            message: format!(
                "operand 0 is {first} and operand {k} is {}: the operands must have one type",
                ins[k]
            ),
        }),
        None => Ok(first),
    }
}

/// A VJP result for a one-operand op.
pub(crate) fn one(n: Result<NodeId>) -> Grads {
    n.map(|n| vec![Some(n)])
}

impl Op {
    /// The op's [`OpDef`]: the one dispatch over the variants.
    pub fn def(&self) -> &dyn OpDef {
        match self {
            Op::Input(d) => d,
            Op::Param(d) => d,
            Op::Constant(d) => d,
            Op::Fill(d) => d,
            Op::Unary(d) => d,
            Op::Binary(d) => d,
            Op::Select => &Select,
            Op::Reduce(d) => d,
            Op::FirstMaxMask(d) => d,
            Op::Reshape(d) => d,
            Op::Transpose(d) => d,
            Op::Permute(d) => d,
            Op::Broadcast(d) => d,
            Op::Slice(d) => d,
            Op::Pad(d) => d,
            Op::Concat(d) => d,
            Op::Stack(d) => d,
            Op::Unfold(d) => d,
            Op::Fold(d) => d,
            Op::MatMul(d) => d,
            Op::Conv(d) => d,
            Op::ConvKernelGrad(d) => d,
            Op::ConvInputGrad(d) => d,
            Op::Fused(d) => d,
            Op::StopGradient => &StopGradient,
            Op::Output(d) => d,
            Op::MaxPoolWithIndices(d) => d,
            Op::MaxPool(d) => d,
            Op::MaxPoolBackward(d) => d,
            Op::AvgPool(d) => d,
            Op::AvgPoolBackward(d) => d,
            Op::Dropout(d) => d,
            Op::TrainEval => &TrainEval,
            Op::Cast(d) => d,
            Op::Gather(d) => d,
            Op::GatherBackward(d) => d,
            Op::OneHot(d) => d,
            Op::Scan(d) => d,
            Op::Softmax(d) => d,
            Op::SoftmaxBackward(d) => d,
            Op::Normalize(d) => d,
            Op::NormalizeBackward(d) => d,
            Op::Attention(d) => d,
            Op::ChannelMoments(d) => d,
        }
    }

    /// The op's name in dumps and error messages ([`OpDef::name`]).
    pub fn name(&self) -> &'static str {
        self.def().name()
    }
    /// See [`OpDef::is_interface`].
    pub fn is_interface(&self) -> bool {
        self.def().is_interface()
    }
    /// See [`OpDef::is_constant`].
    pub fn is_constant(&self) -> bool {
        self.def().is_constant()
    }
    /// See [`OpDef::is_random`].
    pub fn is_random(&self) -> bool {
        self.def().is_random()
    }
    /// See [`OpDef::is_elementwise`].
    pub fn is_elementwise(&self) -> bool {
        self.def().is_elementwise()
    }
    /// See [`OpDef::view_offset`].
    pub fn view_offset(&self, input: &[usize], len: usize) -> Option<usize> {
        self.def().view_offset(input, len)
    }
    /// See [`OpDef::num_outputs`].
    pub fn num_outputs(&self) -> usize {
        self.def().num_outputs()
    }
    /// See [`OpDef::arity`].
    pub fn arity(&self) -> Arity {
        self.def().arity()
    }
    /// See [`OpDef::right_identity`].
    pub fn right_identity(&self) -> Option<f32> {
        self.def().right_identity()
    }
    /// See [`OpDef::left_identity`].
    pub fn left_identity(&self) -> Option<f32> {
        self.def().left_identity()
    }
    /// See [`OpDef::map_sizes`]; the op itself when it has no size attributes.
    pub fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Op {
        self.def().map_sizes(f).unwrap_or_else(|| self.clone())
    }
    /// See [`OpDef::in_place_operands`].
    pub fn in_place_operands(&self, ins: &[&[usize]], out_shape: &[usize]) -> Vec<usize> {
        self.def().in_place_operands(ins, out_shape)
    }

    /// Attributes for dumps as `(key, value)` pairs, sorted by key, values
    /// without spaces (except names).
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut a = self.def().attrs();
        for (k, v) in a.iter_mut() {
            if *k != "name" {
                v.retain(|c| c != ' ');
            }
        }
        a.sort_by(|x, y| x.0.cmp(y.0));
        a
    }

    /// The shape rule ([`OpDef::infer_shape`]) after checking the operand
    /// count against the arity; `Err` names this op.
    pub fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let op = self.name();
        match self.arity() {
            Arity::Exact(n) if ins.len() != n => {
                return shape_err(op, format!("takes {n} operand(s), got {}", ins.len()));
            }
            Arity::Between(lo, hi) if ins.len() < lo || ins.len() > hi => {
                let range = match hi {
                    usize::MAX => format!("at least {lo}"),
                    _ => format!("{lo} to {hi}"),
                };
                return shape_err(op, format!("takes {range} operands, got {}", ins.len()));
            }
            Arity::AtLeastOne if ins.is_empty() => {
                return shape_err(op, "takes at least one operand, got none");
            }
            _ => {}
        }
        self.def().infer_shape(ins)
    }

    /// [`OpDef::eval_in_place`]; an empty result has nothing to compute.
    pub fn eval_in_place(&self, ins: &[View], aliased: usize, out: &mut [f32], shape: &[usize]) {
        if !out.is_empty() {
            self.def().eval_in_place(ins, aliased, out, shape)
        }
    }

    /// The reference kernel ([`OpDef::eval`]). An empty result has nothing
    /// to compute; a kernel whose operands are empty but whose result is not
    /// (a sum over an empty axis, a padded empty plane) writes what PyTorch
    /// gives for it. `Input` and `Param` are filled by the executor.
    pub fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], ctx: &RunCtx) {
        if !out.is_empty() {
            self.def().eval(ins, out, out_shape, ctx)
        }
    }

    /// The VJP rule ([`OpDef::vjp`]).
    pub fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        self.def().vjp(g, xs, y, gy)
    }
}

/// Fixed, round-trippable float format for dumps.
pub fn fmt_f32(v: f32) -> String {
    if v.is_finite() {
        format!("{v:?}")
    } else if v.is_nan() {
        "nan".into()
    } else if v > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}
