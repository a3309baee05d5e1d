//! Labelled data sets in memory ([`Dataset`]: f32 samples of one shape and
//! `i64` class labels) from MNIST-format IDX files, `.npy` files or CSV, and
//! a [`DataLoader`] that batches them (shuffled with a seed, on a
//! background thread), as PyTorch's `DataLoader`.
//!
//! An IDX directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`
//! and the test pair named `t10k-*` or `test-*`, each optionally `.gz`.
//! Pixels are scaled to `[0, 1]` and laid out `[N, 1, rows, cols]` (NCHW).
//!
//! For language models, [`CharCorpus`] holds a text as character ids.

mod csv;
mod loader;
mod npy;
mod text;

pub use self::csv::CsvOptions;
pub use loader::{Batch, Batches, DataLoader};
pub use text::{CharCorpus, Split};

use crate::dtype::I64Tensor;
use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Samples of one shape (images `[C, H, W]`, feature rows `[F]`, ...) with
/// integer class labels, in memory.
#[derive(Clone, Debug)]
pub struct Dataset {
    samples: Vec<f32>,
    labels: Vec<i64>,
    sample_shape: Vec<usize>,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> KilnError {
    KilnError::Invalid(format!("{}: {what}", path.display()))
}

/// Reads up to `limit` bytes from `r` into a vector grown fallibly, so a
/// huge stream is an `Err` rather than an abort.
fn read_capped(path: &Path, mut r: impl Read, limit: u64) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let room = limit.saturating_sub(out.len() as u64);
        if room == 0 {
            return Ok(out);
        }
        let want = chunk.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = match r.read(&mut chunk[..want]) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(path, format!("cannot read: {e}"))),
        };
        out.try_reserve(n).map_err(|_| {
            bad(
                path,
                format!("out of memory after reading {} bytes", out.len()),
            )
        })?;
        out.extend_from_slice(&chunk[..n]);
    }
}

/// Reads an IDX file of unsigned bytes (gzip detected by its magic bytes):
/// its dimensions and data bytes, as torchvision's MNIST reader does.
///
/// The header's dimensions fix the data size: it is computed with checked
/// arithmetic before anything is allocated, and at most one byte more than
/// it is read (or decompressed), so a small file cannot inflate to gigabytes.
/// `Err` naming the file if it cannot be read, is not IDX (bad magic), has a
/// truncated header, dimensions whose product overflows, or data shorter or
/// longer than its dimensions need.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let file_len = file.metadata().map(|m| m.len()).ok();
    let mut file = std::io::BufReader::new(file);
    let got = read_capped(path, &mut file, 2)?;
    let gzip = got == [0x1f, 0x8b];
    let rest = std::io::Read::chain(&got[..], file);
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(rest))
    } else {
        Box::new(rest)
    };
    let corrupt = |e: KilnError| match e {
        KilnError::Invalid(m) if gzip => {
            KilnError::Invalid(m.replace("cannot read", "corrupt gzip data"))
        }
        e => e,
    };
    let magic = read_capped(path, &mut reader, 4).map_err(corrupt)?;
    if magic.len() < 4 || magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 {
        return Err(bad(
            path,
            "not an IDX file of unsigned bytes (bad magic number)",
        ));
    }
    let rank = magic[3] as usize;
    let header = read_capped(path, &mut reader, 4 * rank as u64).map_err(corrupt)?;
    if header.len() < 4 * rank {
        return Err(bad(
            path,
            format!(
                "truncated IDX header: {rank} dimensions need {} header bytes, the file has {}",
                4 + 4 * rank,
                4 + header.len()
            ),
        ));
    }
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| u64::try_from(n).is_ok_and(|n| n < u64::MAX))
        .ok_or_else(|| {
            bad(
                path,
                format!("dimensions {dims:?}: their product overflows, no file can hold that many bytes"),
            )
        })?;
    let size_err = |have: String| {
        bad(
            path,
            format!("dimensions {dims:?} need {want} data bytes, the file has {have}"),
        )
    };
    if let (false, Some(len)) = (gzip, file_len) {
        // a plain file's size is known: compare before allocating anything
        let have = len.saturating_sub(4 + 4 * rank as u64);
        if have != want as u64 {
            return Err(size_err(have.to_string()));
        }
    }
    let data = read_capped(path, &mut reader, want as u64 + 1).map_err(corrupt)?;
    if data.len() != want {
        return Err(size_err(if data.len() > want {
            "more".to_string()
        } else {
            data.len().to_string()
        }));
    }
    Ok((dims, data))
}

/// `v` converted by `f` into a vector allocated fallibly.
fn convert<T>(path: &Path, v: &[u8], f: impl Fn(u8) -> T) -> Result<Vec<T>> {
    let mut out: Vec<T> = Vec::new();
    out.try_reserve_exact(v.len())
        .map_err(|_| bad(path, format!("out of memory converting {} bytes", v.len())))?;
    out.extend(v.iter().map(|&b| f(b)));
    Ok(out)
}

