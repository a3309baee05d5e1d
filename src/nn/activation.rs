//! Activations and (log-)softmax.

use super::Layer;
use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::ops::OpBuilder;

/// `max(x, 0)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Relu;
/// `1 / (1 + e^−x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sigmoid;
/// `tanh(x)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tanh;

impl Layer for Relu {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.relu(x)
    }
}
impl Layer for Sigmoid {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.sigmoid(x)
    }
}
impl Layer for Tanh {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.tanh(x)
    }
}

/// GELU (`torch.nn.GELU`): exact `x·Φ(x)` by default, the tanh
/// approximation with `approximate: true` (PyTorch's `approximate='tanh'`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Gelu {
    /// Use the tanh approximation.
    pub approximate: bool,
}
/// SiLU, `x·sigmoid(x)` (`torch.nn.SiLU`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Silu;
/// Leaky ReLU (`torch.nn.LeakyReLU`): `x` where `x > 0`, else
/// `negative_slope·x`; [`Default`] has PyTorch's slope 0.01.
#[derive(Clone, Copy, Debug)]
pub struct LeakyRelu {
    /// The slope for `x ≤ 0`.
    pub negative_slope: f32,
}

impl Default for LeakyRelu {
    fn default() -> Self {
        LeakyRelu {
            negative_slope: 0.01,
        }
    }
}
impl Layer for Gelu {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        if self.approximate {
            g.gelu_tanh(x)
        } else {
            g.gelu(x)
        }
    }
}
impl Layer for Silu {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.silu(x)
    }
}
impl Layer for LeakyRelu {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.leaky_relu(x, self.negative_slope)
    }
}

/// Softmax along `axis` (`torch.softmax`): `exp(x − max) / Σ exp(x − max)`,
/// one fused op ([`OpBuilder::softmax`]).
pub fn softmax(g: &mut Graph, x: NodeId, axis: isize) -> Result<NodeId> {
    g.softmax(x, axis)
}

/// Log-softmax along `axis` (`torch.log_softmax`): `(x − max) − ln Σ exp(x −
/// max)`, one fused op ([`OpBuilder::log_softmax`]).
pub fn log_softmax(g: &mut Graph, x: NodeId, axis: isize) -> Result<NodeId> {
    g.log_softmax(x, axis)
}

/// Softmax along an axis.
#[derive(Clone, Copy, Debug)]
pub struct Softmax(pub isize);
/// Log-softmax along an axis.
#[derive(Clone, Copy, Debug)]
pub struct LogSoftmax(pub isize);

impl Layer for Softmax {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        softmax(g, x, self.0)
    }
}
impl Layer for LogSoftmax {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        log_softmax(g, x, self.0)
    }
}
