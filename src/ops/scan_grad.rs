//! The VJP of [`Scan`]: a scan the other way over the step's gradient graph.
//!
//! For a forward scan that keeps its whole carry `C` (shape `[T·C + C]`),
//! with `cprev[t]` the carry before step `t`, the gradient scan's step gets
//! `z[t] = [cprev[t], x[t], gy[t]]` (flattened, concatenated) and the
//! forward constants, and carries `[dx (X), dcarry (C), Σ dconsts (K)]`:
//! it recomputes the step at `cprev[t]`, takes the VJP of `Σ step·(dcarry +
//! gy[t])`, and keeps `dx` per step. Its last carry holds the gradients of
//! the first carry and of the constants. It starts from the upstream
//! gradient of the forward scan's last carry.

use super::{Grads, NodeId, Op, OpBuilder, Scan, ScanBody};
use crate::error::{attr_err, Result};
use crate::graph::order::ancestors_order;
use crate::graph::Graph;
use std::collections::HashMap;

/// `[numel, ..]` of `shapes`.
fn sizes(shapes: &[Vec<usize>]) -> Vec<usize> {
    shapes.iter().map(|s| s.iter().product()).collect()
}

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

pub(super) fn vjp(
    scan: &Scan,
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    y: NodeId,
    gy: NodeId,
) -> Grads {
    let (body, out) = scan.body.graph();
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
    let k_sizes = sizes(&const_shapes);
    let k_total: usize = k_sizes.iter().sum();

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

    let grad_body = ScanBody::build(
        &[x + c + k_total],
        &[2 * c + x],
        &const_refs(&const_shapes),
        |b, carry, zt, consts| {
            let cp = part(b, zt, 0, &carry_shape)?;
            let xt = part(b, zt, c, &x_shape)?;
            let gyt = part(b, zt, c + x, &carry_shape)?;
            let g_next = part(b, carry, x, &carry_shape)?;
            let total = b.add(g_next, gyt)?;
            let mut inputs = HashMap::from([("carry".to_string(), cp), ("x".to_string(), xt)]);
            for (k, &kn) in consts.iter().enumerate() {
                inputs.insert(format!("c{k}"), kn);
            }
            let o = inline(b, body, out, &inputs)?;
            let weighted = b.mul(o, total)?;
            let loss = b.sum_all(weighted)?;
            let mut wrt = vec![cp, xt];
            wrt.extend(consts);
            let grads = b.grad(loss, &wrt)?;
            let mut parts = vec![flat(b, grads[1])?, flat(b, grads[0])?];
            if k_total > 0 {
                let dks = grads[2..]
                    .iter()
                    .map(|&d| flat(b, d))
                    .collect::<Result<Vec<_>>>()?;
                let dk = b.concat(&dks, 0)?;
                let acc = b.slice(carry, 0, x + c, x + c + k_total, 1)?;
                parts.push(b.add(acc, dk)?);
            }
            b.concat(&parts, 0)
        },
    )?;
    let zeros_x = g.fill(&[x], 0.0)?;
    let mut init = vec![zeros_x, g_last];
    if k_total > 0 {
        init.push(g.fill(&[k_total], 0.0)?);
    }
    let init = g.concat(&init, 0)?;
    let mut operands = vec![init, z];
    operands.extend(&xs[2..]);
    let back = Scan {
        body: grad_body,
        reverse: !scan.reverse,
        keep: x,
    };
    let r = g.add_op(Op::Scan(back), &operands)?;
    let dxs = part(g, r, 0, &xs_shape)?;
    let last = t_len * x + x;
    let mut grads = vec![Some(part(g, r, last, &carry_shape)?), Some(dxs)];
    let mut at = last + c;
    for (shape, size) in const_shapes.iter().zip(&k_sizes) {
        grads.push(Some(part(g, r, at, shape)?));
        at += size;
    }
    Ok(grads)
}

fn dims(shape: &[usize]) -> Vec<isize> {
    shape.iter().map(|&d| d as isize).collect()
}

fn const_refs(shapes: &[Vec<usize>]) -> Vec<&[usize]> {
    shapes.iter().map(Vec::as_slice).collect()
}
