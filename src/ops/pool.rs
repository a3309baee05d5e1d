//! The fused pooling primitives the `max_pool` and `avg_pool` passes make out
//! of the layers' pad + unfold + reduce patterns:
//!
//! - `MaxPoolWithIndices`: `[N, C, *S]` → two outputs of shape `[N, C, *O]`,
//!   the window maxima and the plane index (`r·W + c`, as f32, as PyTorch's
//!   `return_indices`) of each window's first maximum, in one sweep;
//! - `MaxPool`: the window maxima alone, for graphs whose gradients (if any)
//!   do not need the indices (forward-only graphs);
//! - `MaxPoolBackward`: `(gy, indices)` → `gx [N, C, *S]`, scattering through the indices;
//! - `AvgPool` / `AvgPoolBackward`: window sums over in-plane cells divided by
//!   the count an [`AvgDivisor`] rule gives.
//!
//! Windows sit on the input grown by asymmetric `pads` (the extra right
//! padding is where `ceil_mode` windows reach); padded cells are −∞ for the
//! max and 0 for the average. Shape rules, kernels and VJPs live here.

use super::{one, Arity, Grads, OpDef, RunCtx};
use super::{NodeId, OpBuilder};
use super::{Op, View};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::par;
use crate::kernels::pool::{self, Divide, PoolGeom};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Largest plane whose indices f32 holds exactly (2^24 cells).
const MAX_INDEXED_PLANE: usize = 1 << 24;

/// A 1-D or 2-D pooling window with asymmetric padding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolWindow {
    /// Kernel size per spatial dimension.
    pub kernel: Vec<usize>,
    /// Stride per spatial dimension.
    pub stride: Vec<usize>,
    /// Dilation per spatial dimension.
    pub dilation: Vec<usize>,
    /// `(before, after)` padding per spatial dimension.
    pub pads: Vec<(usize, usize)>,
}

/// What an average pool divides each window sum by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AvgDivisor {
    /// The kernel's cell count (PyTorch `count_include_pad=True` when no
    /// window reaches past the padding).
    Window,
    /// The window's cells inside the input grown by the leading padding on
    /// both sides (PyTorch `count_include_pad=True`: the window clipped to the
    /// padded input, which matters with `ceil_mode`).
    PaddedInput,
    /// The window's cells inside the input (PyTorch `count_include_pad=False`).
    RealCells,
}

impl AvgDivisor {
    fn name(self) -> &'static str {
        match self {
            AvgDivisor::Window => "window",
            AvgDivisor::PaddedInput => "padded_input",
            AvgDivisor::RealCells => "real_cells",
        }
    }
    fn rule(self) -> Divide {
        match self {
            AvgDivisor::Window => Divide::Window,
            AvgDivisor::PaddedInput => Divide::PaddedInput,
            AvgDivisor::RealCells => Divide::RealCells,
        }
    }
}

