//! Seeded example feeds for an executable's inputs: what benchmarks and
//! the pass verifier run a graph on.

use super::Executable;
use crate::dtype::{DType, Feed, I64Tensor};
use crate::error::Result;
use crate::rng::{mix64, Rng};
use crate::tensor::{try_collect, Tensor};

/// Index values for an `i64` input no op reads as indices: `0..10`.
const FREE_INDICES: usize = 10;

impl Executable {
    /// One seeded value for each input this executable reads, at the shape
    /// it runs: an f32 input uniform in `[-1, 1)`, an `i64` input uniform
    /// in `0..n` for the smallest range `n` an op reads it in (`0..10` when
    /// none does). The seed comes from the input's name, so a graph and its
    /// rewrites get the same values. `Err` if the memory cannot be allocated.
    pub fn example_feeds(&self) -> Result<Vec<(String, Box<dyn Feed>)>> {
        let mut out: Vec<(String, Box<dyn Feed>)> = Vec::new();
        for (name, step) in &self.feeds {
            let seed = name.bytes().fold(17u64, |h, b| mix64(h ^ b as u64));
            let mut rng = Rng::new(seed);
            let step = &self.steps[*step];
            let (shape, n) = (step.shape.clone(), step.len);
            let what = "example feeds";
            let feed: Box<dyn Feed> = match step.dtype {
                DType::F32 => {
                    let data = try_collect(what, n, || rng.uniform_in(-1.0, 1.0))?;
                    Box::new(Tensor::from_vec(shape, data)?)
                }
                DType::I64 => {
                    let bound = (self.index_checks.iter())
                        .filter(|c| c.input == *name)
                        .map(|c| c.range.size)
                        .min()
                        .unwrap_or(FREE_INDICES);
                    let draw = || rng.below(bound.max(1)) as i64;
                    let data = std::iter::repeat_with(draw).take(n).collect();
                    Box::new(I64Tensor::from_vec(shape, data)?)
                }
            };
            out.push((name.clone(), feed));
        }
        Ok(out)
    }
}

/// Borrowed feeds from owned ones, as runs take them.
pub fn feed_refs(feeds: &[(String, Box<dyn Feed>)]) -> Vec<(&str, &dyn Feed)> {
    feeds
        .iter()
        .map(|(n, f)| (n.as_str(), f.as_ref()))
        .collect()
}
