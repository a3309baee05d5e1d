//! Rules as data: a [`Rule`] is a name, a [`Pat`]tern and a builder that
//! turns a [`Match`] into a [`Patch`]; a [`RulePass`] tries its rules at every
//! live node and hands what they build to the [`Rewriter`].
//!
//! ```text
//! op("matmul", |o| matches!(o, Op::MatMul(_)))
//!     .args([any().bind("a"), op("transpose", is_transpose).bind("t")])
//! ```
//! matches a matmul whose second operand is a transpose, binding `a` and
//! `t`. Patterns match op kinds (a test on the [`Op`]), operands in order
//! or in any order ([`Pat::any_order`], for commutative ops), an optional
//! reshape around a node ([`Pat::opt_reshape`]), and guards: used once
//! ([`Pat::single_use`], which also means not a root), shape equal to a
//! capture's ([`Pat::same_shape_as`]). A name bound twice must bind the same
//! node. What a pattern cannot say (shape arithmetic) the builder checks,
//! returning `None` when it does not fit.

use super::{Pass, Program};
use super::{Patch, Rewriter};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::Op;
use std::time::{Duration, Instant};

/// A pattern over the graph, rooted at one node.
#[derive(Clone, Debug)]
pub struct Pat {
    kind: Kind,
    bind: Option<&'static str>,
    single_use: bool,
    same_shape_as: Option<&'static str>,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Any node.
    Any,
    /// A node whose op passes `test`, with operands matching `args` (any
    /// operands when `None`).
    Op {
        test: fn(&Op) -> bool,
        args: Option<Vec<Pat>>,
        any_order: bool,
    },
    /// The inner pattern, or a reshape of a node matching it.
    OptReshape(Box<Pat>),
}

/// A pattern matching any node.
pub fn any() -> Pat {
    Pat::new(Kind::Any)
}

/// A pattern matching a node whose op passes `test` (`|o| matches!(o, Op::Select)`).
pub fn op(test: fn(&Op) -> bool) -> Pat {
    Pat::new(Kind::Op {
        test,
        args: None,
        any_order: false,
    })
}

impl Pat {
    fn new(kind: Kind) -> Pat {
        Pat {
            kind,
            bind: None,
            single_use: false,
            same_shape_as: None,
        }
    }
    /// The node's operands must match `args`, in order (exactly that many).
    /// On [`any`], any node with such operands; on an optional reshape, the
    /// node inside it.
    pub fn args<const N: usize>(mut self, args: [Pat; N]) -> Pat {
        match &mut self.kind {
            Kind::Op { args: a, .. } => *a = Some(args.into()),
            Kind::Any => {
                self.kind = Kind::Op {
                    test: |_| true,
                    args: Some(args.into()),
                    any_order: false,
                }
            }
            Kind::OptReshape(inner) => **inner = inner.clone().args(args),
        }
        self
    }
    /// The operands may match `args` in any order, for commutative ops: two
    /// operands as given, else swapped (with three or more, only as given).
    /// On an optional reshape, the node inside it.
    pub fn any_order(mut self) -> Pat {
        match &mut self.kind {
            Kind::Op { any_order, .. } => *any_order = true,
            Kind::Any => {
                self.kind = Kind::Op {
                    test: |_| true,
                    args: None,
                    any_order: true,
                }
            }
            Kind::OptReshape(inner) => **inner = inner.clone().any_order(),
        }
        self
    }
    /// Binds the matched node to `name` (the outer node of an optional reshape
    /// binds the node inside it; bind the reshape with another pattern).
    pub fn bind(mut self, name: &'static str) -> Pat {
        self.bind = Some(name);
        self
    }
    /// The node must have exactly one user and not be a root (folding it
    /// into a rewrite loses nothing).
    pub fn single_use(mut self) -> Pat {
        self.single_use = true;
        self
    }
    /// The node's shape must equal that of the node bound to `name` (bound
    /// earlier in the match: by an enclosing pattern or an earlier operand).
    pub fn same_shape_as(mut self, name: &'static str) -> Pat {
        self.same_shape_as = Some(name);
        self
    }
    /// Matches this pattern, or a reshape of a node that matches it (passes
    /// drop reshapes to the same shape, so a fused pattern may or may not
    /// still hold one).
    pub fn opt_reshape(self) -> Pat {
        Pat::new(Kind::OptReshape(Box::new(self)))
    }