impl PoolWindow {
    /// Number of spatial dimensions.
    pub fn rank(&self) -> usize {
        self.kernel.len()
    }
    /// Dump attributes.
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("dilation", format!("{:?}", self.dilation)),
            ("kernel", format!("{:?}", self.kernel)),
            ("pads", format!("{:?}", self.pads)),
            ("stride", format!("{:?}", self.stride)),
        ]
    }
    /// Output spatial size over input spatial size `spatial`, or an `Err` naming `op`.
    pub fn out_size(&self, op: &str, spatial: &[usize]) -> Result<Vec<usize>> {
        let n = self.rank();
        if n == 0 || n > 2 {
            return attr_err(
                op,
                format!("pooling is 1-D or 2-D, got a kernel of rank {n}"),
            );
        }
        if self.stride.len() != n || self.dilation.len() != n || self.pads.len() != n {
            return attr_err(
                op,
                format!(
                    "kernel {:?}, stride {:?}, dilation {:?} and pads {:?} need one entry per spatial dimension",
                    self.kernel, self.stride, self.dilation, self.pads
                ),
            );
        }
        if [&self.kernel, &self.stride, &self.dilation]
            .iter()
            .any(|v| v.contains(&0))
        {
            return attr_err(
                op,
                format!(
                    "kernel {:?}, stride {:?} and dilation {:?} must be at least 1",
                    self.kernel, self.stride, self.dilation
                ),
            );
        }
        let pads = self.pads.iter().flat_map(|&(b, a)| [b, a]);
        if self
            .stride
            .iter()
            .copied()
            .chain(pads)
            .any(|v| v > crate::shape::MAX_ELEMENTS)
        {
            // kernels take window positions as isize offsets
            return attr_err(
                op,
                format!(
                    "stride {:?} or pads {:?} larger than any buffer ({} elements)",
                    self.stride,
                    self.pads,
                    crate::shape::MAX_ELEMENTS
                ),
            );
        }
        if spatial.len() != n {
            return shape_err(
                op,
                format!("a {n}-D window needs {n} spatial dimensions, got {spatial:?}"),
            );
        }
        if spatial.contains(&0) {
            return shape_err(
                op,
                format!(
                    "pooling needs non-empty planes, got spatial size {spatial:?} (as PyTorch)"
                ),
            );
        }
        (0..n)
            .map(|d| {
                let Some((span, padded)) = self.extents(d, spatial[d]) else {
                    return shape_err(
                        op,
                        format!(
                            "the window extent or the padded input size in spatial dim {d} overflows (size {spatial:?}, kernel {:?}, dilation {:?}, pads {:?})",
                            self.kernel, self.dilation, self.pads
                        ),
                    );
                };
                if let Some(len) = self.pooled_len(d, spatial[d]) {
                    return Ok(len);
                }
                shape_err(
                    op,
                    format!(
                        "kernel {:?} (dilation {:?}) spans {span} cells in spatial dim {d}, larger than the padded input {padded} (size {spatial:?}, pads {:?})",
                        self.kernel, self.dilation, self.pads
                    ),
                )
            })
            .collect()
    }
    /// Output length along spatial axis `d` of input length `size`; `None`
    /// if the window does not fit in the padded input.
    fn pooled_len(&self, d: usize, size: usize) -> Option<usize> {
        let (span, padded) = self.extents(d, size)?;
        (span <= padded).then(|| (padded - span) / self.stride[d] + 1)
    }
    /// The window's extent `d·(k − 1) + 1` along spatial axis `d` and the
    /// padded input size, `None` on overflow. The kernels also use the input
    /// grown by the leading padding on both sides, so that must fit too.
    fn extents(&self, d: usize, size: usize) -> Option<(usize, usize)> {
        let fits = |v: Option<usize>| v.filter(|&v| v <= crate::shape::MAX_ELEMENTS);
        let (before, after) = self.pads[d];
        let span = fits(
            self.dilation[d]
                .checked_mul(self.kernel[d] - 1)
                .and_then(|s| s.checked_add(1)),
        )?;
        let padded = fits(size.checked_add(before).and_then(|s| s.checked_add(after)))?;
        fits(before.checked_mul(2).and_then(|p| p.checked_add(size)))?;
        Some((span, padded))
    }
    /// The window over one plane of spatial size `spatial` (a 1-D window is a plane of height 1).
    pub fn geom(&self, spatial: &[usize]) -> PoolGeom {
        // the output size along each axis (no Vec: this runs on every call)
        let out_len = |d: usize| {
            self.pooled_len(d, spatial[d])
                .expect("shapes were checked when the node was built")
        };
        let out = if spatial.len() == 1 {
            [1, out_len(0)]
        } else {
            [out_len(0), out_len(1)]
        };
        let two = |v: &[usize], one: usize| {
            if v.len() == 1 {
                [one, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        let pads = if self.pads.len() == 1 {
            [(0, 0), self.pads[0]]
        } else {
            [self.pads[0], self.pads[1]]
        };
        PoolGeom::new(
            two(&self.kernel, 1),
            two(&self.stride, 1),
            two(&self.dilation, 1),
            pads,
            two(spatial, 1),
            out,
        )
    }
}

/// The op name for a pooling primitive of `rank` spatial dimensions.
pub fn pool_name(kind: &str, rank: usize, suffix: &str) -> &'static str {
    match (kind, rank, suffix) {
        ("max", 1, "with_indices") => "maxpool1d_with_indices",
        ("max", 1, "") => "maxpool1d",
        ("max", _, "") => "maxpool2d",
        ("max", 1, _) => "maxpool1d_backward",
        ("max", _, "with_indices") => "maxpool2d_with_indices",
        ("max", _, _) => "maxpool2d_backward",
        (_, 1, "") => "avgpool1d",
        (_, 1, _) => "avgpool1d_backward",
        (_, _, "") => "avgpool2d",
        _ => "avgpool2d_backward",
    }
}

/// Checks `x [N, C, *S]` for a window of `w`'s rank and returns `[N, C, *O]`.
fn pooled_shape(op: &str, w: &PoolWindow, x: &[usize]) -> Result<Vec<usize>> {
    if x.len() != w.rank() + 2 {
        return shape_err(
            op,
            format!(
                "operand 0 has shape {x:?}; a {}-D window needs rank {} ([N, C, spatial...])",
                w.rank(),
                w.rank() + 2
            ),
        );
    }
    let mut out = x[..2].to_vec();
    out.extend(w.out_size(op, &x[2..])?);
    Ok(out)
}

/// Shape rule of `MaxPoolWithIndices`: the shape of each of its two outputs.
pub fn max_pool_shape(w: &PoolWindow, x: &[usize]) -> Result<Vec<usize>> {
    let op = pool_name("max", w.rank(), "with_indices");
    let out = pooled_shape(op, w, x)?;
    let plane: usize = x[2..].iter().product();
    if plane > MAX_INDEXED_PLANE {
        return shape_err(
            op,
            format!("input {x:?} has {plane} cells per plane; indices are exact up to {MAX_INDEXED_PLANE}"),
        );
    }
    Ok(out)
}

/// Shape rule of `MaxPool` (values only: no limit on the plane).
pub fn max_pool_values_shape(w: &PoolWindow, x: &[usize]) -> Result<Vec<usize>> {
    pooled_shape(pool_name("max", w.rank(), ""), w, x)
}

/// Checks that operand `i` of a pooling backward op has the pooled shape `want`.
fn check_pooled(op: &str, i: usize, what: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return shape_err(
            op,
            format!("operand {i} ({what}) has shape {got:?}, expected {want:?}"),
        );
    }
    Ok(())
}

