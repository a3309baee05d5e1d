//! Training-loop helpers for image classifiers whose graphs take images as
//! input `x [B, C, H, W]` and class indices as input `labels [B]`, and whose
//! trainer evaluates the logits `[B, classes]` as its first output.

use crate::data::Dataset;
use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::nn::{self, Layer, Reduction};
use crate::optim::Optimizer;
use crate::tensor::Tensor;
use crate::trainer::Trainer;

/// Builds `net` on input `x [batch, *image]`, a softmax cross-entropy loss
/// against `labels [batch]`, and a trainer that evaluates the logits.
pub fn classifier_trainer(
    net: &dyn Layer,
    batch: usize,
    image: [usize; 3],
    seed: u64,
    optimizer: impl Optimizer,
) -> Result<Trainer> {
    let mut g = Graph::with_seed(seed);
    let x = g.input("x", [batch, image[0], image[1], image[2]])?;
    let labels = g.input("labels", [batch])?;
    let logits: NodeId = net.build(&mut g, x)?;
    let loss = nn::softmax_cross_entropy(&mut g, logits, labels, Reduction::Mean)?;
    Trainer::with_outputs(g, loss, &[logits], optimizer)
}

/// One epoch over `data` in a seeded random order with `batch`-sized steps
/// (a last partial batch is dropped). Calls `progress(samples_done, loss)`
/// after every step; returns the mean loss.
pub fn train_epoch(
    trainer: &mut Trainer,
    data: &Dataset,
    batch: usize,
    seed: u64,
    mut progress: impl FnMut(usize, f32),
) -> Result<f32> {
    let [c, h, w] = data.image_shape();
    let (mut x, mut y) = (Tensor::zeros([batch, c, h, w]), Tensor::zeros([batch]));
    let order = data.shuffled_indices(seed);
    let (mut total, mut steps) = (0.0f64, 0usize);
    for chunk in order.chunks_exact(batch) {
        data.fill_batch(chunk, &mut x, &mut y);
        let loss = trainer.step(&[("x", &x), ("labels", &y)])?;
        total += loss as f64;
        steps += 1;
        progress(steps * batch, loss);
    }
    Ok(if steps == 0 {
        f32::NAN
    } else {
        (total / steps as f64) as f32
    })
}

/// Fraction of `data` whose largest logit is at its label (every sample
/// counted; a last partial batch is padded and the padding ignored).
pub fn accuracy(trainer: &mut Trainer, data: &Dataset, batch: usize) -> Result<f32> {
    let [c, h, w] = data.image_shape();
    let (mut x, mut y) = (Tensor::zeros([batch, c, h, w]), Tensor::zeros([batch]));
    let all: Vec<usize> = (0..data.len()).collect();
    let mut correct = 0usize;
    for chunk in all.chunks(batch) {
        data.fill_batch(chunk, &mut x, &mut y);
        let logits = trainer.evaluate(&[("x", &x), ("labels", &y)])?.remove(0);
        let classes = logits.shape()[1];
        for (row, &i) in chunk.iter().enumerate() {
            let r = &logits.data()[row * classes..(row + 1) * classes];
            let best = (0..classes).fold(0, |b, k| if r[k] > r[b] { k } else { b });
            correct += usize::from(best as f32 == data.labels()[i]);
        }
    }
    Ok(correct as f32 / data.len().max(1) as f32)
}
