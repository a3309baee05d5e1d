//! Loss functions, built from generic ops.

use crate::error::{shape_err, Result};
use crate::graph::{Graph, NodeId};
use crate::ops::OpBuilder;
use crate::ops::{BinaryOp, Op};
use crate::ops::{Constant, Input};
use crate::tensor::Tensor;

/// How per-sample losses are combined (PyTorch's `reduction`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The mean over the batch (default).
    #[default]
    Mean,
    /// The sum over the batch.
    Sum,
    /// One loss per sample.
    None,
}

fn reduce(g: &mut Graph, per_sample: NodeId, reduction: Reduction) -> Result<NodeId> {
    let rank = g.shape(per_sample)?.len() as isize;
    let axes: Vec<isize> = (0..rank).collect();
    match reduction {
        Reduction::None => Ok(per_sample),
        _ if axes.is_empty() => Ok(per_sample),
        Reduction::Mean => g.mean(per_sample, &axes, false),
        Reduction::Sum => g.sum(per_sample, &axes, false),
    }
}

/// Softmax cross-entropy of `logits [N, C]` against integer class `labels [N]`
/// (class indices stored as f32), computed stably as `−log_softmax(logits)[label]`;
/// `torch.nn.functional.cross_entropy(logits, labels, reduction=...)` with
/// class-index targets. `Err` if the shapes are not `[N, C]` and `[N]`.
///
/// The graph's own rule: a label that is not an integer in `0..C` (out of
/// range, fractional, NaN or infinite) selects no class and contributes a
/// loss (and gradient) of 0 (with label smoothing, only its smoothing
/// term), where PyTorch raises — a graph cannot raise at
/// run time. So that this never passes silently, [`crate::Trainer`] finds every
/// input that feeds the labels of a `softmax_cross_entropy` in its graph
/// ([`label_inputs`]) and checks each fed batch with [`check_labels`] before
/// running, returning an `Err` naming the bad label's index and value. Code
/// that compiles such a graph itself should call [`check_labels`] on every batch.
pub fn softmax_cross_entropy(
    g: &mut Graph,
    logits: NodeId,
    labels: NodeId,
    reduction: Reduction,
) -> Result<NodeId> {
    let options = CrossEntropy {
        reduction,
        ..CrossEntropy::default()
    };
    cross_entropy(g, logits, labels, &options)
}

/// The options of [`cross_entropy`], PyTorch's keyword arguments of
/// `torch.nn.functional.cross_entropy` (defaults: mean, no smoothing).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CrossEntropy {
    /// How per-sample losses are combined.
    pub reduction: Reduction,
    /// `ε` in `0..=1`: the target is `(1 − ε)·one_hot + ε/C` over the `C`
    /// classes, so a sample's loss is `(1 − ε)·(−log p[label]) + ε·mean_c(−log p[c])`.
    pub label_smoothing: f32,
}

/// [`softmax_cross_entropy`] with all of [`CrossEntropy`]'s options
/// (`torch.nn.functional.cross_entropy(logits, labels, reduction=...,
/// label_smoothing=...)` with class-index targets; labels as there). `Err`
/// if the shapes are not `[N, C]` and `[N]`, or `label_smoothing` is not in `0..=1`.
pub fn cross_entropy(
    g: &mut Graph,
    logits: NodeId,
    labels: NodeId,
    options: &CrossEntropy,
) -> Result<NodeId> {
    let (reduction, smoothing) = (options.reduction, options.label_smoothing);
    if !(0.0..=1.0).contains(&smoothing) {
        return shape_err(
            "softmax_cross_entropy",
            format!("label_smoothing must be in 0..=1, got {smoothing}"),
        );
    }
    let (ls, ys) = (g.shape(logits)?.to_vec(), g.shape(labels)?.to_vec());
    if ls.len() != 2 || ys != [ls[0]] {
        return shape_err(
            "softmax_cross_entropy",
            format!(
                "logits have shape {ls:?} and labels {ys:?}; expected logits [N, C] and labels [N]"
            ),
        );
    }
    let (n, c) = (ls[0], ls[1]);
    if c == 0 {
        return shape_err(
            "softmax_cross_entropy",
            format!("logits have shape {ls:?}: no classes"),
        );
    }
    let classes = g.constant(Tensor::from_vec(
        [1, c],
        (0..c).map(|i| i as f32).collect(),
    )?)?;
    let col = g.reshape(labels, &[n as isize, 1])?;
    let one_hot = g.eq(col, classes)?;
    let logp = super::log_softmax(g, logits, -1)?;
    // a select, not one_hot · logp: another class's −∞ (a masked logit)
    // would give 0 · −∞ = NaN
    let zero = g.scalar(0.0)?;
    let picked = g.select(one_hot, logp, zero)?;
    let nll = g.sum(picked, &[1], false)?;
    let mut loss = g.neg(nll)?;
    if smoothing > 0.0 {
        // (1 − ε)·nll + ε·mean_c(−log p)
        let mean_logp = g.mean(logp, &[1], false)?;
        let uniform = g.mul_scalar(mean_logp, -smoothing)?;
        let kept = g.mul_scalar(loss, 1.0 - smoothing)?;
        loss = g.add(kept, uniform)?;
    }
    let out = reduce(g, loss, reduction)?;
    g.set_name(out, "cross_entropy");
    Ok(out)
}

