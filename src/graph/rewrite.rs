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

    /// Removes the nodes of `dead`, which no node outside it may use
    /// (inputs and parameters are never removed). `Err` naming a node that
    /// a node outside the set still reads; nothing is removed then.
    pub(crate) fn remove_dead(&mut self, dead: &std::collections::HashSet<NodeId>) -> Result<()> {
        for &n in dead {
            self.node(n)?;
            if let Some(u) = self.users(n).into_iter().find(|u| !dead.contains(u)) {
                return Err(KilnError::Invalid(format!(
                    "node %{} is still read by %{}",
                    n.index(),
                    u.index()
                )));
            }
        }
        for &n in dead {
            if !matches!(
                self.g[n.0].op,
                crate::ops::Op::Input(_) | crate::ops::Op::Param(_)
            ) {
                self.g.remove_node(n.0);
            }
        }
        Ok(())
    }
}
