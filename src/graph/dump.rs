//! Deterministic graph dumps: text, Graphviz DOT and JSON.
//!
//! Nodes are numbered `%0..%n` in canonical topological order (never by
//! petgraph index), attributes are sorted and floats printed in one fixed
//! format, so the same graph always dumps to the same bytes.
//!
//! Text format, one node per line:
//! `%7 = matmul(%5, %6) : f32[8,128,1024]  # conv2d_0.matmul`

use super::order::topo_order;
use super::{Graph, NodeId};
use crate::error::{KilnError, Result};
use crate::ops::Op;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write;

/// A dump format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    /// One op per line.
    Text,
    /// Graphviz DOT.
    Dot,
    /// JSON (serde).
    Json,
}

impl std::str::FromStr for DumpFormat {
    type Err = KilnError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "text" => Ok(DumpFormat::Text),
            "dot" => Ok(DumpFormat::Dot),
            "json" => Ok(DumpFormat::Json),
            other => Err(KilnError::Invalid(format!(
                "unknown dump format `{other}` (text, dot, json)"
            ))),
        }
    }
}

/// Dumps `graph` (all its nodes) with `outputs` marked, in `format`.
pub fn dump(graph: &Graph, outputs: &[NodeId], format: DumpFormat) -> Result<String> {
    for &o in outputs {
        graph.node(o)?;
    }
    Ok(match format {
        DumpFormat::Text => to_text(graph, outputs),
        DumpFormat::Dot => to_dot(graph, outputs),
        DumpFormat::Json => to_json(graph, outputs),
    })
}

/// The nodes in canonical order and each node's number (`%k`) in the dumps.
pub(crate) fn numbering(graph: &Graph) -> (Vec<NodeId>, HashMap<NodeId, usize>) {
    let order = topo_order(graph);
    let num = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    (order, num)
}

fn shape_str(dtype: crate::DType, dims: &[usize]) -> String {
    let d: Vec<String> = dims.iter().map(|&d| crate::shape::dim_str(d)).collect();
    format!("{dtype}[{}]", d.join(","))
}

fn attr_str(op: &Op) -> String {
    let a: Vec<String> = op
        .attrs()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if a.is_empty() {
        String::new()
    } else {
        format!(" {{{}}}", a.join(", "))
    }
}

/// The text dump, one line per node. Outputs that are no node of `graph`
/// show as `%?` ([`dump`] refuses them instead).
pub fn to_text(graph: &Graph, outputs: &[NodeId]) -> String {
    let (order, num) = numbering(graph);
    let mut s = String::new();
    for &n in &order {
        let node = &graph.g[n.0];
        let args: Vec<String> = graph
            .operands(n)
            .iter()
            .map(|o| format!("%{}", num[o]))
            .collect();
        let _ = write!(
            s,
            "%{} = {}({}){} : {}",
            num[&n],
            node.op.name(),
            args.join(", "),
            attr_str(&node.op),
            type_str(node)
        );
        if let Some(name) = node.name.as_ref().filter(|_| !node.op.is_interface()) {
            // one line per node: a name's line breaks are written escaped
            let _ = write!(s, "  # {}", name.replace('\n', "\\n").replace('\r', "\\r"));
        }
        s.push('\n');
    }
    let outs: Vec<String> = outputs
        .iter()
        .map(|o| num.get(o).map_or("%?".into(), |k| format!("%{k}")))
        .collect();
    let _ = writeln!(s, "return {}", outs.join(", "));
    s
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// A node's type: `f32[..]` (or `i64[..]`), or `(f32[..], f32[..])` for a
/// multi-output op.
fn type_str(node: &crate::graph::Node) -> String {
    let one = shape_str(node.dtype, node.shape.dims());
    match node.op.num_outputs() {
        1 => one,
        k => format!("({})", vec![one; k].join(", ")),
    }
}

/// The Graphviz DOT dump.
pub fn to_dot(graph: &Graph, outputs: &[NodeId]) -> String {
    let (order, num) = numbering(graph);
    let mut s = String::from("digraph kiln {\n  node [shape=box, fontname=\"monospace\"];\n");
    for &n in &order {
        let node = &graph.g[n.0];
        let mut parts = vec![
            format!("%{} {}{}", num[&n], node.op.name(), attr_str(&node.op)),
            type_str(node),
        ];
        parts.extend(node.name.clone());
        let label: Vec<String> = parts.iter().map(|p| dot_escape(p)).collect();
        let style = if outputs.contains(&n) {
            ", style=bold"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "  n{} [label=\"{}\"{}];",
            num[&n],
            label.join("\\n"),
            style
        );
    }
    for &n in &order {
        for (i, o) in graph.operands(n).iter().enumerate() {
            let _ = writeln!(s, "  n{} -> n{} [label=\"{i}\"];", num[o], num[&n]);
        }
    }
    s.push_str("}\n");
    s
}

#[derive(Serialize)]
struct JsonNode<'a> {
    id: usize,
    kind: &'static str,
    op: &'a Op,
    inputs: Vec<usize>,
    shape: &'a [usize],
    /// The element type, when not f32.
    #[serde(skip_serializing_if = "Option::is_none")]
    dtype: Option<crate::DType>,
    /// Number of outputs (each of `shape`), when more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonGraph<'a> {
    nodes: Vec<JsonNode<'a>>,
    outputs: Vec<usize>,
}

/// The JSON dump: `{"nodes": [{"id", "kind", "op", "inputs", "shape", "dtype", "name"}], "outputs": [...]}`
/// (`dtype` only where not f32),
/// where `op` is the serde form of [`Op`] with all its attributes. Outputs
/// that are no node of `graph` are left out ([`dump`] refuses them).
pub fn to_json(graph: &Graph, outputs: &[NodeId]) -> String {
    let (order, num) = numbering(graph);
    let nodes = order
        .iter()
        .map(|&n| {
            let node = &graph.g[n.0];
            JsonNode {
                id: num[&n],
                kind: node.op.name(),
                op: &node.op,
                inputs: graph.operands(n).iter().map(|o| num[o]).collect(),
                shape: node.shape.dims(),
                dtype: Some(node.dtype).filter(|&d| d != crate::DType::F32),
                outputs: Some(node.op.num_outputs()).filter(|&k| k > 1),
                name: node.name.as_deref(),
            }
        })
        .collect();
    let g = JsonGraph {
        nodes,
        outputs: outputs.iter().filter_map(|o| num.get(o).copied()).collect(),
    };
    let mut s = serde_json::to_string_pretty(&g).expect("graph JSON serialisation cannot fail");
    s.push('\n');
    s
}
