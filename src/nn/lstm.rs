//! `Lstm`: a single-layer LSTM unrolled over a fixed sequence length.
//!
//! Input `[N, T, I]` (batch first, as PyTorch's `batch_first=True`), output
//! the hidden state of every step `[N, T, H]`; initial states are zero.
//! Parameters and gate order (input, forget, cell, output) are PyTorch's:
//! `weight_ih [4H, I]`, `weight_hh [4H, H]`, `bias_ih [4H]`, `bias_hh [4H]`.
//! Per step: `gates = x_t·W_ihᵀ + h·W_hhᵀ + b_ih + b_hh`,
//! `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)`.

use super::{layer_name, Layer};
use crate::error::{attr_err, shape_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::OpBuilder;

/// A single-layer LSTM over `[N, T, I]`.
#[derive(Clone, Debug)]
pub struct Lstm {
    input_size: usize,
    hidden_size: usize,
    name: Option<String>,
}

impl Lstm {
    /// An LSTM with `input_size` features and `hidden_size` units; parameters
    /// drawn from `U(−1/√H, 1/√H)` (PyTorch's default).
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        Lstm {
            input_size,
            hidden_size,
            name: None,
        }
    }
    /// Names the layer (parameters become `{name}.weight_ih` ...).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Layer for Lstm {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "lstm");
        let (i_sz, h_sz) = (self.input_size, self.hidden_size);
        if i_sz == 0 || h_sz == 0 {
            return attr_err(&name, "input_size and hidden_size must be at least 1");
        }
        let xs = g.shape(x)?.to_vec();
        if xs.len() != 3 || xs[2] != i_sz || xs[1] == 0 {
            return shape_err(
                &name,
                format!("input has shape {xs:?}, expected [N, T ≥ 1, {i_sz}]"),
            );
        }
        let (n, t_len) = (xs[0], xs[1]);
        let init = Init::LeCunUniform { fan_in: h_sz };
        // the four gates' rows (the parameters' own shapes are checked next)
        let gates =
            crate::shape::checked_size(&name, "gate rows 4·hidden_size", h_sz.checked_mul(4))?;
        let w_ih = g.param(&format!("{name}.weight_ih"), [gates, i_sz], init.clone())?;
        let w_hh = g.param(&format!("{name}.weight_hh"), [gates, h_sz], init.clone())?;
        let b_ih = g.param(&format!("{name}.bias_ih"), [gates], init.clone())?;
        let b_hh = g.param(&format!("{name}.bias_hh"), [gates], init)?;
        let w_ih_t = g.transpose(w_ih, &[1, 0])?;
        let w_hh_t = g.transpose(w_hh, &[1, 0])?;
        let bias = g.add(b_ih, b_hh)?;
        let mut h = g.fill(&[n, h_sz], 0.0)?;
        let mut c = g.fill(&[n, h_sz], 0.0)?;
        let mut hs = Vec::with_capacity(t_len);
        for t in 0..t_len {
            let xt = g.slice(x, 1, t, t + 1, 1)?;
            let xt = g.reshape(xt, &[n as isize, i_sz as isize])?;
            let a = g.matmul(xt, w_ih_t)?;
            let b = g.matmul(h, w_hh_t)?;
            let gates = g.add(a, b)?;
            let gates = g.add(gates, bias)?;
            g.set_name(gates, format!("{name}.t{t}.gates"));
            let gate = |g: &mut Graph, k: usize| g.slice(gates, 1, k * h_sz, (k + 1) * h_sz, 1);
            let (gi, gf, gg, go) = (gate(g, 0)?, gate(g, 1)?, gate(g, 2)?, gate(g, 3)?);
            let (i, f, cand, o) = (g.sigmoid(gi)?, g.sigmoid(gf)?, g.tanh(gg)?, g.sigmoid(go)?);
            let keep = g.mul(f, c)?;
            let write = g.mul(i, cand)?;
            c = g.add(keep, write)?;
            let tc = g.tanh(c)?;
            h = g.mul(o, tc)?;
            g.set_name(h, format!("{name}.t{t}.h"));
            hs.push(h);
        }
        g.stack(&hs, 1)
    }
}
