//! A character-level text corpus for language models: the text's distinct
//! characters as the vocabulary, the text as `i64` ids, the first 90% for
//! training and the rest for validation, and random windows of it as
//! batches (the character-level setup of nanoGPT's `shakespeare_char`).

use super::{bad, read_capped};
use crate::dtype::I64Tensor;
use crate::error::{KilnError, Result};
use crate::rng::Rng;
use std::path::Path;

/// Which part of a [`CharCorpus`] a batch is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The first 90% of the text.
    Train,
    /// The last 10% of the text.
    Validation,
}

/// A text as `i64` character ids over its own vocabulary (its distinct
/// characters, sorted by code point, so the same text gives the same ids).
#[derive(Clone, Debug)]
pub struct CharCorpus {
    vocab: Vec<char>,
    ids: Vec<i64>,
    split: usize,
}

/// The largest text file read, in bytes (1 GiB).
const MAX_TEXT_BYTES: u64 = 1 << 30;

impl CharCorpus {
    /// Reads a UTF-8 text file. `Err` naming the file if it cannot be read,
    /// is larger than 1 GiB, is not UTF-8 (giving the byte offset) or has
    /// fewer than 2 characters.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
        let bytes = read_capped(path, file, MAX_TEXT_BYTES + 1)?;
        if bytes.len() as u64 > MAX_TEXT_BYTES {
            return Err(bad(path, "larger than 1 GiB, the largest text read"));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            bad(
                path,
                format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
            )
        })?;
        Self::from_text(&text).map_err(|e| bad(path, e))
    }

    /// The corpus of `text`. `Err` if it has fewer than 2 characters.
    pub fn from_text(text: &str) -> Result<Self> {
        let mut vocab: Vec<char> = text.chars().collect();
        vocab.sort_unstable();
        vocab.dedup();
        let n = text.chars().count();
        if n < 2 {
            return Err(KilnError::Invalid(format!(
                "a text corpus needs at least 2 characters, found {n}"
            )));
        }
        // at most 0x110000 distinct chars: every id is below `dtype::MAX_INDEX`
        let ids = text
            .chars()
            .map(|c| vocab.binary_search(&c).map_or(0, |i| i as i64))
            .collect();
        Ok(CharCorpus {
            vocab,
            ids,
            split: (n * 9 / 10).max(1),
        })
    }

    /// The number of distinct characters (the model's vocabulary size).
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The number of characters in `split`.
    pub fn len(&self, split: Split) -> usize {
        self.ids(split).len()
    }

    /// The character ids of `split`.
    pub fn ids(&self, split: Split) -> &[i64] {
        match split {
            Split::Train => &self.ids[..self.split],
            Split::Validation => &self.ids[self.split..],
        }
    }

    /// The ids of `text`; `Err` naming the first character not in the
    /// vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        text.chars()
            .map(|c| {
                self.vocab.binary_search(&c).map(|i| i as i64).map_err(|_| {
                    KilnError::Invalid(format!(
                        "character {c:?} is not in the corpus's vocabulary of {}",
                        self.vocab.len()
                    ))
                })
            })
            .collect()
    }

    /// The text of `ids`; `Err` naming the first id outside
    /// `0..vocab_size()`.
    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        ids.iter()
            .map(|&i| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| self.vocab.get(i).copied())
                    .ok_or_else(|| {
                        KilnError::Invalid(format!(
                            "id {i} is outside the vocabulary 0..{}",
                            self.vocab.len()
                        ))
                    })
            })
            .collect()
    }

    /// A batch of `batch` windows of `context` characters starting at
    /// uniformly drawn positions of `split`: inputs `[batch, context]` and
    /// targets `[batch · context]`, each the character after its input
    /// (PyTorch's `cross_entropy` layout for `[batch · context, vocab]`
    /// logits).
    ///
    /// `Err` if `batch` or `context` is 0, if `split` has no more than
    /// `context` characters (no window fits), or if the batch's size
    /// overflows.
    pub fn batch(
        &self,
        split: Split,
        rng: &mut Rng,
        batch: usize,
        context: usize,
    ) -> Result<(I64Tensor, I64Tensor)> {
        let part = self.ids(split);
        if batch == 0 || context == 0 {
            return Err(KilnError::Invalid(format!(
                "text batch: batch {batch} and context {context} must both be at least 1"
            )));
        }
        if part.len() <= context {
            return Err(KilnError::Invalid(format!(
                "text batch: the {split:?} split has {} characters, too few for one window of \
                 {context} and its next character",
                part.len()
            )));
        }
        let n = batch.checked_mul(context).ok_or_else(|| {
            KilnError::Invalid(format!("text batch: {batch} x {context} ids overflow"))
        })?;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for v in [&mut x, &mut y] {
            v.try_reserve_exact(n)
                .map_err(|_| KilnError::Invalid(format!("text batch: cannot allocate {n} ids")))?;
        }
        for _ in 0..batch {
            let start = rng.below(part.len() - context);
            x.extend_from_slice(&part[start..start + context]);
            y.extend_from_slice(&part[start + 1..start + context + 1]);
        }
        Ok((
            I64Tensor::from_vec([batch, context], x)?,
            I64Tensor::from_vec([n], y)?,
        ))
    }
}
