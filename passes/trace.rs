//! The record of a compilation's rewrites: each [`Firing`] in order, and
//! per rule its attempts, rewrites and time ([`RuleStats`]), kept in a
//! [`RewriteLog`] with the rewrite budget.

use crate::graph::NodeId;
use std::time::Duration;

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
    /// Whether the rewrite budget refused a rewrite (the pipeline stopped
    /// there, short of its fixpoint).
    pub stopped: bool,
    pub(super) stop_after: Option<usize>,
    pub(super) applied: usize,
    /// The live nodes in canonical order as of `applied` rewrites.
    pub(super) live: Option<(usize, Vec<NodeId>)>,
    /// A topological position per node index (`u64::MAX`: unknown), kept
    /// valid across patches that keep it so (see `Rewriter::apply`).
    pub(super) pos: Vec<u64>,
    /// Whether `pos` is a topological order of the nodes that have one.
    pub(super) pos_valid: bool,
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
