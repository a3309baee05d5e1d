//! Common-subexpression elimination: two nodes with the same op, the same
//! attributes and the same operands become one (the one created first).
//! Dropout nodes merge too: equal seeds draw equal masks.

use super::{Pass, Patch, Rewriter};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::Op;
use std::collections::HashMap;

/// Merges duplicate nodes.
pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }
    fn run(&self, rw: &mut Rewriter) -> Result<usize> {
        let mut seen: HashMap<(String, Vec<NodeId>), NodeId> = HashMap::new();
        let mut merged = 0;
        for n in rw.live_nodes() {
            let p = rw.program();
            let node = p.graph.node(n)?;
            if matches!(node.op, Op::Input { .. } | Op::Param { .. }) {
                continue;
            }
            let key = (format!("{:?}", node.op), p.graph.operands(n));
            match seen.get(&key) {
                Some(&first) => {
                    if rw
                        .apply("cse", &[n, first], Patch::replacing(n, first))?
                        .is_some()
                    {
                        merged += 1;
                    }
                }
                None => {
                    seen.insert(key, n);
                }
            }
        }
        Ok(merged)
    }
}
