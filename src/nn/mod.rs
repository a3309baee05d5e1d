//! Layers built from the generic ops. A layer is a small config struct; its
//! [`Layer::build`] adds parameters and ops to a [`Graph`] and returns the
//! output node. Conv and pooling are *expressed* in generic ops (unfold,
//! matmul, reductions); the compiler's passes turn them into fused kernels.

/// The setters convolution layers share: kernel, stride, dilation, groups,
/// bias and name (fields of those names, `[usize; D]` for the sizes).
macro_rules! conv_setters {
    () => {
        /// Kernel size per spatial dimension.
        pub fn kernel(mut self, k: [usize; D]) -> Self {
            self.kernel = k;
            self
        }
        /// The same stride along every spatial dimension.
        pub fn stride(mut self, s: usize) -> Self {
            self.stride = [s; D];
            self
        }
        /// Stride per spatial dimension.
        pub fn strides(mut self, s: [usize; D]) -> Self {
            self.stride = s;
            self
        }
        /// The same dilation along every spatial dimension.
        pub fn dilation(mut self, d: usize) -> Self {
            self.dilation = [d; D];
            self
        }
        /// Number of groups (`in` and `out` channels must both be divisible by it).
        pub fn groups(mut self, g: usize) -> Self {
            self.groups = g;
            self
        }
        /// With or without the bias term.
        pub fn bias(mut self, bias: bool) -> Self {
            self.bias = bias;
            self
        }
        /// Names the layer (parameters become `{name}.weight`, `{name}.bias`).
        pub fn name(mut self, name: &str) -> Self {
            self.name = Some(name.into());
            self
        }
    };
}

mod activation;
mod attention;
mod batch_norm;
mod conv;
mod conv_transpose;
mod embedding;
mod linear;
pub mod loss;
mod norm;
mod pool;
mod reshape;
mod rnn;
mod summary;
mod transformer;

pub use activation::*;
pub use attention::{scaled_dot_product_attention, Mask, MhaOptions, MultiheadAttention, Sdpa};
pub use batch_norm::{BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d};
pub use conv::{Conv, Conv1d, Conv2d, Conv3d};
pub use conv_transpose::{ConvTranspose, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d};
pub use embedding::Embedding;
pub use linear::Linear;
pub use loss::{
    bce_with_logits, binary_cross_entropy_with_logits, cross_entropy, mse_loss,
    softmax_cross_entropy, BceWithLogits, CrossEntropy, Reduction,
};
pub use norm::{GroupNorm, Identity, LayerNorm};
pub use pool::{
    AdaptiveAvgPool2d, Avg, AvgPool1d, AvgPool2d, AvgPool3d, GlobalAvgPool2d, Max, MaxPool1d,
    MaxPool2d, MaxPool3d, Pool, PoolKind,
};
pub use reshape::{Dropout, Flatten, Reshape, Upsample};
pub use rnn::{Gru, Lstm, RnnOutput};
pub use summary::{summary, summary_of, Summary, SummaryRow};
pub use transformer::{Activation, EncoderMasks, TransformerEncoder, TransformerEncoderLayer};

use crate::error::Result;
use crate::graph::{Graph, NodeId};

/// Something that adds ops to a graph: a layer or a container of layers.
pub trait Layer {
    /// Adds this layer's parameters and ops applied to `x`; returns the output.
    /// Shape errors surface here, naming the layer.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId>;

    /// The layer's kind in summaries ([`summary`]): by default its type's
    /// name without the path, a `Conv<2>` shown as `Conv2d`.
    fn kind(&self) -> String {
        kind_of(std::any::type_name::<Self>())
    }

    /// For a container whose build applies layers one after another
    /// ([`Sequential`]): those layers, which [`summary`] lists under it.
    /// Empty (the default) for any other layer, which a summary shows as
    /// one row.
    fn children(&self) -> Vec<&dyn Layer> {
        Vec::new()
    }
}

/// `kiln::nn::conv::Conv<2>` → `Conv2d`, `my::Block` → `Block`.
fn kind_of(type_name: &str) -> String {
    let (path, args) = type_name.split_once('<').unwrap_or((type_name, ""));
    let base = path.rsplit("::").next().unwrap_or(path);
    match args.trim_end_matches('>').parse::<usize>() {
        Ok(d) => format!("{base}{d}d"),
        Err(_) => base.to_string(),
    }
}

/// Layers applied one after another.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
}

impl Sequential {
    /// An empty container.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a layer.
    pub fn push(mut self, layer: impl Layer + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }
    /// Number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    /// Whether there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Layer for Sequential {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        self.layers.iter().try_fold(x, |h, l| l.build(g, h))
    }
    fn children(&self) -> Vec<&dyn Layer> {
        self.layers.iter().map(|l| l.as_ref()).collect()
    }
}

/// The layer's explicit name, or a fresh `"{kind}_{k}"` one.
fn layer_name(g: &mut Graph, name: &Option<String>, kind: &str) -> String {
    name.clone().unwrap_or_else(|| g.fresh_name(kind))
}

/// `build` on `x`, with a batch of one added first and removed from the
/// result when `x` is unbatched (`[C, *spatial]`, rank `spatial + 1`), as
/// PyTorch's convolutions and pools accept.
fn unbatched(
    g: &mut Graph,
    x: NodeId,
    spatial: usize,
    build: impl FnOnce(&mut Graph, NodeId) -> Result<NodeId>,
) -> Result<NodeId> {
    let xs = g.shape(x)?.to_vec();
    if xs.len() != spatial + 1 {
        return build(g, x);
    }
    let dims: Vec<isize> = std::iter::once(1)
        .chain(xs.iter().map(|&d| d as isize))
        .collect();
    let batched = crate::ops::OpBuilder::reshape(g, x, &dims)?;
    let y = build(g, batched)?;
    let ys: Vec<isize> = g.shape(y)?[1..].iter().map(|&d| d as isize).collect();
    crate::ops::OpBuilder::reshape(g, y, &ys)
}

/// The dropout-mask seed a layer named `name` uses unless given one.
fn dropout_seed(name: &str) -> u64 {
    name.bytes()
        .fold(0u64, |h, b| crate::rng::mix64(h ^ b as u64))
}
