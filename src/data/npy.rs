//! `.npy` files (NumPy's `np.save` format, read with the `npyz` crate).

use super::{bad, Dataset};
use crate::error::Result;
use npyz::{NpyFile, Order};
use std::io::BufReader;
use std::path::Path;

/// An open `.npy` file: its shape and element count, checked to be a C-order
/// array whose size fits in memory arithmetic.
fn open(path: &Path) -> Result<(NpyFile<BufReader<std::fs::File>>, Vec<usize>, usize)> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let npy = NpyFile::new(BufReader::new(file))
        .map_err(|e| bad(path, format!("not a .npy file: {e}")))?;
    if npy.order() == Order::Fortran {
        return Err(bad(
            path,
            "Fortran-ordered array: save it with np.ascontiguousarray first",
        ));
    }
    let shape: Vec<usize> = npy
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(path, format!("dimension {d} is too large"))))
        .collect::<Result<_>>()?;
    let n = crate::shape::checked_numel(&path.display().to_string(), &shape)?;
    Ok((npy, shape, n))
}

/// Reads the `n` elements of `npy` as `T`, converting each with `f`.
fn values<T: npyz::Deserialize, U>(
    path: &Path,
    npy: NpyFile<BufReader<std::fs::File>>,
    n: usize,
    f: impl Fn(T) -> U,
) -> Result<Vec<U>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n)
        .map_err(|_| bad(path, format!("out of memory for {n} values")))?;
    let data = npy.data::<T>().map_err(|e| bad(path, e.to_string()))?;
    for v in data {
        out.push(f(v.map_err(|e| {
            bad(path, format!("truncated or unreadable data: {e}"))
        })?));
    }
    if out.len() != n {
        return Err(bad(
            path,
            format!("{} values where the header says {n}", out.len()),
        ));
    }
    Ok(out)
}

/// The dtype string of `npy`, for messages.
fn dtype(npy: &NpyFile<BufReader<std::fs::File>>) -> String {
    npy.dtype().descr().trim_matches('\'').to_string()
}

impl Dataset {
    /// Samples from a `.npy` array `[N, *sample]` (float32, float64 or any
    /// integer type, converted to f32 as they are: no scaling) and labels
    /// from a `.npy` vector `[N]` of integers (`np.save`'s format; C order).
    /// `Err` naming the file if it is not such an array, its data is
    /// truncated, or the counts disagree.
    pub fn from_npy(samples: &Path, labels: &Path) -> Result<Self> {
        let (xf, xshape, xn) = open(samples)?;
        if xshape.is_empty() {
            return Err(bad(samples, "a 0-d array holds no samples"));
        }
        let xtype = dtype(&xf);
        let x: Vec<f32> = match xtype.trim_start_matches(['<', '|', '=']) {
            "f4" => values(samples, xf, xn, |v: f32| v)?,
            "f8" => values(samples, xf, xn, |v: f64| v as f32)?,
            "u1" => values(samples, xf, xn, |v: u8| v as f32)?,
            "i1" => values(samples, xf, xn, |v: i8| v as f32)?,
            "u2" => values(samples, xf, xn, |v: u16| v as f32)?,
            "i2" => values(samples, xf, xn, |v: i16| v as f32)?,
            "i4" => values(samples, xf, xn, |v: i32| v as f32)?,
            "i8" => values(samples, xf, xn, |v: i64| v as f32)?,
            other => {
                return Err(bad(
                    samples,
                    format!("dtype {other} is not a float or integer type kiln reads"),
                ))
            }
        };
        let (yf, yshape, yn) = open(labels)?;
        if yshape != [xshape[0]] {
            return Err(bad(
                labels,
                format!("labels of shape {yshape:?} for {} samples", xshape[0]),
            ));
        }
        let ytype = dtype(&yf);
        let y: Vec<i64> = match ytype.trim_start_matches(['<', '|', '=']) {
            "i8" => values(labels, yf, yn, |v: i64| v)?,
            "i4" => values(labels, yf, yn, |v: i32| i64::from(v))?,
            "i2" => values(labels, yf, yn, |v: i16| i64::from(v))?,
            "i1" => values(labels, yf, yn, |v: i8| i64::from(v))?,
            "u1" => values(labels, yf, yn, |v: u8| i64::from(v))?,
            "u2" => values(labels, yf, yn, |v: u16| i64::from(v))?,
            "u4" => values(labels, yf, yn, |v: u32| i64::from(v))?,
            other => {
                return Err(bad(
                    labels,
                    format!("dtype {other}: class labels must be integers"),
                ))
            }
        };
        Dataset::new(x, y, &xshape[1..])
    }
}
