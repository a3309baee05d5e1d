//! The VJP of [`Scan`]: the step's gradient graph split in two (JAX's
//! partial evaluation of a linearised step), so that no step runs twice.
//!
//! The step's VJP `Σ step(carry, x, consts)·total` is built once on a probe.
//! Its nodes that do not depend on the upstream gradient `total` are
//! *primal*; of these, the ones that depend on the carry or `x` and that the
//! gradient part reads are the step's *residuals*. Then:
//! - a copy of the forward scan keeps the residuals of every step as its
//!   per-step output `y` (its output starts with the forward scan's, and CSE
//!   merges the two, so the forward runs once);
//! - the gradient scan runs the other way over the rest of the VJP: its `x`
//!   is `[residuals[t], gy[t]]`, its carry `[dcarry (C), Σ dconsts (K)]`,
//!   and its per-step output the gradient of `x[t]`. A constant whose
//!   gradient is a weight's `Aᵀ·B` is not summed in the carry: `A` and `B`
//!   are kept per step (from the residuals, or as per-step output), and the
//!   sum over the steps is one matmul after the scan. The last carry holds
//!   the gradients of the first carry and of the other constants; it starts
//!   from the upstream gradient of the forward scan's last carry.

use super::scan::{const_name, x_name};
use super::{Grads, NodeId, Op, OpBuilder, ReduceKind, Scan, ScanBody};
use crate::error::{attr_err, KilnError, Result};
use crate::graph::order::ancestors_order;
use crate::graph::Graph;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// `x` flattened to `[n]`.
fn flat(g: &mut dyn OpBuilder, x: NodeId) -> Result<NodeId> {
    g.reshape(x, &[-1])
}

/// Part `start..start + len` of the last axis of `x`, reshaped to `shape`
/// (after `x`'s other axes).
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

/// `nodes` of `from` in topological order, added to `to` with the nodes in
/// `map` standing for themselves there; `map` gains the copies. `Err` on an
/// input `map` does not give.
fn copy_nodes(
    to: &mut Graph,
    from: &Graph,
    nodes: impl IntoIterator<Item = NodeId>,
    map: &mut HashMap<NodeId, NodeId>,
) -> Result<()> {
    for n in nodes {
        if map.contains_key(&n) {
            continue;
        }
        let node = from.node(n)?;
        if matches!(node.op, Op::Input(_)) {
            return Err(unvalued());
        }
        let ops = (from.operands(n).iter())
            .map(|o| map.get(o).copied().ok_or_else(unvalued))
            .collect::<Result<Vec<_>>>()?;
        map.insert(n, to.add_op(node.op.clone(), &ops)?);
    }
    Ok(())
}

fn unvalued() -> KilnError {
    KilnError::Invalid("scan gradient: a value of the split step has no source".into())
}

/// `x`'s operand if `x` is a 2-D transpose.
fn transposed(g: &Graph, x: NodeId) -> Option<NodeId> {
    let t = matches!(&g.node(x).ok()?.op, Op::Transpose(tr) if tr.perm == [1, 0]);
    t.then(|| g.operands(x).first().copied()).flatten()
}

/// A constant's gradient `matmul(transpose(A), B)` of 2-D `A [n, m]` and
/// `B [n, p]` (what a matmul's VJP gives a weight), or that transposed (a
/// weight read transposed): `A`, `B` and whether the gradient is `(AᵀB)ᵀ`.
fn hoistable(b: &Graph, dk: NodeId) -> Option<(NodeId, NodeId, bool)> {
    let (product, outer) = match transposed(b, dk) {
        Some(p) => (p, true),
        None => (dk, false),
    };
    let Op::MatMul(m) = &b.node(product).ok()?.op else {
        return None;
    };
    let ops = b.operands(product);
    let (a, bm) = (transposed(b, ops[0])?, ops[1]);
    let two_d = b.shape(a).ok()?.len() == 2 && b.shape(bm).ok()?.len() == 2;
    (!m.trans_a && !m.trans_b && two_d).then_some((a, bm, outer))
}

