//! `ConvTranspose1d` / `ConvTranspose2d` (`torch.nn.ConvTranspose1d/2d`):
//! the gradient of a convolution with respect to its input, as a layer.
//!
//! Weight `[Cin, Cout/groups, *kernel]`, input `[N, Cin, *S]`, output
//! `[N, Cout, *O]` with `O = (S − 1)·s − 2p + d·(k − 1) + output_padding + 1`,
//! as PyTorch. The graph is the form autodiff gives a convolution's input
//! gradient, `fold(matmul{trans_a}(w, x))` (col2im of the weight's columns),
//! which the `conv_input_grad` pass fuses into one transposed-convolution
//! kernel.

use super::{layer_name, Layer};
use crate::error::{attr_err, shape_err, KilnError, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::{OpBuilder, Window};
use crate::shape::checked_numel;

/// A transposed convolution over `D` spatial dimensions (use
/// [`ConvTranspose1d`] or [`ConvTranspose2d`]). Defaults as PyTorch: stride
/// 1, no padding or output padding, dilation 1, one group, with bias;
/// parameters drawn from `U(±1/√fan_in)` with `fan_in = Cout/groups · ∏kernel`
/// (PyTorch's fan of the transposed weight).
#[derive(Clone, Debug)]
pub struct ConvTranspose<const D: usize> {
    in_channels: usize,
    out_channels: usize,
    kernel: [usize; D],
    stride: [usize; D],
    padding: [usize; D],
    output_padding: [usize; D],
    dilation: [usize; D],
    groups: usize,
    bias: bool,
    name: Option<String>,
}

/// Transposed 1-D convolution over `[N, C, L]`.
pub type ConvTranspose1d = ConvTranspose<1>;
/// Transposed 2-D convolution over `[N, C, H, W]`.
pub type ConvTranspose2d = ConvTranspose<2>;
/// 3-D transposed convolution over `[N, Cin, D, H, W]`
/// (`torch.nn.ConvTranspose3d`); it compiles to `matmul` + `fold`.
pub type ConvTranspose3d = ConvTranspose<3>;

impl<const D: usize> ConvTranspose<D> {
    conv_setters!();
    /// `in → out` channels with a square kernel of size `k`.
    pub fn new(in_channels: usize, out_channels: usize, k: usize) -> Self {
        ConvTranspose {
            in_channels,
            out_channels,
            kernel: [k; D],
            stride: [1; D],
            padding: [0; D],
            output_padding: [0; D],
            dilation: [1; D],
            groups: 1,
            bias: true,
            name: None,
        }
    }
    /// The padding PyTorch's `padding` names: `d·(k − 1) − p` cells of the
    /// implicit zero padding are removed from each side of the output.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p; D];
        self
    }
    /// Cells added to one side of each output dimension (PyTorch's
    /// `output_padding`: it must be smaller than the stride or the dilation).
    pub fn output_padding(mut self, p: usize) -> Self {
        self.output_padding = [p; D];
        self
    }

    /// The output's spatial size for an input of spatial size `s`; `Err`
    /// naming `who` if it is not positive or overflows.
    fn out_size(&self, who: &str, s: &[usize]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(D);
        for i in 0..D {
            let grown = (s[i].checked_sub(1))
                .and_then(|v| v.checked_mul(self.stride[i]))
                .and_then(|v| {
                    let reach = self.dilation[i].checked_mul(self.kernel[i].checked_sub(1)?)?;
                    v.checked_add(reach)?
                        .checked_add(self.output_padding[i])?
                        .checked_add(1)
                });
            let cut = self.padding[i].checked_mul(2);
            match grown.zip(cut).and_then(|(v, c)| v.checked_sub(c)) {
                Some(o) if o > 0 => out.push(o),
                _ => {
                    return shape_err(
                        who,
                        format!(
                            "input spatial size {s:?} gives no output with kernel {:?}, stride {:?}, padding {:?}, output_padding {:?}, dilation {:?}",
                            self.kernel, self.stride, self.padding, self.output_padding, self.dilation
                        ),
                    )
                }
            }
        }
        Ok(out)
    }
    /// `cols` folded over the full output `(S − 1)·s + d·(k − 1) + 1`
    /// (no padding), padded with zeros at the end where output_padding
    /// reaches past it, then cut to `out` from offset `padding`.
    fn uncropped(
        &self,
        g: &mut Graph,
        cols: NodeId,
        window: &Window,
        input: &[usize],
        out: &[usize],
    ) -> Result<NodeId> {
        let full: Vec<usize> = (0..D)
            .map(|i| (input[i] - 1) * self.stride[i] + self.dilation[i] * (self.kernel[i] - 1) + 1)
            .collect();
        let bare = Window {
            padding: vec![0; D],
            ..window.clone()
        };
        let mut y = g.fold(cols, bare, &full)?;
        let mut pads = vec![(0, 0); 2];
        pads.extend((0..D).map(|i| (0, self.output_padding[i].saturating_sub(self.padding[i]))));
        if pads.iter().any(|&(_, a)| a > 0) {
            y = g.pad(y, &pads, 0.0)?;
        }
        for (i, (&start, &len)) in self.padding.iter().zip(out).enumerate() {
            y = g.slice(y, 2 + i as isize, start, start + len, 1)?;
        }
        Ok(y)
    }
}