/// `[N, C, *spatial]` for a pooled gradient of shape `gy`, checked against the window.
fn unpooled_shape(op: &str, w: &PoolWindow, spatial: &[usize], gy: &[usize]) -> Result<Vec<usize>> {
    if gy.len() != w.rank() + 2 {
        return shape_err(
            op,
            format!(
                "operand 0 (gradient) has shape {gy:?}, expected rank {}",
                w.rank() + 2
            ),
        );
    }
    let mut x = gy[..2].to_vec();
    x.extend(spatial);
    check_pooled(op, 0, "gradient", gy, &pooled_shape(op, w, &x)?)?;
    Ok(x)
}

/// Shape rule of `MaxPoolBackward`: `gy`, `indices [N, C, *O]` → `[N, C, *spatial]`.
pub fn max_pool_backward_shape(
    w: &PoolWindow,
    spatial: &[usize],
    ins: &[&[usize]],
) -> Result<Vec<usize>> {
    let op = pool_name("max", w.rank(), "backward");
    let x = unpooled_shape(op, w, spatial, ins[0])?;
    check_pooled(op, 1, "indices", ins[1], ins[0])?;
    Ok(x)
}

/// Shape rule of `AvgPool`.
pub fn avg_pool_shape(w: &PoolWindow, x: &[usize]) -> Result<Vec<usize>> {
    pooled_shape(pool_name("avg", w.rank(), ""), w, x)
}

/// Shape rule of `AvgPoolBackward`: `gy [N, C, *O]` → `[N, C, *spatial]`.
pub fn avg_pool_backward_shape(
    w: &PoolWindow,
    spatial: &[usize],
    gy: &[usize],
) -> Result<Vec<usize>> {
    unpooled_shape(pool_name("avg", w.rank(), "backward"), w, spatial, gy)
}

/// Kernel of `MaxPoolWithIndices`: values then indices, plane by plane, planes in parallel.
pub fn max_pool(w: &PoolWindow, x: View, out: &mut [f32]) {
    let g = w.geom(&x.shape[2..]);
    let (values, indices) = out.split_at_mut(out.len() / 2);
    par::for_each_plane2(values, indices, g.out_len(), g.plane(), |p, v, i| {
        pool::max_pool(&g, &x.data[p * g.plane()..][..g.plane()], v, i)
    });
}

/// Kernel of `MaxPool`: the values of `MaxPoolWithIndices`, planes in parallel.
pub fn max_pool_values(w: &PoolWindow, x: View, out: &mut [f32]) {
    let g = w.geom(&x.shape[2..]);
    par::for_each_plane(out, g.out_len(), g.plane(), |p, dst| {
        pool::max_pool_values(&g, &x.data[p * g.plane()..][..g.plane()], dst)
    });
}

/// Kernel of `MaxPoolBackward`.
pub fn max_pool_backward(w: &PoolWindow, spatial: &[usize], ins: &[View], out: &mut [f32]) {
    let (gy, idx) = (ins[0], ins[1]);
    let g = w.geom(spatial);
    let pooled = g.out_len();
    par::for_each_plane(out, g.plane(), pooled, |p, dst| {
        let at = p * pooled..(p + 1) * pooled;
        pool::max_pool_backward(&g, &gy.data[at.clone()], &idx.data[at], dst)
    });
}

