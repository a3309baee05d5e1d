//! Recurrent layers: `Lstm` and `Gru` (`torch.nn.LSTM`, `torch.nn.GRU`)
//! with `num_layers`, `bidirectional`, `bias`, `dropout` between layers and
//! initial states, PyTorch's parameter names, layouts and gate orders.
//!
//! Each layer and direction is one matmul for every step's input
//! projection and one `scan` over the steps ([`crate::OpBuilder::scan`]),
//! so the graph and its compile time do not grow with the sequence. Per
//! step (`x·Wᵀ` includes the input bias):
//! - LSTM, gates i, f, g, o: `c = σ(f)·c + σ(i)·tanh(g)`, `h = σ(o)·tanh(c)`;
//! - GRU, gates r, z, n: `n = tanh(x·W_inᵀ + r·(h·W_hnᵀ + b_hn))`,
//!   `h = (1 − z)·n + z·h` with `r`, `z` the sigmoids of their sums.

use super::{dropout_seed, layer_name, Layer};
use crate::error::{attr_err, shape_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::{OpBuilder, ScanBody};
use crate::shape::checked_size;

/// Which cell a recurrent layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    Lstm,
    Gru,
}

impl Cell {
    /// Gate rows per hidden unit.
    fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// The settings both recurrent layers share (PyTorch's constructor arguments).
#[derive(Clone, Debug)]
struct Settings {
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bias: bool,
    batch_first: bool,
    dropout: f32,
    bidirectional: bool,
    name: Option<String>,
}

macro_rules! recurrent_layer {
    ($(#[$doc:meta])* $ty:ident, $cell:expr, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $ty(Settings);

        impl $ty {
            /// `input_size` features in, `hidden_size` units; one layer, one
            /// direction, with biases, batch first; parameters drawn from
            /// `U(±1/√hidden_size)` (PyTorch's default).
            pub fn new(input_size: usize, hidden_size: usize) -> Self {
                $ty(Settings {
                    input_size,
                    hidden_size,
                    num_layers: 1,
                    bias: true,
                    batch_first: true,
                    dropout: 0.0,
                    bidirectional: false,
                    name: None,
                })
            }
            /// Stacked layers, each reading the previous one's output (default 1).
            pub fn num_layers(mut self, n: usize) -> Self {
                self.0.num_layers = n;
                self
            }
            /// With or without the biases `bias_ih_l{k}`, `bias_hh_l{k}` (default true).
            pub fn bias(mut self, bias: bool) -> Self {
                self.0.bias = bias;
                self
            }
            /// Input and output `[N, T, ·]` (true, kiln's default) or `[T, N, ·]`
            /// (false, PyTorch's default). The states are `[layers·directions, N, H]` either way.
            pub fn batch_first(mut self, b: bool) -> Self {
                self.0.batch_first = b;
                self
            }
            /// Dropout on every layer's output but the last, in training graphs.
            pub fn dropout(mut self, p: f32) -> Self {
                self.0.dropout = p;
                self
            }
            /// A second direction per layer, running from the last step back;
            /// its outputs follow the forward ones on the feature axis.
            pub fn bidirectional(mut self, b: bool) -> Self {
                self.0.bidirectional = b;
                self
            }
            /// Names the layer (parameters become `{name}.weight_ih_l0`, ...).
            pub fn name(mut self, name: &str) -> Self {
                self.0.name = Some(name.into());
                self
            }
        }

        impl Layer for $ty {
            /// The output sequence, from zero initial states.
            fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
                Ok(run(&self.0, $cell, $kind, g, x, None, None)?.output)
            }
        }
    };
}

recurrent_layer!(
    /// A multi-layer LSTM (`torch.nn.LSTM`). Parameters per layer `k` (and
    /// `_reverse` for the second direction): `weight_ih_l{k} [4H, in]`,
    /// `weight_hh_l{k} [4H, H]`, `bias_ih_l{k} [4H]`, `bias_hh_l{k} [4H]`,
    /// gates in PyTorch's order i, f, g, o. [`Lstm::forward`] also takes
    /// initial states and returns the final ones. Not supported: `proj_size`,
    /// unbatched `[T, in]` input.
    Lstm,
    Cell::Lstm,
    "lstm"
);

recurrent_layer!(
    /// A multi-layer GRU (`torch.nn.GRU`). Parameters as [`Lstm`]'s with
    /// `3H` gate rows in PyTorch's order r, z, n. [`Gru::forward`] also
    /// takes the initial state and returns the final one. Not supported:
    /// unbatched `[T, in]` input.
    Gru,
    Cell::Gru,
    "gru"
);

/// What a recurrent layer returns: the last layer's output at every step
/// `[N, T, D·H]` (or time first) and the final states of every layer and
/// direction `[num_layers·D, N, H]` (`c_n` for an LSTM only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RnnOutput {
    /// The output sequence.
    pub output: NodeId,
    /// The final hidden states.
    pub h_n: NodeId,
    /// The final cell states (LSTM).
    pub c_n: Option<NodeId>,
}

