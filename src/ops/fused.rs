//! `Fused`: a chain of element-wise ops evaluated in one loop, which the
//! `fuse_elementwise` pass makes out of unary, binary and select nodes that
//! feed only each other. The expression is a short list of instructions;
//! instruction `i` computes register `i` from earlier registers, and the last
//! one is the result. Every operand has the output's shape, holds one value,
//! or has the shape of the output's trailing dimensions (a bias row, repeated). The kernel evaluates the list block by block, so every
//! instruction runs as a tight loop over a block that stays in L1 cache, and
//! applies the same scalar functions as the unfused ops: results are
//! bit-identical.

use super::elementwise::{per_unary_op, BinaryOp, UnaryOp};
use super::{Arity, Grads, OpDef, RunCtx};
use super::{NodeId, OpBuilder};
use super::{Op, View};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::math;
use crate::kernels::par;
use crate::kernels::scratch::{self, Slot};
use crate::ops::fmt_f32;
use crate::shape::block_repeat;
use serde::{Deserialize, Serialize};

/// Most instructions one fused loop holds (one register block each).
pub const MAX_INSTRS: usize = 24;

/// Elements per block.
const BLOCK: usize = 256;

/// One instruction of a fused expression; register operands name earlier instructions.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Instr {
    /// Operand `k` of the fused node.
    Operand(usize),
    /// A constant.
    Const(#[serde(with = "super::source::serde_f32")] f32),
    /// A unary op on a register.
    Unary(UnaryOp, usize),
    /// A binary op on two registers.
    Binary(BinaryOp, usize, usize),
    /// `select(cond, a, b)` on three registers.
    Select(usize, usize, usize),
}

impl Instr {
    fn registers(&self) -> Vec<usize> {
        match *self {
            Instr::Operand(_) | Instr::Const(_) => vec![],
            Instr::Unary(_, a) => vec![a],
            Instr::Binary(_, a, b) => vec![a, b],
            Instr::Select(c, a, b) => vec![c, a, b],
        }
    }
}

/// The expression as text: `mul(%0, gt(%1, 0.0))`, operands as `%k`.
pub fn expr_text(expr: &[Instr]) -> String {
    fn go(expr: &[Instr], i: usize) -> String {
        match expr[i] {
            Instr::Operand(k) => format!("%{k}"),
            Instr::Const(c) => fmt_f32(c),
            Instr::Unary(u, a) => format!("{u}({})", go(expr, a)),
            Instr::Binary(b, x, y) => format!("{}({}, {})", b.name(), go(expr, x), go(expr, y)),
            Instr::Select(c, a, b) => {
                format!("select({}, {}, {})", go(expr, c), go(expr, a), go(expr, b))
            }
        }
    }
    expr.len()
        .checked_sub(1)
        .map_or(String::new(), |last| go(expr, last))
}

/// Shape rule of `Fused`: the expression is well formed and every operand has
/// the largest operand's shape or one element; that shape (of the highest
/// rank among one-element operands when all have one) is the output's.
pub fn fused_shape(expr: &[Instr], ins: &[&[usize]]) -> Result<Vec<usize>> {
    if expr.is_empty() || expr.len() > MAX_INSTRS {
        return attr_err(
            "fused",
            format!("needs 1 to {MAX_INSTRS} instructions, got {}", expr.len()),
        );
    }
    for (i, ins_i) in expr.iter().enumerate() {
        if ins_i.registers().iter().any(|&r| r >= i) {
            return attr_err(
                "fused",
                format!(
                    "instruction {i} ({ins_i:?}) reads a register that is not computed before it"
                ),
            );
        }
        if let Instr::Operand(k) = ins_i {
            if *k >= ins.len() {
                return attr_err(
                    "fused",
                    format!(
                        "instruction {i} reads operand {k}, the node has {}",
                        ins.len()
                    ),
                );
            }
        }
    }
    // the largest operand; among one-element operands, the one of highest rank
    let full = ins
        .iter()
        .rev()
        .max_by_key(|s| (s.iter().product::<usize>(), s.len()))
        .map(|s| s.to_vec())
        .unwrap_or_default();
    for (k, s) in ins.iter().enumerate() {
        if !repeats_into(s, &full) {
            return shape_err(
                "fused",
                format!("operand {k} has shape {s:?}; operands must have shape {full:?}, one element, or the shape of its trailing dimensions"),
            );
        }
    }
    Ok(full)
}

