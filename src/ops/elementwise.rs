//! Element-wise ops: unary maths, binary arithmetic/comparisons with numpy
//! broadcasting, and `select`.

use super::fused::{fused, fused_over, Instr, Instr::Operand};
use super::View;
use super::{one, Arity, Grads, OpDef, RunCtx};
use super::{NodeId, OpBuilder};
use crate::error::{shape_err, Result};
use crate::kernels::math;
use crate::shape::{block_repeat, broadcast_pair, broadcast_strides, strided_walk};
use serde::{Deserialize, Serialize};

/// `√(2/π)`, the tanh-approximate GELU's scale (PyTorch's `kBeta`).
const GELU_BETA: f32 = 0.797_884_6;
/// The tanh-approximate GELU's cubic coefficient (PyTorch's `kKappa`).
const GELU_KAPPA: f32 = 0.044_715;

/// Element-wise unary functions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural logarithm
    Log,
    /// square root
    Sqrt,
    /// `1/x`
    Recip,
    /// `max(x, 0)` (NaN stays NaN)
    Relu,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// hyperbolic tangent
    Tanh,
    /// `|x|`
    Abs,
    /// Gauss error function (`torch.erf`)
    Erf,
    /// GELU, exact: `x·Φ(x) = x·½·(1 + erf(x/√2))` (`torch.nn.GELU()`)
    Gelu,
    /// GELU, tanh approximation: `x·½·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`
    /// (`torch.nn.GELU(approximate='tanh')`)
    GeluTanh,
    /// SiLU (swish): `x / (1 + e^−x)` (`torch.nn.SiLU`; −∞ gives NaN, as PyTorch)
    Silu,
    /// `x` where `x > 0`, else `negative_slope·x` (`torch.nn.LeakyReLU`;
    /// NaN stays NaN; −0.0 gives `−0.0·negative_slope`, as PyTorch)
    LeakyRelu(#[serde(with = "super::source::serde_f32")] f32),
}

impl UnaryOp {
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Relu => "relu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Abs => "abs",
            UnaryOp::Erf => "erf",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::LeakyRelu(_) => "leaky_relu",
        }
    }
    /// The function on one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            UnaryOp::Sigmoid => math::sigmoid(x),
            UnaryOp::Tanh => math::tanh(x),
            UnaryOp::Abs => x.abs(),
            UnaryOp::Erf => libm::erff(x),
            UnaryOp::Gelu => x * 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
            UnaryOp::GeluTanh => {
                let inner = GELU_BETA * (x + GELU_KAPPA * (x * x * x));
                0.5 * x * (1.0 + math::tanh(inner))
            }
            UnaryOp::Silu => x * math::sigmoid(x),
            UnaryOp::LeakyRelu(slope) => {
                if x > 0.0 {
                    x
                } else {
                    x * slope
                }
            }
        }
    }
}

/// The op as dumps show it inside a fused expression or an epilogue: its
/// name, with its attributes in brackets when it has any.
impl std::fmt::Display for UnaryOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UnaryOp::LeakyRelu(slope) => write!(f, "leaky_relu[{}]", super::fmt_f32(*slope)),
            _ => f.write_str(self.name()),
        }
    }
}

/// Element-wise binary functions; comparisons give 1.0 (true) or 0.0 (false).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// larger of the two (NaN propagates, as `torch.maximum`)
    Max,
    /// smaller of the two (NaN propagates, as `torch.minimum`)
    Min,
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

impl BinaryOp {
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Max => "maximum",
            BinaryOp::Min => "minimum",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
        }
    }
    /// The function on one pair of values.
    #[inline]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        let t = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
            BinaryOp::Max => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.max(b)
                }
            }
            BinaryOp::Min => {
                if a.is_nan() || b.is_nan() {
                    f32::NAN
                } else {
                    a.min(b)
                }
            }
            BinaryOp::Eq => t(a == b),
            BinaryOp::Ne => t(a != b),
            BinaryOp::Lt => t(a < b),
            BinaryOp::Le => t(a <= b),
            BinaryOp::Gt => t(a > b),
            BinaryOp::Ge => t(a >= b),
        }
    }
}

