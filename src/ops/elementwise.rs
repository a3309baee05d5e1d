//! Element-wise ops: unary maths, binary arithmetic/comparisons with numpy
//! broadcasting, and `select`.

use super::View;
use crate::error::{shape_err, Result};
use crate::shape::{broadcast_pair, broadcast_strides, strided_walk};
use serde::{Deserialize, Serialize};

/// Element-wise unary functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Abs => x.abs(),
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

/// Reference kernel of unary ops.
pub fn unary(op: UnaryOp, x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = op.apply(v);
    }
}

/// Reference kernel of binary ops with broadcasting.
pub fn binary(op: BinaryOp, a: View, b: View, out: &mut [f32], out_shape: &[usize]) {
    if a.shape == out_shape && b.shape == out_shape {
        for ((o, &x), &y) in out.iter_mut().zip(a.data).zip(b.data) {
            *o = op.apply(x, y);
        }
        return;
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
