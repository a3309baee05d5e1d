//! A model summary in the manner of torchinfo's `summary(model, input_size)`:
//! every layer, nested as the containers nest them, with its output shape
//! and the trainable parameters it declares, then the totals.

use super::Layer;
use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::shape::dims_str;
use std::fmt;

/// One layer of a [`Summary`].
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// Nesting depth (0: the summarised layer itself).
    pub depth: usize,
    /// The layer's kind ([`Layer::kind`]).
    pub kind: String,
    /// Its output shape.
    pub output: Vec<usize>,
    /// Trainable parameter elements it declares, its children's included.
    pub params: usize,
}

/// What [`summary`] returns; `Display` prints it as a table (a symbolic
/// batch, [`crate::BATCH`], as `B`).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The layers, depth first in build order.
    pub rows: Vec<SummaryRow>,
    /// The input shape.
    pub input: Vec<usize>,
    /// Trainable parameter elements in all.
    pub params: usize,
    /// Elements of state the layers keep (BatchNorm's running statistics).
    pub buffers: usize,
}

/// Builds `layer` on an input of shape `input` in a scratch graph and
/// lists its layers (containers' children nested under them, as
/// [`Layer::children`] gives them), output shapes and parameter counts.
/// `Err` as building the layer would give (naming the layer that refused
/// the shape).
pub fn summary(layer: &dyn Layer, input: &[usize]) -> Result<Summary> {
    summary_of(layer, input, crate::DType::F32)
}

/// [`summary`] for an input of element type `dtype` (`i64` token ids for a
/// language model).
pub fn summary_of(layer: &dyn Layer, input: &[usize], dtype: crate::DType) -> Result<Summary> {
    let mut g = Graph::new();
    let x = match dtype {
        crate::DType::I64 => g.input_i64("x", input.to_vec())?,
        crate::DType::F32 => g.input("x", input.to_vec())?,
    };
    let mut rows = Vec::new();
    visit(layer, &mut g, x, 0, &mut rows)?;
    let (params, buffers) = counts(&g);
    Ok(Summary {
        rows,
        input: input.to_vec(),
        params,
        buffers,
    })
}

/// Builds `layer` on `x`, pushing its row and (for a container) its
/// children's; returns the output.
fn visit(
    layer: &dyn Layer,
    g: &mut Graph,
    x: NodeId,
    depth: usize,
    rows: &mut Vec<SummaryRow>,
) -> Result<NodeId> {
    let before = counts(g).0;
    let at = rows.len();
    rows.push(SummaryRow {
        depth,
        kind: layer.kind(),
        output: Vec::new(),
        params: 0,
    });
    let children = layer.children();
    let y = if children.is_empty() {
        layer.build(g, x)?
    } else {
        let mut h = x;
        for child in children {
            h = visit(child, g, h, depth + 1, rows)?;
        }
        h
    };
    rows[at].output = g.shape(y)?.to_vec();
    rows[at].params = counts(g).0 - before;
    Ok(y)
}

/// Trainable parameter elements and state elements of `g`.
fn counts(g: &Graph) -> (usize, usize) {
    let trainable: std::collections::HashSet<String> =
        g.trainable_params().into_iter().map(|p| p.0).collect();
    g.params().fold((0, 0), |(p, b), (name, _, value)| {
        match trainable.contains(name) {
            true => (p + value.numel(), b),
            false => (p, b + value.numel()),
        }
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = |r: &SummaryRow| match r.depth {
            0 => r.kind.clone(),
            d => format!("{}└─{}", "  ".repeat(d - 1), r.kind),
        };
        let width = self
            .rows
            .iter()
            .map(|r| label(r).chars().count())
            .max()
            .unwrap_or(0);
        let width = width.max("Layer (type)".len()) + 2;
        writeln!(
            f,
            "{:width$}{:<24}{:>12}",
            "Layer (type)", "Output Shape", "Param #"
        )?;
        writeln!(f, "{}", "=".repeat(width + 36))?;
        for r in &self.rows {
            let pad = width - label(r).chars().count();
            let shape = dims_str(&r.output);
            writeln!(
                f,
                "{}{}{shape:<24}{:>12}",
                label(r),
                " ".repeat(pad),
                grouped(r.params)
            )?;
        }
        writeln!(f, "{}", "=".repeat(width + 36))?;
        writeln!(f, "Input shape: {}", dims_str(&self.input))?;
        writeln!(f, "Trainable params: {}", grouped(self.params))?;
        write!(f, "Buffers (running statistics): {}", grouped(self.buffers))
    }
}

/// `1234567` as `1,234,567`.
fn grouped(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