    /// Whether the pattern matches at `n`, extending `m`; on `false`, `m`
    /// is as it was.
    fn at(&self, p: &Program, n: NodeId, m: &mut Match) -> Result<bool> {
        let mark = m.mark();
        let ok = self.try_at(p, n, m)?;
        if !ok {
            m.reset(mark);
        }
        Ok(ok)
    }

    fn try_at(&self, p: &Program, n: NodeId, m: &mut Match) -> Result<bool> {
        let node = p.graph.node(n)?;
        if self.single_use && !p.single_use(n) {
            return Ok(false);
        }
        if let Some(other) = self.same_shape_as {
            match m.get(other) {
                Some(o) if p.graph.shape(o)? == node.shape.dims() => {}
                _ => return Ok(false),
            }
        }
        match &self.kind {
            Kind::Any => self.bind_at(n, m),
            Kind::OptReshape(pat) => {
                let inner = match node.op {
                    Op::Reshape(_) => {
                        let (x, mark) = (p.graph.operands(n)[0], m.mark());
                        if pat.at(p, x, m)? {
                            if self.bind_at(x, m)? {
                                if !m.nodes.contains(&n) {
                                    m.nodes.insert(mark.1, n);
                                }
                                return Ok(true);
                            }
                            m.reset(mark); // bound elsewhere: try the reshape itself
                        }
                        n
                    }
                    _ => n,
                };
                Ok(pat.at(p, inner, m)? && self.bind_at(inner, m)?)
            }
            Kind::Op {
                test,
                args,
                any_order,
            } => {
                if !test(&node.op) || !self.bind_at(n, m)? {
                    return Ok(false);
                }
                if !m.nodes.contains(&n) {
                    m.nodes.push(n);
                }
                if let Some(args) = args {
                    let ops = p.graph.operands(n);
                    if ops.len() != args.len() {
                        return Ok(false);
                    }
                    let mark = m.mark();
                    let in_order = all_at(p, args, &ops, m)?;
                    if !in_order {
                        m.reset(mark);
                        let swapped: Vec<NodeId> = ops.iter().rev().copied().collect();
                        if !(*any_order && ops.len() == 2 && all_at(p, args, &swapped, m)?) {
                            return Ok(false);
                        }
                    }
                }
                Ok(true)
            }
        }
    }

    /// Binds `n` to this pattern's name, if it has one: `false` when the
    /// name is bound to another node already.
    fn bind_at(&self, n: NodeId, m: &mut Match) -> Result<bool> {
        let Some(name) = self.bind else {
            return Ok(true);
        };
        match m.get(name) {
            Some(o) => Ok(o == n),
            None => {
                m.caps.push((name, n));
                Ok(true)
            }
        }
    }

    /// Whether a node with op `op` could match (the root's own test, no
    /// operands looked at): the cheap first check.
    pub fn may_match(&self, op: &Op) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Op { test, .. } => test(op),
            Kind::OptReshape(inner) => matches!(op, Op::Reshape(_)) || inner.may_match(op),
        }
    }

    /// Matches the pattern rooted at `n`.
    pub fn matches(&self, p: &Program, n: NodeId) -> Result<Option<Match>> {
        let mut m = Match {
            root: n,
            caps: Vec::new(),
            nodes: Vec::new(),
        };
        Ok(self.at(p, n, &mut m)?.then_some(m))
    }
}