/// Kernel of `AvgPool`.
pub fn avg_pool(w: &PoolWindow, divisor: AvgDivisor, x: View, out: &mut [f32]) {
    let g = w.geom(&x.shape[2..]);
    par::for_each_plane(out, g.out_len(), g.plane(), |p, dst| {
        pool::avg_pool(
            &g,
            divisor.rule(),
            &x.data[p * g.plane()..][..g.plane()],
            dst,
        )
    });
}

/// Kernel of `AvgPoolBackward`.
pub fn avg_pool_backward(
    w: &PoolWindow,
    divisor: AvgDivisor,
    spatial: &[usize],
    gy: View,
    out: &mut [f32],
) {
    let g = w.geom(spatial);
    par::for_each_plane(out, g.plane(), g.out_len(), |p, dst| {
        let src = &gy.data[p * g.out_len()..][..g.out_len()];
        pool::avg_pool_backward(&g, divisor.rule(), src, dst)
    });
}

/// VJP of `MaxPoolWithIndices` (its cotangent is its values output's):
/// `dx = maxpool_backward(gy, indices)`.
pub fn max_pool_vjp(
    w: &PoolWindow,
    g: &mut dyn OpBuilder,
    x: NodeId,
    y: NodeId,
    gy: NodeId,
) -> Result<NodeId> {
    let indices = g.output(y, 1)?;
    let spatial = g.shape(x)?[2..].to_vec();
    g.add_op(
        Op::MaxPoolBackward(MaxPoolBackward {
            window: w.clone(),
            spatial,
        }),
        &[gy, indices],
    )
}

/// VJP of `MaxPool`: the gradient of `MaxPoolWithIndices` on the same input
/// (its indices computed for it).
pub fn max_pool_values_vjp(
    w: &PoolWindow,
    g: &mut dyn OpBuilder,
    x: NodeId,
    gy: NodeId,
) -> Result<NodeId> {
    let pool = g.add_op(Op::MaxPoolWithIndices(MaxPoolWithIndices(w.clone())), &[x])?;
    max_pool_vjp(w, g, x, pool, gy)
}

/// VJP of `MaxPoolBackward(gy, indices)` (linear in `gy`): `d gy` gathers the
/// upstream gradient at the indices, written in generic ops: each window of
/// the upstream gradient times a one-hot mask comparing the window's plane
/// indices (−2 in the padding, which no index equals) with the saved index,
/// summed over the window. The indices get no gradient.
pub fn max_pool_backward_vjp(
    w: &PoolWindow,
    spatial: &[usize],
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    up: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let (gy, idx) = (xs[0], xs[1]);
    let gys = g.shape(gy)?.to_vec();
    let plane: usize = spatial.iter().product();
    let mut iota_shape = vec![1, 1];
    iota_shape.extend(spatial);
    let iota = g.constant(Tensor::from_vec(
        iota_shape,
        (0..plane).map(|i| i as f32).collect(),
    )?)?;
    let window = super::Window::new(&w.kernel);
    let window = super::Window {
        stride: w.stride.clone(),
        dilation: w.dilation.clone(),
        ..window
    };
    let mut pads = vec![(0, 0), (0, 0)];
    pads.extend(&w.pads);
    let cells = |g: &mut dyn OpBuilder, t: NodeId, fill: f32| -> Result<NodeId> {
        let padded = g.pad(t, &pads, fill)?;
        g.unfold(padded, window.clone())
    };
    let at = cells(g, iota, -2.0)?;
    let l: usize = gys[2..].iter().product();
    let idx_row = g.reshape(idx, &[gys[0] as isize, gys[1] as isize, 1, l as isize])?;
    let hit = g.eq(at, idx_row)?;
    let vals = cells(g, up, 0.0)?;
    let picked = g.mul(hit, vals)?;
    let summed = g.sum(picked, &[2], false)?;
    let shape: Vec<isize> = gys.iter().map(|&d| d as isize).collect();
    Ok(vec![Some(g.reshape(summed, &shape)?), None])
}

/// VJP of `AvgPool`: `dx = avgpool_backward(gy)`.
pub fn avg_pool_vjp(
    w: &PoolWindow,
    divisor: AvgDivisor,
    g: &mut dyn OpBuilder,
    x: NodeId,
    gy: NodeId,
) -> Result<NodeId> {
    let spatial = g.shape(x)?[2..].to_vec();
    g.add_op(
        Op::AvgPoolBackward(AvgPoolBackward {
            window: w.clone(),
            divisor,
            spatial,
        }),
        &[gy],
    )
}

