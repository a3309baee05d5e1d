//! A rewrite as data: new nodes, the nodes they replace, nodes to remove.
//! Passes build patches; only the [`super::Rewriter`] applies them.

use crate::graph::NodeId;
use crate::ops::Op;

/// A node a patch refers to: one already in the graph, or the patch's own
/// `k`-th new node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Src {
    /// A node of the graph.
    Old(NodeId),
    /// The patch's new node number `k` (in the order they were added).
    New(usize),
}

impl From<NodeId> for Src {
    fn from(n: NodeId) -> Src {
        Src::Old(n)
    }
}

/// A new node of a patch.
#[derive(Clone, Debug)]
pub(super) struct NewNode {
    pub(super) op: Op,
    pub(super) operands: Vec<Src>,
    pub(super) name: Option<String>,
}

/// One rewrite, as data: new nodes (each op with operands from the graph or
/// from earlier new nodes), the nodes they replace, and nodes to remove.
/// Nothing happens until a [`Rewriter`](super::Rewriter) applies it.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    pub(super) nodes: Vec<NewNode>,
    pub(super) replace: Vec<(NodeId, Src)>,
    pub(super) remove: Vec<NodeId>,
}

impl Patch {
    /// An empty patch.
    pub fn new() -> Patch {
        Patch::default()
    }
    /// The patch that makes the existing node `with` stand for `old`.
    pub fn replacing(old: NodeId, with: NodeId) -> Patch {
        let mut p = Patch::new();
        p.replace(old, with);
        p
    }
    /// Adds a node applying `op` to `operands`; returns its handle.
    pub fn add(&mut self, op: Op, operands: &[Src]) -> Src {
        self.nodes.push(NewNode {
            op,
            operands: operands.to_vec(),
            name: None,
        });
        Src::New(self.nodes.len() - 1)
    }
    /// Names new node `node` (shown in dumps); ignored for a node of the graph.
    pub fn name(&mut self, node: Src, name: impl Into<String>) {
        if let Src::New(k) = node {
            if let Some(n) = self.nodes.get_mut(k) {
                n.name = Some(name.into());
            }
        }
    }
    /// Makes `with` stand for `old` in its users, outputs and update values;
    /// `old` is then removed unless it is a root. `with` takes `old`'s name
    /// when it has none.
    pub fn replace(&mut self, old: NodeId, with: impl Into<Src>) {
        self.replace.push((old, with.into()));
    }
    /// Removes a node nothing live reads (dead-code elimination).
    pub fn remove(&mut self, dead: NodeId) {
        self.remove.push(dead);
    }
    /// Whether the patch does nothing.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.replace.is_empty() && self.remove.is_empty()
    }
}
