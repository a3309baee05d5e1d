//! `.npy` files (NumPy's `np.save` format, versions 1 to 3): a magic
//! string, a header that is a Python dict literal (`descr`,
//! `fortran_order`, `shape`) and the raw little-endian data. Read here
//! rather than with a crate: the maintained ones parse the header with a
//! grammar library whose stack guard needs a C compiler for every target.

use super::{bad, read_capped, Dataset};
use crate::error::Result;
use std::io::BufReader;
use std::path::Path;

/// An element type a `.npy` file may hold: its size and how it converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    F4,
    F8,
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
}

impl Elem {
    /// The type of a little-endian (or byte-sized) `descr` such as `<f4`.
    fn parse(descr: &str) -> Option<Elem> {
        let body = descr.strip_prefix(['<', '|', '=']).unwrap_or(descr);
        Some(match body {
            "f4" => Elem::F4,
            "f8" => Elem::F8,
            "i1" => Elem::I1,
            "i2" => Elem::I2,
            "i4" => Elem::I4,
            "i8" => Elem::I8,
            "u1" => Elem::U1,
            "u2" => Elem::U2,
            "u4" => Elem::U4,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            Elem::I1 | Elem::U1 => 1,
            Elem::I2 | Elem::U2 => 2,
            Elem::F4 | Elem::I4 | Elem::U4 => 4,
            Elem::F8 | Elem::I8 => 8,
        }
    }
    fn is_integer(self) -> bool {
        !matches!(self, Elem::F4 | Elem::F8)
    }
    /// Element `b` (little-endian bytes) as f64 (exact for every type but i8
    /// beyond 2^53, where labels are refused anyway).
    fn value(self, b: &[u8]) -> f64 {
        let a = |n: usize| -> [u8; 8] {
            let mut x = [0u8; 8];
            x[..n].copy_from_slice(&b[..n]);
            x
        };
        match self {
            Elem::F4 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Elem::F8 => f64::from_le_bytes(a(8)),
            Elem::I1 => b[0] as i8 as f64,
            Elem::I2 => i16::from_le_bytes([b[0], b[1]]) as f64,
            Elem::I4 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Elem::I8 => i64::from_le_bytes(a(8)) as f64,
            Elem::U1 => b[0] as f64,
            Elem::U2 => u16::from_le_bytes([b[0], b[1]]) as f64,
            Elem::U4 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
        }
    }
    fn int(self, b: &[u8]) -> i64 {
        match self {
            Elem::I8 => i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            _ => self.value(b) as i64,
        }
    }
}

/// The value of key `key` in a header dict literal, up to the next `,` at
/// depth 0 (a tuple's commas are inside its parentheses).
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0usize;
    let end = rest
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            depth == 0 && (c == ',' || c == '}')
        })
        .map_or(rest.len(), |(i, _)| i);
    Some(rest[..end].trim())
}

/// A `.npy` file's element type, shape and data bytes (exactly the size
/// the header gives; a file whose data is shorter or longer is refused).
fn read(path: &Path) -> Result<(Elem, Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| bad(path, format!("cannot read: {e}")))?;
    let mut r = BufReader::new(file);
    let start = read_capped(path, &mut r, 8)?;
    if start.len() < 8 || &start[..6] != b"\x93NUMPY" || !(1..=3).contains(&start[6]) {
        return Err(bad(path, "not a .npy file (bad magic string or version)"));
    }
    let len_bytes = read_capped(path, &mut r, if start[6] == 1 { 2 } else { 4 })?;
    let header_len = match len_bytes[..] {
        [a, b] => u16::from_le_bytes([a, b]) as u64,
        [a, b, c, d] => u32::from_le_bytes([a, b, c, d]) as u64,
        _ => return Err(bad(path, "not a .npy file (truncated header)")),
    };
    let header = read_capped(path, &mut r, header_len)?;
    let header = String::from_utf8_lossy(&header);
    let not_npy = |what: &str| {
        bad(
            path,
            format!("not a .npy file: {what} in header {header:?}"),
        )
    };
    let descr = field(&header, "descr").ok_or_else(|| not_npy("no descr"))?;
    let descr = descr.trim_matches(['\'', '"']);
    let elem = Elem::parse(descr).ok_or_else(|| {
        bad(
            path,
            format!("dtype {descr} is not a little-endian float or integer type kiln reads"),
        )
    })?;
    if field(&header, "fortran_order") != Some("False") {
        return Err(bad(
            path,
            "Fortran-ordered array: save it with np.ascontiguousarray first",
        ));
    }
    let shape_text = field(&header, "shape").ok_or_else(|| not_npy("no shape"))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| not_npy("a shape that is no tuple"))?;
    let shape = (inner.split(',').map(str::trim).filter(|d| !d.is_empty()))
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| not_npy("a shape that is no tuple of sizes"))
        })
        .collect::<Result<Vec<usize>>>()?;
    let n = crate::shape::checked_numel(&path.display().to_string(), &shape)?;
    let want = crate::shape::checked_size("npy", "data bytes", n.checked_mul(elem.size()))?;
    let data = read_capped(path, &mut r, want as u64 + 1)?;
    if data.len() != want {
        let have = if data.len() > want {
            "more".to_string()
        } else {
            data.len().to_string()
        };
        return Err(bad(
            path,
            format!("truncated or oversized data: shape {shape:?} of {descr} needs {want} bytes, the file has {have}"),
        ));
    }
    Ok((elem, shape, data))
}

impl Dataset {
    /// Samples from a `.npy` array `[N, *sample]` (float32, float64 or any
    /// integer type up to 32 bits unsigned, 64 signed, converted to f32 as
    /// they are: no scaling) and labels from a `.npy` vector `[N]` of
    /// integers (NumPy's `np.save` format; C order, little-endian). `Err`
    /// naming the file if it is not such an array, its data is truncated,
    /// or the counts disagree.
    pub fn from_npy(samples: &Path, labels: &Path) -> Result<Self> {
        let (xe, xshape, xdata) = read(samples)?;
        if xshape.is_empty() {
            return Err(bad(samples, "a 0-d array holds no samples"));
        }
        let mut x = Vec::new();
        x.try_reserve_exact(xdata.len() / xe.size())
            .map_err(|_| bad(samples, "out of memory for its values"))?;
        x.extend(xdata.chunks_exact(xe.size()).map(|b| xe.value(b) as f32));
        let (ye, yshape, ydata) = read(labels)?;
        if !ye.is_integer() {
            return Err(bad(labels, "class labels must be integers"));
        }
        if yshape != [xshape[0]] {
            return Err(bad(
                labels,
                format!("labels of shape {yshape:?} for {} samples", xshape[0]),
            ));
        }
        let y = ydata.chunks_exact(ye.size()).map(|b| ye.int(b)).collect();
        Dataset::new(x, y, &xshape[1..])
    }
}
