//! Training-loop helpers for image classifiers whose graphs take images as
//! input `x [B, C, H, W]` and class indices as input `labels [B]`, and whose
//! trainer evaluates the logits `[B, classes]` as its first output.

use crate::data::Dataset;
use crate::dtype::I64Tensor;
use crate::error::{KilnError, Result};
use crate::graph::{Graph, NodeId};
use crate::nn::{self, Layer, Reduction};
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::trainer::Trainer;

/// Builds `net` on input `x [batch, *image]`, a softmax cross-entropy loss
/// against `labels [batch]` (PyTorch's `cross_entropy`, mean over the batch),
/// and a trainer that evaluates the logits. The trainer checks every fed
/// batch of labels (see [`Trainer::step`]).
///
/// `Err` if `batch` is 0, if one batch of images has more elements than
/// memory can address, or if the network, loss or optimiser does not build.
pub fn classifier_trainer(
    net: &dyn Layer,
    batch: usize,
    image: [usize; 3],
    seed: u64,
    optimizer: impl Optimizer,
) -> Result<Trainer> {
    batch_elements(batch, &image)?;
    let mut g = Graph::with_seed(seed);
    let x = g.input("x", [batch, image[0], image[1], image[2]])?;
    let labels = g.input_i64("labels", [batch])?;
    let logits: NodeId = net.build(&mut g, x)?;
    let loss = nn::softmax_cross_entropy(&mut g, logits, labels, Reduction::Mean)?;
    Trainer::with_outputs(g, loss, &[logits], optimizer)
}

/// The number of elements of one `[batch, *image]` batch; `Err` if `batch`
/// is 0 or the count (in bytes, as f32) overflows.
fn batch_elements(batch: usize, image: &[usize]) -> Result<usize> {
    if batch == 0 {
        return Err(KilnError::Invalid("batch size must be at least 1".into()));
    }
    image
        .iter()
        .try_fold(batch, |n, &d| n.checked_mul(d))
        .filter(|n| n.checked_mul(4).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| {
            KilnError::Invalid(format!(
                "batch size {batch}: a batch of {image:?} images is larger than memory can address"
            ))
        })
}

/// Zeroed `x [batch, *image]` and `y [batch]` buffers, allocated fallibly:
/// `Err` naming the batch size instead of aborting when memory runs out.
fn batch_buffers(batch: usize, image: &[usize]) -> Result<(Tensor, I64Tensor)> {
    let n = batch_elements(batch, image)?;
    let zeros = |len: usize| -> Result<Vec<f32>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len).map_err(|_| {
            KilnError::Invalid(format!(
                "batch size {batch}: cannot allocate {len} f32 values for one batch"
            ))
        })?;
        v.resize(len, 0.0);
        Ok(v)
    };
    let mut shape = vec![batch];
    shape.extend(image);
    Ok((
        Tensor::from_vec(shape, zeros(n)?)?,
        I64Tensor::from_vec([batch], vec![0; batch])?,
    ))
}

/// One epoch over `data` in a seeded random order with `batch`-sized steps
/// (a last partial batch is dropped, like PyTorch's `DataLoader` with
/// `drop_last=True`). Calls `progress(samples_done, loss)` after every
/// step; returns the mean loss.
///
/// `Err` if `batch` is 0, if `data` has fewer than `batch` samples (no step
/// could run, and the mean loss of no steps would be NaN), or if a step fails
/// (e.g. a label that is not a class index, naming it).
pub fn train_epoch(
    trainer: &mut Trainer,
    data: &Dataset,
    batch: usize,
    seed: u64,
    mut progress: impl FnMut(usize, f32),
) -> Result<f32> {
    if batch > data.len() {
        return Err(KilnError::Invalid(format!(
            "batch size {batch} is larger than the {} training samples: no step would run",
            data.len()
        )));
    }
    let (mut x, mut y) = batch_buffers(batch, data.sample_shape())?;
    let order = data.shuffled_indices(seed);
    let (mut total, mut steps) = (0.0f64, 0usize);
    for chunk in order.chunks_exact(batch) {
        data.fill_batch(chunk, &mut x, &mut y)?;
        let loss = trainer.step(&[("x", &x), ("labels", &y)])?;
        total += loss as f64;
        steps += 1;
        progress(steps * batch, loss);
    }
    Ok((total / steps.max(1) as f64) as f32)
}

/// Fraction of `data` whose largest logit is at its label (every sample
/// counted; a last partial batch is padded and the padding ignored; the
/// first of equal largest logits counts, as `torch.argmax`).
///
/// `Err` if `data` is empty (an accuracy of no samples means nothing), if
/// `batch` is 0, or if the evaluation fails.
pub fn accuracy(trainer: &mut Trainer, data: &Dataset, batch: usize) -> Result<f32> {
    if data.is_empty() {
        return Err(KilnError::Invalid(
            "accuracy: the evaluation set has no samples".into(),
        ));
    }
    let (mut x, mut y) = batch_buffers(batch, data.sample_shape())?;
    let all: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    for chunk in all.chunks(batch) {
        data.fill_batch(chunk, &mut x, &mut y)?;
        let logits = trainer.evaluate(&[("x", &x), ("labels", &y)])?.remove(0);
        let &[rows, classes] = logits.shape() else {
            return Err(KilnError::Invalid(format!(
                "accuracy: the trainer's first output has shape {:?}, expected logits [{batch}, classes]",
                logits.shape()
            )));
        };
        if rows != batch || classes == 0 {
            return Err(KilnError::Invalid(format!(
                "accuracy: the trainer's first output has shape {:?}, expected logits [{batch}, classes]",
                logits.shape()
            )));
        }
        for (row, &i) in chunk.iter().enumerate() {
            let r = &logits.data()[row * classes..(row + 1) * classes];
            let best = (0..classes).fold(0, |b, k| if r[k] > r[b] { k } else { b });
            correct += usize::from(best as i64 == data.labels()[i]);
        }
    }
    Ok(correct as f32 / data.len() as f32)
}
