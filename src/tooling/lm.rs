//! Training-loop helpers for the character language model
//! ([`CharTransformer`]) on a
//! [`CharCorpus`]: its trainer, the mean loss over batches of a split, and
//! sampling text from trained parameters.

use crate::compile::{compile, CompileOptions};
use crate::data::{CharCorpus, Split};
use crate::dtype::I64Tensor;
use crate::error::{KilnError, Result};
use crate::graph::Graph;
use crate::models::CharTransformer;
use crate::nn::{self, Layer, Reduction};
use crate::ops::OpBuilder;
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::trainer::Trainer;

/// A trainer of `model` on ids `x [batch, context]` against next-character
/// targets `labels [batch · context]` (PyTorch's `cross_entropy` over the
/// `[batch · context, vocab]` logits, mean over every position);
/// [`Trainer::evaluate`] returns `[loss]`.
pub fn lm_trainer(
    model: &CharTransformer,
    batch: usize,
    seed: u64,
    optimizer: impl Optimizer,
) -> Result<Trainer> {
    let t = model.context();
    let rows = batch.checked_mul(t).filter(|_| batch > 0).ok_or_else(|| {
        KilnError::Invalid(format!(
            "batch size {batch}: must be at least 1 and batch x {t} must fit"
        ))
    })?;
    let mut g = Graph::with_seed(seed);
    let x = g.input_i64("x", [batch, t])?;
    let labels = g.input_i64("labels", [rows])?;
    let logits = model.build(&mut g, x)?;
    let vocab = g.shape(logits)?.last().copied().unwrap_or(0);
    let flat = g.reshape(logits, &[rows as isize, vocab as isize])?;
    let loss = nn::softmax_cross_entropy(&mut g, flat, labels, Reduction::Mean)?;
    Trainer::new(g, loss, optimizer)
}

/// The mean loss of `trainer` (from [`lm_trainer`]) over `batches` batches
/// of `split` drawn with `seed` (the same windows for the same seed). `Err`
/// if `batches` is 0 or a batch cannot be drawn.
pub fn mean_loss(
    trainer: &mut Trainer,
    corpus: &CharCorpus,
    split: Split,
    batches: usize,
    seed: u64,
) -> Result<f32> {
    if batches == 0 {
        return Err(KilnError::Invalid(
            "mean loss: no batches to average (batches is 0)".into(),
        ));
    }
    let (batch, context) = lm_input(trainer)?;
    let mut rng = Rng::new(seed);
    let mut total = 0.0f64;
    for _ in 0..batches {
        let (x, y) = corpus.batch(split, &mut rng, batch, context)?;
        let loss = trainer.evaluate(&[("x", &x), ("labels", &y)])?;
        total += loss
            .first()
            .and_then(|l| l.data().first())
            .copied()
            .unwrap_or(f32::NAN) as f64;
    }
    Ok((total / batches.max(1) as f64) as f32)
}

/// The `[batch, context]` shape of the trainer's input `x`.
pub fn lm_input(trainer: &Trainer) -> Result<(usize, usize)> {
    let g = trainer.graph();
    let x = g.inputs().find(|(n, _)| *n == "x").map(|(_, id)| id);
    match x.map(|x| g.shape(x)).transpose()? {
        Some(&[b, t]) => Ok((b, t)),
        other => Err(KilnError::Invalid(format!(
            "language-model trainer: expected an input `x` of shape [batch, context], found {other:?}"
        ))),
    }
}

/// `prompt` followed by `chars` characters sampled from `model` with `params` (as
/// [`Trainer::params`] returns them), continuing `prompt`: each next
/// character is drawn from `softmax(logits / temperature)` at the last
/// position of a window of the last `context` characters (a batch of 1).
///
/// `Err` if the model's vocabulary is not the corpus's, if `prompt` is
/// empty or has a character outside the corpus's vocabulary, if
/// `temperature` is not positive and finite, if a parameter does not fit
/// the model, or if the logits at a step hold NaN (diverged parameters).
/// Parameters not in `params` keep their initial values.
pub fn sample(
    model: &CharTransformer,
    params: &[(String, Tensor)],
    corpus: &CharCorpus,
    prompt: &str,
    chars: usize,
    temperature: f32,
    seed: u64,
) -> Result<String> {
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(KilnError::Invalid(format!(
            "sampling temperature must be positive and finite, got {temperature}"
        )));
    }
    if model.vocab_size() != corpus.vocab_size() {
        return Err(KilnError::Invalid(format!(
            "sampling: the model reads a vocabulary of {} symbols, the corpus has {}",
            model.vocab_size(),
            corpus.vocab_size()
        )));
    }
    let mut ids = corpus.encode(prompt)?;
    if ids.is_empty() {
        return Err(KilnError::Invalid(
            "sampling needs a prompt of at least one character".into(),
        ));
    }
    let t = model.context();
    let mut g = Graph::with_seed(0);
    let x = g.input_i64("x", [1, t])?;
    let logits = model.build(&mut g, x)?;
    for (name, value) in params {
        g.set_param_value(name, value.clone())?;
    }
    let mut exe = compile(&g, &[logits], &CompileOptions::default())?;
    let vocab = model.vocab_size();
    let mut rng = Rng::new(seed);
    let mut window = I64Tensor::from_vec([1, t], vec![0; t])?;
    let mut probs = vec![0.0f64; vocab];
    for _ in 0..chars {
        let from = ids.len().saturating_sub(t);
        let len = ids.len() - from;
        window.data_mut()[..len].copy_from_slice(&ids[from..]);
        let out = exe.run(&[("x", &window)])?;
        let row = out[0]
            .data()
            .get((len - 1) * vocab..len * vocab)
            .ok_or_else(|| {
                KilnError::Invalid(
                    "sampling: the model's logits are not [1, context, vocab]".into(),
                )
            })?;
        // softmax(row / temperature), in f64, then one uniform draw
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for (p, &v) in probs.iter_mut().zip(row) {
            *p = (((v - max) / temperature) as f64).exp();
        }
        let total: f64 = probs.iter().sum();
        if row.iter().any(|v| !v.is_finite()) || !(total.is_finite() && total > 0.0) {
            return Err(KilnError::Invalid(format!(
                "sampling: the model's logits after {} characters are not finite (its \
                 parameters have diverged)",
                ids.len()
            )));
        }
        let mut u = rng.uniform() as f64 * total;
        let next = probs
            .iter()
            .position(|&p| {
                u -= p;
                u < 0.0
            })
            .unwrap_or(vocab - 1);
        ids.push(next as i64);
    }
    corpus.decode(&ids)
}