impl<const D: usize> Layer for ConvTranspose<D> {
    /// `[N, Cin, *spatial]` → `[N, Cout, *out]`, or unbatched `[Cin, *spatial]`
    /// → `[Cout, *out]`.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        super::unbatched(g, x, D, |g, x| self.build_batched(g, x))
    }
}

impl<const D: usize> ConvTranspose<D> {
    fn build_batched(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, &format!("conv_transpose{D}d"));
        let (cin, cout, groups) = (self.in_channels, self.out_channels, self.groups);
        if cin == 0 || cout == 0 || groups == 0 || cin % groups != 0 || cout % groups != 0 {
            return attr_err(
                &name,
                format!("in_channels = {cin} and out_channels = {cout} must be positive multiples of groups = {groups}"),
            );
        }
        let bad_output_padding =
            (0..D).any(|i| self.output_padding[i] >= self.stride[i].max(self.dilation[i]));
        if bad_output_padding {
            return attr_err(
                &name,
                format!(
                    "output_padding {:?} must be smaller than the stride {:?} or the dilation {:?}",
                    self.output_padding, self.stride, self.dilation
                ),
            );
        }
        let window = Window {
            kernel: self.kernel.to_vec(),
            stride: self.stride.to_vec(),
            padding: self.padding.to_vec(),
            dilation: self.dilation.to_vec(),
        };
        window.validate(&name)?;
        let xs = g.shape(x)?.to_vec();
        if xs.len() != D + 2 || xs[1] != cin || xs[2..].contains(&0) {
            let dims = ["L", "H, W", "D, H, W"][D.clamp(1, 3) - 1];
            return shape_err(
                &name,
                format!(
                    "input has shape {xs:?}, expected [N, {cin}, {dims}] or unbatched [{cin}, {dims}], with non-empty {dims}"
                ),
            );
        }
        let out_spatial = self.out_size(&name, &xs[2..])?;
        let (n, og, k) = (xs[0], cout / groups, window.cells());
        let l = checked_numel(&name, &xs[2..])?;
        let fan_in = checked_numel(&name, &[og, k])?;
        let init = Init::LeCunUniform { fan_in };
        let mut wshape = vec![cin, og];
        wshape.extend_from_slice(&self.kernel);
        let w = g.param(&format!("{name}.weight"), wshape, init.clone())?;
        let wm = g.reshape(
            w,
            &[groups as isize, (cin / groups) as isize, fan_in as isize],
        )?;
        let xm = g.reshape(
            x,
            &[
                n as isize,
                groups as isize,
                (cin / groups) as isize,
                l as isize,
            ],
        )?;
        let cols = g.matmul_t(wm, xm, true, false)?;
        let cols = g.reshape(cols, &[n as isize, cout as isize, k as isize, l as isize])?;
        let folded = if (0..D).all(|i| self.output_padding[i] < self.stride[i]) {
            g.fold(cols, window, &out_spatial)
        } else {
            // output_padding ≥ stride (allowed below the dilation): the
            // output is not a convolution's input size, so fold the whole
            // uncropped output, then cut the padding (zeros where it reaches
            // past what the windows cover)
            self.uncropped(g, cols, &window, &xs[2..], &out_spatial)
        };
        let mut y = folded.map_err(|e| KilnError::Shape {
            op: name.clone(),
            message: e.to_string(),
        })?;
        g.set_name(y, format!("{name}.fold"));
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
