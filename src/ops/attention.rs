//! The attention core as one op: `softmax(mask(scale·q·kᵀ))·v`
//! (`torch.nn.functional.scaled_dot_product_attention`'s math, without
//! dropout), what the `attention` pass makes of an evaluation graph's
//! matmul, scale, masks, softmax and matmul.
//!
//! Each task takes one batch entry and computes a block of query rows'
//! scores into the thread's scratch, applies the scale and the masks in
//! order, takes each row's softmax and multiplies by `v`, so the scores and
//! weights `[.., L, S]` are never written out. The steps are the unfused
//! ops' own (the same products, `select`'s and `add`'s rounding, the same
//! softmax rows), so the result is theirs bit for bit when `L` is at most
//! [`ROWS`]; beyond, the products of blocks of rows may round differently
//! from the whole product (1 or 2 ulp). NaN and `−∞` scores behave as the
//! unfused ops' (a row all masked is NaN).

use super::{Arity, Grads, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::matmul::{matmul, MatRef};
use crate::kernels::scratch::{self, Slot};
use crate::kernels::{math, par};
use crate::shape::SmallDims;
use serde::{Deserialize, Serialize};

/// Query rows whose scores a task holds at once.
pub const ROWS: usize = 128;

/// How one mask operand changes the scores, applied in order.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum ScoreMask {
    /// `select(m, s, value)`: the score where the mask is non-zero (NaN
    /// counts as non-zero), else `value` (`−∞` blocks).
    Keep(#[serde(with = "super::source::serde_f32")] f32),
    /// `select(m, value, s)`: `value` where the mask is non-zero, else the score.
    Replace(#[serde(with = "super::source::serde_f32")] f32),
    /// `s + m` (a float mask).
    Add,
}

/// `softmax(mask(scale·q·kᵀ))·v` over operands `[q [B.., L, E], k [B.., S,
/// E], v [B.., S, Ev], masks..]` (the same batch axes `B`; each mask
/// broadcast to the scores `[B.., L, S]`) → `[B.., L, Ev]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    /// The factor on `q·kᵀ` (none: no multiplication).
    pub scale: Option<f32>,
    /// One entry per mask operand, in the order they apply.
    pub masks: Vec<ScoreMask>,
}

impl Attention {
    /// The scores' shape `[B.., L, S]` for operand shapes `ins`.
    fn scores(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let (q, k, v) = (ins[0], ins[1], ins[2]);
        let r = q.len();
        let fits = r >= 2
            && k.len() == r
            && v.len() == r
            && q[..r - 2] == k[..r - 2]
            && q[..r - 2] == v[..r - 2]
            && q[r - 1] == k[r - 1]
            && k[r - 2] == v[r - 2];
        if !fits {
            return shape_err(
                "attention",
                format!("query {q:?}, key {k:?}, value {v:?}: expected [B.., L, E], [B.., S, E], [B.., S, Ev] with the same B"),
            );
        }
        let mut scores = q[..r - 1].to_vec();
        scores.push(k[r - 2]);
        for (i, m) in ins[3..].iter().enumerate() {
            let off = scores.len().checked_sub(m.len());
            let fits =
                off.is_some_and(|o| (m.iter().zip(&scores[o..])).all(|(&a, &b)| a == 1 || a == b));
            if !fits {
                return shape_err(
                    "attention",
                    format!("mask {i} {m:?} does not broadcast to the scores {scores:?}"),
                );
            }
        }
        Ok(scores)
    }
}

impl OpDef for Attention {
    fn name(&self) -> &'static str {
        "attention"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let scale = self.scale.map_or("none".into(), super::fmt_f32);
        vec![("masks", format!("{:?}", self.masks)), ("scale", scale)]
    }
    fn arity(&self) -> Arity {
        Arity::Between(3, usize::MAX)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        if ins.len() != 3 + self.masks.len() {
            return attr_err(
                "attention",
                format!(
                    "{} mask kinds for {} mask operands",
                    self.masks.len(),
                    ins.len().saturating_sub(3)
                ),
            );
        }
        let scores = self.scores(ins)?;
        let mut out = scores[..scores.len() - 1].to_vec();
        out.push(ins[2][ins[2].len() - 1]);
        Ok(out)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        // the scores' shape [B.., L, S] (shapes were checked)
        let r = ins[0].shape.len();
        let mut scores = SmallDims::zeros(r);
        scores[..r - 1].copy_from_slice(&ins[0].shape[..r - 1]);
        scores[r - 1] = ins[1].shape[r - 2];
        let (l, s, e, ev) = (
            scores[r - 2],
            scores[r - 1],
            ins[0].shape[r - 1],
            ins[2].shape[r - 1],
        );
        let rows = l.clamp(1, ROWS);
        let work = s.saturating_mul(e + ev).max(1);
        par::for_each_plane(out, l * ev, l * work, |b, o| {
            let q = &ins[0].data[b * l * e..(b + 1) * l * e];
            let k = &ins[1].data[b * s * e..(b + 1) * s * e];
            let v = &ins[2].data[b * s * ev..(b + 1) * s * ev];
            scratch::with(Slot::Scores, 2 * rows * s, |buf| {
                let (sc, p) = buf.split_at_mut(rows * s);
                for r0 in (0..l).step_by(rows) {
                    let n = rows.min(l - r0);
                    let (sc, p) = (&mut sc[..n * s], &mut p[..n * s]);
                    let qr = MatRef::new(&q[r0 * e..(r0 + n) * e], n, e, false);
                    matmul(n, e, s, qr, MatRef::new(k, e, s, true), sc);
                    for i in 0..n {
                        let row = &mut sc[i * s..(i + 1) * s];
                        self.mask_row(ins, &scores, b * l + r0 + i, row);
                        math::softmax_row(row, &mut p[i * s..(i + 1) * s], false);
                    }
                    let out_rows = &mut o[r0 * ev..(r0 + n) * ev];
                    matmul(
                        n,
                        s,
                        ev,
                        MatRef::new(p, n, s, false),
                        MatRef::new(v, s, ev, false),
                        out_rows,
                    );
                }
            })
        })
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        // the unfused forward again, then each step's gradient
        let (q, k, v) = (xs[0], xs[1], xs[2]);
        let raw = g.matmul_t(q, k, false, true)?;
        let mut s = match self.scale {
            Some(c) => g.mul_scalar(raw, c)?,
            None => raw,
        };
        for (kind, &m) in self.masks.iter().zip(&xs[3..]) {
            s = match *kind {
                ScoreMask::Keep(c) => {
                    let c = g.scalar(c)?;
                    g.select(m, s, c)?
                }
                ScoreMask::Replace(c) => {
                    let c = g.scalar(c)?;
                    g.select(m, c, s)?
                }
                ScoreMask::Add => g.add(s, m)?,
            };
        }
        let axis = g.shape(s)?.len() - 1;
        let p = g.softmax(s, -1)?;
        let mut grads = vec![None; xs.len()];
        grads[2] = Some(g.matmul_t(p, gy, true, false)?);
        let dp = g.matmul_t(gy, v, false, true)?;
        let mut ds = g.softmax_backward(p, dp, axis, false)?;
        for (i, (kind, &m)) in self.masks.iter().zip(&xs[3..]).enumerate().rev() {
            let zero = g.scalar(0.0)?;
            ds = match kind {
                ScoreMask::Keep(_) => g.select(m, ds, zero)?,
                ScoreMask::Replace(_) => g.select(m, zero, ds)?,
                ScoreMask::Add => {
                    grads[3 + i] = Some(ds);
                    ds
                }
            };
        }
        if let Some(c) = self.scale {
            ds = g.mul_scalar(ds, c)?;
        }
        grads[0] = Some(g.matmul(ds, k)?);
        grads[1] = Some(g.matmul_t(ds, q, true, false)?);
        Ok(grads)
    }
}

