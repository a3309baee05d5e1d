//! Loss functions, built from generic ops.

use crate::dtype::DType;
use crate::error::{attr_err, shape_err, KilnError, Result};
use crate::graph::{Graph, NodeId};
use crate::ops::OpBuilder;

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

/// Softmax cross-entropy of `logits [N, C]` against `i64` class `labels
/// [N]`, computed stably as `−log_softmax(logits)[label]`;
/// `torch.nn.functional.cross_entropy(logits, labels, reduction=...)` with
/// class-index targets and its defaults (`ignore_index=-100`, no smoothing;
/// see [`cross_entropy`]). `Err` if the shapes are not `[N, C]` and `[N]`
/// or the labels are not `i64`. Every run refuses a fed label outside
/// `0..C` other than −100, naming its position and value, where PyTorch raises.
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
/// `torch.nn.functional.cross_entropy` (defaults: mean, no smoothing,
/// `ignore_index` −100).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CrossEntropy {
    /// How per-sample losses are combined. A mean is over the samples
    /// whose label is not `ignore_index` (NaN when all are ignored, as in
    /// PyTorch).
    pub reduction: Reduction,
    /// `ε` in `0..=1`: the target is `(1 − ε)·one_hot + ε/C` over the `C`
    /// classes, so a sample's loss is `(1 − ε)·(−log p[label]) + ε·mean_c(−log p[c])`.
    pub label_smoothing: f32,
    /// A label that marks a sample to leave out: its loss and gradient are
    /// 0 and a mean does not count it. `None`: every label must be a class.
    pub ignore_index: Option<i64>,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        CrossEntropy {
            reduction: Reduction::Mean,
            label_smoothing: 0.0,
            ignore_index: Some(-100),
        }
    }
}

/// [`softmax_cross_entropy`] with all of [`CrossEntropy`]'s options
/// (`torch.nn.functional.cross_entropy(logits, labels, reduction=...,
/// label_smoothing=..., ignore_index=...)` with class-index targets).
/// `Err` if the shapes are not `[N, C]` and `[N]`, the labels are not
/// `i64`, or `label_smoothing` is not in `0..=1`. Every run refuses a fed
/// label outside `0..C` that is not `ignore_index`.
pub fn cross_entropy(
    g: &mut Graph,
    logits: NodeId,
    labels: NodeId,
    options: &CrossEntropy,
) -> Result<NodeId> {
    const OP: &str = "cross_entropy";
    let (reduction, smoothing) = (options.reduction, options.label_smoothing);
    if !(0.0..=1.0).contains(&smoothing) {
        return attr_err(
            OP,
            format!("label_smoothing must be in 0..=1, got {smoothing}"),
        );
    }
    let (ls, ys) = (g.shape(logits)?.to_vec(), g.shape(labels)?.to_vec());
    if ls.len() != 2 || ys != [ls[0]] {
        return shape_err(
            OP,
            format!(
                "logits have shape {ls:?} and labels {ys:?}; expected logits [N, C] and labels [N]"
            ),
        );
    }
    if g.dtype(labels)? != DType::I64 {
        return Err(KilnError::Type {
            op: OP.into(),
            message: format!(
                "labels are {}; class indices are i64 (declare them with Graph::input_i64)",
                g.dtype(labels)?
            ),
        });
    }
    let c = ls[1];
    if c == 0 {
        return shape_err(OP, format!("logits have shape {ls:?}: no classes"));
    }
    let one_hot = g.one_hot(labels, c, options.ignore_index)?;
    let logp = super::log_softmax(g, logits, -1)?;
    // a select, not one_hot · logp: another class's −∞ (a masked logit)
    // would give 0 · −∞ = NaN
    let zero = g.scalar(0.0)?;
    let picked = g.select(one_hot, logp, zero)?;
    let nll = g.sum(picked, &[1], false)?;
    let mut loss = g.neg(nll)?;
    // 1 for a sample that counts, 0 for an ignored one
    let counted = g.sum(one_hot, &[1], false)?;
    if smoothing > 0.0 {
        // (1 − ε)·nll + ε·mean_c(−log p), 0 for an ignored sample
        let mean_logp = g.mean(logp, &[1], false)?;
        let uniform = g.mul_scalar(mean_logp, -smoothing)?;
        let uniform = match options.ignore_index {
            Some(_) => g.select(counted, uniform, zero)?,
            None => uniform,
        };
        let kept = g.mul_scalar(loss, 1.0 - smoothing)?;
        loss = g.add(kept, uniform)?;
    }
    let out = match (reduction, options.ignore_index) {
        (Reduction::Mean, Some(_)) => {
            let total = g.sum(loss, &[0], false)?;
            let count = g.sum(counted, &[0], false)?;
            g.div(total, count)?
        }
        _ => reduce(g, loss, reduction)?,
    };
    g.set_name(out, "cross_entropy");
    Ok(out)
}