/// Checks that every label is an integer class index in `0..classes`, as
/// PyTorch's `cross_entropy` requires of class-index targets. `Err` naming
/// the first bad label's index (row-major) and value otherwise (out of range,
/// fractional, NaN or infinite).
pub fn check_labels(labels: &Tensor, classes: usize) -> Result<()> {
    if let Some((i, &v)) = labels
        .data()
        .iter()
        .enumerate()
        .find(|(_, &v)| !(v.fract() == 0.0 && v >= 0.0 && (v as f64) < classes as f64))
    {
        return Err(crate::error::KilnError::Invalid(format!(
            "label {i} is {v}, not a class index in 0..{classes}"
        )));
    }
    Ok(())
}

/// The inputs of `graph` that feed the labels of a [`softmax_cross_entropy`],
/// each with its number of classes `C`, sorted by name: the feeds whose
/// values must pass [`check_labels`]. Labels computed by other ops (not an
/// input, possibly reshaped) are not found.
pub fn label_inputs(graph: &Graph) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    for id in graph.node_ids() {
        let Ok(node) = graph.node(id) else { continue };
        if node.op != Op::Binary(BinaryOp::Eq) || node.shape.dims().len() != 2 {
            continue;
        }
        let ops = graph.operands(id);
        let (Some(&col), Some(&classes)) = (ops.first(), ops.get(1)) else {
            continue;
        };
        // softmax_cross_entropy compares reshape(labels, [N, 1]) with the
        // constant [[0, 1, ..., C−1]]
        let c = node.shape.dims()[1];
        let is_arange = matches!(
            graph.node(classes).map(|n| &n.op),
            Ok(Op::Constant(Constant { value }))
                if value.shape() == [1, c]
                    && value.data().iter().enumerate().all(|(i, &v)| v == i as f32)
        );
        if !is_arange || !matches!(graph.node(col).map(|n| &n.op), Ok(Op::Reshape(_))) {
            continue;
        }
        let mut at = col;
        while let Ok(n) = graph.node(at) {
            match &n.op {
                Op::Reshape(_) => match graph.operands(at).first() {
                    Some(&x) => at = x,
                    None => break,
                },
                Op::Input(Input { name }) => {
                    if !found.iter().any(|(f, k)| f == name && *k == c) {
                        found.push((name.clone(), c));
                    }
                    break;
                }
                _ => break,
            }
        }
    }
    found.sort();
    found
}

/// Binary cross-entropy of `logits` against target probabilities `target`
/// of the same shape, per element `(1 − t)·x + log(1 + e⁻ˣ)` (that is
/// `log(1 + eˣ) − x·t`), computed without overflow for any finite `x` (`torch.nn.functional.binary_cross_entropy_with_logits`
/// with `reduction`; its `weight` and `pos_weight` are not supported).
/// Gradients: `σ(x) − t` for the logits (0.5 − t at x = 0) and `−x` for the
/// target. `Err` if the shapes differ.
pub fn binary_cross_entropy_with_logits(
    g: &mut Graph,
    logits: NodeId,
    target: NodeId,
    reduction: Reduction,
) -> Result<NodeId> {
    let (xs, ts) = (g.shape(logits)?.to_vec(), g.shape(target)?.to_vec());
    if xs != ts {
        return shape_err(
            "binary_cross_entropy_with_logits",
            format!("logits have shape {xs:?}, target {ts:?}; they must be equal"),
        );
    }
    // (1 − t)·x + log(1 + e⁻ˣ), PyTorch's arrangement: +∞ at x = +∞, t = 0
    let neg = g.neg(logits)?;
    let softplus = softplus(g, neg, &xs)?;
    let minus_t = g.neg(target)?;
    let one_minus_t = g.add_scalar(minus_t, 1.0)?;
    let linear = g.mul(one_minus_t, logits)?;
    let loss = g.add(linear, softplus)?;
    let out = reduce(g, loss, reduction)?;
    g.set_name(out, "binary_cross_entropy_with_logits");
    Ok(out)
}

/// `log(1 + eˣ)` of `x` (shape `shape`) without overflow: `x + log(1 + e⁻ˣ)`
/// where `x > 0`, else `log(1 + eˣ)`, each branch fed only the elements it
/// is chosen for (zeros elsewhere), so that neither overflows and the
/// unchosen branch's gradient is 0, not `0 · ∞`. The gradient is `σ(x)`
/// everywhere, 0.5 at 0; NaN stays NaN.
fn softplus(g: &mut Graph, x: NodeId, shape: &[usize]) -> Result<NodeId> {
    let zero = g.fill(shape, 0.0)?;
    let positive = g.gt(x, zero)?;
    let (xp, xn) = (g.select(positive, x, zero)?, g.select(positive, zero, x)?);
    let log1p_exp = |g: &mut Graph, v: NodeId| -> Result<NodeId> {
        let e = g.exp(v)?;
        let one_plus = g.add_scalar(e, 1.0)?;
        g.log(one_plus)
    };
    let neg = g.neg(xp)?;
    let tail = log1p_exp(g, neg)?;
    let above = g.add(xp, tail)?;
    let below = log1p_exp(g, xn)?;
    g.select(positive, above, below)
}

/// Mean-squared error between `pred` and `target` of the same shape.
pub fn mse_loss(
    g: &mut Graph,
    pred: NodeId,
    target: NodeId,
    reduction: Reduction,
) -> Result<NodeId> {
    let (ps, ts) = (g.shape(pred)?.to_vec(), g.shape(target)?.to_vec());
    if ps != ts {
        return shape_err(
            "mse_loss",
            format!("prediction has shape {ps:?}, target {ts:?}; they must be equal"),
        );
    }
    let d = g.sub(pred, target)?;
    let sq = g.mul(d, d)?;
    let out = reduce(g, sq, reduction)?;
    g.set_name(out, "mse");
    Ok(out)
}