/// Shape rule of broadcasting ops: the numpy broadcast of all operands.
pub fn broadcast_shapes(op: &str, ins: &[&[usize]]) -> Result<Vec<usize>> {
    let mut out = ins[0].to_vec();
    for (i, s) in ins.iter().enumerate().skip(1) {
        out = match broadcast_pair(&out, s) {
            Some(o) => o,
            None => {
                return shape_err(
                    op,
                    format!(
                        "operand {i} has shape {s:?}, which does not broadcast with {:?} (operand 0 has shape {:?})",
                        out, ins[0]
                    ),
                )
            }
        };
    }
    Ok(out)
}

/// Runs `$body` with `$u` bound to `$op`'s variant as a constant, one copy
/// per variant: the loop inside is compiled with [`UnaryOp::apply`] folded
/// to that op's function (and vectorised), not a `match` per value.
macro_rules! per_unary_op {
    ($op:expr, $u:ident => $body:expr) => {
        $crate::ops::elementwise::per_unary_op!(@arms $op, $u, $body,
            [Neg, Exp, Log, Sqrt, Recip, Relu, Sigmoid, Tanh, Abs, Erf, Gelu, GeluTanh, Silu],
            [LeakyRelu])
    };
    (@arms $op:expr, $u:ident, $body:expr, [$($v:ident),*], [$($w:ident),*]) => {
        match $op {
            $($crate::ops::elementwise::UnaryOp::$v => {
                let $u = $crate::ops::elementwise::UnaryOp::$v;
                $body
            })*
            $($crate::ops::elementwise::UnaryOp::$w(a) => {
                let $u = $crate::ops::elementwise::UnaryOp::$w(a);
                $body
            })*
        }
    };
}
pub(crate) use per_unary_op;

/// Reference kernel of unary ops (through the fused loop: vectorised per
/// op, in parallel chunks).
pub fn unary(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    let n = [x.len()];
    let expr = [Operand(0), Instr::Unary(op, 0)];
    fused(&expr, &[View { shape: &n, data: x }], out, &n)
}

/// A unary op applied in place (a kernel epilogue).
pub fn unary_in_place(op: UnaryOp, x: &mut [f32]) {
    let done = match op {
        UnaryOp::Relu => crate::kernels::relu::relu_in_place_simd(x),
        _ => 0,
    };
    let x = &mut x[done..];
    per_unary_op!(op, u => {
        for v in x.iter_mut() {
            *v = u.apply(*v);
        }
    })
}

/// A binary op written over operand `aliased` (of the output's shape),
/// whose value `out` holds on entry; the other operand may broadcast.
pub fn binary_in_place(
    op: BinaryOp,
    ins: &[View],
    aliased: usize,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let other = ins[1 - aliased];
    if block_repeat(other.shape, out_shape).is_some() {
        let expr = [Operand(0), Operand(1), Instr::Binary(op, 0, 1)];
        return fused_over(&expr, ins, Some(aliased), out, out_shape);
    }
    let apply = |held: f32, v: f32| {
        if aliased == 0 {
            op.apply(held, v)
        } else {
            op.apply(v, held)
        }
    };
    let so = broadcast_strides(other.shape, out_shape);
    strided_walk(out_shape, [&so], |i, [k]| {
        out[i] = apply(out[i], other.data[k])
    });
}

/// Reference kernel of binary ops with broadcasting.
pub fn binary(op: BinaryOp, a: View, b: View, out: &mut [f32], out_shape: &[usize]) {
    if [a.shape, b.shape]
        .iter()
        .all(|s| block_repeat(s, out_shape).is_some())
    {
        // same-shaped, per-channel, row or scalar operands: the fused loop
        // (block by block, in parallel chunks) copies or fills runs
        let expr = [Operand(0), Operand(1), Instr::Binary(op, 0, 1)];
        return fused(&expr, &[a, b], out, out_shape);
    }
    let sa = broadcast_strides(a.shape, out_shape);
    let sb = broadcast_strides(b.shape, out_shape);
    strided_walk(out_shape, [&sa, &sb], |i, [oa, ob]| {
        out[i] = op.apply(a.data[oa], b.data[ob]);
    });
}