/// A constant's gradient `Σ X` over `X`'s leading axes (through a reshape:
/// what a broadcast bias's VJP gives): `X` and how many leading axes.
fn summable(b: &Graph, dk: NodeId) -> Option<(NodeId, usize)> {
    let sum = match &b.node(dk).ok()?.op {
        Op::Reshape(_) => b.operands(dk).first().copied()?,
        _ => dk,
    };
    let Op::Reduce(r) = &b.node(sum).ok()?.op else {
        return None;
    };
    let lead = r.axes.len();
    let leading = r.axes.iter().enumerate().all(|(i, &a)| a == i);
    let x = *b.operands(sum).first()?;
    (r.kind == ReduceKind::Sum && leading && lead > 0).then_some((x, lead))
}

/// Where a value the gradient needs per step lies after the scans: the
/// forward copy's residual or the gradient scan's per-step output number
/// `at`, of shape `shape`.
#[derive(Clone, Debug)]
struct Kept {
    residual: bool,
    at: usize,
    shape: Vec<usize>,
}

/// A step split for its gradient; see the module docs.
struct Split {
    /// The forward step that also outputs the residuals (none without any).
    forward: Option<Arc<ScanBody>>,
    /// The residuals' shapes.
    residuals: Vec<Vec<usize>>,
    /// The gradient step.
    backward: Arc<ScanBody>,
    /// The shapes of its per-step outputs: each per-step input's gradient,
    /// then the hoisted operands that are no residuals.
    ys: Vec<Vec<usize>>,
    /// The hoisted constants, where their `A` and `B` lie, and whether
    /// their gradient is `(AᵀB)ᵀ`.
    hoisted: Vec<(usize, Kept, Kept, bool)>,
    /// The constants whose gradient is a sum over the leading axes of a
    /// per-step value: where it lies and how many axes.
    summed: Vec<(usize, Kept, usize)>,
    /// The other constants, summed in the gradient carry.
    rest: Vec<usize>,
    /// Their values.
    k_rest: usize,
}

