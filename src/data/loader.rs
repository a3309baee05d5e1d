//! `DataLoader`: a data set in batches, shuffled with a seed, each batch
//! prepared on a background thread while the previous one is used
//! (PyTorch's `DataLoader` with one worker).

use super::Dataset;
use crate::dtype::I64Tensor;
use crate::error::{KilnError, Result};
use crate::rng::mix64;
use crate::tensor::{try_zeros, Tensor};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

/// Batches of a [`Dataset`]: `batch_size` samples each, in order or
/// shuffled with a seed (a new order every epoch), the last batch smaller
/// unless `drop_last` (PyTorch's defaults: no shuffle, keep the last batch).
#[derive(Clone, Debug)]
pub struct DataLoader {
    data: Arc<Dataset>,
    batch_size: usize,
    shuffle: Option<u64>,
    drop_last: bool,
}

/// One batch: samples `x [B, *sample]` and labels `y [B]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The samples.
    pub x: Tensor,
    /// Their labels.
    pub y: I64Tensor,
}

impl DataLoader {
    /// Batches of `batch_size` samples of `data`; `Err` if `batch_size` is 0.
    pub fn new(data: Arc<Dataset>, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(KilnError::Invalid(
                "DataLoader: batch_size must be at least 1".into(),
            ));
        }
        Ok(DataLoader {
            data,
            batch_size,
            shuffle: None,
            drop_last: false,
        })
    }
    /// A seeded random order, new every epoch (the order of epoch `e`
    /// depends on `seed` and `e` only).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }
    /// Leave out a last batch smaller than `batch_size`.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }
    /// The number of batches an epoch yields.
    pub fn len(&self) -> usize {
        let n = self.data.len();
        match self.drop_last {
            true => n / self.batch_size,
            false => n.div_ceil(self.batch_size),
        }
    }
    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batches of epoch `epoch`, prepared one ahead on a background
    /// thread; dropping the iterator stops the thread. Each item is an
    /// `Err` if the thread could not start or a batch could not be
    /// allocated.
    pub fn epoch(&self, epoch: u64) -> Batches {
        let mut order: Vec<usize> = (0..self.data.len()).collect();
        if let Some(seed) = self.shuffle {
            let mut rng = crate::rng::Rng::new(mix64(seed ^ mix64(epoch.wrapping_add(1))));
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
        }
        let batches = self.len();
        let (data, size) = (self.data.clone(), self.batch_size);
        let (tx, rx) = sync_channel(1);
        let worker = std::thread::Builder::new()
            .name("kiln-data".into())
            .spawn(move || {
                for chunk in order.chunks(size).take(batches) {
                    if tx.send(make_batch(&data, chunk)).is_err() {
                        return; // the iterator was dropped
                    }
                }
            });
        Batches {
            rx: worker.map(|_| rx).map_err(|e| {
                KilnError::Invalid(format!("DataLoader: cannot start its thread: {e}"))
            }),
            left: batches,
        }
    }
}

/// Samples `indices` of `data` as one batch.
fn make_batch(data: &Dataset, indices: &[usize]) -> Result<Batch> {
    let per: usize = data.sample_shape().iter().product();
    let b = indices.len();
    let mut shape = vec![b];
    shape.extend(data.sample_shape());
    let n = crate::shape::checked_numel("DataLoader batch", &shape)?;
    let mut x = Tensor::from_vec(shape, try_zeros("DataLoader batch", n)?)?;
    let mut y = I64Tensor::from_vec([b], vec![0; b])?;
    debug_assert_eq!(x.numel(), b * per);
    data.fill_batch(indices, &mut x, &mut y)?;
    Ok(Batch { x, y })
}

/// The batches of one epoch (see [`DataLoader::epoch`]).
pub struct Batches {
    rx: Result<Receiver<Result<Batch>>>,
    left: usize,
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match &self.rx {
            Ok(rx) => Some(rx.recv().unwrap_or_else(|_| {
                Err(KilnError::Invalid("DataLoader: its thread stopped".into()))
            })),
            Err(e) => {
                self.left = 0;
                Some(Err(e.clone()))
            }
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}