/// Reference kernel of `select(cond, a, b)`.
pub fn select(c: View, a: View, b: View, out: &mut [f32], out_shape: &[usize]) {
    let sc = broadcast_strides(c.shape, out_shape);
    let sa = broadcast_strides(a.shape, out_shape);
    let sb = broadcast_strides(b.shape, out_shape);
    strided_walk(out_shape, [&sc, &sa, &sb], |i, [oc, oa, ob]| {
        out[i] = if c.data[oc] != 0.0 {
            a.data[oa]
        } else {
            b.data[ob]
        };
    });
}

/// VJP of a unary op: the gradient of `x` given `y = op(x)` and the upstream gradient `gy`.
pub fn unary_vjp(
    op: UnaryOp,
    g: &mut dyn OpBuilder,
    x: NodeId,
    y: NodeId,
    gy: NodeId,
) -> Result<NodeId> {
    match op {
        UnaryOp::Neg => g.neg(gy),
        UnaryOp::Exp => g.mul(gy, y),
        UnaryOp::Log => g.div(gy, x),
        UnaryOp::Sqrt => {
            let two_y = g.mul_scalar(y, 2.0)?;
            g.div(gy, two_y)
        }
        UnaryOp::Recip => {
            let y2 = g.mul(y, y)?;
            let t = g.mul(gy, y2)?;
            g.neg(t)
        }
        UnaryOp::Relu => {
            // PyTorch's threshold_backward: `where(y <= 0, 0, gy)`, so a
            // NaN or ∞ gradient never reaches a cell ReLU zeroed (a mask
            // product would make it NaN) and a NaN input passes its
            // gradient; read off the output (relu(x) <= 0 exactly where
            // x <= 0), so the input is free to be fused away
            let zero = g.scalar(0.0)?;
            let off = g.le(y, zero)?;
            g.select(off, zero, gy)
        }
        UnaryOp::Sigmoid => {
            let one = g.scalar(1.0)?;
            let one_minus = g.sub(one, y)?;
            let d = g.mul(y, one_minus)?;
            g.mul(gy, d)
        }
        UnaryOp::Tanh => {
            let one = g.scalar(1.0)?;
            let y2 = g.mul(y, y)?;
            let d = g.sub(one, y2)?;
            g.mul(gy, d)
        }
        UnaryOp::Abs => {
            // sign(x), 0 at x = 0 (as PyTorch)
            let zero = g.scalar(0.0)?;
            let pos = g.gt(x, zero)?;
            let neg = g.lt(x, zero)?;
            let sign = g.sub(pos, neg)?;
            g.mul(gy, sign)
        }
        UnaryOp::Erf => {
            // 2/√π · e^(−x²)
            let x2 = g.mul(x, x)?;
            let e = g.mul_scalar(x2, -1.0)?;
            let e = g.exp(e)?;
            let d = g.mul_scalar(e, std::f32::consts::FRAC_2_SQRT_PI)?;
            g.mul(gy, d)
        }
        UnaryOp::Gelu => {
            // PyTorch's GeluBackward: Φ(x) + x·φ(x)
            let xs = g.mul_scalar(x, std::f32::consts::FRAC_1_SQRT_2)?;
            let e = g.erf(xs)?;
            let e1 = g.add_scalar(e, 1.0)?;
            let cdf = g.mul_scalar(e1, 0.5)?;
            let x2 = g.mul(x, x)?;
            let t = g.mul_scalar(x2, -0.5)?;
            let ex = g.exp(t)?;
            let pdf = g.mul_scalar(
                ex,
                0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2,
            )?;
            let xp = g.mul(x, pdf)?;
            let d = g.add(cdf, xp)?;
            g.mul(gy, d)
        }
        UnaryOp::GeluTanh => {
            // PyTorch's GeluBackward (tanh): ½(1 + t) + ½x·(1 − t²)·β(1 + 3κx²)
            let x2 = g.mul(x, x)?;
            let x3 = g.mul(x2, x)?;
            let k = g.mul_scalar(x3, GELU_KAPPA)?;
            let inner = g.add(x, k)?;
            let inner = g.mul_scalar(inner, GELU_BETA)?;
            let t = g.tanh(inner)?;
            let right = g.add_scalar(t, 1.0)?;
            let left_d = g.mul_scalar(right, 0.5)?;
            let t2 = g.mul(t, t)?;
            let one = g.scalar(1.0)?;
            let sech2 = g.sub(one, t2)?;
            let k3 = g.mul_scalar(x2, 3.0 * GELU_KAPPA)?;
            let k3 = g.add_scalar(k3, 1.0)?;
            let k3 = g.mul_scalar(k3, GELU_BETA)?;
            let half_x = g.mul_scalar(x, 0.5)?;
            let right_d = g.mul(half_x, sech2)?;
            let right_d = g.mul(right_d, k3)?;
            let d = g.add(left_d, right_d)?;
            g.mul(gy, d)
        }
        UnaryOp::Silu => {
            // PyTorch's silu_backward: s·(1 + x·(1 − s)), s = sigmoid(x)
            let s = g.sigmoid(x)?;
            let one = g.scalar(1.0)?;
            let one_minus = g.sub(one, s)?;
            let t = g.mul(x, one_minus)?;
            let t = g.add_scalar(t, 1.0)?;
            let d = g.mul(s, t)?;
            g.mul(gy, d)
        }
        UnaryOp::LeakyRelu(slope) => {
            // PyTorch's leaky_relu_backward: `x > 0 ? gy : gy·slope`
            let zero = g.scalar(0.0)?;
            let pos = g.gt(x, zero)?;
            let neg = g.mul_scalar(gy, slope)?;
            g.select(pos, gy, neg)
        }
    }
}

