//! 1-D, 2-D and 3-D pooling, expressed as pad + unfold + reduction (the
//! compiler fuses the 1-D and 2-D forms into pooling kernels; 3-D stays
//! unfold + reduction).
//!
//! Semantics are PyTorch's: stride defaults to the kernel, padding is at most
//! half the (effective) kernel, and with `ceil_mode` a last window may start
//! inside the input or the left padding but never wholly in the right padding.
//! Max pooling pads with −∞ (padded cells are never chosen); average pooling
//! pads with zeros and divides by the window clipped to the padded input
//! (`count_include_pad = true`, the default) or by the number of real cells.

use super::{layer_name, Layer};
use crate::error::{attr_err, shape_err, Result};
use crate::graph::{Graph, NodeId};
use crate::ops::OpBuilder;
use crate::ops::Window;
use crate::shape::checked_size;
use std::marker::PhantomData;

/// Which reduction a [`Pool`] applies over its windows.
pub trait PoolKind: Clone + std::fmt::Debug {
    /// Layer-name prefix (`max`, `avg`: layers are named `maxpool2d`, ...).
    const KIND: &'static str;
}

/// Marker for max pooling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Max;
/// Marker for average pooling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Avg;

impl PoolKind for Max {
    const KIND: &'static str = "max";
}
impl PoolKind for Avg {
    const KIND: &'static str = "avg";
}

/// Pooling over `D` spatial dimensions, `[N, C, *spatial]` (use
/// [`MaxPool2d`], [`AvgPool2d`] or their 1-D and 3-D forms).
#[derive(Clone, Debug)]
pub struct Pool<K: PoolKind, const D: usize = 2> {
    kernel: [usize; D],
    stride: Option<[usize; D]>,
    padding: [usize; D],
    dilation: [usize; D],
    ceil_mode: bool,
    count_include_pad: bool,
    name: Option<String>,
    kind: PhantomData<K>,
}

/// 2-D max pooling (kernel, stride, padding with −∞, dilation, `ceil_mode`;
/// `torch.nn.MaxPool2d`).
pub type MaxPool2d = Pool<Max>;
/// 2-D average pooling (kernel, stride, zero padding, `ceil_mode`,
/// `count_include_pad`; `torch.nn.AvgPool2d`).
pub type AvgPool2d = Pool<Avg>;
/// 1-D max pooling over `[N, C, L]` (`torch.nn.MaxPool1d`).
pub type MaxPool1d = Pool<Max, 1>;
/// 1-D average pooling over `[N, C, L]` (`torch.nn.AvgPool1d`).
pub type AvgPool1d = Pool<Avg, 1>;
/// 3-D max pooling over `[N, C, D, H, W]` (`torch.nn.MaxPool3d`; compiles
/// to unfold + max, not a fused kernel).
pub type MaxPool3d = Pool<Max, 3>;
/// 3-D average pooling over `[N, C, D, H, W]` (`torch.nn.AvgPool3d`;
/// compiles to unfold + sum, not a fused kernel).
pub type AvgPool3d = Pool<Avg, 3>;

impl<K: PoolKind, const D: usize> Pool<K, D> {
    /// A cubic window of side `k` with stride `k`, no padding
    /// (and for average pooling `count_include_pad = true`, as PyTorch).
    pub fn new(k: usize) -> Self {
        Pool {
            kernel: [k; D],
            stride: None,
            padding: [0; D],
            dilation: [1; D],
            ceil_mode: false,
            count_include_pad: true,
            name: None,
            kind: PhantomData,
        }
    }
}

