//! Attention: `scaled_dot_product_attention`
//! (`torch.nn.functional.scaled_dot_product_attention`) and
//! `MultiheadAttention` (`torch.nn.MultiheadAttention`), built from matmul,
//! select, softmax and dropout, so their gradients come from those ops.
//!
//! PyTorch's boolean masks mean opposite things in the two APIs (`True`
//! takes part in SDPA, is blocked in `MultiheadAttention`); kiln's [`Mask`]
//! names which one it is. A query whose every key is masked gets NaN, as
//! PyTorch's math path gives. Dropout on the attention weights applies in
//! graphs compiled for training only (PyTorch's functional SDPA applies
//! `dropout_p` in either mode).

use super::{dropout_seed, layer_name, softmax, Layer};
use crate::error::{attr_err, shape_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::OpBuilder;
use crate::tensor::Tensor;

/// A mask over attention scores `[.., L, S]` (broadcast to them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Non-zero where a query may attend a key (SDPA's boolean `attn_mask`).
    Allow(NodeId),
    /// Non-zero where it may not (`MultiheadAttention`'s boolean `attn_mask`
    /// and `key_padding_mask`).
    Block(NodeId),
    /// Added to the scores (PyTorch's float masks; −∞ blocks).
    Add(NodeId),
}

/// The options of [`scaled_dot_product_attention`], PyTorch's keyword
/// arguments (defaults: no mask, no dropout, not causal, scale `1/√E`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sdpa {
    /// A mask over the scores `[.., L, S]`.
    pub attn_mask: Option<Mask>,
    /// Dropout probability on the attention weights, in training graphs.
    pub dropout_p: f32,
    /// Query `i` attends keys `0..=i` only (the mask `tril(ones(L, S))`).
    pub is_causal: bool,
    /// The factor on `q·kᵀ`; `None`: `1/√E`.
    pub scale: Option<f32>,
    /// The dropout mask's seed.
    pub dropout_seed: u64,
}

/// `softmax(q·kᵀ·scale + mask)·v` for `q [.., L, E]`, `k [.., S, E]`,
/// `v [.., S, Ev]` (batch axes broadcast) → `[.., L, Ev]`
/// (`torch.nn.functional.scaled_dot_product_attention`). `Err` if the
/// shapes do not fit, both a mask and `is_causal` are given (as PyTorch),
/// or `dropout_p` is not in `0..1`.
pub fn scaled_dot_product_attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    options: &Sdpa,
) -> Result<NodeId> {
    Ok(attention(g, q, k, v, options, &[])?.0)
}

/// [`scaled_dot_product_attention`] with more masks applied after
/// `options`', also returning the attention weights `[.., L, S]` (after
/// dropout, as `MultiheadAttention` returns them).
fn attention(
    g: &mut Graph,
    q: NodeId,
    k: NodeId,
    v: NodeId,
    options: &Sdpa,
    more: &[Mask],
) -> Result<(NodeId, NodeId)> {
    const OP: &str = "scaled_dot_product_attention";
    let (qs, ks, vs) = (
        g.shape(q)?.to_vec(),
        g.shape(k)?.to_vec(),
        g.shape(v)?.to_vec(),
    );
    let fits = qs.len() >= 2
        && ks.len() >= 2
        && vs.len() >= 2
        && qs.last() == ks.last()
        && ks[ks.len() - 2] == vs[vs.len() - 2];
    if !fits {
        return shape_err(
            OP,
            format!(
                "query {qs:?}, key {ks:?}, value {vs:?}: expected [.., L, E], [.., S, E], [.., S, Ev]"
            ),
        );
    }
    if options.is_causal && options.attn_mask.is_some() {
        return attr_err(
            OP,
            "give either attn_mask or is_causal, not both (as PyTorch)",
        );
    }
    if !(0.0..1.0).contains(&options.dropout_p) {
        return attr_err(
            OP,
            format!("dropout_p must be in 0..1, got {}", options.dropout_p),
        );
    }
    let (l, s, e) = (qs[qs.len() - 2], ks[ks.len() - 2], qs[qs.len() - 1]);
    let scale = options.scale.unwrap_or(1.0 / (e.max(1) as f32).sqrt());
    let raw = g.matmul_t(q, k, false, true)?;
    let mut scores = g.mul_scalar(raw, scale)?;
    let causal = if options.is_causal {
        let keep = (0..l * s).map(|i| f32::from(u8::from(i % s <= i / s)));
        let keep = g.constant(Tensor::from_vec([l, s], keep.collect())?)?;
        Some(Mask::Allow(keep))
    } else {
        None
    };
    for &mask in options.attn_mask.iter().chain(&causal).chain(more) {
        scores = apply_mask(g, scores, mask)?;
    }
    let mut weights = softmax(g, scores, -1)?;
    if options.dropout_p > 0.0 {
        weights = g.dropout(weights, options.dropout_p, options.dropout_seed)?;
    }
    Ok((g.matmul(weights, v)?, weights))
}

