//! `Conv1d` / `Conv2d`, expressed as unfold (im2col) + batched matmul + bias add.
//!
//! Weight `[Cout, Cin/groups, *kernel]`, input `[N, Cin, *S]`, output
//! `[N, Cout, *O]` with `O = floor((S + 2p − d(k−1) − 1)/s) + 1`, as PyTorch.
//! The graph: `unfold(x) [N,Cin,K,L] → reshape [N,G,Cin/G·K,L]`,
//! `weight → reshape [G,Cout/G,Cin/G·K]`, `matmul → [N,G,Cout/G,L] →
//! reshape [N,Cout,*O]`, `+ bias [Cout,1..]`.

use super::{layer_name, Layer};
use crate::error::{attr_err, shape_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::OpBuilder;
use crate::ops::Window;
use crate::shape::checked_numel;

/// An N-d convolution over `D` spatial dimensions (use [`Conv1d`],
/// [`Conv2d`] or [`Conv3d`]).
#[derive(Clone, Debug)]
pub struct Conv<const D: usize> {
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
    dilation: [usize; D],
    /// PyTorch's `padding='same'` (then `padding` is unused).
    same: bool,
    groups: usize,
    bias: bool,
    name: Option<String>,
}

/// 1-D convolution over `[N, C, L]`.
pub type Conv1d = Conv<1>;
/// 2-D convolution over `[N, C, H, W]`.
pub type Conv2d = Conv<2>;
/// 3-D convolution over `[N, C, D, H, W]` (`torch.nn.Conv3d`), weight
/// `[Cout, Cin/groups, kD, kH, kW]`. It compiles to `unfold` + `matmul`
/// (the fused kernels are 1-D and 2-D): correct, not yet fast.
pub type Conv3d = Conv<3>;

impl<const D: usize> Conv<D> {
    conv_setters!();
    /// `in → out` channels with a square kernel of size `k`; stride 1, no
    /// padding, dilation 1, one group, with bias; parameters drawn from
    /// `U(−1/√fan_in, 1/√fan_in)` (PyTorch's default).
    pub fn new(in_channels: usize, out_channels: usize, k: usize) -> Self {
        Conv {
            in_channels,
            out_channels,
            kernel: [k; D],
            stride: [1; D],
            padding: [0; D],
            dilation: [1; D],
            same: false,
            groups: 1,
            bias: true,
            name: None,
        }
    }
    /// The same zero padding on every side.
    pub fn padding(self, p: usize) -> Self {
        self.paddings([p; D])
    }
    /// Zero padding per spatial dimension (both sides).
    pub fn paddings(mut self, p: [usize; D]) -> Self {
        self.padding = p;
        self.same = false;
        self
    }
    /// PyTorch's `padding='same'`: the output has the input's size (stride 1
    /// only, else `Err` at build). Each dimension is padded by `d·(k−1)` in
    /// all, half before; an odd extra cell goes after, as PyTorch does.
    pub fn padding_same(mut self) -> Self {
        self.same = true;
        self
    }
    /// PyTorch's `padding='valid'`: no padding.
    pub fn padding_valid(self) -> Self {
        self.paddings([0; D])
    }
    /// The window this convolution slides (with `padding_same`, its
    /// symmetric part: an odd extra cell is padded onto the input first).
    pub fn window(&self) -> Window {
        let padding = match self.same {
            true => self.same_padding().map(|(before, _)| before).to_vec(),
            false => self.padding.to_vec(),
        };
        Window {
            kernel: self.kernel.to_vec(),
            stride: self.stride.to_vec(),
            padding,
            dilation: self.dilation.to_vec(),
        }
    }
    /// `padding='same'` per dimension: `(before, odd extra after)`, the
    /// total `d·(k−1)` saturating (a window that large is refused anyway).
    fn same_padding(&self) -> [(usize, usize); D] {
        std::array::from_fn(|i| {
            let total = self.dilation[i].saturating_mul(self.kernel[i].saturating_sub(1));
            (total / 2, total % 2)
        })
    }
}

impl<const D: usize> Layer for Conv<D> {
    /// `[N, Cin, *spatial]` → `[N, Cout, *out]`, or unbatched `[Cin, *spatial]`
    /// → `[Cout, *out]`.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        super::unbatched(g, x, D, |g, x| self.build_batched(g, x))
    }
}

impl<const D: usize> Conv<D> {
    fn build_batched(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, &format!("conv{D}d"));
        let (cin, cout, groups) = (self.in_channels, self.out_channels, self.groups);
        if cin == 0 || cout == 0 {
            return attr_err(
                &name,
                format!("in_channels = {cin} and out_channels = {cout} must be at least 1"),
            );
        }
        if groups == 0 || cin % groups != 0 || cout % groups != 0 {
            return attr_err(
                &name,
                format!("groups = {groups} must be ≥ 1 and divide in_channels = {cin} and out_channels = {cout}"),
            );
        }
        let window = self.window();
        window.validate(&name)?;
        let xs = g.shape(x)?.to_vec();
        if xs.len() != D + 2 || xs[1] != cin {
            let dims = ["L", "H, W", "D, H, W"][D.clamp(1, 3) - 1];
            return shape_err(
                &name,
                format!("input has shape {xs:?}, expected [N, {cin}, {dims}] or unbatched [{cin}, {dims}]"),
            );
        }
        let (x, xs) = match self.same {
            false => (x, xs),
            true => {
                if xs[2..].contains(&0) {
                    return shape_err(
                        &name,
                        format!("input has shape {xs:?}: an empty spatial dimension"),
                    );
                }
                if self.stride.iter().any(|&s| s != 1) {
                    return attr_err(
                        &name,
                        format!("padding='same' needs stride 1, got {:?}", self.stride),
                    );
                }
                let mut pads = vec![(0, 0); 2];
                pads.extend(self.same_padding().map(|(_, extra)| (0, extra)));
                let x = match pads.iter().any(|&(_, e)| e > 0) {
                    true => g.pad(x, &pads, 0.0)?,
                    false => x,
                };
                (x, g.shape(x)?.to_vec())
            }
        };
        let out_spatial = window.out_size(&name, &xs[2..])?;
        let (n, cg, k, l) = (
            xs[0],
            cin / groups,
            window.cells(),
            checked_numel(&name, &out_spatial)?,
        );
        let fan_in = checked_numel(&name, &[cg, k])?;
        let init = Init::LeCunUniform { fan_in };
        let mut wshape = vec![cout, cg];
        wshape.extend_from_slice(&self.kernel);
        let w = g.param(&format!("{name}.weight"), wshape, init.clone())?;

        let cols = g.unfold(x, window)?;
        g.set_name(cols, format!("{name}.unfold"));
        let cols = g.reshape(
            cols,
            &[n as isize, groups as isize, fan_in as isize, l as isize],
        )?;
        let wm = g.reshape(
            w,
            &[groups as isize, (cout / groups) as isize, fan_in as isize],
        )?;
        let y = g.matmul(wm, cols)?;
        g.set_name(y, format!("{name}.matmul"));
        let mut oshape = vec![n as isize, cout as isize];
        oshape.extend(out_spatial.iter().map(|&o| o as isize));
        let mut y = g.reshape(y, &oshape)?;
        if self.bias {
            let b = g.param(&format!("{name}.bias"), [cout], init)?;
            let mut bshape = vec![cout as isize];
            bshape.extend([1; D]);
            let b = g.reshape(b, &bshape)?;
            y = g.add(y, b)?;
            g.set_name(y, format!("{name}.bias_add"));
        }
        Ok(y)
    }
}
