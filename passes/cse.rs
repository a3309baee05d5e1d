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
        // nodes by operand list; an op's attributes (bit for bit: its Debug
        // text, so −0.0 and NaN constants compare as written) only where
        // another node reads the same operands
        let mut seen: HashMap<Vec<NodeId>, Vec<(Option<String>, NodeId)>> = HashMap::new();
        let mut merged = 0;
        for n in rw.live_nodes() {
            let p = rw.program();
            let node = p.graph.node(n)?;
            if node.op.is_interface() {
                continue;
            }
            let same_operands = seen.entry(p.graph.operands(n)).or_default();
            let key = |op: &Op| format!("{op:?}");
            let mut first = None;
            if !same_operands.is_empty() {
                let mine = key(&node.op);
                for (text, other) in same_operands.iter_mut() {
                    if text.is_none() {
                        *text = Some(key(&p.graph.node(*other)?.op));
                    }
                    if text.as_deref() == Some(mine.as_str()) {
                        first = Some(*other);
                        break;
                    }
                }
            }
            match first {
                Some(first) => {
                    if rw
                        .apply("cse", &[n, first], Patch::replacing(n, first))?
                        .is_some()
                    {
                        merged += 1;
                    }
                }
                None => same_operands.push((None, n)),
            }
        }
        Ok(merged)
    }
}
