//! Recurrent layers: `Lstm` and `Gru` (`torch.nn.LSTM`, `torch.nn.GRU`)
//! with `num_layers`, `bidirectional`, `bias`, `dropout` between layers and
//! initial states, PyTorch's parameter names, layouts and gate orders.
//!
//! Each layer and direction is one matmul for every step's input
//! projection and one `scan` over the steps ([`crate::OpBuilder::scan`])
//! per block of at least 16 batch rows, up to 8 blocks (the blocks' scans
//! run in parallel),
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
            format!(
                "input has shape {}, expected {layout}{}]",
                crate::shape::dims_str(&xs),
                s.input_size
            ),
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
                        "{what} has shape {}, expected [num_layers·directions = {states}, N = {}, H = {h}]",
                        crate::shape::dims_str(g.shape(st)?),
                        crate::shape::dim_str(n)
                    ),
                );
            }
        }
    }
    // the weights' gate rows, G·H, fit
    checked_size(&name, "number of gate rows", h.checked_mul(cell.gates()))?;
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
            let p = Params::declare(g, &name, &suffix, in_size, (h, cell.gates()), s.bias)?;
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

/// One layer and direction's parameters: `W_ih` transposed for `x·W_ihᵀ`,
/// `W_hh` and `b_hh` split by gate (`[G, H, H]`, `[G, H]`).
struct Params {
    w_ih_t: NodeId,
    w_hh: NodeId,
    b_ih: Option<NodeId>,
    b_hh: Option<NodeId>,
}

impl Params {
    fn declare(
        g: &mut Graph,
        name: &str,
        suffix: &str,
        in_size: usize,
        (h, gates): (usize, usize),
        bias: bool,
    ) -> Result<Self> {
        let init = Init::LeCunUniform { fan_in: h };
        let rows = gates * h;
        let w_ih = g.param(
            &format!("{name}.weight_ih_{suffix}"),
            [rows, in_size],
            init.clone(),
        )?;
        let w_hh = g.param(
            &format!("{name}.weight_hh_{suffix}"),
            [rows, h],
            init.clone(),
        )?;
        let (b_ih, b_hh) = match bias {
            true => (
                Some(g.param(&format!("{name}.bias_ih_{suffix}"), [rows], init.clone())?),
                Some(g.param(&format!("{name}.bias_hh_{suffix}"), [rows], init)?),
            ),
            false => (None, None),
        };
        let (gi, hi) = (gates as isize, h as isize);
        Ok(Params {
            w_ih_t: g.transpose(w_ih, &[1, 0])?,
            w_hh: g.reshape(w_hh, &[gi, hi, hi])?,
            b_ih,
            b_hh,
        })
    }
}

/// Gate `i` of `v [G, ..]`: `v[i]` (a view, no copy).
fn gate_of(g: &mut Graph, v: NodeId, i: usize) -> Result<NodeId> {
    let shape: Vec<isize> = g.shape(v)?[1..].iter().map(|&d| d as isize).collect();
    let s = g.slice(v, 0, i, i + 1, 1)?;
    g.reshape(s, &shape)
}

/// Batch rows below which a direction's rows are not split into blocks.
const BLOCK_ROWS: usize = 16;
/// The most blocks of rows a direction runs: each block costs its own
/// scan, step overheads and weight-gradient product, so more blocks than a
/// machine has threads only add work (the graph must not depend on the
/// machine, so this is a fixed number).
const MAX_BLOCKS: usize = 8;

/// How many blocks of rows a direction over `n` rows runs: the most, up to
/// [`MAX_BLOCKS`], that divide `n` evenly with at least [`BLOCK_ROWS`] rows
/// each; 1 for a size derived from a symbolic batch.
fn row_blocks(n: usize) -> usize {
    if crate::shape::batch_multiple(n).is_some() {
        return 1;
    }
    let most = (n / BLOCK_ROWS).min(MAX_BLOCKS);
    (1..=most).rev().find(|d| n % d == 0).unwrap_or(1)
}

