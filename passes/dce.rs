//! Dead-code elimination: removes every node that no output and no parameter
//! update depends on. Inputs and parameters stay: they are the graph's interface.

use super::{Pass, Program};
use crate::error::Result;

/// Removes unreachable nodes.
pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let roots = p.roots();
        Ok(p.graph.remove_unreachable(&roots))
    }
}