/// `scores` with `mask` applied: blocked scores become −∞, added ones add.
fn apply_mask(g: &mut Graph, scores: NodeId, mask: Mask) -> Result<NodeId> {
    if g.dtype(mask_node(mask))? != crate::DType::F32 {
        return Err(crate::KilnError::Type {
            op: "attention mask".into(),
            message: "masks are f32 (non-zero for a boolean mask): convert an i64 mask with to_f32"
                .into(),
        });
    }
    let blocked = |g: &mut Graph| g.scalar(f32::NEG_INFINITY);
    let out = match mask {
        Mask::Allow(m) => {
            let ninf = blocked(g)?;
            g.select(m, scores, ninf)
        }
        Mask::Block(m) => {
            let ninf = blocked(g)?;
            g.select(m, ninf, scores)
        }
        Mask::Add(m) => g.add(scores, m),
    };
    let shape = g.shape(scores)?.to_vec();
    match out {
        Ok(o) if g.shape(o)? == shape => Ok(o),
        Ok(o) => shape_err(
            "attention mask",
            format!("mask broadcasts the scores {shape:?} to {:?}", g.shape(o)?),
        ),
        Err(e) => Err(e),
    }
}

/// Multi-head attention (`torch.nn.MultiheadAttention(embed_dim,
/// num_heads, dropout=0.0, bias=True, batch_first=False)`): inputs
/// `[L, N, E]` (or `[N, L, E]` with `batch_first`), parameters
/// `{name}.in_proj_weight [3E, E]` (Xavier uniform), `{name}.in_proj_bias
/// [3E]` (zeros), `{name}.out_proj.weight [E, E]` (`U(±1/√E)`) and
/// `{name}.out_proj.bias [E]` (zeros), PyTorch's names and layouts.
/// `build` is self-attention without masks; [`forward`](Self::forward)
/// takes separate query, key and value and the masks. Not supported:
/// `kdim`/`vdim`, `add_bias_kv`, `add_zero_attn`, unbatched inputs.
#[derive(Clone, Debug)]
pub struct MultiheadAttention {
    embed_dim: usize,
    num_heads: usize,
    dropout: f32,
    bias: bool,
    batch_first: bool,
    name: Option<String>,
}

/// The masks and outputs of [`MultiheadAttention::forward`], PyTorch's
/// keyword arguments (defaults: no masks, no weights returned).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MhaOptions {
    /// A mask over the keys per batch entry, `[N, S]` (PyTorch's boolean
    /// form is [`Mask::Block`]: non-zero keys are padding).
    pub key_padding_mask: Option<Mask>,
    /// A mask over the scores, `[L, S]` or `[N·num_heads, L, S]`.
    pub attn_mask: Option<Mask>,
    /// Query `i` attends keys `0..=i` only (instead of `attn_mask`).
    pub is_causal: bool,
    /// Also return the attention weights.
    pub need_weights: bool,
    /// Return them averaged over the heads, `[N, L, S]`, instead of
    /// `[N, num_heads, L, S]` (PyTorch's default is true).
    pub per_head_weights: bool,
}

