//! A program: a graph with the nodes that must survive compilation (its
//! outputs and parameter updates). Passes rewrite programs and the executor
//! schedules them.

use super::order::topo_order;
use super::{infer_node, Graph, NodeId, Operand};
use crate::error::{KilnError, Result};
use crate::ops::Op;
use crate::shape::{batch_multiple, is_symbolic, specialise_dim, Shape, BATCH};

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
        if outputs.is_empty() && updates.is_empty() {
            return Err(KilnError::Invalid(
                "compile: no outputs requested (and no parameter updates)".into(),
            ));
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

impl Program {
    /// Binds the mode: every `train_eval(train, eval)` node is replaced by
    /// its `train` operand when `training`, else by `eval` (also where it is
    /// an output or an update's value), and removed; an update whose value
    /// is then the parameter itself is dropped. Returns how many nodes were
    /// replaced. Nodes that only the mode not taken read are removed.
    ///
    /// `Err` when compiling for training a graph whose batch statistics
    /// would have a single value (see BatchNorm).
    pub fn bind_mode(&mut self, training: bool) -> Result<usize> {
        if training {
            self.graph.check_training()?;
        }
        let picks: Vec<NodeId> = self
            .graph
            .node_ids()
            .into_iter()
            .filter(|&n| matches!(self.graph.g[n.0].op, Op::TrainEval))
            .collect();
        for &n in &picks {
            let chosen = self.graph.operands(n)[usize::from(!training)];
            self.graph.replace_uses(n, chosen)?;
            let roots = self.outputs.iter_mut();
            for r in roots.chain(self.updates.iter_mut().map(|u| &mut u.1)) {
                if *r == n {
                    *r = chosen;
                }
            }
        }
        for &n in &picks {
            self.graph.remove_node(n);
        }
        // an update to the state's own value (a layer's state in the mode
        // that leaves it alone) is no update
        self.updates.retain(|&(p, v)| p != v);
        if !picks.is_empty() {
            // the branch not taken is dead: drop it, so that a value only
            // the other mode read counts as used once (fusing into it)
            let live: std::collections::HashSet<NodeId> = self.live_nodes().into_iter().collect();
            let dead = (self.graph.node_ids().into_iter())
                .filter(|n| !live.contains(n) && !self.graph.g[n.0].op.is_interface())
                .collect();
            self.graph.remove_dead(&dead)?;
        }
        Ok(picks.len())
    }

    /// Whether an input's shape holds the symbolic batch ([`crate::BATCH`]):
    /// the program must be specialised before it is compiled.
    pub fn is_symbolic(&self) -> bool {
        self.graph
            .inputs()
            .any(|(_, id)| self.graph.shape(id).is_ok_and(is_symbolic))
    }

    /// The program for batch `b`: every size `k·BATCH` in inputs' shapes and
    /// in ops' size attributes becomes `k·b`, and every node's shape is
    /// inferred again by its op's shape rule. `Err` naming the node when a
    /// shape rule refuses the new sizes or infers another shape than the
    /// symbolic one specialised (a size computed from the batch in a way
    /// other than a multiple: pad or slice the batch axis, say).
    pub fn specialise(&self, b: usize) -> Result<Program> {
        if batch_multiple(b).is_some() {
            return Err(KilnError::Invalid(format!(
                "batch {b} is a multiple of kiln::BATCH ({BATCH}), the number that stands for \
                 the symbolic batch: it cannot be told from it"
            )));
        }
        let mut p = self.clone();
        let f = |d: usize| specialise_dim(d, b);
        for n in topo_order(&self.graph) {
            let old = &self.graph.g[n.0];
            if let Some(d) = old
                .shape
                .dims()
                .iter()
                .find(|&&d| batch_multiple(d).and_then(batch_multiple).is_some())
            {
                let why = format!(
                    "its size {d} is a product of batch sizes (B²), which cannot be specialised"
                );
                return Err(unspecialisable(n, b, &why));
            }
            let want: Vec<usize> = old.shape.dims().iter().map(|&d| f(d)).collect();
            let shape = if old.op.is_interface() {
                want.clone()
            } else {
                let op = old.op.map_sizes(&f);
                let operands = p.graph.operands(n);
                let ins: Vec<Operand> = operands
                    .iter()
                    .map(|&o| {
                        let node = &p.graph.g[o.0];
                        Operand {
                            shape: node.shape.dims(),
                            op: &node.op,
                            id: Some(o),
                        }
                    })
                    .collect();
                let shape = infer_node(&op, &ins).map_err(|e| unspecialisable(n, b, &e))?;
                p.graph.g[n.0].op = op;
                shape
            };
            if shape != want {
                let why = format!("its shape became {shape:?}, not {want:?}");
                return Err(unspecialisable(n, b, &why));
            }
            p.graph.g[n.0].shape = Shape(shape);
        }
        Ok(p)
    }
}

/// The error of a node that cannot be specialised for batch `b`.
fn unspecialisable(n: NodeId, b: usize, why: &dyn std::fmt::Display) -> KilnError {
    KilnError::Invalid(format!(
        "cannot specialise the graph for batch {b} at %{}: {why} (a size derived from the \
         batch must be a fixed multiple of kiln::BATCH)",
        n.index()
    ))
}