/// Binary cross-entropy of `logits` against target probabilities `target`
/// of the same shape, per element `(1 − t)·x + log(1 + e⁻ˣ)` (that is
/// `log(1 + eˣ) − x·t`), computed without overflow for any finite `x`
/// (`torch.nn.functional.binary_cross_entropy_with_logits` with
/// `reduction`; [`bce_with_logits`] adds `weight` and `pos_weight`).
/// Gradients: `σ(x) − t` for the logits (0.5 − t at x = 0) and `−x` for the
/// target. `Err` if the shapes differ.
pub fn binary_cross_entropy_with_logits(
    g: &mut Graph,
    logits: NodeId,
    target: NodeId,
    reduction: Reduction,
) -> Result<NodeId> {
    let options = BceWithLogits {
        reduction,
        ..BceWithLogits::default()
    };
    bce_with_logits(g, logits, target, &options)
}

/// The options of [`bce_with_logits`], PyTorch's keyword arguments of
/// `binary_cross_entropy_with_logits` (defaults: mean, no weights).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BceWithLogits {
    /// How per-element losses are combined.
    pub reduction: Reduction,
    /// A rescaling weight per element, broadcast to the logits' shape.
    pub weight: Option<NodeId>,
    /// The weight of positive targets, broadcast to the logits' shape
    /// (one per class, `[C]`, in PyTorch's use).
    pub pos_weight: Option<NodeId>,
}

/// [`binary_cross_entropy_with_logits`] with all of [`BceWithLogits`]'
/// options: per element `w·[(1 − t)·x + (1 + (p − 1)·t)·log(1 + e⁻ˣ)]`
/// with `p` the `pos_weight` (PyTorch's stable form), then reduced. `Err`
/// if the shapes differ or a weight does not broadcast to the logits' shape.
pub fn bce_with_logits(
    g: &mut Graph,
    logits: NodeId,
    target: NodeId,
    options: &BceWithLogits,
) -> Result<NodeId> {
    const OP: &str = "binary_cross_entropy_with_logits";
    let (xs, ts) = (g.shape(logits)?.to_vec(), g.shape(target)?.to_vec());
    if xs != ts {
        return shape_err(
            OP,
            format!("logits have shape {xs:?}, target {ts:?}; they must be equal"),
        );
    }
    let named = [
        ("logits", Some(logits)),
        ("target", Some(target)),
        ("weight", options.weight),
        ("pos_weight", options.pos_weight),
    ];
    for (what, n) in named {
        if let Some(n) = n.filter(|&n| g.dtype(n).is_ok_and(|d| d != DType::F32)) {
            return Err(KilnError::Type {
                op: OP.into(),
                message: format!(
                    "{what} is {}; it must be f32 (convert with to_f32)",
                    g.dtype(n)?
                ),
            });
        }
    }
    for (what, w) in [
        ("weight", options.weight),
        ("pos_weight", options.pos_weight),
    ] {
        if let Some(w) = w {
            let ws = g.shape(w)?.to_vec();
            if crate::shape::broadcast_pair(&ws, &xs).as_deref() != Some(&xs[..]) {
                return shape_err(
                    OP,
                    format!(
                        "{what} has shape {ws:?}, which does not broadcast to the logits' {xs:?}"
                    ),
                );
            }
        }
    }
    // (1 − t)·x + log(1 + e⁻ˣ), PyTorch's arrangement: +∞ at x = +∞, t = 0
    let neg = g.neg(logits)?;
    let mut softplus = softplus(g, neg, &xs)?;
    if let Some(p) = options.pos_weight {
        // 1 + (p − 1)·t
        let p1 = g.add_scalar(p, -1.0)?;
        let pt = g.mul(p1, target)?;
        let scale = g.add_scalar(pt, 1.0)?;
        softplus = g.mul(scale, softplus)?;
    }
    let minus_t = g.neg(target)?;
    let one_minus_t = g.add_scalar(minus_t, 1.0)?;
    let linear = g.mul(one_minus_t, logits)?;
    let mut loss = g.add(linear, softplus)?;
    if let Some(w) = options.weight {
        loss = g.mul(loss, w)?;
    }
    let out = reduce(g, loss, options.reduction)?;
    g.set_name(out, OP);
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