impl Split {
    /// Splits `body`, whose inputs have shapes `carry`, `xs` and `consts`.
    fn new(
        body: &ScanBody,
        carry: &[usize],
        xs: &[Vec<usize>],
        consts: &[Vec<usize>],
    ) -> Result<Split> {
        let c: usize = carry.iter().product();
        // the probe: the step's VJP on inputs named as a step's
        let mut p = Graph::new();
        let mut ins = vec![p.input("carry", carry.to_vec())?];
        for (i, s) in xs.iter().enumerate() {
            ins.push(p.input(&x_name(i), s.clone())?);
        }
        for (k, s) in consts.iter().enumerate() {
            ins.push(p.input(&const_name(k), s.clone())?);
        }
        let total = p.input("total", carry.to_vec())?;
        let (o, grads) = step_grads(&mut p, body.graph(), &ins, total)?;
        let (nx, ks) = (xs.len(), &ins[1 + xs.len()..]);

        // the gradient step's outputs: dcarry, each dx, and per constant
        // either its gradient or the operands of its hoisted product
        // (sums are kept per step and summed after the scan, so that the
        // carry holds only batch-sized values, which a symbolic batch needs)
        let (mut hoisted, mut summed, mut rest) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..consts.len() {
            let dk = grads[1 + nx + k];
            match (hoistable(&p, dk), summable(&p, dk)) {
                (Some((a, b, outer)), _) => hoisted.push((k, a, b, outer)),
                (None, Some((x, lead))) => summed.push((k, x, lead)),
                (None, None) => rest.push(k),
            }
        }
        let mut outs = grads[..1 + nx].to_vec();
        outs.extend(rest.iter().map(|&k| grads[1 + nx + k]));
        outs.extend(hoisted.iter().flat_map(|&(_, a, b, _)| [a, b]));
        outs.extend(summed.iter().map(|&(_, x, _)| x));

        // tangent: depends on `total`; variant: on the carry or a per-step input
        let order = ancestors_order(&p, &outs);
        let (mut tangent, mut variant) = (HashSet::new(), HashSet::new());
        for &n in &order {
            let ops = p.operands(n);
            if n == total || ops.iter().any(|o| tangent.contains(o)) {
                tangent.insert(n);
            }
            if ins[..1 + nx].contains(&n) || ops.iter().any(|o| variant.contains(o)) {
                variant.insert(n);
            }
        }
        // residuals: variant primal values the gradient part reads (or
        // gives out); loop-invariant primal values are recomputed there
        let stored = |keep: &HashSet<NodeId>| {
            let (mut needed, mut found) = (HashSet::new(), Vec::new());
            let mut stack = outs.clone();
            while let Some(n) = stack.pop() {
                if !needed.insert(n) {
                    continue;
                }
                match !tangent.contains(&n) && variant.contains(&n) && keep.contains(&n) {
                    true => found.push(n),
                    false => stack.extend(p.operands(n)),
                }
            }
            found.sort();
            (needed, found)
        };
        let (_, all) = stored(&variant);
        // a residual that an element-wise op computes from other residuals
        // (a sigmoid's or tanh's derivative) is recomputed, not kept
        let mut keep: HashSet<NodeId> = all.iter().copied().collect();
        for &r in all.iter().rev() {
            keep.remove(&r);
            let mut memo = HashMap::new();
            if !recomputable(&p, r, &keep, &variant, &mut memo) {
                keep.insert(r);
            }
        }
        let (needed, residuals) = stored(&keep);
        let shapes = (residuals.iter())
            .map(|&r| Ok(p.shape(r)?.to_vec()))
            .collect::<Result<Vec<_>>>()?;

        // the forward step with the residuals as its per-step outputs
        let forward = match residuals.is_empty() {
            true => None,
            false => {
                let mut f = Graph::new();
                let mut map = step_inputs(&mut f, &p, &ins)?;
                let mut roots = vec![o];
                roots.extend(&residuals);
                copy_nodes(&mut f, &p, ancestors_order(&p, &roots), &mut map)?;
                let ys = residuals.iter().map(|r| map[r]).collect();
                let (out, id) = (map[&o], Some(body.id()));
                Some(ScanBody::from_graph(f, out, ys, None, id)?)
            }
        };

        // the gradient step: per-step inputs gy[t] and the residuals
        let k_rest: usize = (rest.iter())
            .map(|&k| consts[k].iter().product::<usize>())
            .sum();
        let mut b = Graph::new();
        let carry_in = b.input("carry", vec![c + k_rest])?;
        let gyt = b.input("x", carry.to_vec())?;
        let mut map = HashMap::new();
        for (i, (&r, s)) in residuals.iter().zip(&shapes).enumerate() {
            map.insert(r, b.input(&x_name(1 + i), s.clone())?);
        }
        for (k, (s, &pk)) in consts.iter().zip(ks).enumerate() {
            map.insert(pk, b.input(&const_name(k), s.clone())?);
        }
        let g_next = part(&mut b, carry_in, 0, carry)?;
        map.insert(total, b.add(g_next, gyt)?);
        copy_nodes(
            &mut b,
            &p,
            order.into_iter().filter(|n| needed.contains(n)),
            &mut map,
        )?;

        let mut next = vec![flat(&mut b, map[&grads[0]])?];
        if k_rest > 0 {
            let dks = (rest.iter())
                .map(|&k| flat(&mut b, map[&grads[1 + nx + k]]))
                .collect::<Result<Vec<_>>>()?;
            let dk = concat_or_one(&mut b, &dks)?;
            let acc = b.slice(carry_in, 0, c, c + k_rest, 1)?;
            next.push(b.add(acc, dk)?);
        }
        let next = concat_or_one(&mut b, &next)?;
        let mut ys: Vec<NodeId> = grads[1..1 + nx].iter().map(|g| map[g]).collect();
        let mut y_shapes = xs.to_vec();
        let mut kept = |n: NodeId| -> Result<Kept> {
            let shape = p.shape(n)?.to_vec();
            if let Some(at) = residuals.iter().position(|&r| r == n) {
                return Ok(Kept {
                    residual: true,
                    at,
                    shape,
                });
            }
            // a per-step output already given (an input's gradient) serves
            let at = match ys.iter().position(|&y| y == map[&n]) {
                Some(at) => at,
                None => {
                    ys.push(map[&n]);
                    y_shapes.push(shape.clone());
                    ys.len() - 1
                }
            };
            Ok(Kept {
                residual: false,
                at,
                shape,
            })
        };
        let places = (hoisted.iter())
            .map(|&(k, a, m, outer)| Ok((k, kept(a)?, kept(m)?, outer)))
            .collect::<Result<Vec<_>>>()?;
        let sums = (summed.iter())
            .map(|&(k, x, lead)| Ok((k, kept(x)?, lead)))
            .collect::<Result<Vec<_>>>()?;
        let backward = ScanBody::from_graph(b, next, ys, None, None)?;
        Ok(Split {
            forward,
            residuals: shapes,
            backward,
            ys: y_shapes,
            hoisted: places,
            summed: sums,
            rest,
            k_rest,
        })
    }
}