impl MultiheadAttention {
    /// `num_heads` heads over `embed_dim` features (which they must divide).
    pub fn new(embed_dim: usize, num_heads: usize) -> Self {
        MultiheadAttention {
            embed_dim,
            num_heads,
            dropout: 0.0,
            bias: true,
            batch_first: false,
            name: None,
        }
    }
    /// Dropout on the attention weights in training graphs (default 0).
    pub fn dropout(mut self, p: f32) -> Self {
        self.dropout = p;
        self
    }
    /// With or without the projections' biases (default true).
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// Inputs and output `[N, L, E]` instead of `[L, N, E]` (default false).
    pub fn batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }
    /// Names the layer (parameters become `{name}.in_proj_weight`, ...).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Attention of `query` over `key` / `value` (each `[L or S, N, E]`, or
    /// batch first): the output `[L, N, E]` (or `[N, L, E]`) and, with
    /// `need_weights`, the weights. `Err` naming the layer if the shapes,
    /// masks or settings do not fit.
    pub fn forward(
        &self,
        g: &mut Graph,
        query: NodeId,
        key: NodeId,
        value: NodeId,
        options: &MhaOptions,
    ) -> Result<(NodeId, Option<NodeId>)> {
        let name = layer_name(g, &self.name, "multihead_attention");
        let (e, h) = (self.embed_dim, self.num_heads);
        if h == 0 || e == 0 || e % h != 0 {
            return attr_err(
                &name,
                format!("embed_dim {e} must be a positive multiple of num_heads {h}"),
            );
        }
        let qs = g.shape(query)?.to_vec();
        let (ks, vs) = (g.shape(key)?.to_vec(), g.shape(value)?.to_vec());
        let batch_axis = usize::from(!self.batch_first);
        let ok = |s: &[usize]| s.len() == 3 && s[2] == e && s[batch_axis] == qs[batch_axis];
        if !ok(&qs) || !ok(&ks) || ks != vs {
            let layout = if self.batch_first {
                "[N, L, E]"
            } else {
                "[L, N, E]"
            };
            return shape_err(
                &name,
                format!("query {qs:?}, key {ks:?}, value {vs:?}: expected {layout} with E = {e}, key and value alike"),
            );
        }
        let w = g.param(
            &format!("{name}.in_proj_weight"),
            [3 * e, e],
            Init::XavierUniform,
        )?;
        let b = match self.bias {
            true => Some(g.param(&format!("{name}.in_proj_bias"), [3 * e], Init::Zeros)?),
            false => None,
        };
        let (n, d) = (qs[batch_axis], e / h);
        // project, then [N, T, E] → [N, H, T, D]
        let heads = |g: &mut Graph, x: NodeId, part: usize| -> Result<NodeId> {
            let x = match self.batch_first {
                true => x,
                false => g.transpose(x, &[1, 0, 2])?,
            };
            let t = g.shape(x)?[1];
            let wp = g.slice(w, 0, part * e, (part + 1) * e, 1)?;
            let mut y = g.matmul_t(x, wp, false, true)?;
            if let Some(b) = b {
                let bp = g.slice(b, 0, part * e, (part + 1) * e, 1)?;
                y = g.add(y, bp)?;
            }
            let y = g.reshape(y, &[n as isize, t as isize, h as isize, d as isize])?;
            g.transpose(y, &[0, 2, 1, 3])
        };
        let (qh, kh, vh) = (heads(g, query, 0)?, heads(g, key, 1)?, heads(g, value, 2)?);
        let (l, s) = (qs[1 - batch_axis], ks[1 - batch_axis]);
        let mut more = Vec::new();
        if let Some(m) = options.key_padding_mask {
            more.push(reshaped(g, &name, m, &[n, s], &[n, 1, 1, s])?);
        }
        let attn_mask = match options.attn_mask {
            Some(m) if g.shape(mask_node(m))?.len() == 3 => {
                Some(reshaped(g, &name, m, &[n * h, l, s], &[n, h, l, s])?)
            }
            Some(m) => Some(reshaped(g, &name, m, &[l, s], &[l, s])?),
            None => None,
        };
        let sdpa = Sdpa {
            attn_mask,
            dropout_p: self.dropout,
            is_causal: options.is_causal,
            scale: None,
            dropout_seed: dropout_seed(&name),
        };
        let (o, weights) = attention(g, qh, kh, vh, &sdpa, &more)?;
        // [N, H, L, D] → [N, L, E] → out_proj
        let o = g.transpose(o, &[0, 2, 1, 3])?;
        let o = g.reshape(o, &[n as isize, l as isize, e as isize])?;
        let out_proj = super::Linear::new(e, e)
            .bias(self.bias)
            .name(&format!("{name}.out_proj"));
        let mut y = out_proj.build(g, o)?;
        if !self.batch_first {
            y = g.transpose(y, &[1, 0, 2])?;
        }
        g.set_name(y, name);
        let weights = match (options.need_weights, options.per_head_weights) {
            (false, _) => None,
            (true, true) => Some(weights),
            (true, false) => Some(g.mean(weights, &[1], false)?),
        };
        Ok((y, weights))
    }
}

fn mask_node(m: Mask) -> NodeId {
    match m {
        Mask::Allow(n) | Mask::Block(n) | Mask::Add(n) => n,
    }
}

/// `m` checked to have shape `want` and reshaped to `to`; `Err` naming `who` otherwise.
fn reshaped(g: &mut Graph, who: &str, m: Mask, want: &[usize], to: &[usize]) -> Result<Mask> {
    let node = mask_node(m);
    let got = g.shape(node)?.to_vec();
    if got != want {
        return shape_err(who, format!("mask has shape {got:?}, expected {want:?}"));
    }
    let to: Vec<isize> = to.iter().map(|&d| d as isize).collect();
    let r = g.reshape(node, &to)?;
    Ok(match m {
        Mask::Allow(_) => Mask::Allow(r),
        Mask::Block(_) => Mask::Block(r),
        Mask::Add(_) => Mask::Add(r),
    })
}

impl Layer for MultiheadAttention {
    /// Self-attention of `x` without masks.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        Ok(self.forward(g, x, x, x, &MhaOptions::default())?.0)
    }
}
