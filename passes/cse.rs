//! Common-subexpression elimination: two nodes with the same op, the same
//! attributes and the same operands become one (the one created first).
//! Dropout nodes merge too: equal seeds draw equal masks. A scan merges
//! into the copy of it that also keeps its step's residuals (a scan
//! gradient's), as the prefix of that one's output.

use super::{Pass, Patch, Rewriter};
use crate::error::Result;
use crate::graph::NodeId;
use crate::graph::Program;
use crate::ops::{Op, Slice};
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
            if let Some((plain, ext)) = extended_scan(p, n, same_operands)? {
                // the plain scan's output is the prefix of the other's
                let len = p.graph.shape(plain)?.iter().product::<usize>();
                let mut patch = Patch::new();
                let slice = Slice {
                    axis: 0,
                    start: 0,
                    end: len,
                    step: 1,
                };
                let s = patch.add(Op::Slice(slice), &[ext.into()]);
                patch.replace(plain, s);
                if rw.apply("cse", &[plain, ext], patch)?.is_some() {
                    merged += 1;
                }
                continue;
            }
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

/// A pair of scans, one among `same` (nodes with `n`'s operands) and `n`,
/// where the first's output is the prefix of the second's: same direction
/// and kept values, the second's step extending the first's with residuals.
fn extended_scan(
    p: &Program,
    n: NodeId,
    same: &[(Option<String>, NodeId)],
) -> Result<Option<(NodeId, NodeId)>> {
    let Op::Scan(mine) = &p.graph.node(n)?.op else {
        return Ok(None);
    };
    for &(_, other) in same {
        if let Op::Scan(theirs) = &p.graph.node(other)?.op {
            if theirs.reverse != mine.reverse || theirs.keep != mine.keep {
                continue;
            }
            if mine.body.extends(&theirs.body) {
                return Ok(Some((other, n)));
            }
            if theirs.body.extends(&mine.body) {
                return Ok(Some((n, other)));
            }
        }
    }
    Ok(None)
}