impl Lstm {
    /// The LSTM on `x` from initial states `(h_0, c_0)`, each
    /// `[num_layers·D, N, H]` (zeros when `None`), as PyTorch's
    /// `lstm(x, (h_0, c_0))`. `Err` naming the layer if shapes or settings
    /// do not fit.
    pub fn forward(
        &self,
        g: &mut Graph,
        x: NodeId,
        state: Option<(NodeId, NodeId)>,
    ) -> Result<RnnOutput> {
        run(
            &self.0,
            Cell::Lstm,
            "lstm",
            g,
            x,
            state.map(|s| s.0),
            state.map(|s| s.1),
        )
    }
}

impl Gru {
    /// The GRU on `x` from initial state `h_0 [num_layers·D, N, H]` (zeros
    /// when `None`), as PyTorch's `gru(x, h_0)`. `Err` as [`Lstm::forward`].
    pub fn forward(&self, g: &mut Graph, x: NodeId, h_0: Option<NodeId>) -> Result<RnnOutput> {
        run(&self.0, Cell::Gru, "gru", g, x, h_0, None)
    }
}

/// Builds the layers on `x`, checking every setting and shape first.
fn run(
    s: &Settings,
    cell: Cell,
    kind: &str,
    g: &mut Graph,
    x: NodeId,
    h_0: Option<NodeId>,
    c_0: Option<NodeId>,
) -> Result<RnnOutput> {
    let name = layer_name(g, &s.name, kind);
    let (h, dirs) = (s.hidden_size, 1 + usize::from(s.bidirectional));
    if s.input_size == 0 || h == 0 || s.num_layers == 0 {
        return attr_err(
            &name,
            "input_size, hidden_size and num_layers must be at least 1",
        );
    }
    if !(0.0..1.0).contains(&s.dropout) {
        return attr_err(&name, format!("dropout must be in 0..1, got {}", s.dropout));
    }
    let xs = g.shape(x)?.to_vec();
    let time_axis = usize::from(s.batch_first);
    if xs.len() != 3 || xs[2] != s.input_size || xs[time_axis] == 0 {
        let layout = if s.batch_first {
            "[N, T ≥ 1, "
        } else {
            "[T ≥ 1, N, "
        };
        return shape_err(
            &name,
            format!("input has shape {xs:?}, expected {layout}{}]", s.input_size),
        );
    }
    let (n, steps) = (xs[1 - time_axis], xs[time_axis]);
    let states = s.num_layers * dirs;
    for (what, st) in [("h_0", h_0), ("c_0", c_0)] {
        if let Some(st) = st {
            if g.shape(st)? != [states, n, h] {
                return shape_err(
                    &name,
                    format!(
                        "{what} has shape {:?}, expected [num_layers·directions = {states}, N = {n}, H = {h}]",
                        g.shape(st)?
                    ),
                );
            }
        }
    }
    let gates = checked_size(&name, "gate rows", h.checked_mul(cell.gates()))?;
    // work batch first: [N, T, F]
    let mut input = match s.batch_first {
        true => x,
        false => g.transpose(x, &[1, 0, 2])?,
    };
    let (mut h_n, mut c_n) = (Vec::new(), Vec::new());
    for layer in 0..s.num_layers {
        let in_size = if layer == 0 { s.input_size } else { dirs * h };
        let mut outs = Vec::with_capacity(dirs);
        for dir in 0..dirs {
            let k = layer * dirs + dir;
            let suffix = format!("l{layer}{}", if dir == 1 { "_reverse" } else { "" });
            let p = Params::declare(g, &name, &suffix, in_size, h, gates, s.bias)?;
            let initial = |g: &mut Graph, st: Option<NodeId>| -> Result<NodeId> {
                match st {
                    Some(st) => {
                        let one = g.slice(st, 0, k, k + 1, 1)?;
                        g.reshape(one, &[n as isize, h as isize])
                    }
                    None => g.fill(&[n, h], 0.0),
                }
            };
            let (h0, c0) = (initial(g, h_0)?, initial(g, c_0)?);
            let (seq, hl, cl) = direction(g, cell, &p, input, (n, steps, h), dir == 1, h0, c0)?;
            g.set_name(seq, format!("{name}.{suffix}"));
            outs.push(seq);
            h_n.push(hl);
            c_n.push(cl);
        }
        input = match outs.len() {
            1 => outs[0],
            _ => g.concat(&outs, 2)?,
        };
        if s.dropout > 0.0 && layer + 1 < s.num_layers {
            let seed = dropout_seed(&format!("{name}.dropout_l{layer}"));
            input = g.dropout(input, s.dropout, seed)?;
        }
    }
    let output = match s.batch_first {
        true => input,
        false => g.transpose(input, &[1, 0, 2])?,
    };
    let h_n = g.stack(&h_n, 0)?;
    let c_n = match cell {
        Cell::Lstm => Some(g.stack(&c_n, 0)?),
        Cell::Gru => None,
    };
    Ok(RnnOutput { output, h_n, c_n })
}

