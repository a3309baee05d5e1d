//! Image-classification data in the MNIST IDX format (plain or gzip).
//!
//! A directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte` and
//! the test pair named `t10k-*` or `test-*`, each optionally `.gz`. Pixels are
//! scaled to `[0, 1]` and laid out `[N, 1, rows, cols]` (NCHW).

use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Images with integer class labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    images: Vec<f32>,
    labels: Vec<f32>,
    image_shape: [usize; 3],
}

fn bad(path: &Path, what: impl std::fmt::Display) -> KilnError {
    KilnError::Invalid(format!("{}: {what}", path.display()))
}

/// Reads an IDX file (gzip detected by its magic bytes): its dimensions and bytes.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("corrupt gzip data: {e}")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(bad(
            path,
            "not an IDX file of unsigned bytes (bad magic number)",
        ));
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let want: usize = dims.iter().product();
    if bytes.len() - header != want {
        return Err(bad(
            path,
            format!(
                "dimensions {dims:?} need {want} data bytes, the file has {}",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
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
            images: pixels.iter().map(|&p| p as f32 / 255.0).collect(),
            labels: lbytes.iter().map(|&l| l as f32).collect(),
            image_shape: [1, idims[1], idims[2]],
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

    /// The first `n` samples (all of them if there are fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let per: usize = self.image_shape.iter().product();
        Dataset {
            images: self.images[..n * per].to_vec(),
            labels: self.labels[..n].to_vec(),
            image_shape: self.image_shape,
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

    /// `[channels, rows, cols]` of one image.
    pub fn image_shape(&self) -> [usize; 3] {
        self.image_shape
    }

    /// Number of classes (largest label + 1).
    pub fn classes(&self) -> usize {
        self.labels.iter().fold(0.0f32, |m, &l| m.max(l)) as usize + 1
    }

    /// The labels.
    pub fn labels(&self) -> &[f32] {
        &self.labels
    }

    /// Copies samples `indices` into `x [B, C, H, W]` and `y [B]`; rows past
    /// the end of `indices` are zero images with label 0 (padding a last,
    /// partial batch).
    pub fn fill_batch(&self, indices: &[usize], x: &mut Tensor, y: &mut Tensor) {
        let per: usize = self.image_shape.iter().product();
        let (xd, yd) = (x.data_mut(), y.data_mut());
        xd.fill(0.0);
        yd.fill(0.0);
        for (row, &i) in indices.iter().enumerate() {
            xd[row * per..(row + 1) * per].copy_from_slice(&self.images[i * per..(i + 1) * per]);
            yd[row] = self.labels[i];
        }
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
