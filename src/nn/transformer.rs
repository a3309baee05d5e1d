//! `TransformerEncoderLayer` and `TransformerEncoder`
//! (`torch.nn.TransformerEncoderLayer`, `torch.nn.TransformerEncoder`):
//! self-attention and a feed-forward block, each with a residual
//! connection and a LayerNorm, after (post-norm, PyTorch's default) or
//! before (pre-norm, `norm_first`) the block.

use super::{layer_name, Dropout, Layer, LayerNorm, Linear, Mask, MhaOptions, MultiheadAttention};
use crate::error::{attr_err, Result};
use crate::graph::{Graph, NodeId};
use crate::ops::OpBuilder;

/// The feed-forward block's activation (PyTorch's `activation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// `relu` (the default).
    #[default]
    Relu,
    /// Exact `gelu`.
    Gelu,
}

/// The masks of [`TransformerEncoderLayer::forward`] (PyTorch's `src_mask`,
/// `src_key_padding_mask`, `is_causal`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EncoderMasks {
    /// A mask over the scores, `[L, L]` or `[N·nhead, L, L]`.
    pub src_mask: Option<Mask>,
    /// A mask over the keys, `[N, L]`.
    pub src_key_padding_mask: Option<Mask>,
    /// Position `i` attends positions `0..=i` only (instead of `src_mask`).
    pub is_causal: bool,
}

/// One encoder layer (`torch.nn.TransformerEncoderLayer(d_model, nhead,
/// dim_feedforward=2048, dropout=0.1, activation=relu, layer_norm_eps=1e-5,
/// batch_first=False, norm_first=False, bias=True)`). Post-norm:
/// `x = norm1(x + sa(x)); x = norm2(x + ff(x))`; pre-norm:
/// `x = x + sa(norm1(x)); x = x + ff(norm2(x))`, with
/// `ff(x) = linear2(dropout(act(linear1(x))))` and dropout after each block.
/// Parameters under PyTorch's names: `{name}.self_attn.*`,
/// `{name}.linear1.*`, `{name}.linear2.*`, `{name}.norm1.*`, `{name}.norm2.*`.
#[derive(Clone, Debug)]
pub struct TransformerEncoderLayer {
    d_model: usize,
    nhead: usize,
    dim_feedforward: usize,
    dropout: f32,
    activation: Activation,
    layer_norm_eps: f32,
    batch_first: bool,
    norm_first: bool,
    bias: bool,
    name: Option<String>,
}

