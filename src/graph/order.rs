//! Canonical topological order: operands before users, ties broken by
//! creation order. Dumps number nodes `%0..%n` in this order and the
//! executor schedules in it, so both are deterministic by construction.
//!
//! Both orders take O(V log V + E) time and memory indexed by node (no
//! hashing): passes ask for the live nodes once per pass and round, so
//! this is on every compile's path.

use super::{Graph, NodeId};
use petgraph::visit::NodeIndexable;
use petgraph::Direction::{Incoming, Outgoing};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// All nodes of `graph` in canonical topological order.
pub fn topo_order(graph: &Graph) -> Vec<NodeId> {
    let nodes = graph.node_ids();
    let mut member = vec![false; graph.g.node_bound()];
    for n in &nodes {
        member[n.index()] = true;
    }
    order_of(graph, &nodes, &member)
}

/// The nodes that `roots` depend on (roots included), in canonical order.
/// Roots not in the graph are skipped.
pub fn ancestors_order(graph: &Graph, roots: &[NodeId]) -> Vec<NodeId> {
    let mut member = vec![false; graph.g.node_bound()];
    let mut nodes = Vec::new();
    let mut stack: Vec<NodeId> = roots
        .iter()
        .copied()
        .filter(|r| graph.g.contains_node(r.0))
        .collect();
    while let Some(n) = stack.pop() {
        if !member[n.index()] {
            member[n.index()] = true;
            nodes.push(n);
            stack.extend(
                graph
                    .g
                    .neighbors_directed(n.0, Incoming)
                    .map(|i| graph.id(i)),
            );
        }
    }
    order_of(graph, &nodes, &member)
}

/// `nodes` (those with `member` set) in canonical order: Kahn's algorithm
/// over distinct operands (`concat([a, b, a])` waits for `a` once), the
/// ready node created first going next.
fn order_of(graph: &Graph, nodes: &[NodeId], member: &[bool]) -> Vec<NodeId> {
    let mut pending = vec![0usize; member.len()];
    // the node whose operands (then users) were last counted at this index:
    // each distinct edge counts once however many operand slots it fills
    let mut seen = vec![usize::MAX; member.len()];
    let mut ready = BinaryHeap::new();
    for &n in nodes {
        let mut k = 0;
        for s in graph.g.neighbors_directed(n.0, Incoming) {
            if member[s.index()] && seen[s.index()] != n.index() {
                seen[s.index()] = n.index();
                k += 1;
            }
        }
        pending[n.index()] = k;
        if k == 0 {
            ready.push(Reverse((graph.g[n.0].seq, n)));
        }
    }
    seen.fill(usize::MAX);
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, n))) = ready.pop() {
        out.push(n);
        for u in graph.g.neighbors_directed(n.0, Outgoing) {
            let ui = u.index();
            if member[ui] && seen[ui] != n.index() {
                seen[ui] = n.index();
                pending[ui] -= 1;
                if pending[ui] == 0 {
                    ready.push(Reverse((graph.g[u].seq, graph.id(u))));
                }
            }
        }
    }
    out
}
