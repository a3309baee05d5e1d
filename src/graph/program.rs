//! A program: a graph with the nodes that must survive compilation (its
//! outputs and parameter updates). Passes rewrite programs and the executor
//! schedules them.

use super::{Graph, NodeId};
use crate::error::{KilnError, Result};
use crate::ops::Op;

/// What the passes rewrite: a graph with the nodes that must survive
/// (outputs, and parameter updates as `(param, new value)` pairs).
#[derive(Clone, Debug)]
pub struct Program {
    /// The graph.
    pub graph: Graph,
    /// Nodes whose values are returned.
    pub outputs: Vec<NodeId>,
    /// Parameter updates applied after each run.
    pub updates: Vec<(NodeId, NodeId)>,
}

impl Program {
    /// Every node that must survive a rewrite: outputs, updated parameters and their new values.
    pub fn roots(&self) -> Vec<NodeId> {
        self.outputs
            .iter()
            .copied()
            .chain(self.updates.iter().flat_map(|&(p, v)| [p, v]))
            .collect()
    }

    /// The nodes the roots depend on, in canonical order (dead nodes are not
    /// rewritten: the dead-code pass removes them).
    pub fn live_nodes(&self) -> Vec<NodeId> {
        crate::graph::order::ancestors_order(&self.graph, &self.roots())
    }

    /// Whether `n` may be folded into a rewrite: used by exactly one node,
    /// and not a root.
    pub fn single_use(&self, n: NodeId) -> bool {
        self.graph.users(n).len() == 1 && !self.roots().contains(&n)
    }

    /// `n` seen through one optional reshape (the algebraic pass drops
    /// reshapes to the same shape, so patterns treat reshapes as optional).
    pub fn through_reshape(&self, n: NodeId) -> Result<NodeId> {
        Ok(match self.graph.node(n)?.op {
            crate::ops::Op::Reshape(_) => self.graph.operands(n)[0],
            _ => n,
        })
    }

    /// Checks that the program can run: outputs requested, each root a
    /// single-output node, each update's target a parameter (updated once)
    /// of its new value's shape. `Err` naming the node otherwise.
    pub fn check(&self) -> Result<()> {
        let (graph, outputs, updates) = (&self.graph, &self.outputs, &self.updates);
        if outputs.is_empty() {
            return Err(KilnError::Invalid("compile: no outputs requested".into()));
        }
        for &o in outputs.iter().chain(updates.iter().map(|u| &u.1)) {
            let node = graph.node(o)?;
            if node.op.num_outputs() > 1 {
                return Err(KilnError::Invalid(format!(
                    "%{} (`{}`) has {} outputs: request one of them with Graph::output",
                    o.index(),
                    node.op.name(),
                    node.op.num_outputs()
                )));
            }
        }
        for (i, &(p, v)) in updates.iter().enumerate() {
            let (pn, vn) = (graph.node(p)?, graph.node(v)?);
            if updates[..i].iter().any(|u| u.0 == p) {
                return Err(KilnError::Invalid(format!(
                    "parameter %{} (`{}`) is updated twice: give each parameter one new value",
                    p.index(),
                    pn.name.as_deref().unwrap_or("?")
                )));
            }
            if !matches!(pn.op, Op::Param(_)) {
                return Err(KilnError::Invalid(format!(
                    "update target %{} is a `{}`, not a parameter",
                    p.index(),
                    pn.op.name()
                )));
            }
            if pn.shape != vn.shape {
                return Err(KilnError::Shape {
                    op: "update".into(),
                    message: format!(
                        "new value has shape {}, the parameter has {}",
                        vn.shape, pn.shape
                    ),
                });
            }
        }
        Ok(())
    }
}
