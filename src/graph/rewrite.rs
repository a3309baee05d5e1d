//! Graph surgery for rewrites. All edge manipulation of passes lives here.

use super::{Graph, NodeId};
use crate::error::{KilnError, Result};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

impl Graph {
    /// Makes every user of `old` use `new` instead (same operand positions).
    /// `Err` if the two differ in shape.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) -> Result<()> {
        let (so, sn) = (self.shape(old)?.to_vec(), self.shape(new)?.to_vec());
        if so != sn {
            return Err(KilnError::Shape {
                op: self.node(new)?.op.name().into(),
                message: format!(
                    "a replacement of shape {sn:?} cannot stand for a node of shape {so:?}"
                ),
            });
        }
        let edges: Vec<_> = self
            .g
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (id, target, operand) in edges {
            if target == new.0 {
                continue;
            }
            self.g.remove_edge(id);
            self.g.add_edge(new.0, target, operand);
        }
        Ok(())
    }

    /// Removes every node that none of `roots` depends on, except inputs and
    /// parameters (the graph's interface). Returns how many were removed.
    pub fn remove_unreachable(&mut self, roots: &[NodeId]) -> usize {
        let live: std::collections::HashSet<NodeId> = super::order::ancestors_order(self, roots)
            .into_iter()
            .collect();
        let dead: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| {
                !live.contains(n)
                    && !matches!(
                        self.g[n.0].op,
                        crate::ops::Op::Input { .. } | crate::ops::Op::Param { .. }
                    )
            })
            .collect();
        for &n in &dead {
            self.g.remove_node(n.0);
        }
        dead.len()
    }
}