/// Whether every pattern of `args` matches the node at the same position.
fn all_at(p: &Program, args: &[Pat], ops: &[NodeId], m: &mut Match) -> Result<bool> {
    for (a, &o) in args.iter().zip(ops) {
        if !a.at(p, o, m)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What a pattern matched: the root, the named captures, and every node it
/// matched an op at (root first), for the trace.
#[derive(Clone, Debug)]
pub struct Match {
    /// The node the pattern was tried at.
    pub root: NodeId,
    caps: Vec<(&'static str, NodeId)>,
    /// The nodes matched, root first.
    pub nodes: Vec<NodeId>,
}

impl Match {
    /// The node bound to `name`, if any.
    pub fn get(&self, name: &str) -> Option<NodeId> {
        self.caps.iter().find(|c| c.0 == name).map(|c| c.1)
    }
    /// The node bound to `name`. Panics if the rule's pattern binds no such
    /// name: a bug in the rule (every rule's test exercises its builder).
    pub fn node(&self, name: &str) -> NodeId {
        self.get(name)
            .unwrap_or_else(|| panic!("the pattern binds no `{name}`"))
    }
    fn mark(&self) -> (usize, usize) {
        (self.caps.len(), self.nodes.len())
    }
    fn reset(&mut self, (c, n): (usize, usize)) {
        self.caps.truncate(c);
        self.nodes.truncate(n);
    }
}

/// Builds the patch for a match, or `None` when the match does not fit after
/// all (shape arithmetic the pattern cannot express).
pub type Build = fn(&Program, &Match) -> Result<Option<Patch>>;

/// A rewrite rule: a name (shown in the trace), a pattern and a builder.
pub struct Rule {
    /// The rule's name.
    pub name: &'static str,
    /// What it matches.
    pub pattern: Pat,
    /// What it makes of a match.
    pub build: Build,
}

impl Rule {
    /// A rule.
    pub fn new(name: &'static str, pattern: Pat, build: Build) -> Rule {
        Rule {
            name,
            pattern,
            build,
        }
    }
}

/// A pass made of rules: at every live node (canonical order), the first
/// rule that matches and builds a patch rewrites it.
pub struct RulePass {
    name: &'static str,
    after: &'static [&'static str],
    before: &'static [&'static str],
    rules: Vec<Rule>,
}

impl RulePass {
    /// A pass named `name` applying `rules`.
    pub fn new(name: &'static str, rules: Vec<Rule>) -> RulePass {
        RulePass {
            name,
            after: &[],
            before: &[],
            rules,
        }
    }
    /// Declares passes that must run before this one when both are in a pipeline.
    pub fn after(mut self, passes: &'static [&'static str]) -> RulePass {
        self.after = passes;
        self
    }
    /// Declares passes that must run after this one when both are in a pipeline.
    pub fn before(mut self, passes: &'static [&'static str]) -> RulePass {
        self.before = passes;
        self
    }
}

impl Pass for RulePass {
    fn name(&self) -> &'static str {
        self.name
    }
    fn rules(&self) -> Vec<&'static str> {
        self.rules.iter().map(|r| r.name).collect()
    }
    fn after(&self) -> &'static [&'static str] {
        self.after
    }
    fn before(&self) -> &'static [&'static str] {
        self.before
    }
    fn run(&self, rw: &mut Rewriter) -> Result<usize> {
        let mut n = 0;
        for id in rw.live_nodes() {
            for rule in &self.rules {
                if rw.program().graph.node(id).is_err() {
                    break; // removed by an earlier rewrite in this sweep
                }
                // a node whose op the root test rejects costs next to
                // nothing: counted as an attempt, not timed
                let op = &rw.program().graph.node(id)?.op;
                if !rule.pattern.may_match(op) {
                    rw.tried(rule.name, Duration::ZERO);
                    continue;
                }
                let started = Instant::now();
                let built = match rule.pattern.matches(rw.program(), id)? {
                    Some(m) => (rule.build)(rw.program(), &m)?.map(|patch| (m, patch)),
                    None => None,
                };
                rw.tried(rule.name, started.elapsed());
                if let Some((m, patch)) = built {
                    if rw.apply(rule.name, &m.nodes, patch)?.is_some() {
                        n += 1;
                        break;
                    }
                    if rw.exhausted() {
                        return Ok(n); // the budget refused it: stop here
                    }
                }
            }
        }
        Ok(n)
    }
}