/// One direction of one layer over `x [N, T, F]`: its outputs `[N, T, H]`
/// in time order and its final `h` and `c` (`c` is `h` for a GRU), each
/// `[N, H]`. The batch rows' recurrences are independent: the rows run as
/// [`row_blocks`] blocks of equal size, one `scan` each, which run in
/// parallel and need no synchronisation between steps (each row's values
/// are those of one scan over all rows: a row's products and sums do not
/// depend on the other rows). A block's scan reads one per-step input
/// `[T, n, H]` per gate; its constants are each gate's `W_hh [H, H]` (and
/// `b_hh [H]` for a GRU), its carry `h [n, H]` (GRU) or `[h, c]` (LSTM,
/// `[2, n, H]`), so that every gate and state a step reads is a
/// contiguous block.
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
    let gates = cell.gates();
    // every step's input projection in one matmul, then block, gate and
    // time first: [B, G, T, n, H]
    // (as one 2-D product [N·T, F]·[F, G·H], whose weight gradient is one
    // product too instead of one per batch entry and a sum)
    let f = g.shape(x)?[2] as isize;
    let rows = g.reshape(x, &[(n * steps) as isize, f])?;
    let mut xw = g.matmul(rows, p.w_ih_t)?;
    if let (Cell::Lstm, Some(b)) = (cell, p.b_hh) {
        // an LSTM adds both biases to the gates: fold them in here
        xw = g.add(xw, b)?;
    }
    if let Some(b) = p.b_ih {
        xw = g.add(xw, b)?;
    }
    let blocks = row_blocks(n);
    let nb = n / blocks;
    let dims = [blocks, nb, steps, gates, h].map(|d| d as isize);
    let xw = g.reshape(xw, &dims)?;
    let xw = g.transpose(xw, &[0, 3, 2, 1, 4])?;
    let mut consts = (0..gates)
        .map(|i| gate_of(g, p.w_hh, i))
        .collect::<Result<Vec<_>>>()?;
    if let (Cell::Gru, Some(b)) = (cell, p.b_hh) {
        let b = g.reshape(b, &[gates as isize, h as isize])?;
        for i in 0..gates {
            consts.push(gate_of(g, b, i)?);
        }
    }
    let shapes: Vec<Vec<usize>> = consts
        .iter()
        .map(|&k| Ok(g.shape(k)?.to_vec()))
        .collect::<Result<_>>()?;
    let refs: Vec<&[usize]> = shapes.iter().map(Vec::as_slice).collect();
    let carry = match cell {
        Cell::Lstm => vec![2, nb, h],
        Cell::Gru => vec![nb, h],
    };
    let x_shape = [nb, h];
    let x_shapes = vec![&x_shape[..]; gates];
    let body = ScanBody::build(&carry, &x_shapes, &refs, |b, carry, xt, k| {
        step(b, cell, carry, xt, k)
    })?;
    let last = if reverse { 0 } else { steps - 1 };
    let (mut hs, mut hl, mut cl) = (vec![], vec![], vec![]);
    for blk in 0..blocks {
        let xb = gate_of(g, xw, blk)?;
        let xs = (0..gates)
            .map(|i| gate_of(g, xb, i))
            .collect::<Result<Vec<_>>>()?;
        let rows = |g: &mut Graph, st: NodeId| match blocks {
            1 => Ok(st),
            _ => g.slice(st, 0, blk * nb, (blk + 1) * nb, 1),
        };
        let carry0 = match cell {
            Cell::Lstm => {
                let (h0, c0) = (rows(g, h0)?, rows(g, c0)?);
                g.stack(&[h0, c0], 0)?
            }
            Cell::Gru => rows(g, h0)?,
        };
        let seq = g.scan(&body, carry0, &xs, &consts, reverse)?; // [T, *carry]
        let at = g.slice(seq, 0, last, last + 1, 1)?;
        let at = gate_of(g, at, 0)?; // the last carry
        match cell {
            Cell::Lstm => {
                let s = g.slice(seq, 1, 0, 1, 1)?;
                hs.push(g.reshape(s, &[steps as isize, nb as isize, h as isize])?);
                hl.push(gate_of(g, at, 0)?);
                cl.push(gate_of(g, at, 1)?);
            }
            Cell::Gru => {
                hs.push(seq);
                hl.push(at);
                cl.push(at);
            }
        }
    }
    if blocks == 1 {
        return Ok((g.transpose(hs[0], &[1, 0, 2])?, hl[0], cl[0]));
    }
    // [B, T, n, H] -> [B, n, T, H] = [N, T, H]
    let hs = g.stack(&hs, 0)?;
    let hs = g.transpose(hs, &[0, 2, 1, 3])?;
    let seq = g.reshape(hs, &[n as isize, steps as isize, h as isize])?;
    Ok((seq, g.concat(&hl, 0)?, g.concat(&cl, 0)?))
}

/// One step of `cell` on `carry` (`h [N, H]`, or `[h, c]` `[2, N, H]`) and
/// the gates' input projections `xt` (`[N, H]` each), with constants
/// `[W_hh per gate [H, H].., (b_hh per gate [H].. for a GRU)]`: the next
/// carry.
fn step(b: &mut Graph, cell: Cell, carry: NodeId, xt: &[NodeId], k: &[NodeId]) -> Result<NodeId> {
    // h·W_hhᵀ of gate i (plus its b_hh for a GRU)
    let hw = |b: &mut Graph, hs: NodeId, i: usize| -> Result<NodeId> {
        let p = b.matmul_t(hs, k[i], false, true)?;
        match k.get(xt.len() + i) {
            Some(&bias) => b.add(p, bias),
            None => Ok(p),
        }
    };
    match cell {
        Cell::Lstm => {
            let (hs, c) = (gate_of(b, carry, 0)?, gate_of(b, carry, 1)?);
            let mut sums = Vec::with_capacity(4);
            for (i, &x) in xt.iter().enumerate() {
                let p = hw(b, hs, i)?;
                sums.push(b.add(x, p)?);
            }
            let (i, f) = (b.sigmoid(sums[0])?, b.sigmoid(sums[1])?);
            let (cand, o) = (b.tanh(sums[2])?, b.sigmoid(sums[3])?);
            let keep = b.mul(f, c)?;
            let write = b.mul(i, cand)?;
            let c = b.add(keep, write)?;
            let tc = b.tanh(c)?;
            let h = b.mul(o, tc)?;
            b.stack(&[h, c], 0)
        }
        Cell::Gru => {
            let hs = carry;
            let (hr, hz, hn) = (hw(b, hs, 0)?, hw(b, hs, 1)?, hw(b, hs, 2)?);
            let (sr, sz) = (b.add(xt[0], hr)?, b.add(xt[1], hz)?);
            let (r, z) = (b.sigmoid(sr)?, b.sigmoid(sz)?);
            let rh = b.mul(r, hn)?;
            let sn = b.add(xt[2], rh)?;
            let cand = b.tanh(sn)?;
            // (1 − z)·n + z·h = n + z·(h − n)
            let diff = b.sub(hs, cand)?;
            let zd = b.mul(z, diff)?;
            b.add(cand, zd)
        }
    }
}