/// VJP of `AvgPoolBackward` (its adjoint): `d gy = avgpool(up)`.
pub fn avg_pool_backward_vjp(
    w: &PoolWindow,
    divisor: AvgDivisor,
    g: &mut dyn OpBuilder,
    up: NodeId,
) -> Result<NodeId> {
    g.add_op(
        Op::AvgPool(AvgPool {
            window: w.clone(),
            divisor,
        }),
        &[up],
    )
}

/// Dump attributes of an average pool.
pub fn avg_attrs(w: &PoolWindow, divisor: AvgDivisor) -> Vec<(&'static str, String)> {
    let mut a = w.attrs();
    a.push(("divisor", divisor.name().to_string()));
    a
}

/// The window's attributes and the forward input's spatial size.
fn backward_attrs(
    mut a: Vec<(&'static str, String)>,
    spatial: &[usize],
) -> Vec<(&'static str, String)> {
    a.push(("spatial", format!("{spatial:?}")));
    a
}

/// Fused max pooling (`torch.nn.functional.max_pool2d(return_indices=True)`)
/// with two outputs: the window maxima and the plane index of each window's
/// first maximum (NaN wins, as PyTorch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaxPoolWithIndices(pub PoolWindow);

impl OpDef for MaxPoolWithIndices {
    fn name(&self) -> &'static str {
        pool_name("max", self.0.rank(), "with_indices")
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        self.0.attrs()
    }
    fn num_outputs(&self) -> usize {
        2
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        max_pool_shape(&self.0, ins[0])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        max_pool(&self.0, ins[0], out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        one(max_pool_vjp(&self.0, g, xs[0], y, gy))
    }
}

/// Fused max pooling, the window maxima only (where no gradient needs the
/// indices; `torch.nn.functional.max_pool2d`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaxPool(pub PoolWindow);

impl OpDef for MaxPool {
    fn name(&self) -> &'static str {
        pool_name("max", self.0.rank(), "")
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        self.0.attrs()
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        max_pool_values_shape(&self.0, ins[0])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        max_pool_values(&self.0, ins[0], out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(max_pool_values_vjp(&self.0, g, xs[0], gy))
    }
}

/// Fused max-pooling gradient `[gy, indices]` → `[N, C, *spatial]`
/// (`torch.ops.aten.max_pool2d_with_indices_backward`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaxPoolBackward {
    /// The forward pool's window.
    pub window: PoolWindow,
    /// Spatial size of the forward input.
    pub spatial: Vec<usize>,
}

impl OpDef for MaxPoolBackward {
    fn name(&self) -> &'static str {
        pool_name("max", self.window.rank(), "backward")
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        backward_attrs(self.window.attrs(), &self.spatial)
    }
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        max_pool_backward_shape(&self.window, &self.spatial, ins)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        max_pool_backward(&self.window, &self.spatial, ins, out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        max_pool_backward_vjp(&self.window, &self.spatial, g, xs, gy)
    }
}

/// Fused average pooling (`torch.nn.functional.avg_pool2d`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvgPool {
    /// The window.
    pub window: PoolWindow,
    /// What each window sum is divided by.
    pub divisor: AvgDivisor,
}

impl OpDef for AvgPool {
    fn name(&self) -> &'static str {
        pool_name("avg", self.window.rank(), "")
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        avg_attrs(&self.window, self.divisor)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        avg_pool_shape(&self.window, ins[0])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        avg_pool(&self.window, self.divisor, ins[0], out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(avg_pool_vjp(&self.window, self.divisor, g, xs[0], gy))
    }
}

/// Fused average-pooling gradient `[gy]` → `[N, C, *spatial]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AvgPoolBackward {
    /// The forward pool's window.
    pub window: PoolWindow,
    /// The forward pool's divisor.
    pub divisor: AvgDivisor,
    /// Spatial size of the forward input.
    pub spatial: Vec<usize>,
}

impl OpDef for AvgPoolBackward {
    fn name(&self) -> &'static str {
        pool_name("avg", self.window.rank(), "backward")
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        backward_attrs(avg_attrs(&self.window, self.divisor), &self.spatial)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        avg_pool_backward_shape(&self.window, &self.spatial, ins[0])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        avg_pool_backward(&self.window, self.divisor, &self.spatial, ins[0], out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(avg_pool_backward_vjp(&self.window, self.divisor, g, gy))
    }
}
