//! The rewrite manager: passes propose [`Patch`]es, and only a [`Rewriter`]
//! edits the graph. After every patch it checks what the patch touched (each
//! new node's operands and shape re-inferred equal to the recorded one, the
//! replaced nodes gone or kept as roots with no users left, the users of a
//! replacement still well-shaped, every root alive) and fails naming the
//! rule and the node if not. Every applied patch is recorded in a
//! [`RewriteLog`] (the trace `kiln dump --trace` prints), and a rewrite
//! budget ([`RewriteLog::stop_after`]) stops compilation after the n-th one.

use super::Program;
use crate::error::{KilnError, Result};
use crate::graph::NodeId;
use crate::ops::Op;
use std::time::Duration;

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
struct NewNode {
    op: Op,
    operands: Vec<Src>,
    name: Option<String>,
}

/// One rewrite, as data: new nodes (each op with operands from the graph or
/// from earlier new nodes), the nodes they replace, and nodes to remove.
/// Nothing happens until a [`Rewriter`] applies it.
#[derive(Clone, Debug, Default)]
pub struct Patch {
    nodes: Vec<NewNode>,
    replace: Vec<(NodeId, Src)>,
    remove: Vec<NodeId>,
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

/// One applied rewrite, as the trace shows it. Nodes are written `n12:relu`
/// (the node's creation number, unique within a compilation, and its op).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firing {
    /// 1 for the first rewrite of a compilation, counting on.
    pub index: usize,
    /// The pass that applied it.
    pub pass: &'static str,
    /// The rule that matched (the pass's name for passes that are not rules).
    pub rule: &'static str,
    /// The pipeline round (1 for the first sweep over all passes).
    pub round: usize,
    /// The nodes the rule matched, root first.
    pub matched: Vec<String>,
    /// What the patch did: `n12:relu -> n40:conv2d` per replacement,
    /// `-n7:exp` per removal, `+n39:output` per other node it added.
    pub changes: Vec<String>,
}

impl std::fmt::Display for Firing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{:<4} round {} {:>17} / {:<22} matched [{}]: {}",
            self.index,
            self.round,
            self.pass,
            self.rule,
            self.matched.join(" "),
            self.changes.join(", ")
        )
    }
}

/// How one rule fared over a compilation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// The pass holding the rule.
    pub pass: &'static str,
    /// The rule's name.
    pub rule: &'static str,
    /// Nodes the rule's pattern was tried at (a pass that is not a rule:
    /// times the pass ran).
    pub attempts: usize,
    /// Patches applied.
    pub applied: usize,
    /// Time spent matching and building (and, for a pass that is not a
    /// rule, its whole run), summed; attempts at nodes whose op the
    /// pattern's root rejects are not timed.
    pub time: Duration,
}

/// Every rewrite of one compilation, and each rule's statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewriteLog {
    /// The applied rewrites, in order.
    pub firings: Vec<Firing>,
    /// One entry per rule of the pipeline, in pipeline order (rules that
    /// never fired included, with `applied` 0).
    pub rules: Vec<RuleStats>,
    /// Whether the rewrite budget was spent (the pipeline stopped there).
    pub stopped: bool,
    stop_after: Option<usize>,
    applied: usize,
    /// The live nodes in canonical order as of `applied` rewrites.
    live: Option<(usize, Vec<NodeId>)>,
}

