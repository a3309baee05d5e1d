//! Loss functions, built from generic ops.

use crate::error::{shape_err, Result};
use crate::graph::{Graph, NodeId};
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
/// (class indices stored as f32), computed stably as `−log_softmax(logits)[label]`.
///
/// A label outside `0..C` selects no class and contributes a loss of 0 (the
/// graph cannot raise at run time); [`check_labels`] validates a batch first.
pub fn softmax_cross_entropy(
    g: &mut Graph,
    logits: NodeId,
    labels: NodeId,
    reduction: Reduction,
) -> Result<NodeId> {
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
    let classes = g.constant(Tensor::from_vec(
        [1, c],
        (0..c).map(|i| i as f32).collect(),
    )?)?;
    let col = g.reshape(labels, &[n as isize, 1])?;
    let one_hot = g.eq(col, classes)?;
    let logp = super::log_softmax(g, logits, -1)?;
    let picked = g.mul(one_hot, logp)?;
    let nll = g.sum(picked, &[1], false)?;
    let loss = g.neg(nll)?;
    let out = reduce(g, loss, reduction)?;
    g.set_name(out, "cross_entropy");
    Ok(out)
}

/// Checks that every label is an integer class index in `0..classes`.
pub fn check_labels(labels: &Tensor, classes: usize) -> Result<()> {
    if let Some((i, &v)) = labels
        .data()
        .iter()
        .enumerate()
        .find(|(_, &v)| v.fract() != 0.0 || v < 0.0 || v >= classes as f32)
    {
        return Err(crate::error::KilnError::Invalid(format!(
            "label {i} is {v}, not a class index in 0..{classes}"
        )));
    }
    Ok(())
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