impl<K: PoolKind, const D: usize> Pool<K, D> {
    /// Kernel per dimension.
    pub fn kernel(mut self, k: [usize; D]) -> Self {
        self.kernel = k;
        self
    }
    /// The same stride along every dimension (default: the kernel).
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = Some([s; D]);
        self
    }
    /// Stride per dimension (default: the kernel).
    pub fn strides(mut self, s: [usize; D]) -> Self {
        self.stride = Some(s);
        self
    }
    /// The same padding on every side (max pooling pads with −∞, average pooling with 0).
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p; D];
        self
    }
    /// Padding per dimension (both sides).
    pub fn paddings(mut self, p: [usize; D]) -> Self {
        self.padding = p;
        self
    }
    /// Rounds the output size up instead of down.
    pub fn ceil_mode(mut self, c: bool) -> Self {
        self.ceil_mode = c;
        self
    }
    /// Names the layer in dumps.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Layer name, input shape, geometry and the windows `[N, C, K, L]` over
    /// `x` padded with `pad_value`.
    fn windows(
        &self,
        g: &mut Graph,
        x: NodeId,
        pad_value: f32,
    ) -> Result<(String, Vec<usize>, PoolGeom<D>, NodeId)> {
        let name = layer_name(g, &self.name, &format!("{}pool{D}d", K::KIND));
        let xs = g.shape(x)?.to_vec();
        let geom = self.geom(&name, &xs)?;
        let cols = windows(g, x, &name, self.window(), &geom.pads, pad_value)?;
        Ok((name, xs, geom, cols))
    }

    fn geom(&self, name: &str, xs: &[usize]) -> Result<PoolGeom<D>> {
        let (k, s, p, d) = (
            self.kernel,
            self.stride.unwrap_or(self.kernel),
            self.padding,
            self.dilation,
        );
        if D == 0 || xs.len() != D + 2 || xs[1..].contains(&0) {
            let dims = ["L", "H, W", "D, H, W"][D.clamp(1, 3) - 1];
            return shape_err(
                name,
                format!(
                    "input has shape {xs:?}, expected [N, C, {dims}] or unbatched [C, {dims}], with C, {dims} > 0 (as PyTorch)"
                ),
            );
        }
        if k.contains(&0) || s.contains(&0) || d.contains(&0) {
            return attr_err(
                name,
                format!("kernel {k:?}, stride {s:?} and dilation {d:?} must be at least 1"),
            );
        }
        if s.iter().chain(&p).any(|&v| v > crate::shape::MAX_ELEMENTS) {
            return attr_err(
                name,
                format!(
                    "stride {s:?} and padding {p:?} must not be larger than any buffer ({} elements)",
                    crate::shape::MAX_ELEMENTS
                ),
            );
        }
        let mut geom = PoolGeom {
            out: [0; D],
            pads: [(0, 0); D],
        };
        let checked = |what: &str, v: Option<usize>| checked_size(name, what, v);
        for i in 0..D {
            let span = checked(
                "window extent",
                d[i].checked_mul(k[i] - 1).and_then(|s| s.checked_add(1)),
            )?;
            if p[i] > k[i] / 2 {
                return attr_err(
                    name,
                    format!("padding {p:?} must be at most half the kernel {k:?} (as PyTorch)"),
                );
            }
            let size = xs[2 + i];
            let padded = checked("padded input size", size.checked_add(2 * p[i]))?;
            if span > padded {
                return shape_err(
                    name,
                    format!("kernel {k:?} (dilation {d:?}) spans {span} cells, larger than the padded input {padded} (input shape {xs:?}, padding {p:?})"),
                );
            }
            let round = if self.ceil_mode { s[i] - 1 } else { 0 };
            let mut out = checked("output size", (padded - span).checked_add(round))? / s[i] + 1;
            // the last window's start, inside the (padded) input: no overflow
            if self.ceil_mode && (out - 1) * s[i] >= size + p[i] {
                out -= 1;
            }
            geom.out[i] = out;
            let reach = checked("last window's end", ((out - 1) * s[i]).checked_add(span))?;
            geom.pads[i] = (p[i], p[i] + reach.saturating_sub(padded));
        }
        Ok(geom)
    }

    /// The unfold window over the already padded input.
    fn window(&self) -> Window {
        Window {
            kernel: self.kernel.to_vec(),
            stride: self.stride.unwrap_or(self.kernel).to_vec(),
            padding: vec![0; D],
            dilation: self.dilation.to_vec(),
        }
    }
}