/// A value an instruction reads during one block.
#[derive(Clone, Copy)]
enum Arg<'a> {
    /// One value for the whole block (a constant or a one-element operand).
    Scalar(f32),
    /// One value per element.
    Slice(&'a [f32]),
}

/// `dst[j] = f(a[j], b[j])`, specialised per operand kind so each loop vectorises.
#[inline(always)]
fn map2(f: impl Fn(f32, f32) -> f32, a: Arg, b: Arg, dst: &mut [f32]) {
    match (a, b) {
        (Arg::Slice(a), Arg::Slice(b)) => {
            for ((o, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        }
        (Arg::Slice(a), Arg::Scalar(y)) => {
            for (o, &x) in dst.iter_mut().zip(a) {
                *o = f(x, y);
            }
        }
        (Arg::Scalar(x), Arg::Slice(b)) => {
            for (o, &y) in dst.iter_mut().zip(b) {
                *o = f(x, y);
            }
        }
        (Arg::Scalar(x), Arg::Scalar(y)) => dst.fill(f(x, y)),
    }
}

/// `dst[j] = if c[j] != 0 { a[j] } else { b[j] }` over a block (the
/// `select` op's rule), one loop per operand kind so each vectorises into
/// blends.
fn select_block(c: Arg, a: Arg, b: Arg, dst: &mut [f32]) {
    let c = match c {
        Arg::Scalar(cv) => {
            return match if cv != 0.0 { a } else { b } {
                Arg::Scalar(v) => dst.fill(v),
                Arg::Slice(v) => dst.copy_from_slice(&v[..dst.len()]),
            }
        }
        Arg::Slice(c) => c,
    };
    let pick = |cv: f32, x: f32, y: f32| if cv != 0.0 { x } else { y };
    match (a, b) {
        (Arg::Slice(a), Arg::Slice(b)) => {
            for (((o, &cv), &x), &y) in dst.iter_mut().zip(c).zip(a).zip(b) {
                *o = pick(cv, x, y);
            }
        }
        (Arg::Slice(a), Arg::Scalar(y)) => {
            for ((o, &cv), &x) in dst.iter_mut().zip(c).zip(a) {
                *o = pick(cv, x, y);
            }
        }
        (Arg::Scalar(x), Arg::Slice(b)) => {
            for ((o, &cv), &y) in dst.iter_mut().zip(c).zip(b) {
                *o = pick(cv, x, y);
            }
        }
        (Arg::Scalar(x), Arg::Scalar(y)) => {
            for (o, &cv) in dst.iter_mut().zip(c) {
                *o = pick(cv, x, y);
            }
        }
    }
}

/// A binary op over a block, one monomorphic loop per op.
fn binary_block(op: BinaryOp, a: Arg, b: Arg, dst: &mut [f32]) {
    macro_rules! dispatch {
        ($($v:ident),*) => {
            match op {
                $(BinaryOp::$v => map2(|x, y| BinaryOp::$v.apply(x, y), a, b, dst),)*
            }
        };
    }
    dispatch!(Add, Sub, Mul, Div, Max, Min, Eq, Ne, Lt, Le, Gt, Ge)
}

/// A unary op over a block, one monomorphic loop per op (sigmoid and tanh
/// through `kernels::math`'s loops, compiled for AVX2 where the CPU has it).
fn unary_block(op: UnaryOp, a: Arg, dst: &mut [f32]) {
    match (op, a) {
        (UnaryOp::Sigmoid, Arg::Slice(x)) => math::sigmoid_slice(x, dst),
        (UnaryOp::Tanh, Arg::Slice(x)) => math::tanh_slice(x, dst),
        _ => per_unary_op!(op, u => map2(|x, _| u.apply(x), a, Arg::Scalar(0.0), dst)),
    }
}

/// Whether an operand of shape `s` fits a fused loop over `out`: the same
/// shape, one element, or one run of `out`'s dimensions with 1s around it
/// (a bias row, a per-channel `[1, C, 1, 1]`; see [`block_repeat`]).
pub fn repeats_into(s: &[usize], out: &[usize]) -> bool {
    s.iter().product::<usize>() == 1 || block_repeat(s, out).is_some()
}

/// Kernel of `Fused`: the expression block by block over `out` (of shape
/// `out_shape`); operands and constants are read in place, only computed
/// values and repeated operands use the registers (per-thread scratch).
pub fn fused(expr: &[Instr], ins: &[View], out: &mut [f32], out_shape: &[usize]) {
    fused_over(expr, ins, None, out, out_shape)
}

/// Writes elements `start..start + dst.len()` of operand `d` repeated as
/// [`block_repeat`] gives (`len`, `inner`): whole runs copied or filled.
fn repeat_block(d: &[f32], inner: usize, start: usize, dst: &mut [f32]) {
    let mut j = 0;
    while j < dst.len() {
        let p = start + j;
        let c = p / inner % d.len();
        let run = if inner == 1 {
            let run = (d.len() - c).min(dst.len() - j);
            dst[j..j + run].copy_from_slice(&d[c..c + run]);
            run
        } else {
            let run = (inner - p % inner).min(dst.len() - j);
            dst[j..j + run].fill(d[c]);
            run
        };
        j += run;
    }
}

/// [`fused`], or with `aliased = Some(k)` written over operand `k` (of the
/// output's shape): `out` then holds that operand on entry, and each block of
/// it is copied into its register before the block's result is stored.
pub fn fused_over(
    expr: &[Instr],
    ins: &[View],
    aliased: Option<usize>,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let inner = repeats(expr, ins, out_shape);
    let n = out.len();
    // chunks of whole blocks go to parallel tasks (element-wise: the result
    // does not depend on the split)
    par::for_each_plane(out, CHUNK, CHUNK * expr.len(), |c, chunk| {
        fused_chunk(expr, ins, aliased, chunk, n, c * CHUNK, &inner)
    });
}

/// Per instruction reading an operand: the `inner` of that operand's
/// repetition over `out_shape` (see [`block_repeat`]).
fn repeats(expr: &[Instr], ins: &[View], out_shape: &[usize]) -> [usize; MAX_INSTRS] {
    let mut inner = [1usize; MAX_INSTRS];
    for (i, instr) in expr.iter().enumerate() {
        if let Instr::Operand(k) = *instr {
            inner[i] = block_repeat(ins[k].shape, out_shape).map_or(1, |r| r.1);
        }
    }
    inner
}

/// Elements per parallel task of a fused loop (whole blocks).
const CHUNK: usize = 32 * BLOCK;

/// [`fused_over`] for the `out.len()` elements from `lo` of an `n`-element
/// result (`inner` from [`repeats`]).
fn fused_chunk(
    expr: &[Instr],
    ins: &[View],
    aliased: Option<usize>,
    out: &mut [f32],
    n: usize,
    lo: usize,
    inner: &[usize; MAX_INSTRS],
) {
    // one BLOCK-sized register per instruction, reused per thread (a
    // zeroed register file on the stack cost more than the work on short runs)
    scratch::with(Slot::Registers, expr.len() * BLOCK, |regs| {
        let last = expr.len() - 1;
        let mut start = lo;
        while start < lo + out.len() {
            let len = BLOCK.min(lo + out.len() - start);
            let at = start - lo;
            for (i, instr) in expr.iter().enumerate() {
                let (done, rest) = regs.split_at_mut(i * BLOCK);
                if let Instr::Operand(k) = *instr {
                    let d = ins[k].data;
                    if Some(k) == aliased {
                        rest[..len].copy_from_slice(&out[at..at + len]);
                    } else if d.len() > 1 && d.len() < n {
                        // a repeated operand: this block of it, in its register
                        repeat_block(d, inner[i], start, &mut rest[..len]);
                    }
                }
                let reg = |r: usize| &done[r * BLOCK..r * BLOCK + len];
                let arg = |r: usize| -> Arg {
                    match expr[r] {
                        Instr::Const(c) => Arg::Scalar(c),
                        Instr::Operand(k) if Some(k) == aliased => Arg::Slice(reg(r)),
                        Instr::Operand(k) if ins[k].data.len() == 1 => Arg::Scalar(ins[k].data[0]),
                        Instr::Operand(k) if ins[k].data.len() == n => {
                            Arg::Slice(&ins[k].data[start..start + len])
                        }
                        _ => Arg::Slice(reg(r)),
                    }
                };
                let dst = if i == last {
                    &mut out[at..at + len]
                } else {
                    &mut rest[..len]
                };
                match *instr {
                    // the result is the overwritten operand itself: already in place
                    Instr::Operand(k) if i == last && Some(k) == aliased => {}
                    Instr::Operand(k)
                        if i == last && ins[k].data.len() > 1 && ins[k].data.len() < n =>
                    {
                        repeat_block(ins[k].data, inner[i], start, dst)
                    }
                    Instr::Operand(_) | Instr::Const(_) if i == last => match arg(i) {
                        Arg::Scalar(v) => dst.fill(v),
                        Arg::Slice(src) => dst.copy_from_slice(src),
                    },
                    Instr::Operand(_) | Instr::Const(_) => {} // read in place
                    Instr::Unary(u, a) => unary_block(u, arg(a), dst),
                    Instr::Binary(b, x, y) => binary_block(b, arg(x), arg(y), dst),
                    Instr::Select(c, a, b) => select_block(arg(c), arg(a), arg(b), dst),
                }
            }
            start += len;
        }
    })
}

/// VJP of `Fused`: the expression rebuilt from generic ops, differentiated
/// instruction by instruction with each op's own rule, in reverse.
pub fn fused_vjp(
    expr: &[Instr],
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    gy: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let mut vals: Vec<NodeId> = Vec::with_capacity(expr.len());
    for instr in expr {
        let v = match *instr {
            Instr::Operand(k) => xs[k],
            Instr::Const(c) => g.scalar(c)?,
            Instr::Unary(u, a) => g.add_op(Op::Unary(u), &[vals[a]])?,
            Instr::Binary(b, x, y) => g.add_op(Op::Binary(b), &[vals[x], vals[y]])?,
            Instr::Select(c, a, b) => g.add_op(Op::Select, &[vals[c], vals[a], vals[b]])?,
        };
        vals.push(v);
    }
    let mut grads: Vec<Option<NodeId>> = vec![None; expr.len()];
    grads[expr.len() - 1] = Some(gy);
    let mut out: Vec<Option<NodeId>> = vec![None; xs.len()];
    let add = |g: &mut dyn OpBuilder, acc: Option<NodeId>, x: NodeId| -> Result<NodeId> {
        match acc {
            Some(a) => g.add(a, x),
            None => Ok(x),
        }
    };
    for i in (0..expr.len()).rev() {
        let Some(gi) = grads[i] else { continue };
        if let Instr::Operand(k) = expr[i] {
            out[k] = Some(add(g, out[k], gi)?);
            continue;
        }
        let regs = expr[i].registers();
        let operands: Vec<NodeId> = regs.iter().map(|&r| vals[r]).collect();
        let op = match expr[i] {
            Instr::Operand(_) | Instr::Const(_) => continue,
            Instr::Unary(u, _) => Op::Unary(u),
            Instr::Binary(b, ..) => Op::Binary(b),
            Instr::Select(..) => Op::Select,
        };
        for (r, gr) in regs.iter().zip(op.vjp(g, &operands, vals[i], gi)?) {
            if let Some(gr) = gr {
                grads[*r] = Some(add(g, grads[*r], gr)?);
            }
        }
    }
    Ok(out)
}

/// A chain of element-wise ops computed in one loop over the output (the
/// element-wise fuser's result); the last instruction's register is the
/// result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fused {
    /// The instructions.
    pub expr: Vec<Instr>,
}

impl OpDef for Fused {
    fn name(&self) -> &'static str {
        "fused"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![("expr", expr_text(&self.expr))]
    }
    fn arity(&self) -> Arity {
        Arity::AtLeastOne
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        fused_shape(&self.expr, ins)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        fused(&self.expr, ins, out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        fused_vjp(&self.expr, g, xs, gy)
    }
    fn in_place_operands(&self, ins: &[&[usize]], out_shape: &[usize]) -> Vec<usize> {
        (0..ins.len()).filter(|&k| ins[k] == out_shape).collect()
    }
    fn eval_in_place(&self, ins: &[View], aliased: usize, out: &mut [f32], shape: &[usize]) {
        fused_over(&self.expr, ins, Some(aliased), out, shape)
    }
    fn is_elementwise(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An operand repeated per channel, per row, per plane or as a scalar
    /// reads, at every output element (across block edges), the element
    /// numpy broadcasting names; other broadcasts are not block repeats.
    #[test]
    fn block_repeated_operands_read_their_broadcast_element() {
        let out = [3, 5, 7, 11]; // 1155 elements: several blocks, ragged runs
        let n: usize = out.iter().product();
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        for s in [
            vec![1, 5, 1, 1],
            vec![5, 1, 1],
            vec![7, 11],
            vec![1, 1, 7, 1],
            vec![3, 5, 1, 1],
            vec![1],
            vec![3, 5, 7, 11],
        ] {
            assert!(block_repeat(&s, &out).is_some(), "{s:?}");
            let len: usize = s.iter().product();
            let d: Vec<f32> = (0..len).map(|i| 1000.0 * (i + 1) as f32).collect();
            let expr = [
                Instr::Operand(0),
                Instr::Operand(1),
                Instr::Binary(BinaryOp::Add, 0, 1),
            ];
            let views = [
                View {
                    shape: &out,
                    data: &x,
                },
                View {
                    shape: &s,
                    data: &d,
                },
            ];
            let mut got = vec![0.0; n];
            fused(&expr, &views, &mut got, &out);
            // the numpy rule: index by the output's multi-index, 0 where s has 1
            let pad = out.len() - s.len();
            for (i, &g) in got.iter().enumerate() {
                let (mut rest, mut k, mut stride) = (i, 0, 1);
                for dim in (0..out.len()).rev() {
                    let idx = rest % out[dim];
                    rest /= out[dim];
                    if dim >= pad && s[dim - pad] != 1 {
                        k += idx * stride;
                        stride *= s[dim - pad];
                    }
                }
                assert_eq!(g, x[i] + d[k], "shape {s:?}, element {i}");
            }
        }
        assert!(block_repeat(&[3, 1, 7, 1], &out).is_none());
        assert!(block_repeat(&[2, 1], &out).is_none());
    }

    /// A fused `select` equals the `select` op bit for bit for every kind of
    /// operand (per element, one value), across block edges and with NaN,
    /// ±0.0 and ±∞ in the condition and the values.
    #[test]
    fn fused_select_equals_the_select_op_for_every_operand_kind() {
        let n = 2 * BLOCK + 37;
        let specials = [
            f32::NAN,
            -0.0,
            0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -2.5,
        ];
        let data = |salt: usize| -> Vec<f32> {
            (0..n)
                .map(|i| specials[(i * 7 + salt) % specials.len()])
                .collect()
        };
        let full = [n];
        for kinds in 0..8 {
            let vals: Vec<Vec<f32>> = (0..3)
                .map(|k| match kinds >> k & 1 {
                    1 => vec![specials[k + 1]],
                    _ => data(k),
                })
                .collect();
            let shapes: Vec<Vec<usize>> = vals.iter().map(|v| vec![v.len()]).collect();
            let views: Vec<View> = vals
                .iter()
                .zip(&shapes)
                .map(|(d, s)| View { shape: s, data: d })
                .collect();
            let mut want = vec![7.0; n];
            crate::ops::elementwise::select(views[0], views[1], views[2], &mut want, &full);
            let expr = [
                Instr::Operand(0),
                Instr::Operand(1),
                Instr::Operand(2),
                Instr::Select(0, 1, 2),
            ];
            let mut got = vec![7.0; n];
            fused(&expr, &views, &mut got, &full);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "operand kinds {kinds:03b}");
        }
    }
}