/// VJP of a binary op: gradients of `a` and `b` (of the broadcast shape; the
/// autodiff driver sums them back to the operand shapes). Comparisons have a
/// zero gradient (`None`). `maximum`/`minimum` split the gradient evenly on
/// ties, as PyTorch.
pub fn binary_vjp(
    op: BinaryOp,
    g: &mut dyn OpBuilder,
    a: NodeId,
    b: NodeId,
    y: NodeId,
    gy: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    Ok(match op {
        BinaryOp::Add => vec![Some(gy), Some(gy)],
        BinaryOp::Sub => vec![Some(gy), Some(g.neg(gy)?)],
        BinaryOp::Mul => vec![Some(g.mul(gy, b)?), Some(g.mul(gy, a)?)],
        BinaryOp::Div => {
            let ga = g.div(gy, b)?;
            let gy_y = g.mul(gy, y)?;
            let q = g.div(gy_y, b)?;
            vec![Some(ga), Some(g.neg(q)?)]
        }
        BinaryOp::Max | BinaryOp::Min => {
            let wins = if op == BinaryOp::Max {
                g.gt(a, b)?
            } else {
                g.lt(a, b)?
            };
            let tie = g.eq(a, b)?;
            let half_tie = g.mul_scalar(tie, 0.5)?;
            let share_a = g.add(wins, half_tie)?;
            let one = g.scalar(1.0)?;
            let share_b = g.sub(one, share_a)?;
            vec![Some(g.mul(gy, share_a)?), Some(g.mul(gy, share_b)?)]
        }
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            vec![None, None]
        }
    })
}

/// VJP of `select(c, a, b)`: the gradient goes to `a` where `c != 0`, else to `b`.
pub fn select_vjp(g: &mut dyn OpBuilder, c: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
    let zero = g.scalar(0.0)?;
    let ga = g.select(c, gy, zero)?;
    let gb = g.select(c, zero, gy)?;
    Ok(vec![None, Some(ga), Some(gb)])
}

