//! Dead-code elimination: removes every node that no output and no parameter
//! update depends on. Inputs and parameters stay: they are the graph's interface.

use super::{Pass, Patch, Rewriter};
use crate::error::Result;
use crate::graph::NodeId;
use std::collections::HashSet;

/// Removes unreachable nodes.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, rw: &mut Rewriter) -> Result<usize> {
        let live: HashSet<NodeId> = rw.live_nodes().into_iter().collect();
        let p = rw.program();
        let mut patch = Patch::new();
        for n in p.graph.node_ids() {
            if !live.contains(&n) && !p.graph.node(n)?.op.is_interface() {
                patch.remove(n);
            }
        }
        // one patch removes every dead node (the node counts say how many)
        Ok(usize::from(rw.apply("dce", &[], patch)?.is_some()))
    }
}