/// Whether the backward step can compute `n` from the kept residuals
/// `keep` alone: `n` is kept, loop-invariant, or an element-wise op of such.
fn recomputable(
    p: &Graph,
    n: NodeId,
    keep: &HashSet<NodeId>,
    variant: &HashSet<NodeId>,
    memo: &mut HashMap<NodeId, bool>,
) -> bool {
    if keep.contains(&n) || !variant.contains(&n) {
        return true;
    }
    if let Some(&known) = memo.get(&n) {
        return known;
    }
    let elementwise = p.node(n).is_ok_and(|node| node.op.is_elementwise());
    let ok =
        elementwise && (p.operands(n).iter()).all(|&o| recomputable(p, o, keep, variant, memo));
    memo.insert(n, ok);
    ok
}

/// A step's inputs (the probe's `ins`: carry, per-step inputs, constants)
/// declared in `g` under the same names, mapped from the probe's.
fn step_inputs(g: &mut Graph, p: &Graph, ins: &[NodeId]) -> Result<HashMap<NodeId, NodeId>> {
    let mut map = HashMap::new();
    for (name, id) in p.inputs() {
        if ins.contains(&id) {
            map.insert(id, g.input(name, p.shape(id)?.to_vec())?);
        }
    }
    Ok(map)
}

/// The concatenation of 1-D `parts` (the part itself when there is one).
fn concat_or_one(g: &mut Graph, parts: &[NodeId]) -> Result<NodeId> {
    match parts {
        [one] => Ok(*one),
        _ => g.concat(parts, 0),
    }
}

/// The step of `body` inlined in `b` on `ins` (carry, per-step inputs,
/// constants, named as the body's inputs): its next carry and its VJP
/// `[dcarry, dxs.., dconsts..]` of `Σ step·total`.
fn step_grads(
    b: &mut Graph,
    (body, out): (&Graph, NodeId),
    ins: &[NodeId],
    total: NodeId,
) -> Result<(NodeId, Vec<NodeId>)> {
    let mut map = HashMap::new();
    for (name, id) in body.inputs() {
        let mine = (ins.iter()).find(|&&i| b.inputs().any(|(n, j)| j == i && n == name));
        let mine = mine.ok_or_else(|| KilnError::Invalid(format!("scan body: input `{name}`")))?;
        map.insert(id, *mine);
    }
    copy_nodes(b, body, ancestors_order(body, &[out]), &mut map)?;
    let o = map[&out];
    let weighted = b.mul(o, total)?;
    let loss = b.sum_all(weighted)?;
    Ok((o, b.grad(loss, ins)?))
}