impl TransformerEncoderLayer {
    /// A layer of width `d_model` with `nhead` heads, PyTorch's defaults otherwise.
    pub fn new(d_model: usize, nhead: usize) -> Self {
        TransformerEncoderLayer {
            d_model,
            nhead,
            dim_feedforward: 2048,
            dropout: 0.1,
            activation: Activation::Relu,
            layer_norm_eps: 1e-5,
            batch_first: false,
            norm_first: false,
            bias: true,
            name: None,
        }
    }
    /// The feed-forward block's hidden width (default 2048).
    pub fn dim_feedforward(mut self, n: usize) -> Self {
        self.dim_feedforward = n;
        self
    }
    /// Dropout probability, in training graphs (default 0.1).
    pub fn dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }
    /// The feed-forward activation (default ReLU).
    pub fn activation(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// The LayerNorms' eps (default 1e-5).
    pub fn layer_norm_eps(mut self, eps: f32) -> Self {
        self.layer_norm_eps = eps;
        self
    }
    /// Input and output `[N, L, E]` instead of `[L, N, E]` (default false).
    pub fn batch_first(mut self, b: bool) -> Self {
        self.batch_first = b;
        self
    }
    /// Pre-norm (LayerNorm before each block) instead of post-norm.
    pub fn norm_first(mut self, b: bool) -> Self {
        self.norm_first = b;
        self
    }
    /// With or without the linear layers' and LayerNorms' biases.
    pub fn bias(mut self, b: bool) -> Self {
        self.bias = b;
        self
    }
    /// Names the layer (parameters become `{name}.self_attn.in_proj_weight`, ...).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The layer on `src` (`[L, N, E]`, or batch first) with `masks`.
    /// `Err` naming the layer or its part when shapes or settings do not fit.
    pub fn forward(&self, g: &mut Graph, src: NodeId, masks: &EncoderMasks) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "transformer_encoder_layer");
        if !(0.0..1.0).contains(&self.dropout) {
            return attr_err(
                &name,
                format!("dropout must be in 0..1, got {}", self.dropout),
            );
        }
        let part = |p: &str| format!("{name}.{p}");
        let norm = |p: &str| {
            LayerNorm::new(&[self.d_model])
                .eps(self.layer_norm_eps)
                .bias(self.bias)
                .name(&part(p))
        };
        let drop = |g: &mut Graph, x: NodeId, p: &str| -> Result<NodeId> {
            match self.dropout > 0.0 {
                true => Dropout::new(self.dropout).name(&part(p)).build(g, x),
                false => Ok(x),
            }
        };
        let attention = MultiheadAttention::new(self.d_model, self.nhead)
            .dropout(self.dropout)
            .bias(self.bias)
            .batch_first(self.batch_first)
            .name(&part("self_attn"));
        let options = MhaOptions {
            key_padding_mask: masks.src_key_padding_mask,
            attn_mask: masks.src_mask,
            is_causal: masks.is_causal,
            ..MhaOptions::default()
        };
        let self_attention = |g: &mut Graph, x: NodeId| -> Result<NodeId> {
            let a = attention.forward(g, x, x, x, &options)?.0;
            drop(g, a, "dropout1")
        };
        let feed_forward = |g: &mut Graph, x: NodeId| -> Result<NodeId> {
            let h = Linear::new(self.d_model, self.dim_feedforward)
                .bias(self.bias)
                .name(&part("linear1"))
                .build(g, x)?;
            let h = match self.activation {
                Activation::Relu => g.relu(h)?,
                Activation::Gelu => g.gelu(h)?,
            };
            let h = drop(g, h, "dropout")?;
            let y = Linear::new(self.dim_feedforward, self.d_model)
                .bias(self.bias)
                .name(&part("linear2"))
                .build(g, h)?;
            drop(g, y, "dropout2")
        };
        let (norm1, norm2) = (norm("norm1"), norm("norm2"));
        let y = if self.norm_first {
            let n1 = norm1.build(g, src)?;
            let a = self_attention(g, n1)?;
            let x = g.add(src, a)?;
            let n2 = norm2.build(g, x)?;
            let f = feed_forward(g, n2)?;
            g.add(x, f)?
        } else {
            let a = self_attention(g, src)?;
            let s = g.add(src, a)?;
            let x = norm1.build(g, s)?;
            let f = feed_forward(g, x)?;
            let s = g.add(x, f)?;
            norm2.build(g, s)?
        };
        g.set_name(y, name);
        Ok(y)
    }
}

impl Layer for TransformerEncoderLayer {
    /// The layer without masks.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        self.forward(g, x, &EncoderMasks::default())
    }
}

/// `num_layers` copies of an encoder layer, then an optional final norm
/// (`torch.nn.TransformerEncoder(encoder_layer, num_layers, norm)`); layer
/// `i` is named `{name}.layers.{i}`, as PyTorch's state dict names it.
#[derive(Clone, Debug)]
pub struct TransformerEncoder {
    layer: TransformerEncoderLayer,
    num_layers: usize,
    norm: Option<LayerNorm>,
    name: Option<String>,
}

impl TransformerEncoder {
    /// `num_layers` layers built like `layer` (its name is replaced).
    pub fn new(layer: TransformerEncoderLayer, num_layers: usize) -> Self {
        TransformerEncoder {
            layer,
            num_layers,
            norm: None,
            name: None,
        }
    }
    /// A LayerNorm over `d_model` after the last layer, named `{name}.norm`.
    pub fn final_norm(mut self, on: bool) -> Self {
        self.norm = on.then(|| {
            LayerNorm::new(&[self.layer.d_model])
                .eps(self.layer.layer_norm_eps)
                .bias(self.layer.bias)
        });
        self
    }
    /// Names the stack (layers become `{name}.layers.{i}`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The stack on `src` with `masks` passed to every layer.
    pub fn forward(&self, g: &mut Graph, src: NodeId, masks: &EncoderMasks) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "transformer_encoder");
        let mut x = src;
        for i in 0..self.num_layers {
            let layer = self.layer.clone().name(&format!("{name}.layers.{i}"));
            x = layer.forward(g, x, masks)?;
        }
        match &self.norm {
            Some(n) => n.clone().name(&format!("{name}.norm")).build(g, x),
            None => Ok(x),
        }
    }
}

impl Layer for TransformerEncoder {
    /// The stack without masks.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        self.forward(g, x, &EncoderMasks::default())
    }
}