/// One layer and direction's parameters, transposed for `x·Wᵀ`.
struct Params {
    w_ih_t: NodeId,
    w_hh_t: NodeId,
    b_ih: Option<NodeId>,
    b_hh: Option<NodeId>,
}

impl Params {
    fn declare(
        g: &mut Graph,
        name: &str,
        suffix: &str,
        in_size: usize,
        h: usize,
        gates: usize,
        bias: bool,
    ) -> Result<Self> {
        let init = Init::LeCunUniform { fan_in: h };
        let w_ih = g.param(
            &format!("{name}.weight_ih_{suffix}"),
            [gates, in_size],
            init.clone(),
        )?;
        let w_hh = g.param(
            &format!("{name}.weight_hh_{suffix}"),
            [gates, h],
            init.clone(),
        )?;
        let (b_ih, b_hh) = match bias {
            true => (
                Some(g.param(&format!("{name}.bias_ih_{suffix}"), [gates], init.clone())?),
                Some(g.param(&format!("{name}.bias_hh_{suffix}"), [gates], init)?),
            ),
            false => (None, None),
        };
        Ok(Params {
            w_ih_t: g.transpose(w_ih, &[1, 0])?,
            w_hh_t: g.transpose(w_hh, &[1, 0])?,
            b_ih,
            b_hh,
        })
    }
}

