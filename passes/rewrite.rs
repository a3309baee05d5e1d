//! The rewrite manager: passes propose [`Patch`]es, and only a [`Rewriter`]
//! edits the graph. Before a patch touches the graph it is vetted: every
//! node it names exists, new nodes read only earlier new nodes, each new node passes its
//! shape rule (a refusal leaves the graph as it was: `Ok(None)`), a
//! replacement has the replaced node's shape, does not depend on it (no
//! cycle) and replaces a distinct, non-interface node, and removed nodes
//! are dead. After it is applied the new nodes' shapes are re-inferred and
//! the roots checked. A failing check is an `Err` naming the rule, the
//! pass and the node, and the graph is unchanged. Every applied patch is
//! recorded in the [`RewriteLog`] (the trace `kiln dump --trace` prints),
//! and a rewrite budget ([`RewriteLog::stop_after`]) stops compilation
//! after the n-th one.

use super::{Firing, Patch, Program, RewriteLog, Src};
use crate::error::{KilnError, Result};
use crate::graph::{infer_node, NodeId, Operand};
use std::collections::HashSet;
use std::time::Duration;

/// The one place passes edit the graph through: holds the program for the
/// duration of a pass, applies patches, checks them and logs them.
pub struct Rewriter<'a> {
    program: &'a mut Program,
    log: &'a mut RewriteLog,
    pass: &'static str,
    round: usize,
}

/// `n12:relu`: a node as the trace writes it, by its creation number
/// (never reused, unlike the index of a removed node); `?:?` once it is gone.
fn describe(p: &Program, n: NodeId) -> String {
    match p.graph.node(n) {
        Ok(node) => format!("n{}:{}", node.seq, node.op.name()),
        Err(_) => "?:?".to_string(),
    }
}

/// Spacing of the topological positions given to live nodes: room for
/// this many new nodes between two neighbours before the order is rebuilt.
const GAP: u64 = 1 << 20;
const UNKNOWN: u64 = u64::MAX;