pub(super) fn vjp(
    scan: &Scan,
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    _y: NodeId,
    gy: NodeId,
) -> Grads {
    let carry_shape = g.shape(xs[0])?.to_vec();
    let c: usize = carry_shape.iter().product();
    if scan.keep != c || scan.body.has_ys() {
        return attr_err(
            "scan",
            "only a scan that keeps its whole carry and has no per-step output has a gradient (a gradient scan has none)",
        );
    }
    let nx = scan.body.xs();
    let shape = |g: &mut dyn OpBuilder, n: NodeId| Ok(g.shape(n)?.to_vec());
    let x_shapes = (xs[1..1 + nx].iter())
        .map(|&x| Ok(shape(g, x)?[1..].to_vec()))
        .collect::<Result<Vec<_>>>()?;
    let const_shapes = (xs[1 + nx..].iter())
        .map(|&k| shape(g, k))
        .collect::<Result<Vec<_>>>()?;
    let t_len = shape(g, xs[1])?[0];

    // the upstream gradient of each step's carry, [T, *carry], and of the last
    let g_last = g.slice(gy, 0, t_len * c, t_len * c + c, 1)?;
    if t_len == 0 {
        let mut grads = vec![Some(g.reshape(g_last, &dims(&carry_shape))?)];
        grads.extend(xs[1..].iter().map(|_| None));
        return Ok(grads);
    }
    let g_seq = g.slice(gy, 0, 0, t_len * c, 1)?;
    let g_seq = stacked(g, g_seq, t_len, &carry_shape)?;
    let split = Split::new(&scan.body, &carry_shape, &x_shapes, &const_shapes)?;

    // the residuals, [T, *shape] each, from a copy of the forward scan
    let mut res = Vec::new();
    if let Some(fwd) = &split.forward {
        let op = Scan {
            body: fwd.clone(),
            reverse: scan.reverse,
            keep: c,
        };
        let r = g.add_op(Op::Scan(op), xs)?;
        res = fields(g, r, t_len * c + c, t_len, &split.residuals)?;
    }
    let mut init = vec![g_last];
    if split.k_rest > 0 {
        init.push(g.fill(&[split.k_rest], 0.0)?);
    }
    let init = match init.len() {
        1 => init[0],
        _ => g.concat(&init, 0)?,
    };
    let mut operands = vec![init, g_seq];
    operands.extend(&res);
    operands.extend(&xs[1 + nx..]);
    let back = Scan {
        body: split.backward.clone(),
        reverse: !scan.reverse,
        keep: 0,
    };
    let r = g.add_op(Op::Scan(back), &operands)?;
    let cb = c + split.k_rest;
    let ys = fields(g, r, cb, t_len, &split.ys)?;

    let mut out = vec![None; xs.len()];
    for i in 0..nx {
        out[1 + i] = Some(ys[i]);
    }
    for (k, a, b, outer) in &split.hoisted {
        // Σ_t A_tᵀ·B_t = [A_1; ..; A_T]ᵀ·[B_1; ..; B_T], and its transpose
        // Bᵀ·A for a weight read transposed
        let mut rows = |kept: &Kept| {
            let seq = if kept.residual { &res } else { &ys }[kept.at];
            g.reshape(
                seq,
                &[(t_len * kept.shape[0]) as isize, kept.shape[1] as isize],
            )
        };
        let (sa, sb) = (rows(a)?, rows(b)?);
        let dk = match outer {
            false => g.matmul_t(sa, sb, true, false)?,
            true => g.matmul_t(sb, sa, true, false)?,
        };
        out[1 + nx + k] = Some(g.reshape(dk, &dims(&const_shapes[*k]))?);
    }
    for (k, x, lead) in &split.summed {
        // Σ_t Σ_lead X_t: one sum over the steps and the leading axes
        let seq = if x.residual { &res } else { &ys }[x.at];
        let axes: Vec<isize> = (0..=*lead as isize).collect();
        let dk = g.sum(seq, &axes, false)?;
        out[1 + nx + k] = Some(g.reshape(dk, &dims(&const_shapes[*k]))?);
    }
    out[0] = Some(part(g, r, 0, &carry_shape)?);
    let mut at = c;
    for &k in &split.rest {
        out[1 + nx + k] = Some(part(g, r, at, &const_shapes[k])?);
        at += const_shapes[k].iter().product::<usize>();
    }
    Ok(out)
}

/// The flat `v` as `[t, *shape]`.
fn stacked(g: &mut dyn OpBuilder, v: NodeId, t: usize, shape: &[usize]) -> Result<NodeId> {
    let mut target = vec![t as isize];
    target.extend(dims(shape));
    g.reshape(v, &target)
}

/// The per-step output regions of a scan's output `r` from `start` on,
/// `[t, *shape]` each.
fn fields(
    g: &mut dyn OpBuilder,
    r: NodeId,
    mut start: usize,
    t: usize,
    shapes: &[Vec<usize>],
) -> Result<Vec<NodeId>> {
    let mut out = Vec::new();
    for s in shapes {
        let len = t * s.iter().product::<usize>();
        let v = g.slice(r, 0, start, start + len, 1)?;
        out.push(stacked(g, v, t, s)?);
        start += len;
    }
    Ok(out)
}

fn dims(shape: &[usize]) -> Vec<isize> {
    shape.iter().map(|&d| d as isize).collect()
}
