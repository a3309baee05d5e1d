//! Reverse-mode automatic differentiation over the graph.
//!
//! [`Graph::grad`] appends the backward nodes to the same graph, built from
//! the per-op VJP rules in `ops/`. The driver does what every rule would
//! otherwise repeat: it restricts work to nodes on a path from the
//! differentiated nodes to the loss, sums a gradient that was broadcast back
//! to its operand's shape, accumulates gradients that reach a node along
//! several paths, and names each accumulated gradient after its node
//! (`conv.weight.grad`). The gradients of adjacent slices of one node (a
//! chunk's or split's parts) accumulate into one concatenation, as
//! PyTorch's `split` backward, instead of a sum of zero-padded parts. Nodes that do not influence the loss get no backward
//! nodes, and nodes a rule built for an operand that needs no gradient are
//! removed again.

use crate::error::{shape_err, Result};
use crate::graph::order::ancestors_order;
use crate::graph::{Graph, NodeId};
use crate::ops::{Op, OpBuilder};
use std::collections::{HashMap, HashSet};

impl Graph {
    /// Gradients of the scalar `loss` with respect to each node of `wrt`, as
    /// new nodes of this graph (one per entry of `wrt`, of that node's shape).
    /// A node the loss does not depend on gets a zero gradient. `Err` if the
    /// loss is not a scalar.
    pub fn grad(&mut self, loss: NodeId, wrt: &[NodeId]) -> Result<Vec<NodeId>> {
        let loss_shape = self.shape(loss)?.to_vec();
        if loss_shape.iter().product::<usize>() != 1 {
            return shape_err(
                "grad",
                format!("the loss must be a scalar, got shape {loss_shape:?}"),
            );
        }
        for &w in wrt {
            self.node(w)?;
        }
        let first_new = self.next_seq();
        let order = ancestors_order(self, &[loss]);
        let on_path = self.nodes_on_path(&order, wrt);
        let seed = self.fill(&loss_shape, 1.0)?;
        self.set_name(seed, "loss.grad");
        // A graph that differs between the modes gets each mode's gradient,
        // joined by one `train_eval` per result.
        let moded = order
            .iter()
            .any(|&n| self.node(n).is_ok_and(|n| matches!(n.op, Op::TrainEval)));
        let train = self.backward(
            &order,
            &on_path,
            loss,
            seed,
            wrt,
            Some(true).filter(|_| moded),
        )?;
        let results = if moded {
            let eval = self.backward(&order, &on_path, loss, seed, wrt, Some(false))?;
            train
                .into_iter()
                .zip(eval)
                .map(|(t, e)| if t == e { Ok(t) } else { self.train_eval(t, e) })
                .collect::<Result<Vec<_>>>()?
        } else {
            train
        };
        // A rule builds gradients for all operands of a node, also for those
        // that lead to no differentiated node; drop what no result needs.
        let keep: HashSet<NodeId> = ancestors_order(self, &results).into_iter().collect();
        for n in self.node_ids().into_iter().rev() {
            if self.node(n)?.seq >= first_new && !keep.contains(&n) {
                self.remove_node(n);
            }
        }
        Ok(results)
    }

    /// The gradient of `loss` (seeded with `seed`) for each node of `wrt`,
    /// walking `order` backwards. `mode`: the mode whose `train_eval`
    /// operand alone gets the gradient (`Some(true)`: training), `None` for
    /// a graph without `train_eval`.
    fn backward(
        &mut self,
        order: &[NodeId],
        on_path: &HashSet<NodeId>,
        loss: NodeId,
        seed: NodeId,
        wrt: &[NodeId],
        mode: Option<bool>,
    ) -> Result<Vec<NodeId>> {
        // the gradients that reached each node, summed when it is reached
        let mut grads: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        grads.insert(loss, vec![seed]);
        for &n in order.iter().rev() {
            let Some(parts) = grads.remove(&n) else {
                continue;
            };
            let gy = self.sum_parts(parts)?;
            if let (Some(name), false) = (self.node(n)?.name.clone(), n == loss) {
                self.set_name(gy, format!("{name}.grad"));
            }
            grads.insert(n, vec![gy]);
            let operands = self.operands(n);
            if operands.iter().all(|o| !on_path.contains(o)) {
                continue;
            }
            let op = self.node(n)?.op.clone();
            let mut rule = op.vjp(self, &operands, n, gy)?;
            if let (Op::TrainEval, Some(training)) = (&op, mode) {
                rule[usize::from(training)] = None;
            }
            for (&x, gx) in operands.iter().zip(rule) {
                if !on_path.contains(&x) {
                    continue;
                }
                let Some(gx) = gx else { continue };
                let gx = self.sum_to_shape(gx, x)?;
                grads.entry(x).or_default().push(gx);
            }
        }
        wrt.iter()
            .map(|&w| match grads.get(&w) {
                Some(parts) => self.sum_parts(parts.clone()),
                None => {
                    let shape = self.shape(w)?.to_vec();
                    self.fill(&shape, 0.0)
                }
            })
            .collect()
    }

