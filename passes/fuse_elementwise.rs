//! Chains of element-wise ops → one `Fused` loop. Unary, binary and select
//! nodes (and earlier fused loops) whose result only one other such node of
//! the same shape reads are folded into that reader, together with scalar
//! constants:
//!
//! ```text
//! mul(g, gt(y, 0.0))            → fused(g, y) {expr="mul(%0, gt(%1, 0.0))"}
//! sub(w, mul(add(mul(m, 0.9), d), lr)) → fused(w, m, d, lr) {expr=...}
//! ```
//! A node read by several others, or returned, stays a boundary (nothing is
//! computed twice). Every operand of a fused loop has its shape, one element,
//! or one run of its dimensions with 1s around it (so `relu(matmul(x, w) + b)`
//! is one loop after the GEMM, and a per-channel `[1, C, 1, 1]` scale is read
//! in place); a `broadcast` of such an operand is read from its source (no
//! broadcast copy is made), other broadcasts stay outside. Results are
//! bit-identical.

use super::{Pass, Patch, Program, Rewriter, Src};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::fused::{fused_shape, repeats_into, Instr, MAX_INSTRS};
use crate::ops::Op;
use crate::ops::{Fill, Fused};
use crate::shape::block_repeat;
use std::collections::{HashMap, HashSet};

/// Fuses element-wise chains.
pub struct FuseElementwise;

