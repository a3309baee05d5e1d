//! Canonical topological order: operands before users, ties broken by
//! creation order. Dumps number nodes `%0..%n` in this order and the
//! executor schedules in it, so both are deterministic by construction.

use super::{Graph, NodeId};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// All nodes of `graph` in canonical topological order.
pub fn topo_order(graph: &Graph) -> Vec<NodeId> {
    order_of(graph, graph.node_ids())
}

/// The nodes that `roots` depend on (roots included), in canonical order.
pub fn ancestors_order(graph: &Graph, roots: &[NodeId]) -> Vec<NodeId> {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<NodeId> = roots.to_vec();
    while let Some(n) = stack.pop() {
        if seen.insert(n) {
            stack.extend(graph.operands(n));
        }
    }
    order_of(graph, seen.into_iter().collect())
}

fn order_of(graph: &Graph, nodes: Vec<NodeId>) -> Vec<NodeId> {
    let member: std::collections::HashSet<NodeId> = nodes.iter().copied().collect();
    let mut pending: HashMap<NodeId, usize> = HashMap::new();
    let mut ready = BinaryHeap::new();
    for &n in &nodes {
        // distinct operands: `users` lists a user once however many of its
        // operands a node is (`concat([a, b, a])`)
        let mut ops = graph.operands(n);
        ops.sort_unstable();
        ops.dedup();
        let k = ops.iter().filter(|o| member.contains(o)).count();
        pending.insert(n, k);
        if k == 0 {
            ready.push(Reverse((graph.g[n.0].seq, n)));
        }
    }
    let mut out = Vec::with_capacity(nodes.len());
    while let Some(Reverse((_, n))) = ready.pop() {
        out.push(n);
        for u in graph.users(n) {
            if let Some(k) = pending.get_mut(&u) {
                *k -= 1;
                if *k == 0 {
                    ready.push(Reverse((graph.g[u.0].seq, u)));
                }
            }
        }
    }
    out
}
