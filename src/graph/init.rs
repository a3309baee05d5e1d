//! Parameter initialisers.

use crate::error::{attr_err, Result};
use crate::rng::Rng;
use crate::shape::Shape;
use crate::tensor::{try_collect, Tensor};

/// How a parameter's initial value is drawn. Fan-in and fan-out follow
/// PyTorch: for a weight `[out, in, *kernel]`, fan-in is `in · ∏kernel` and
/// fan-out is `out · ∏kernel`.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// A constant.
    Constant(f32),
    /// Uniform in `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f32,
        /// Upper bound.
        high: f32,
    },
    /// Normal with `mean` and `std`.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// Kaiming (He) uniform for ReLU: `U(−b, b)`, `b = sqrt(6 / fan_in)`.
    KaimingUniform,
    /// Kaiming (He) normal for ReLU: `N(0, 2 / fan_in)`.
    KaimingNormal,
    /// Xavier (Glorot) uniform: `U(−b, b)`, `b = sqrt(6 / (fan_in + fan_out))`.
    XavierUniform,
    /// Xavier (Glorot) normal: `N(0, 2 / (fan_in + fan_out))`.
    XavierNormal,
    /// PyTorch's default for `Linear`/`Conv` weights and biases:
    /// `U(−1/sqrt(fan_in), 1/sqrt(fan_in))`, with `fan_in` given.
    LeCunUniform {
        /// The fan-in of the layer.
        fan_in: usize,
    },
    /// A given value (its shape must match).
    FromTensor(Tensor),
}

fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        _ => {
            let rf: usize = shape[2..].iter().product();
            (shape[1] * rf, shape[0] * rf)
        }
    }
}

impl Init {
    /// Draws the value for parameter `name` of `shape` (checked by the
    /// caller) using `seed`; `Err` when its memory cannot be allocated.
    pub(crate) fn materialize(&self, name: &str, shape: &Shape, seed: u64) -> Result<Tensor> {
        let mut rng = Rng::new(seed);
        let n = shape.numel();
        let (fi, fo) = fans(shape.dims());
        let what = format!("param `{name}` {shape}");
        let draw = |f: &mut dyn FnMut() -> f32| try_collect(&what, n, f);
        let uniform = |rng: &mut Rng, b: f32| draw(&mut || rng.uniform_in(-b, b));
        let normal = |rng: &mut Rng, m: f32, s: f32| draw(&mut || m + s * rng.normal());
        let data = match self {
            Init::Zeros => draw(&mut || 0.0)?,
            Init::Constant(c) => draw(&mut || *c)?,
            Init::Uniform { low, high } => {
                if low.is_nan() || high.is_nan() || low > high {
                    return attr_err(
                        "param",
                        format!("`{name}`: uniform bounds low {low}, high {high} need low <= high"),
                    );
                }
                draw(&mut || rng.uniform_in(*low, *high))?
            }
            Init::Normal { mean, std } => normal(&mut rng, *mean, *std)?,
            Init::KaimingUniform => uniform(&mut rng, (6.0 / fi as f32).sqrt())?,
            Init::KaimingNormal => normal(&mut rng, 0.0, (2.0 / fi as f32).sqrt())?,
            Init::XavierUniform => uniform(&mut rng, (6.0 / (fi + fo) as f32).sqrt())?,
            Init::XavierNormal => normal(&mut rng, 0.0, (2.0 / (fi + fo) as f32).sqrt())?,
            Init::LeCunUniform { fan_in } => {
                uniform(&mut rng, 1.0 / ((*fan_in).max(1) as f32).sqrt())?
            }
            Init::FromTensor(t) => {
                if t.shape() != shape.dims() {
                    return attr_err(
                        "param",
                        format!("`{name}`: initial tensor has shape {:?}, the parameter is declared {shape}", t.shape()),
                    );
                }
                t.data().to_vec()
            }
        };
        Tensor::from_vec(shape.clone(), data)
    }
}