/// Output size per spatial dim and the padding (before, after) each needs,
/// including the extra right padding that `ceil_mode` windows reach into.
struct PoolGeom<const D: usize> {
    out: [usize; D],
    pads: [(usize, usize); D],
}

impl<const D: usize> PoolGeom<D> {
    fn output_shape(&self, xs: &[usize]) -> Vec<isize> {
        xs[..2]
            .iter()
            .chain(&self.out)
            .map(|&d| d as isize)
            .collect()
    }
}

/// Windows over `x` padded by `pads` with `value`: `[N, C, K, L]`.
fn windows(
    g: &mut Graph,
    x: NodeId,
    name: &str,
    window: Window,
    pads: &[(usize, usize)],
    value: f32,
) -> Result<NodeId> {
    let mut h = x;
    if pads.iter().any(|&(a, b)| a + b > 0) {
        let all: Vec<(usize, usize)> = [(0, 0), (0, 0)].iter().chain(pads).copied().collect();
        h = g.pad(x, &all, value)?;
        g.set_name(h, format!("{name}.pad"));
    }
    let cols = g.unfold(h, window)?;
    g.set_name(cols, format!("{name}.unfold"));
    Ok(cols)
}

impl<const D: usize> Pool<Max, D> {
    /// The same dilation along every dimension.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d; D];
        self
    }
}

impl<const D: usize> Layer for Pool<Max, D> {
    fn kind(&self) -> String {
        format!("MaxPool{D}d")
    }
    /// `[N, C, *spatial]` → `[N, C, *out]`, or unbatched `[C, *spatial]` → `[C, *out]`.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        super::unbatched(g, x, D, |g, x| self.build_batched(g, x))
    }
}

impl<const D: usize> Pool<Max, D> {
    fn build_batched(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let (name, xs, geom, cols) = self.windows(g, x, f32::NEG_INFINITY)?;
        let m = g.max(cols, &[2], false)?;
        g.set_name(m, format!("{name}.max"));
        g.reshape(m, &geom.output_shape(&xs))
    }
}

impl<const D: usize> Pool<Avg, D> {
    /// Whether padded cells count in the divisor (default true, as PyTorch).
    pub fn count_include_pad(mut self, c: bool) -> Self {
        self.count_include_pad = c;
        self
    }
}

impl<const D: usize> Layer for Pool<Avg, D> {
    fn kind(&self) -> String {
        format!("AvgPool{D}d")
    }
    /// `[N, C, *spatial]` → `[N, C, *out]`, or unbatched `[C, *spatial]` → `[C, *out]`.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        super::unbatched(g, x, D, |g, x| self.build_batched(g, x))
    }
}

impl<const D: usize> Pool<Avg, D> {
    fn build_batched(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let (name, xs, geom, cols) = self.windows(g, x, 0.0)?;
        let (k, p) = (self.kernel, self.padding);
        let sum = g.sum(cols, &[2], false)?;
        g.set_name(sum, format!("{name}.sum"));
        let ceil_extra = geom.pads.iter().any(|&(before, after)| after > before);
        let avg = if !ceil_extra && (self.count_include_pad || p == [0; D]) {
            g.mul_scalar(sum, 1.0 / k.iter().product::<usize>() as f32)?
        } else {
            // Divisor per window: the same windows over a plane of ones that
            // covers exactly the cells that count.
            let plane = |extra: &dyn Fn(usize) -> usize| -> Vec<usize> {
                [1, 1]
                    .into_iter()
                    .chain((0..D).map(|i| xs[2 + i] + extra(i)))
                    .collect()
            };
            let (ones, pads) = if self.count_include_pad {
                let ones = g.fill(&plane(&|i| 2 * p[i]), 1.0)?;
                (ones, geom.pads.map(|(b, a)| (0, a - b)))
            } else {
                (g.fill(&plane(&|_| 0), 1.0)?, geom.pads)
            };
            let count_cols = windows(g, ones, &format!("{name}.count"), self.window(), &pads, 0.0)?;
            let count = g.sum(count_cols, &[2], false)?;
            g.div(sum, count)?
        };
        g.set_name(avg, format!("{name}.avg"));
        g.reshape(avg, &geom.output_shape(&xs))
    }
}