impl RewriteLog {
    /// A log that lets at most `n` rewrites through (`None`: no limit).
    pub fn stop_after(n: Option<usize>) -> RewriteLog {
        RewriteLog {
            stop_after: n,
            ..RewriteLog::default()
        }
    }
    /// Whether the rewrite budget is spent.
    pub fn exhausted(&self) -> bool {
        self.stop_after.is_some_and(|n| self.applied >= n)
    }
    /// Rewrites applied so far.
    pub fn applied(&self) -> usize {
        self.applied
    }
    /// The statistics entry of `rule` in `pass`, created on first use.
    pub(super) fn stats(&mut self, pass: &'static str, rule: &'static str) -> &mut RuleStats {
        let at = match self
            .rules
            .iter()
            .position(|r| r.pass == pass && r.rule == rule)
        {
            Some(at) => at,
            None => {
                self.rules.push(RuleStats {
                    pass,
                    rule,
                    ..RuleStats::default()
                });
                self.rules.len() - 1
            }
        };
        &mut self.rules[at]
    }
    /// The rules table: one line per rule with its attempts, rewrites and
    /// time, then the rules that never fired.
    pub fn rules_table(&self) -> String {
        let mut s = format!(
            "{:<17} {:<24} {:>9} {:>9} {:>10}\n",
            "pass", "rule", "attempts", "rewrites", "time (ms)"
        );
        for r in &self.rules {
            s += &format!(
                "{:<17} {:<24} {:>9} {:>9} {:>10.3}\n",
                r.pass,
                r.rule,
                r.attempts,
                r.applied,
                r.time.as_secs_f64() * 1e3
            );
        }
        let idle: Vec<&str> = self
            .rules
            .iter()
            .filter(|r| r.applied == 0)
            .map(|r| r.rule)
            .collect();
        s += &format!(
            "never fired: {}\n",
            match idle.is_empty() {
                true => "-".to_string(),
                false => idle.join(", "),
            }
        );
        s
    }
}

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
    /// Whether the rewrite budget is spent (passes stop proposing then).
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

    /// Applies `patch` for `rule`, which matched `matched` (root first).
    /// Returns the ids of the patch's new nodes, or `None` when it was not
    /// applied: the budget is spent, or a new node's shape rule refused it
    /// (a fused primitive whose working buffers cannot exist: the generic
    /// pattern it stands for stays, and the graph is as before). `Err` when
    /// a patch refers to a node not in the graph, replaces a node by one of
    /// another shape, removes a node still in use, or leaves a broken graph.
    pub fn apply(
        &mut self,
        rule: &'static str,
        matched: &[NodeId],
        patch: Patch,
    ) -> Result<Option<Vec<NodeId>>> {
        if self.log.exhausted() || patch.is_empty() {
            return Ok(None);
        }
        let matched: Vec<String> = matched.iter().map(|&n| describe(self.program, n)).collect();
        let Some(new) = self.add_nodes(rule, &patch)? else {
            return Ok(None);
        };
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
        self.remove(rule, &patch.remove, &mut changes)?;
        let replacements: Vec<NodeId> = patch.replace.iter().map(|&(_, w)| resolve(w)).collect();
        for &n in new.iter().filter(|n| !replacements.contains(n)) {
            changes.push(format!("+{}", describe(self.program, n)));
        }
        self.check(rule, &patch, &new, &replacements)?;
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

    /// Adds the patch's new nodes; `None` (and none added) when a shape rule
    /// refuses one.
    fn add_nodes(&mut self, rule: &'static str, patch: &Patch) -> Result<Option<Vec<NodeId>>> {
        let mut new: Vec<NodeId> = Vec::with_capacity(patch.nodes.len());
        for (k, node) in patch.nodes.iter().enumerate() {
            let mut operands = Vec::with_capacity(node.operands.len());
            for &s in &node.operands {
                operands.push(match s {
                    Src::Old(n) => n,
                    Src::New(j) if j < k => new[j],
                    Src::New(j) => {
                        return Err(KilnError::Invalid(format!(
                            "rewrite `{rule}` (pass `{}`): new node {k} reads new node {j}, which is not added before it",
                            self.pass
                        )))
                    }
                });
            }
            match self.program.graph.add_op(node.op.clone(), &operands) {
                Ok(n) => {
                    if let Some(name) = &node.name {
                        self.program.graph.set_name(n, name.clone());
                    }
                    new.push(n);
                }
                Err(KilnError::Shape { .. } | KilnError::Attr { .. }) => {
                    for &n in new.iter().rev() {
                        self.program.graph.remove_node(n);
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Some(new))
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
        if old != new && !p.roots().contains(&old) {
            p.graph.remove_node(old);
        }
        Ok(())
    }

    /// Removes dead nodes: none may be a root or read by a node that stays.
    fn remove(&mut self, rule: &'static str, dead: &[NodeId], log: &mut Vec<String>) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let roots = self.program.roots();
        if let Some(&r) = dead.iter().find(|n| roots.contains(n)) {
            return Err(self.broken(rule, r, "removes a root (output or update)"));
        }
        let gone: std::collections::HashSet<NodeId> = dead.iter().copied().collect();
        for &n in dead {
            log.push(format!("-{}", describe(self.program, n)));
        }
        self.program
            .graph
            .remove_dead(&gone)
            .map_err(|e| self.broken(rule, dead[0], &e.to_string()))
    }

    /// The checks after a patch (see the module doc).
    fn check(
        &self,
        rule: &'static str,
        patch: &Patch,
        new: &[NodeId],
        replacements: &[NodeId],
    ) -> Result<()> {
        let g = &self.program.graph;
        let reinfer = |n: NodeId| -> Result<()> {
            let node = g.node(n)?;
            let shapes: Vec<&[usize]> = g
                .operands(n)
                .iter()
                .map(|&o| g.shape(o))
                .collect::<Result<_>>()?;
            let again = node.op.infer_shape(&shapes)?;
            match again == node.shape.dims() {
                true => Ok(()),
                false => Err(KilnError::Invalid(format!(
                    "shape {:?} re-inferred as {again:?}",
                    node.shape.dims()
                ))),
            }
        };
        // the users of a replacement keep their shapes: `replace_uses` only
        // lets a node of the replaced node's shape stand for it
        for &n in new {
            reinfer(n).map_err(|e| self.broken(rule, n, &e.to_string()))?;
        }
        let roots = self.program.roots();
        for &(old, _) in &patch.replace {
            let kept = g.node(old).is_ok();
            if kept && !roots.contains(&old) {
                return Err(self.broken(rule, old, "the replaced node is still in the graph"));
            }
            if kept
                && !g.users(old).is_empty()
                && !replacements.iter().any(|r| g.users(old).contains(r))
            {
                return Err(self.broken(rule, old, "the replaced node still has users"));
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
