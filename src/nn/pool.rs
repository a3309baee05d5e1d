//! 2-D pooling, expressed as pad + unfold + reduction.
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
    /// Layer-name prefix (`maxpool2d`, `avgpool2d`).
    const KIND: &'static str;
}

/// Marker for max pooling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Max;
/// Marker for average pooling.
#[derive(Clone, Copy, Debug, Default)]
pub struct Avg;

impl PoolKind for Max {
    const KIND: &'static str = "maxpool2d";
}
impl PoolKind for Avg {
    const KIND: &'static str = "avgpool2d";
}

/// 2-D pooling over `[N, C, H, W]` (use [`MaxPool2d`] or [`AvgPool2d`]).
#[derive(Clone, Debug)]
pub struct Pool<K: PoolKind> {
    kernel: [usize; 2],
    stride: Option<[usize; 2]>,
    padding: [usize; 2],
    dilation: [usize; 2],
    ceil_mode: bool,
    count_include_pad: bool,
    name: Option<String>,
    kind: PhantomData<K>,
}

/// 2-D max pooling (kernel, stride, padding with −∞, dilation, `ceil_mode`).
pub type MaxPool2d = Pool<Max>;
/// 2-D average pooling (kernel, stride, zero padding, `ceil_mode`, `count_include_pad`).
pub type AvgPool2d = Pool<Avg>;

impl<K: PoolKind> Pool<K> {
    /// A square `k × k` window with stride `k`, no padding
    /// (and for average pooling `count_include_pad = true`, as PyTorch).
    pub fn new(k: usize) -> Self {
        Pool {
            kernel: [k, k],
            stride: None,
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: true,
            name: None,
            kind: PhantomData,
        }
    }
}

impl<K: PoolKind> Pool<K> {
    /// Kernel per dimension.
    pub fn kernel(mut self, k: [usize; 2]) -> Self {
        self.kernel = k;
        self
    }
    /// The same stride along both dimensions (default: the kernel).
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = Some([s, s]);
        self
    }
    /// Stride per dimension (default: the kernel).
    pub fn strides(mut self, s: [usize; 2]) -> Self {
        self.stride = Some(s);
        self
    }
    /// The same padding on every side (max pooling pads with −∞, average pooling with 0).
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    /// Padding per dimension (both sides).
    pub fn paddings(mut self, p: [usize; 2]) -> Self {
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
    ) -> Result<(String, Vec<usize>, PoolGeom, NodeId)> {
        let name = layer_name(g, &self.name, K::KIND);
        let xs = g.shape(x)?.to_vec();
        let geom = self.geom(&name, &xs)?;
        let cols = windows(g, x, &name, self.window(), geom.pads, pad_value)?;
        Ok((name, xs, geom, cols))
    }

    fn geom(&self, name: &str, xs: &[usize]) -> Result<PoolGeom> {
        let (k, s, p, d) = (
            self.kernel,
            self.stride.unwrap_or(self.kernel),
            self.padding,
            self.dilation,
        );
        if xs.len() != 4 || xs[2] == 0 || xs[3] == 0 {
            return shape_err(
                name,
                format!("input has shape {xs:?}, expected [N, C, H, W] with H, W > 0 (as PyTorch)"),
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
            out: [0; 2],
            pads: [(0, 0); 2],
        };
        let checked = |what: &str, v: Option<usize>| checked_size(name, what, v);
        for i in 0..2 {
            let span = checked(
                "window extent",
                d[i].checked_mul(k[i] - 1).and_then(|s| s.checked_add(1)),
            )?;
            if p[i] > span / 2 {
                return attr_err(
                    name,
                    format!("padding {p:?} must be at most half the effective kernel size {span}"),
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
            padding: vec![0, 0],
            dilation: self.dilation.to_vec(),
        }
    }
}

/// Output size per spatial dim and the padding (before, after) each needs,
/// including the extra right padding that `ceil_mode` windows reach into.
struct PoolGeom {
    out: [usize; 2],
    pads: [(usize, usize); 2],
}

impl PoolGeom {
    fn output_shape(&self, xs: &[usize]) -> [isize; 4] {
        [
            xs[0] as isize,
            xs[1] as isize,
            self.out[0] as isize,
            self.out[1] as isize,
        ]
    }
}

/// Windows over `x` padded by `pads` with `value`: `[N, C, K, L]`.
fn windows(
    g: &mut Graph,
    x: NodeId,
    name: &str,
    window: Window,
    pads: [(usize, usize); 2],
    value: f32,
) -> Result<NodeId> {
    let mut h = x;
    if pads.iter().any(|&(a, b)| a + b > 0) {
        h = g.pad(x, &[(0, 0), (0, 0), pads[0], pads[1]], value)?;
        g.set_name(h, format!("{name}.pad"));
    }
    let cols = g.unfold(h, window)?;
    g.set_name(cols, format!("{name}.unfold"));
    Ok(cols)
}

impl Pool<Max> {
    /// The same dilation along both dimensions.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
}

impl Layer for Pool<Max> {
    fn kind(&self) -> String {
        "MaxPool2d".into()
    }
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let (name, xs, geom, cols) = self.windows(g, x, f32::NEG_INFINITY)?;
        let m = g.max(cols, &[2], false)?;
        g.set_name(m, format!("{name}.max"));
        g.reshape(m, &geom.output_shape(&xs))
    }
}

impl Pool<Avg> {
    /// Whether padded cells count in the divisor (default true, as PyTorch).
    pub fn count_include_pad(mut self, c: bool) -> Self {
        self.count_include_pad = c;
        self
    }
}

impl Layer for Pool<Avg> {
    fn kind(&self) -> String {
        "AvgPool2d".into()
    }
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let (name, xs, geom, cols) = self.windows(g, x, 0.0)?;
        let (k, p) = (self.kernel, self.padding);
        let sum = g.sum(cols, &[2], false)?;
        g.set_name(sum, format!("{name}.sum"));
        let ceil_extra = geom.pads.iter().any(|&(before, after)| after > before);
        let avg = if !ceil_extra && (self.count_include_pad || p == [0, 0]) {
            g.mul_scalar(sum, 1.0 / (k[0] * k[1]) as f32)?
        } else {
            // Divisor per window: the same windows over a plane of ones that
            // covers exactly the cells that count.
            let (ones, pads) = if self.count_include_pad {
                let ones = g.fill(&[1, 1, xs[2] + 2 * p[0], xs[3] + 2 * p[1]], 1.0)?;
                (ones, geom.pads.map(|(b, a)| (0, a - b)))
            } else {
                (g.fill(&[1, 1, xs[2], xs[3]], 1.0)?, geom.pads)
            };
            let count_cols = windows(g, ones, &format!("{name}.count"), self.window(), pads, 0.0)?;
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