    /// The sum of the gradients `parts` that reached a node. Zero pads of adjacent parts along one axis become the pad of
    /// their concatenation (the same values, except that a −0.0 stays
    /// −0.0); the rest are added in the order they came.
    fn sum_parts(&mut self, parts: Vec<NodeId>) -> Result<NodeId> {
        if let [one] = parts[..] {
            return Ok(one);
        }
        let mut padded = Vec::new();
        let mut rest = Vec::new();
        for p in parts {
            match self.zero_pad_of_part(p)? {
                Some(pp) => padded.push(pp),
                None => rest.push(p),
            }
        }
        padded.sort_by_key(|p| (p.axis, p.before));
        let mut i = 0;
        while i < padded.len() {
            let first = padded[i];
            let mut run = vec![first];
            while let Some(&next) = padded.get(i + run.len()) {
                let last = run[run.len() - 1];
                if next.axis != first.axis || last.before + last.len != next.before {
                    break;
                }
                run.push(next);
            }
            i += run.len();
            rest.push(match run.len() {
                1 => first.node,
                _ => {
                    let last = run[run.len() - 1];
                    let pieces: Vec<NodeId> = run.iter().map(|p| p.part).collect();
                    let cat = self.concat(&pieces, first.axis as isize)?;
                    let mut pads = vec![(0, 0); self.shape(cat)?.len()];
                    pads[first.axis] = (first.before, last.after);
                    match (first.before, last.after) {
                        (0, 0) => cat,
                        _ => self.pad(cat, &pads, 0.0)?,
                    }
                }
            });
        }
        let mut total = rest[0];
        for &p in &rest[1..] {
            total = self.add(total, p)?;
        }
        Ok(total)
    }

    /// `n` as a +0.0 pad of `part` along one axis only.
    fn zero_pad_of_part(&self, n: NodeId) -> Result<Option<PaddedPart>> {
        let Op::Pad(p) = &self.node(n)?.op else {
            return Ok(None);
        };
        let padded: Vec<usize> = (0..p.pads.len()).filter(|&d| p.pads[d] != (0, 0)).collect();
        if p.value.to_bits() != 0 || padded.len() != 1 {
            return Ok(None);
        }
        let (axis, part) = (padded[0], self.operands(n)[0]);
        let (before, after) = p.pads[axis];
        let len = self.shape(part)?[axis];
        Ok(Some(PaddedPart {
            node: n,
            part,
            axis,
            before,
            len,
            after,
        }))
    }

    /// Nodes of `order` (the loss's ancestors) that depend on some node of `wrt`.
    fn nodes_on_path(&self, order: &[NodeId], wrt: &[NodeId]) -> HashSet<NodeId> {
        let mut on: HashSet<NodeId> = wrt.iter().copied().collect();
        for &n in order {
            if self.operands(n).iter().any(|o| on.contains(o)) {
                on.insert(n);
            }
        }
        on
    }

    /// Sums `grad` (of a broadcast shape) down to the shape of node `like`.
    fn sum_to_shape(&mut self, grad: NodeId, like: NodeId) -> Result<NodeId> {
        let (gs, ts) = (self.shape(grad)?.to_vec(), self.shape(like)?.to_vec());
        if gs == ts {
            return Ok(grad);
        }
        let lead = gs.len().saturating_sub(ts.len());
        let axes: Vec<isize> = (0..gs.len())
            .filter(|&d| d < lead || (ts[d - lead] == 1 && gs[d] != 1))
            .map(|d| d as isize)
            .collect();
        let summed = if axes.is_empty() {
            grad
        } else {
            self.sum(grad, &axes, true)?
        };
        let target: Vec<isize> = ts.iter().map(|&d| d as isize).collect();
        self.reshape(summed, &target)
    }
}

/// A node `node` that zero-pads `part` along `axis`: `before` zeros, the
/// part's `len` values, `after` zeros.
#[derive(Clone, Copy)]
struct PaddedPart {
    node: NodeId,
    part: NodeId,
    axis: usize,
    before: usize,
    len: usize,
    after: usize,
}