/// Adaptive average pooling to `output_size` `[oh, ow]` over the last two
/// axes of `[N, C, H, W]` or `[C, H, W]` (`torch.nn.AdaptiveAvgPool2d`):
/// output row `i` averages input rows `⌊i·H/oh⌋ .. ⌈(i+1)·H/oh⌉`, and
/// likewise for columns. Sizes that divide evenly are an `AvgPool2d` with
/// kernel and stride `H/oh × W/ow`; others average row ranges, then column
/// ranges (the same mean: every row of a window has the same columns).
/// `Err` on an empty input plane, a zero output size, or an uneven output
/// size above 4096 on an axis.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveAvgPool2d {
    output_size: [usize; 2],
}

impl AdaptiveAvgPool2d {
    /// Output `[oh, ow]` (PyTorch's `output_size`; `new([s, s])` for an int `s`).
    pub fn new(output_size: [usize; 2]) -> Self {
        AdaptiveAvgPool2d { output_size }
    }
}

impl Layer for AdaptiveAvgPool2d {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let xs = g.shape(x)?.to_vec();
        let [oh, ow] = self.output_size;
        let rank = xs.len();
        if !(rank == 3 || rank == 4) || xs[rank - 2] == 0 || xs[rank - 1] == 0 || oh == 0 || ow == 0
        {
            return shape_err(
                "adaptive_avg_pool2d",
                format!(
                    "input has shape {xs:?} and output_size [{oh}, {ow}]; expected a non-empty [N, C, H, W] or [C, H, W] and positive sizes"
                ),
            );
        }
        let (h, w) = (xs[rank - 2], xs[rank - 1]);
        if h % oh == 0 && w % ow == 0 && rank == 4 {
            let k = [h / oh, w / ow];
            return AvgPool2d::new(k[0]).kernel(k).strides(k).build(g, x);
        }
        if oh.max(ow) > ADAPTIVE_MAX {
            return shape_err(
                "adaptive_avg_pool2d",
                format!(
                    "output_size [{oh}, {ow}] does not divide the input's [{h}, {w}] and exceeds {ADAPTIVE_MAX} (two graph nodes per output row and column)"
                ),
            );
        }
        let rows = adaptive_mean(g, x, -2, h, oh)?;
        adaptive_mean(g, rows, -1, w, ow)
    }
}

/// The largest uneven adaptive output size per axis: each output row and
/// column is a slice and a mean in the graph.
const ADAPTIVE_MAX: usize = 4096;

/// The means of `x` over the ranges `⌊i·n/out⌋ .. ⌈(i+1)·n/out⌉` of `axis`
/// (size `n`), `i < out`, side by side along `axis`.
fn adaptive_mean(g: &mut Graph, x: NodeId, axis: isize, n: usize, out: usize) -> Result<NodeId> {
    let parts = (0..out)
        .map(|i| {
            // in u128: i·n cannot overflow
            let at = |i: usize, up: bool| {
                let (num, den) = (i as u128 * n as u128, out as u128);
                (if up { num.div_ceil(den) } else { num / den }) as usize
            };
            let (start, end) = (at(i, false), at(i + 1, true));
            let part = g.slice(x, axis, start, end, 1)?;
            g.mean(part, &[axis], true)
        })
        .collect::<Result<Vec<_>>>()?;
    g.concat(&parts, axis)
}

/// Global average pooling: `[N, C, H, W]` → `[N, C, 1, 1]` (as `AdaptiveAvgPool2d(1)`).
#[derive(Clone, Copy, Debug, Default)]
pub struct GlobalAvgPool2d;

impl Layer for GlobalAvgPool2d {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let xs = g.shape(x)?;
        if xs.len() != 4 {
            return shape_err(
                "global_avg_pool2d",
                format!("input has shape {xs:?}, expected [N, C, H, W]"),
            );
        }
        g.mean(x, &[2, 3], true)
    }
}