/// Whether `n` is an element-wise op whose operands all have its shape, one
/// element, or its trailing dimensions (a bias row).
fn elementwise(p: &Program, n: NodeId) -> Result<bool> {
    let node = p.graph.node(n)?;
    if !node.op.is_elementwise() {
        return Ok(false);
    }
    for o in p.graph.operands(n) {
        if !repeats_into(p.graph.shape(o)?, node.shape.dims()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A fused expression under construction, rooted at one node.
struct Group {
    root: NodeId,
    expr: Vec<Instr>,
    operands: Vec<NodeId>,
    /// Register holding each visited node.
    regs: HashMap<NodeId, usize>,
    /// Element-wise nodes folded in besides the root.
    absorbed: Vec<NodeId>,
    /// Nodes being folded in right now (the recursion's depth).
    depth: usize,
    /// Broadcasts whose operand the loop reads instead.
    bypassed: usize,
}

/// The deepest chain one group folds in: a node further from the root is
/// an operand (a long chain becomes several loops; the walk is bounded, so
/// a 100,000-op chain neither overflows the stack nor takes quadratic time).
const MAX_DEPTH: usize = 10;

impl Group {
    fn push(&mut self, i: Instr) -> usize {
        self.expr.push(i);
        self.expr.len() - 1
    }

    /// The register computing `n`, folding `n` in when it may be.
    fn visit(&mut self, p: &Program, n: NodeId) -> Result<usize> {
        if let Some(&r) = self.regs.get(&n) {
            return Ok(r);
        }
        let node = p.graph.node(n)?;
        let root_shape = p.graph.shape(self.root)?;
        let fold_in = n == self.root
            || (self.depth < MAX_DEPTH
                && node.shape.dims() == root_shape
                && p.single_use(n)
                && elementwise(p, n)?);
        let reg = match (&node.op, fold_in) {
            (Op::Fill(Fill { value, .. }), _)
                if node.shape.numel() == 1 || node.shape.dims() == root_shape =>
            {
                self.push(Instr::Const(*value))
            }
            (op, true) => {
                let ops = p.graph.operands(n);
                let mut r = Vec::with_capacity(ops.len());
                self.depth += 1;
                for &o in &ops {
                    r.push(self.visit(p, o)?);
                }
                self.depth -= 1;
                if n != self.root {
                    self.absorbed.push(n);
                }
                match op {
                    Op::Unary(u) => self.push(Instr::Unary(*u, r[0])),
                    Op::Binary(b) => self.push(Instr::Binary(*b, r[0], r[1])),
                    Op::Select => self.push(Instr::Select(r[0], r[1], r[2])),
                    Op::Fused(Fused { expr }) => self.inline(expr, &r),
                    _ => unreachable!("elementwise() admits only these ops"),
                }
            }
            (Op::Broadcast(_), _) => {
                // the loop repeats the broadcast's operand itself, when it can
                let src = p.graph.operands(n)[0];
                match block_repeat(p.graph.shape(src)?, root_shape) {
                    Some(_) => {
                        self.bypassed += 1;
                        self.operand(src)
                    }
                    None => self.operand(n),
                }
            }
            _ => self.operand(n),
        };
        self.regs.insert(n, reg);
        Ok(reg)
    }

    /// A register reading `n` as an operand of the loop.
    fn operand(&mut self, n: NodeId) -> usize {
        let k = match self.operands.iter().position(|&o| o == n) {
            Some(k) => k,
            None => {
                self.operands.push(n);
                self.operands.len() - 1
            }
        };
        self.push(Instr::Operand(k))
    }

    /// Appends a fused expression whose operand `k` is our register `args[k]`;
    /// returns the register of its result.
    fn inline(&mut self, expr: &[Instr], args: &[usize]) -> usize {
        let mut at: Vec<usize> = Vec::with_capacity(expr.len());
        for instr in expr {
            let reg = match *instr {
                Instr::Operand(k) => args[k],
                Instr::Const(c) => self.push(Instr::Const(c)),
                Instr::Unary(u, a) => self.push(Instr::Unary(u, at[a])),
                Instr::Binary(b, x, y) => self.push(Instr::Binary(b, at[x], at[y])),
                Instr::Select(c, a, b) => self.push(Instr::Select(at[c], at[a], at[b])),
            };
            at.push(reg);
        }
        *at.last().expect("a fused expression is not empty")
    }
}

impl Pass for FuseElementwise {
    fn name(&self) -> &'static str {
        "fuse_elementwise"
    }
    fn after(&self) -> &'static [&'static str] {
        // activations go into convolutions' epilogues first
        &["conv_epilogue"]
    }
    fn run(&self, rw: &mut Rewriter) -> Result<usize> {
        let mut fused = 0;
        let mut taken: HashSet<NodeId> = HashSet::new();
        for n in rw.live_nodes().into_iter().rev() {
            let p = rw.program();
            if taken.contains(&n) || p.graph.node(n).is_err() || !elementwise(p, n)? {
                continue;
            }
            let Some(group) = group_at(p, n)? else {
                continue;
            };
            let mut patch = Patch::new();
            let operands: Vec<Src> = group.operands.iter().map(|&o| o.into()).collect();
            let new = patch.add(Op::Fused(Fused { expr: group.expr }), &operands);
            patch.replace(n, new);
            let matched: Vec<NodeId> = std::iter::once(n)
                .chain(group.absorbed.iter().copied())
                .collect();
            if rw.apply("fuse_elementwise", &matched, patch)?.is_some() {
                taken.extend(group.absorbed);
                fused += 1;
            }
        }
        Ok(fused)
    }
}

/// The fused loop rooted at element-wise node `n`, when it folds in at
/// least one other node and computes `n`'s shape.
fn group_at(p: &Program, n: NodeId) -> Result<Option<Group>> {
    let mut group = Group {
        root: n,
        expr: Vec::new(),
        operands: Vec::new(),
        regs: HashMap::new(),
        absorbed: Vec::new(),
        depth: 0,
        bypassed: 0,
    };
    let out = group.visit(p, n)?;
    let fits = group.expr.len() <= MAX_INSTRS && out + 1 == group.expr.len();
    let folds = !group.absorbed.is_empty() || group.bypassed > 0;
    if !folds || !fits || group.operands.is_empty() {
        return Ok(None);
    }
    // constants folded in carry no shape, and the loop takes its shape
    // from its largest operand: the operands must still give the root's
    // (`[2, 2] + [1, 1, 2]` is `[1, 2, 2]`, which no operand has)
    let shapes: Vec<&[usize]> = group
        .operands
        .iter()
        .map(|&o| p.graph.shape(o))
        .collect::<Result<_>>()?;
    if fused_shape(&group.expr, &shapes).ok().as_deref() != Some(p.graph.shape(n)?) {
        return Ok(None);
    }
    Ok(Some(group))
}
