//! The VJP of [`Scan`]: a scan the other way over the step's gradient graph.
//!
//! For a forward scan that keeps its whole carry `C` (shape `[T·C + C]`),
//! with `cprev[t]` the carry before step `t`, the gradient scan's step gets
//! `z[t] = [cprev[t], x[t], gy[t]]` (flattened, concatenated) and the
//! forward constants, and carries `[dx (X), hoisted operands, dcarry (C),
//! Σ dconsts (K)]`: it recomputes the step at `cprev[t]`, takes the VJP of
//! `Σ step·(dcarry + gy[t])`, and keeps `dx` and the hoisted operands per
//! step. A constant whose gradient is a weight's `Aᵀ·B` is not summed in
//! the carry: its operands are kept, and the sum over the steps is one
//! matmul after the scan. The last carry holds the gradients of the first
//! carry and of the other constants. It starts from the upstream gradient
//! of the forward scan's last carry.

use super::{Grads, NodeId, Op, OpBuilder, Scan, ScanBody};
use crate::error::{attr_err, Result};
use crate::graph::order::ancestors_order;
use crate::graph::Graph;
use std::collections::HashMap;

/// `x` flattened to `[n]`.
fn flat(g: &mut dyn OpBuilder, x: NodeId) -> Result<NodeId> {
    g.reshape(x, &[-1])
}

/// Part `start..start + len` of the 1-D `x`, reshaped to `shape`.
fn part(g: &mut dyn OpBuilder, x: NodeId, start: usize, shape: &[usize]) -> Result<NodeId> {
    let len: usize = shape.iter().product();
    let axis = g.shape(x)?.len() as isize - 1;
    let s = g.slice(x, axis, start, start + len, 1)?;
    let mut target: Vec<isize> = g.shape(s)?[..axis as usize]
        .iter()
        .map(|&d| d as isize)
        .collect();
    target.extend(shape.iter().map(|&d| d as isize));
    g.reshape(s, &target)
}

/// The nodes of `body` that `out` needs, added to `g` with its inputs
/// replaced by `inputs` (by name); returns `out`'s copy.
fn inline(
    g: &mut Graph,
    body: &Graph,
    out: NodeId,
    inputs: &HashMap<String, NodeId>,
) -> Result<NodeId> {
    let mut copy: HashMap<NodeId, NodeId> = HashMap::new();
    for n in ancestors_order(body, &[out]) {
        let node = body.node(n)?;
        let new = match &node.op {
            Op::Input(i) => inputs[&i.name],
            op => {
                let ops: Vec<NodeId> = body.operands(n).iter().map(|o| copy[o]).collect();
                g.add_op(op.clone(), &ops)?
            }
        };
        copy.insert(n, new);
    }
    Ok(copy[&out])
}

/// A constant's gradient `matmul(transpose(A), B)` of 2-D `A [n, m]` and
/// `B [n, p]` (what a matmul's VJP gives a weight): its operands, whose
/// values the gradient scan keeps per step so that the sum over the steps
/// is one matmul of the stacked operands after it, instead of an
/// accumulator added to in every step.
fn hoistable(b: &Graph, dk: NodeId) -> Option<(NodeId, NodeId)> {
    let node = b.node(dk).ok()?;
    let Op::MatMul(m) = &node.op else { return None };
    let ops = b.operands(dk);
    let (t, bm) = (ops[0], ops[1]);
    let tn = b.node(t).ok()?;
    let transposed = matches!(&tn.op, Op::Transpose(tr) if tr.perm == [1, 0]);
    let a = b.operands(t).first().copied()?;
    let two_d = b.shape(a).ok()?.len() == 2 && b.shape(bm).ok()?.len() == 2;
    (!m.trans_a && !m.trans_b && transposed && two_d).then_some((a, bm))
}