impl Attention {
    /// Scales and masks one row of scores (`row`, flat row index `at` of
    /// the scores `[B.., L, S]`) as the unfused `mul`, `select` and `add`.
    fn mask_row(&self, ins: &[View], scores: &[usize], at: usize, row: &mut [f32]) {
        if let Some(c) = self.scale {
            row.iter_mut().for_each(|x| *x *= c);
        }
        let r = scores.len();
        for (kind, m) in self.masks.iter().zip(&ins[3..]) {
            // the mask row's start, its dims broadcast against the scores'
            // (checked by the shape rule): a row along the keys, or one
            // value for all of them
            let off = r - m.shape.len();
            let dim = |d: usize| if d >= off { m.shape[d - off] } else { 1 };
            let one = dim(r - 1) == 1;
            let (mut start, mut rest, mut stride) = (0, at, dim(r - 1));
            for d in (0..r - 1).rev() {
                if dim(d) != 1 {
                    start += (rest % scores[d]) * stride;
                }
                rest /= scores[d];
                stride *= dim(d);
            }
            let mrow = &m.data[start..start + if one { 1 } else { row.len() }];
            match *kind {
                ScoreMask::Keep(c) => apply(row, mrow, |x, m| if m != 0.0 { x } else { c }),
                ScoreMask::Replace(c) => apply(row, mrow, |x, m| if m != 0.0 { c } else { x }),
                ScoreMask::Add => apply(row, mrow, |x, m| x + m),
            }
        }
    }
}

/// `row[j] = f(row[j], mask[j])`, or `f(row[j], mask[0])` for a mask of one
/// value.
#[inline(always)]
fn apply(row: &mut [f32], mask: &[f32], f: impl Fn(f32, f32) -> f32) {
    match mask {
        [m] => row.iter_mut().for_each(|x| *x = f(*x, *m)),
        _ => (row.iter_mut().zip(mask)).for_each(|(x, &m)| *x = f(*x, m)),
    }
}