impl OpDef for UnaryOp {
    fn name(&self) -> &'static str {
        UnaryOp::name(*self)
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        match self {
            UnaryOp::LeakyRelu(slope) => vec![("negative_slope", super::fmt_f32(*slope))],
            _ => Vec::new(),
        }
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        unary(*self, ins[0].data, out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        one(unary_vjp(*self, g, xs[0], y, gy))
    }
    fn in_place_operands(&self, _: &[&[usize]], _: &[usize]) -> Vec<usize> {
        vec![0]
    }
    fn eval_in_place(&self, ins: &[View], _: usize, out: &mut [f32], shape: &[usize]) {
        let expr = [Operand(0), Instr::Unary(*self, 0)];
        fused_over(&expr, ins, Some(0), out, shape)
    }
    fn is_elementwise(&self) -> bool {
        true
    }
}

impl OpDef for BinaryOp {
    fn name(&self) -> &'static str {
        BinaryOp::name(*self)
    }
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        broadcast_shapes(self.name(), ins)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        binary(*self, ins[0], ins[1], out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        binary_vjp(*self, g, xs[0], xs[1], y, gy)
    }
    fn in_place_operands(&self, ins: &[&[usize]], out_shape: &[usize]) -> Vec<usize> {
        (0..2).filter(|&k| ins[k] == out_shape).collect()
    }
    fn eval_in_place(&self, ins: &[View], aliased: usize, out: &mut [f32], shape: &[usize]) {
        binary_in_place(*self, ins, aliased, out, shape)
    }
    fn is_elementwise(&self) -> bool {
        true
    }
    /// −0.0 for + (IEEE 754: −0 + +0 = +0, so +0.0 is no identity of +),
    /// +0.0 for −, 1 for × and ÷. Compare with [`f32::to_bits`], never `==`.
    fn right_identity(&self) -> Option<f32> {
        match self {
            BinaryOp::Add => Some(-0.0),
            BinaryOp::Sub => Some(0.0),
            BinaryOp::Mul | BinaryOp::Div => Some(1.0),
            _ => None,
        }
    }
    /// −0.0 for +, 1 for × (see [`right_identity`](Self::right_identity)).
    fn left_identity(&self) -> Option<f32> {
        match self {
            BinaryOp::Add => Some(-0.0),
            BinaryOp::Mul => Some(1.0),
            _ => None,
        }
    }
}

/// `select(cond, a, b)`: `a` where `cond != 0`, else `b`, all three
/// broadcast (`torch.where(cond != 0, a, b)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Select;

impl OpDef for Select {
    fn name(&self) -> &'static str {
        "select"
    }
    fn arity(&self) -> Arity {
        Arity::Exact(3)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        broadcast_shapes("select", ins)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        select(ins[0], ins[1], ins[2], out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        select_vjp(g, xs[0], gy)
    }
    fn is_elementwise(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_unary_ops_follow_the_reference_rule_bit_for_bit() {
        // special values in every lane of the vector path and in the tail
        let special = [
            f32::NAN,
            -0.0,
            0.0,
            -1.5,
            2.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let x: Vec<f32> = (0..29)
            .map(|i| special[i % special.len()] * (1 + i / 7) as f32)
            .collect();
        for op in [UnaryOp::Relu, UnaryOp::Neg, UnaryOp::Abs, UnaryOp::Exp] {
            let mut got = x.clone();
            unary_in_place(op, &mut got);
            for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
                let want = op.apply(v);
                assert_eq!(
                    g.to_bits(),
                    want.to_bits(),
                    "{op:?} at {i}: {v} gave {g}, not {want}"
                );
            }
        }
        let mut relu = x.clone();
        unary_in_place(UnaryOp::Relu, &mut relu);
        assert!(relu[0].is_nan() && relu[1].to_bits() == (-0.0f32).to_bits() && relu[3] == 0.0);
    }
}