/// The step's gradients in `b`: `[dx, dcarry, dconsts..]` of `Σ step(cp, xt,
/// consts)·total`, the step inlined from `body`.
fn step_grads(
    b: &mut Graph,
    (body, out): (&Graph, NodeId),
    cp: NodeId,
    xt: NodeId,
    consts: &[NodeId],
    total: NodeId,
) -> Result<Vec<NodeId>> {
    let mut inputs = HashMap::from([("carry".to_string(), cp), ("x".to_string(), xt)]);
    for (k, &kn) in consts.iter().enumerate() {
        inputs.insert(format!("c{k}"), kn);
    }
    let o = inline(b, body, out, &inputs)?;
    let weighted = b.mul(o, total)?;
    let loss = b.sum_all(weighted)?;
    let mut wrt = vec![xt, cp];
    wrt.extend(consts);
    b.grad(loss, &wrt)
}

pub(super) fn vjp(
    scan: &Scan,
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    y: NodeId,
    gy: NodeId,
) -> Grads {
    let body = scan.body.graph();
    let carry_shape = g.shape(xs[0])?.to_vec();
    let c: usize = carry_shape.iter().product();
    if scan.keep != c {
        return attr_err(
            "scan",
            "only a scan that keeps its whole carry has a gradient (a gradient scan has none)",
        );
    }
    let xs_shape = g.shape(xs[1])?.to_vec();
    let (t_len, x_shape) = (xs_shape[0], xs_shape[1..].to_vec());
    let x: usize = x_shape.iter().product();
    let const_shapes: Vec<Vec<usize>> = xs[2..]
        .iter()
        .map(|&k| Ok(g.shape(k)?.to_vec()))
        .collect::<Result<_>>()?;

    // the forward carries and the upstream gradient, [T, C] each
    let y_seq = g.slice(y, 0, 0, t_len * c, 1)?;
    let seq = g.reshape(y_seq, &[t_len as isize, c as isize])?;
    let g_seq = g.slice(gy, 0, 0, t_len * c, 1)?;
    let g_seq = g.reshape(g_seq, &[t_len as isize, c as isize])?;
    let g_last = g.slice(gy, 0, t_len * c, t_len * c + c, 1)?;
    if t_len == 0 {
        let mut grads = vec![Some(g.reshape(g_last, &dims(&carry_shape))?), None];
        grads.extend(xs[2..].iter().map(|_| None));
        return Ok(grads);
    }
    // the carry before each step
    let first = g.reshape(xs[0], &[1, c as isize])?;
    let cprev = match scan.reverse {
        false => {
            let earlier = g.slice(seq, 0, 0, t_len - 1, 1)?;
            g.concat(&[first, earlier], 0)?
        }
        true => {
            let later = g.slice(seq, 0, 1, t_len, 1)?;
            g.concat(&[later, first], 0)?
        }
    };
    let xs_flat = g.reshape(xs[1], &[t_len as isize, x as isize])?;
    let z = g.concat(&[cprev, xs_flat, g_seq], 1)?;

    // which constants' gradients are hoisted out (found on a probe of the step)
    let mut probe = Graph::new();
    let cp = probe.input("cp", carry_shape.clone())?;
    let xt = probe.input("xt", x_shape.clone())?;
    let total = probe.input("total", carry_shape.clone())?;
    let pk = (const_shapes.iter().enumerate())
        .map(|(k, s)| probe.input(&format!("k{k}"), s.clone()))
        .collect::<Result<Vec<_>>>()?;
    let grads = step_grads(&mut probe, body, cp, xt, &pk, total)?;
    let mut hoisted = Vec::new(); // (const, |A|, A shape, |B|, B shape)
    for (k, &dk) in grads[2..].iter().enumerate() {
        if let Some((a, b)) = hoistable(&probe, dk) {
            let (sa, sb) = (probe.shape(a)?.to_vec(), probe.shape(b)?.to_vec());
            hoisted.push((k, sa, sb));
        }
    }
    let is_hoisted = |k: usize| hoisted.iter().any(|h| h.0 == k);
    let h_len: usize = (hoisted.iter())
        .map(|(_, a, b)| a.iter().product::<usize>() + b.iter().product::<usize>())
        .sum();
    let rest: Vec<usize> = (0..const_shapes.len())
        .filter(|&k| !is_hoisted(k))
        .collect();
    let k_rest: usize = rest
        .iter()
        .map(|&k| const_shapes[k].iter().product::<usize>())
        .sum();
    let kept = x + h_len;

    // the gradient step: carry [dx, hoisted operands, dcarry, Σ other dconsts]
    let consts_in = const_refs(&const_shapes);
    let grad_body = ScanBody::build(
        &[kept + c + k_rest],
        &[2 * c + x],
        &consts_in,
        |b, carry, zt, consts| {
            let cp = part(b, zt, 0, &carry_shape)?;
            let xt = part(b, zt, c, &x_shape)?;
            let gyt = part(b, zt, c + x, &carry_shape)?;
            let g_next = part(b, carry, kept, &carry_shape)?;
            let total = b.add(g_next, gyt)?;
            let grads = step_grads(b, body, cp, xt, consts, total)?;
            let mut parts = vec![flat(b, grads[0])?];
            for (k, _, _) in &hoisted {
                let (a, m) = hoistable(b, grads[2 + k]).ok_or_else(|| {
                    crate::KilnError::Invalid(
                        "scan gradient: the step's gradient changed shape".into(),
                    )
                })?;
                parts.push(flat(b, a)?);
                parts.push(flat(b, m)?);
            }
            parts.push(flat(b, grads[1])?);
            if k_rest > 0 {
                let dks = rest
                    .iter()
                    .map(|&k| flat(b, grads[2 + k]))
                    .collect::<Result<Vec<_>>>()?;
                let dk = b.concat(&dks, 0)?;
                let acc = b.slice(carry, 0, kept + c, kept + c + k_rest, 1)?;
                parts.push(b.add(acc, dk)?);
            }
            b.concat(&parts, 0)
        },
    )?;
    let mut init = vec![g.fill(&[kept], 0.0)?, g_last];
    if k_rest > 0 {
        init.push(g.fill(&[k_rest], 0.0)?);
    }
    let init = g.concat(&init, 0)?;
    let mut operands = vec![init, z];
    operands.extend(&xs[2..]);
    let back = Scan {
        body: grad_body,
        reverse: !scan.reverse,
        keep: kept,
    };
    let r = g.add_op(Op::Scan(back), &operands)?;
    let steps = g.slice(r, 0, 0, t_len * kept, 1)?;
    let steps = g.reshape(steps, &[t_len as isize, kept as isize])?;
    let mut out = vec![None; xs.len()];
    out[1] = Some(part(g, steps, 0, &x_shape)?);
    let mut at = x;
    for (k, sa, sb) in &hoisted {
        // Σ_t A_tᵀ·B_t = [A_1; ..; A_T]ᵀ·[B_1; ..; B_T]
        let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
        let a = g.slice(steps, 1, at, at + na, 1)?;
        let a = g.reshape(a, &[(t_len * sa[0]) as isize, sa[1] as isize])?;
        let b = g.slice(steps, 1, at + na, at + na + nb, 1)?;
        let b = g.reshape(b, &[(t_len * sb[0]) as isize, sb[1] as isize])?;
        let dk = g.matmul_t(a, b, true, false)?;
        out[2 + k] = Some(g.reshape(dk, &dims(&const_shapes[*k]))?);
        at += na + nb;
    }
    let last = t_len * kept + kept;
    out[0] = Some(part(g, r, last, &carry_shape)?);
    let mut at = last + c;
    for &k in &rest {
        out[2 + k] = Some(part(g, r, at, &const_shapes[k])?);
        at += const_shapes[k].iter().product::<usize>();
    }
    Ok(out)
}

fn dims(shape: &[usize]) -> Vec<isize> {
    shape.iter().map(|&d| d as isize).collect()
}

fn const_refs(shapes: &[Vec<usize>]) -> Vec<&[usize]> {
    shapes.iter().map(Vec::as_slice).collect()
}