impl<'a> Rewriter<'a> {
    /// A rewriter for pass `pass` in pipeline round `round`.
    pub fn new(
        program: &'a mut Program,
        log: &'a mut RewriteLog,
        pass: &'static str,
        round: usize,
    ) -> Rewriter<'a> {
        Rewriter {
            program,
            log,
            pass,
            round,
        }
    }
    /// The program as it stands (read-only: edits go through [`apply`](Self::apply)).
    pub fn program(&self) -> &Program {
        self.program
    }
    /// Whether the rewrite budget is spent (patches are refused then).
    pub fn exhausted(&self) -> bool {
        self.log.exhausted()
    }
    /// The program's live nodes in canonical order ([`Program::live_nodes`]),
    /// kept from pass to pass until a patch is applied.
    pub fn live_nodes(&mut self) -> Vec<NodeId> {
        let applied = self.log.applied;
        match &self.log.live {
            Some((at, nodes)) if *at == applied => nodes.clone(),
            _ => {
                let nodes = self.program.live_nodes();
                self.set_positions(&nodes);
                self.log.live = Some((applied, nodes.clone()));
                nodes
            }
        }
    }
    /// Records that `rule` was tried once, taking `time`.
    pub fn tried(&mut self, rule: &'static str, time: Duration) {
        let s = self.log.stats(self.pass, rule);
        s.attempts += 1;
        s.time += time;
    }

    /// Gives the nodes of `order` (a topological order) spaced positions.
    fn set_positions(&mut self, order: &[NodeId]) {
        let bound = order.iter().map(|n| n.index() + 1).max().unwrap_or(0);
        let pos = &mut self.log.pos;
        pos.clear();
        pos.resize(bound.max(pos.len()), UNKNOWN);
        for (i, n) in order.iter().enumerate() {
            pos[n.index()] = (i as u64 + 1) * GAP;
        }
        self.log.pos_valid = true;
    }
    fn pos(&self, n: NodeId) -> u64 {
        self.log.pos.get(n.index()).copied().unwrap_or(UNKNOWN)
    }

    /// Applies `patch` for `rule`, which matched `matched` (root first).
    /// Returns the ids of the patch's new nodes, or `None` when it was not
    /// applied: it is empty, the rewrite budget is spent, or a new node's
    /// shape rule refused it (a fused primitive whose working buffers cannot
    /// exist: the generic pattern it stands for stays). `Err` naming the
    /// rule and node when the patch is malformed (see the module doc); the
    /// graph is then as it was.
    pub fn apply(
        &mut self,
        rule: &'static str,
        matched: &[NodeId],
        patch: Patch,
    ) -> Result<Option<Vec<NodeId>>> {
        if patch.is_empty() {
            return Ok(None);
        }
        if self.log.exhausted() {
            self.log.stopped = true;
            return Ok(None);
        }
        if self.log.pos.is_empty() {
            let order = self.program.live_nodes();
            self.set_positions(&order);
        }
        let Some(shapes) = self.vet(rule, &patch)? else {
            return Ok(None);
        };
        let matched: Vec<String> = matched.iter().map(|&n| describe(self.program, n)).collect();
        let new = self.add_nodes(&patch, &shapes)?;
        let resolve = |s: Src| match s {
            Src::Old(n) => n,
            Src::New(k) => new[k],
        };
        let mut changes = Vec::new();
        for &(old, with) in &patch.replace {
            let with = resolve(with);
            changes.push(format!(
                "{} -> {}",
                describe(self.program, old),
                describe(self.program, with)
            ));
            self.substitute(old, with)
                .map_err(|e| self.broken(rule, old, &e.to_string()))?;
        }
        for &n in &patch.remove {
            changes.push(format!("-{}", describe(self.program, n)));
        }
        let dead: HashSet<NodeId> = patch.remove.iter().copied().collect();
        self.program
            .graph
            .remove_dead(&dead)
            .map_err(|e| self.broken(rule, patch.remove[0], &e.to_string()))?;
        let replacements: Vec<NodeId> = patch.replace.iter().map(|&(_, w)| resolve(w)).collect();
        for &n in new.iter().filter(|n| !replacements.contains(n)) {
            changes.push(format!("+{}", describe(self.program, n)));
        }
        self.check(rule, &patch, &new)?;
        self.log.applied += 1;
        self.log.stats(self.pass, rule).applied += 1;
        self.log.firings.push(Firing {
            index: self.log.applied,
            pass: self.pass,
            rule,
            round: self.round,
            matched,
            changes,
        });
        Ok(Some(new))
    }

    /// Every check a patch must pass before it touches the graph; returns
    /// its new nodes' shapes, or `None` when a shape rule refuses one.
    fn vet(&mut self, rule: &'static str, patch: &Patch) -> Result<Option<Vec<Vec<usize>>>> {
        let g = &self.program.graph;
        // `at`: the node the fault is at, or `None` for the patch as a whole
        let err = |n: Option<NodeId>, what: String| {
            let at = n.map_or_else(|| "the patch".to_string(), |n| describe(self.program, n));
            KilnError::Invalid(format!(
                "rewrite `{rule}` (pass `{}`) is malformed at {at}: {what}",
                self.pass
            ))
        };
        let exists = |n: NodeId| g.node(n).map(|_| ()).map_err(|e| err(None, e.to_string()));
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(patch.nodes.len());
        for (k, node) in patch.nodes.iter().enumerate() {
            let mut ins = Vec::with_capacity(node.operands.len());
            for &s in &node.operands {
                ins.push(match s {
                    Src::Old(n) => {
                        exists(n)?;
                        let on = g.node(n)?;
                        Operand {
                            shape: on.shape.dims(),
                            op: &on.op,
                            id: Some(n),
                        }
                    }
                    Src::New(j) if j < k => Operand {
                        shape: &shapes[j],
                        op: &patch.nodes[j].op,
                        id: None,
                    },
                    Src::New(j) => {
                        return Err(err(
                            None,
                            format!(
                                "new node {k} reads new node {j}, which is not added before it"
                            ),
                        ))
                    }
                });
            }
            match infer_node(&node.op, &ins) {
                Ok(shape) => shapes.push(shape),
                Err(KilnError::Shape { .. } | KilnError::Attr { .. }) => return Ok(None),
                Err(e) => return Err(err(None, e.to_string())),
            }
        }
        let roots = self.program.roots();
        let mut replaced = HashSet::new();
        for &(old, with) in &patch.replace {
            exists(old)?;
            let (with_shape, with_id) = match with {
                Src::Old(w) => {
                    exists(w)?;
                    (g.shape(w)?, Some(w))
                }
                Src::New(k) if k < shapes.len() => (shapes[k].as_slice(), None),
                Src::New(k) => {
                    return Err(err(
                        Some(old),
                        format!(
                            "the replacement is new node {k}, but the patch adds {}",
                            shapes.len()
                        ),
                    ))
                }
            };
            if !replaced.insert(old) || with_id == Some(old) {
                return Err(err(Some(old), "replaced twice, or by itself".into()));
            }
            if g.node(old)?.op.is_interface() {
                return Err(err(
                    Some(old),
                    "inputs and parameters (the graph's interface) cannot be replaced".into(),
                ));
            }
            if with_shape != g.shape(old)? {
                return Err(err(
                    Some(old),
                    format!("a replacement of shape {with_shape:?} cannot stand for a node of shape {:?}", g.shape(old)?),
                ));
            }
            if self.depends_on(patch, with, old)? {
                return Err(err(
                    Some(old),
                    "the replacement depends on the replaced node (a cycle)".into(),
                ));
            }
        }
        let gone: HashSet<NodeId> = patch.remove.iter().copied().collect();
        for &n in &patch.remove {
            exists(n)?;
            if roots.contains(&n) {
                return Err(err(Some(n), "removes a root (output or update)".into()));
            }
            if g.node(n)?.op.is_interface() {
                return Err(err(
                    Some(n),
                    "inputs and parameters (the graph's interface) cannot be removed".into(),
                ));
            }
            let kept_reader = g.users(n).into_iter().find(|u| {
                // a replaced node is removed with the patch, unless it is a root
                let leaves = gone.contains(u) || (replaced.contains(u) && !roots.contains(u));
                !leaves
            });
            let referenced = patch
                .nodes
                .iter()
                .flat_map(|x| &x.operands)
                .any(|&s| s == Src::Old(n))
                || patch.replace.iter().any(|&(_, w)| w == Src::Old(n));
            if let Some(u) = kept_reader {
                return Err(err(
                    Some(n),
                    format!("removes a node still read by {}", describe(self.program, u)),
                ));
            }
            if referenced {
                return Err(err(Some(n), "removes a node the patch itself reads".into()));
            }
        }
        Ok(Some(shapes))
    }

    /// Whether `with` (a node of the graph or of `patch`) depends on `old`:
    /// a search down the operands from it, which (while the positions are a
    /// topological order) stops at nodes placed before `old`.
    fn depends_on(&self, patch: &Patch, with: Src, old: NodeId) -> Result<bool> {
        let g = &self.program.graph;
        let floor = match self.log.pos_valid {
            true => self.pos(old),
            false => UNKNOWN,
        };
        let below = |n: NodeId| floor != UNKNOWN && self.pos(n) < floor;
        let mut stack: Vec<NodeId> = Vec::new();
        let mut todo = vec![with];
        while let Some(s) = todo.pop() {
            match s {
                Src::Old(n) => stack.push(n),
                Src::New(k) => todo.extend(patch.nodes[k].operands.iter().copied()),
            }
        }
        let mut seen = HashSet::new();
        while let Some(n) = stack.pop() {
            if n == old {
                return Ok(true);
            }
            if below(n) || !seen.insert(n) {
                continue;
            }
            stack.extend(g.operands(n));
        }
        Ok(false)
    }

    /// Adds the vetted patch's new nodes (with their positions) and returns
    /// their ids. (Every old node the patch names exists, vetted before any
    /// is added, so no name can be a recycled id of a new node.)
    fn add_nodes(&mut self, patch: &Patch, shapes: &[Vec<usize>]) -> Result<Vec<NodeId>> {
        // new nodes sit just below the (lowest) node they replace
        let slot = patch
            .replace
            .iter()
            .map(|&(o, _)| self.pos(o))
            .min()
            .unwrap_or(UNKNOWN);
        let mut new: Vec<NodeId> = Vec::with_capacity(patch.nodes.len());
        for (k, node) in patch.nodes.iter().enumerate() {
            let operands: Vec<NodeId> = node
                .operands
                .iter()
                .map(|&s| match s {
                    Src::Old(n) => n,
                    Src::New(j) => new[j],
                })
                .collect();
            let n = self.program.graph.add_op(node.op.clone(), &operands)?;
            debug_assert_eq!(self.program.graph.shape(n)?, shapes[k].as_slice());
            if let Some(name) = &node.name {
                self.program.graph.set_name(n, name.clone());
            }
            new.push(n);
        }
        self.place_new(patch, &new, slot);
        Ok(new)
    }

    /// Positions for the new nodes, just below `slot` and above all they
    /// read; when that does not fit (or a replacement by an old node may
    /// break the order) the positions stop being trusted until rebuilt.
    fn place_new(&mut self, patch: &Patch, new: &[NodeId], slot: u64) {
        if !self.log.pos_valid {
            return;
        }
        let count = new.len() as u64;
        let reads_max = patch
            .nodes
            .iter()
            .flat_map(|x| &x.operands)
            .filter_map(|&s| match s {
                Src::Old(n) => Some(self.pos(n)),
                Src::New(_) => None,
            })
            .max()
            .unwrap_or(0);
        let old_ok = patch.replace.iter().all(|&(o, w)| match w {
            Src::Old(w) => self.pos(w) < self.pos(o),
            Src::New(_) => true,
        });
        let fits = slot != UNKNOWN && reads_max != UNKNOWN && slot > reads_max + count;
        if !(old_ok && (new.is_empty() || fits)) {
            self.log.pos_valid = false;
            return;
        }
        let bound = new.iter().map(|n| n.index() + 1).max().unwrap_or(0);
        if self.log.pos.len() < bound {
            self.log.pos.resize(bound, UNKNOWN);
        }
        for (k, n) in new.iter().enumerate() {
            self.log.pos[n.index()] = slot - count + k as u64;
        }
    }

    /// Makes `new` stand for `old` everywhere, hands `old`'s name to `new`
    /// if it has none, and removes `old` unless it is a root.
    fn substitute(&mut self, old: NodeId, new: NodeId) -> Result<()> {
        let p = &mut *self.program;
        p.graph.replace_uses(old, new)?;
        for o in p
            .outputs
            .iter_mut()
            .chain(p.updates.iter_mut().map(|u| &mut u.1))
        {
            if *o == old {
                *o = new;
            }
        }
        if p.graph.node(new)?.name.is_none() {
            if let Some(name) = p.graph.node(old)?.name.clone() {
                p.graph.set_name(new, name);
            }
        }
        if !p.roots().contains(&old) {
            p.graph.remove_node(old);
        }
        Ok(())
    }

    /// The checks after a patch: its new nodes' shapes re-inferred from
    /// their operands as they now stand, the replaced nodes gone (or kept as
    /// roots with no users), every root alive.
    fn check(&self, rule: &'static str, patch: &Patch, new: &[NodeId]) -> Result<()> {
        let g = &self.program.graph;
        // the users of a replacement keep their shapes: a replacement has
        // the replaced node's shape (vetted)
        for &n in new {
            let node = g.node(n)?;
            let shapes: Vec<&[usize]> = g
                .operands(n)
                .iter()
                .map(|&o| g.shape(o))
                .collect::<Result<_>>()?;
            match node.op.infer_shape(&shapes) {
                Ok(again) if again == node.shape.dims() => {}
                again => {
                    let what = format!("shape {:?} re-inferred as {again:?}", node.shape.dims());
                    return Err(self.broken(rule, n, &what));
                }
            }
        }
        let roots = self.program.roots();
        for &(old, _) in &patch.replace {
            if g.node(old).is_ok() && (!roots.contains(&old) || !g.users(old).is_empty()) {
                return Err(self.broken(rule, old, "the replaced node is still in use"));
            }
        }
        if let Some(&dead) = roots.iter().find(|&&r| g.node(r).is_err()) {
            return Err(self.broken(rule, dead, "a root (output or update) is gone"));
        }
        Ok(())
    }

    /// The error for a patch of `rule` that broke the graph at `node`.
    fn broken(&self, rule: &'static str, node: NodeId, what: &str) -> KilnError {
        KilnError::Invalid(format!(
            "rewrite `{rule}` (pass `{}`) broke the graph at {}: {what}",
            self.pass,
            describe(self.program, node)
        ))
    }
}