fn find(dir: &Path, stems: &[&str]) -> Result<PathBuf> {
    for stem in stems {
        for ext in ["", ".gz"] {
            let p = dir.join(format!("{stem}{ext}"));
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(bad(
        dir,
        format!(
            "no {} file (optionally .gz) in this directory",
            stems.join(" or ")
        ),
    ))
}

impl Dataset {
    /// Loads an images file and a labels file (IDX), checking that they agree.
    pub fn from_idx(images: &Path, labels: &Path) -> Result<Self> {
        let (idims, pixels) = read_idx(images)?;
        let (ldims, lbytes) = read_idx(labels)?;
        if idims.len() != 3 {
            return Err(bad(
                images,
                format!("expected images [N, rows, cols], found dimensions {idims:?}"),
            ));
        }
        if ldims != [idims[0]] {
            return Err(bad(
                labels,
                format!(
                    "{:?} labels for {} images in {}",
                    ldims,
                    idims[0],
                    images.display()
                ),
            ));
        }
        Ok(Dataset {
            samples: convert(images, &pixels, |p| p as f32 / 255.0)?,
            labels: convert(labels, &lbytes, i64::from)?,
            sample_shape: vec![1, idims[1], idims[2]],
        })
    }

    /// Loads the train and test sets of an MNIST-format directory.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<(Dataset, Dataset)> {
        let dir = dir.as_ref();
        let train = Dataset::from_idx(
            &find(dir, &["train-images-idx3-ubyte"])?,
            &find(dir, &["train-labels-idx1-ubyte"])?,
        )?;
        let test = Dataset::from_idx(
            &find(dir, &["t10k-images-idx3-ubyte", "test-images-idx3-ubyte"])?,
            &find(dir, &["t10k-labels-idx1-ubyte", "test-labels-idx1-ubyte"])?,
        )?;
        Ok((train, test))
    }

    /// A data set of `samples` (row-major, `labels.len()` samples of
    /// `sample_shape` each) and their labels; `Err` if the sizes disagree.
    pub fn new(samples: Vec<f32>, labels: Vec<i64>, sample_shape: &[usize]) -> Result<Self> {
        let per = crate::shape::checked_numel("Dataset", sample_shape)?;
        if per.checked_mul(labels.len()) != Some(samples.len()) {
            return Err(KilnError::Invalid(format!(
                "Dataset: {} values are not {} samples of shape {sample_shape:?}",
                samples.len(),
                labels.len()
            )));
        }
        Ok(Dataset {
            samples,
            labels,
            sample_shape: sample_shape.to_vec(),
        })
    }

    /// The same samples viewed with another shape of equal size (CSV rows
    /// of 784 pixels as `[1, 28, 28]` images, say); `Err` if the sizes differ.
    pub fn with_sample_shape(mut self, shape: &[usize]) -> Result<Self> {
        let (have, want) = (
            self.sample_shape.iter().product::<usize>(),
            crate::shape::checked_numel("Dataset::with_sample_shape", shape)?,
        );
        if have != want {
            return Err(KilnError::Invalid(format!(
                "Dataset::with_sample_shape: samples of shape {:?} ({have} values) cannot be {shape:?} ({want})",
                self.sample_shape
            )));
        }
        self.sample_shape = shape.to_vec();
        Ok(self)
    }

    /// The first `n` samples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let per: usize = self.sample_shape.iter().product();
        Dataset {
            samples: self.samples[..n * per].to_vec(),
            labels: self.labels[..n].to_vec(),
            sample_shape: self.sample_shape.clone(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The shape of one sample (`[channels, rows, cols]` for images).
    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    /// The samples, row-major, one after another.
    pub fn samples(&self) -> &[f32] {
        &self.samples
    }

    /// Number of classes (largest label + 1).
    pub fn classes(&self) -> usize {
        self.labels.iter().fold(0, |m, &l| m.max(l)) as usize + 1
    }

    /// The labels.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// Copies samples `indices` into `x [B, *sample]` and `y [B]`; rows
    /// past the end of `indices` are zero samples with label 0 (padding a
    /// last, partial batch).
    ///
    /// `Err` naming the problem, with `x` and `y` unchanged, if an index is
    /// `≥ len()` (naming the index and the length), if `x` is not
    /// `[B, *sample]` with this dataset's sample shape, if `y` is not `[B]`,
    /// or if there are more indices than rows `B`.
    pub fn fill_batch(&self, indices: &[usize], x: &mut Tensor, y: &mut I64Tensor) -> Result<()> {
        let b = y.shape().first().copied().unwrap_or(0);
        let fits = x.shape().split_first() == Some((&b, &self.sample_shape[..]));
        if !fits || y.shape() != [b] {
            let dims: Vec<String> = self.sample_shape.iter().map(|d| d.to_string()).collect();
            return Err(KilnError::Invalid(format!(
                "fill_batch: x has shape {:?} and y {:?}; expected x [B, {}] and y [B]",
                x.shape(),
                y.shape(),
                dims.join(", ")
            )));
        }
        if indices.len() > b {
            return Err(KilnError::Invalid(format!(
                "fill_batch: {} indices for a batch of {b} rows",
                indices.len()
            )));
        }
        if let Some((pos, &i)) = indices.iter().enumerate().find(|(_, &i)| i >= self.len()) {
            return Err(KilnError::Invalid(format!(
                "fill_batch: index {i} (position {pos}) is out of range for a dataset of {} samples",
                self.len()
            )));
        }
        let per: usize = self.sample_shape.iter().product();
        let (xd, yd) = (x.data_mut(), y.data_mut());
        xd.fill(0.0);
        yd.fill(0);
        for (row, &i) in indices.iter().enumerate() {
            xd[row * per..(row + 1) * per].copy_from_slice(&self.samples[i * per..(i + 1) * per]);
            yd[row] = self.labels[i];
        }
        Ok(())
    }

    /// A seeded random permutation of `0..len`.
    pub fn shuffled_indices(&self, seed: u64) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        let mut rng = Rng::new(seed);
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i + 1));
        }
        idx
    }
}