/// One direction of one layer over `x [N, T, F]`: its outputs `[N, T, H]`
/// in time order and its final `h` and `c` (`c` is `h` for a GRU), each
/// `[N, H]`. The steps are one `scan` over the input projections
/// `[T, N, G·H]`; its carry is `h` (GRU) or `[h, c]` (LSTM, `[N, 2H]`).
#[allow(clippy::too_many_arguments)]
fn direction(
    g: &mut Graph,
    cell: Cell,
    p: &Params,
    x: NodeId,
    (n, steps, h): (usize, usize, usize),
    reverse: bool,
    h0: NodeId,
    c0: NodeId,
) -> Result<(NodeId, NodeId, NodeId)> {
    // every step's input projection in one matmul, time first: [T, N, G·H]
    let mut xw = g.matmul(x, p.w_ih_t)?;
    let mut consts = vec![p.w_hh_t];
    match (cell, p.b_hh) {
        // an LSTM adds both biases to the gates: fold them in here
        (Cell::Lstm, Some(b)) => xw = g.add(xw, b)?,
        (Cell::Gru, Some(b)) => consts.push(b),
        (_, None) => {}
    }
    if let Some(b) = p.b_ih {
        xw = g.add(xw, b)?;
    }
    let xw = g.transpose(xw, &[1, 0, 2])?;
    let width = h * cell.gates();
    let states = if cell == Cell::Lstm { 2 } else { 1 };
    let shapes: Vec<Vec<usize>> = consts
        .iter()
        .map(|&k| Ok(g.shape(k)?.to_vec()))
        .collect::<Result<_>>()?;
    let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    let body = ScanBody::build(&[n, states * h], &[n, width], &refs, |b, carry, xt, k| {
        step(b, cell, h, carry, xt, k)
    })?;
    let carry0 = match cell {
        Cell::Lstm => g.concat(&[h0, c0], 1)?,
        Cell::Gru => h0,
    };
    let seq = g.scan(&body, carry0, xw, &consts, reverse)?; // [T, N, states·H]
    let last = if reverse { 0 } else { steps - 1 };
    let part = |g: &mut Graph, v: NodeId, k: usize| g.slice(v, 2, k * h, (k + 1) * h, 1);
    let final_state = |g: &mut Graph, k: usize| -> Result<NodeId> {
        let at = g.slice(seq, 0, last, last + 1, 1)?;
        let s = part(g, at, k)?;
        g.reshape(s, &[n as isize, h as isize])
    };
    let (hl, cl) = (final_state(g, 0)?, final_state(g, states - 1)?);
    let hs = part(g, seq, 0)?;
    Ok((g.transpose(hs, &[1, 0, 2])?, hl, cl))
}

/// One step of `cell` on `carry [N, states·H]` and the input projection
/// `xt [N, G·H]`, with constants `[W_hhᵀ, (b_hh for a GRU)]`: the next carry.
fn step(
    b: &mut Graph,
    cell: Cell,
    h: usize,
    carry: NodeId,
    xt: NodeId,
    k: &[NodeId],
) -> Result<NodeId> {
    let gate = |b: &mut Graph, v: NodeId, i: usize| b.slice(v, 1, i * h, (i + 1) * h, 1);
    let hs = gate(b, carry, 0)?;
    let mut hw = b.matmul(hs, k[0])?;
    if let Some(&bias) = k.get(1) {
        hw = b.add(hw, bias)?;
    }
    match cell {
        Cell::Lstm => {
            let c = gate(b, carry, 1)?;
            let sum = b.add(xt, hw)?;
            let (gi, gf) = (gate(b, sum, 0)?, gate(b, sum, 1)?);
            let (gg, go) = (gate(b, sum, 2)?, gate(b, sum, 3)?);
            let (i, f) = (b.sigmoid(gi)?, b.sigmoid(gf)?);
            let (cand, o) = (b.tanh(gg)?, b.sigmoid(go)?);
            let keep = b.mul(f, c)?;
            let write = b.mul(i, cand)?;
            let c = b.add(keep, write)?;
            let tc = b.tanh(c)?;
            let h = b.mul(o, tc)?;
            b.concat(&[h, c], 1)
        }
        Cell::Gru => {
            let (xr, xz, xn) = (gate(b, xt, 0)?, gate(b, xt, 1)?, gate(b, xt, 2)?);
            let (hr, hz, hn) = (gate(b, hw, 0)?, gate(b, hw, 1)?, gate(b, hw, 2)?);
            let (sr, sz) = (b.add(xr, hr)?, b.add(xz, hz)?);
            let (r, z) = (b.sigmoid(sr)?, b.sigmoid(sz)?);
            let rh = b.mul(r, hn)?;
            let sn = b.add(xn, rh)?;
            let cand = b.tanh(sn)?;
            // (1 − z)·n + z·h = n + z·(h − n)
            let diff = b.sub(hs, cand)?;
            let zd = b.mul(z, diff)?;
            b.add(cand, zd)
        }
    }
}
