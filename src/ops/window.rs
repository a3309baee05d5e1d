//! Sliding windows over the spatial dimensions of NCL / NCHW / NCDHW
//! tensors: `Unfold` (im2col) and its adjoint `Fold` (col2im, scatter-add).
//! Windows are 1-D, 2-D or 3-D; the fused convolution and pooling kernels
//! take 1-D and 2-D ones ([`Window::check_fused`]), so a 3-D convolution
//! runs as `unfold` + `matmul` (and its gradient as `fold`).
//!
//! Layout: `Unfold` maps `[N, C, *S]` to `[N, C, K, L]`, where `K` is the
//! number of cells in a window (row-major over the kernel) and `L` the number
//! of window positions (row-major over the output). Reshaping that to
//! `[N, C·K, L]` gives PyTorch's `nn.Unfold` layout.

use super::View;
use super::{one, Grads, NodeId, OpBuilder, OpDef, RunCtx};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::im2col::{col2im_add, im2col, Geom};
use crate::kernels::par;
use crate::shape::{checked_numel, checked_size, MAX_ELEMENTS};
use serde::{Deserialize, Serialize};

/// A 1-D, 2-D or 3-D sliding window with symmetric zero padding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Kernel size per spatial dimension.
    pub kernel: Vec<usize>,
    /// Stride per spatial dimension.
    pub stride: Vec<usize>,
    /// Zero padding on both sides, per spatial dimension.
    pub padding: Vec<usize>,
    /// Dilation per spatial dimension.
    pub dilation: Vec<usize>,
}

impl Window {
    /// A window with the given kernel, stride 1, no padding, dilation 1.
    pub fn new(kernel: &[usize]) -> Self {
        let n = kernel.len();
        Window {
            kernel: kernel.to_vec(),
            stride: vec![1; n],
            padding: vec![0; n],
            dilation: vec![1; n],
        }
    }
    /// Number of spatial dimensions (1, 2 or 3).
    pub fn rank(&self) -> usize {
        self.kernel.len()
    }
    /// Cells per window (checked by [`validate`](Self::validate)).
    pub fn cells(&self) -> usize {
        self.kernel.iter().product()
    }
    /// The window's extent `d·(k − 1) + 1` along spatial dim `d` and the
    /// padded input size `S + 2p`, checked: `Err` naming `op` on overflow.
    fn extents(&self, op: &str, d: usize, size: usize) -> Result<(usize, usize)> {
        let (k, dil, p) = (self.kernel[d], self.dilation[d], self.padding[d]);
        let span = checked_size(
            op,
            &format!("window extent {dil}·({k} − 1) + 1 in spatial dim {d}"),
            dil.checked_mul(k - 1).and_then(|s| s.checked_add(1)),
        )?;
        let padded = checked_size(
            op,
            &format!("padded input size {size} + 2·{p} in spatial dim {d}"),
            p.checked_mul(2).and_then(|p2| p2.checked_add(size)),
        )?;
        Ok((span, padded))
    }
    /// Checks the attributes; `op` names the caller in the error.
    pub fn validate(&self, op: &str) -> Result<()> {
        let n = self.kernel.len();
        if n == 0 || n > 3 {
            return attr_err(
                op,
                format!("windows are 1-D, 2-D or 3-D, got a kernel of rank {n}"),
            );
        }
        for (what, v) in [
            ("stride", &self.stride),
            ("padding", &self.padding),
            ("dilation", &self.dilation),
        ] {
            if v.len() != n {
                return attr_err(
                    op,
                    format!(
                        "{what} {v:?} has {} entries, the kernel {:?} has {n}",
                        v.len(),
                        self.kernel
                    ),
                );
            }
        }
        for (what, v) in [
            ("kernel", &self.kernel),
            ("stride", &self.stride),
            ("dilation", &self.dilation),
        ] {
            if v.contains(&0) {
                return attr_err(op, format!("{what} must be at least 1, got {v:?}"));
            }
        }
        checked_numel(op, &self.kernel)?;
        for (what, v) in [("stride", &self.stride), ("padding", &self.padding)] {
            if v.iter().any(|&x| x > MAX_ELEMENTS) {
                // kernels take window positions as isize offsets
                return attr_err(
                    op,
                    format!("{what} {v:?} is larger than any buffer ({MAX_ELEMENTS} elements)"),
                );
            }
        }
        for d in 0..n {
            self.extents(op, d, 0)?;
        }
        Ok(())
    }
    /// Output spatial size for input spatial size `spatial`:
    /// `floor((S + 2p − d(k−1) − 1)/s) + 1` per dimension, or an `Err` when the
    /// dilated kernel is larger than the padded input.
    pub fn out_size(&self, op: &str, spatial: &[usize]) -> Result<Vec<usize>> {
        self.validate(op)?;
        if spatial.len() != self.rank() {
            return shape_err(
                op,
                format!(
                    "a {}-D window needs {} spatial dimensions, got {spatial:?}",
                    self.rank(),
                    self.rank()
                ),
            );
        }
        (0..self.rank())
            .map(|d| {
                let (span, padded) = self.extents(op, d, spatial[d])?;
                if span > padded {
                    return shape_err(
                        op,
                        format!(
                            "kernel {:?} (dilation {:?}) spans {span} cells in spatial dim {d}, larger than the padded input ({} + 2·{} = {padded})",
                            self.kernel, self.dilation, spatial[d], self.padding[d]
                        ),
                    );
                }
                Ok((padded - span) / self.stride[d] + 1)
            })
            .collect()
    }
    /// Checks that the working buffers of a fused convolution over
    /// `channels` planes of size `spatial` fit: the padded planes and one
    /// image's im2col columns `[channels · cells, positions]`. (The shape
    /// rule checks them so the kernels can size their scratch unchecked.)
    pub fn check_scratch(&self, op: &str, channels: usize, spatial: &[usize]) -> Result<()> {
        let out = self.out_size(op, spatial)?;
        let mut padded = vec![channels];
        for (d, &s) in spatial.iter().enumerate() {
            padded.push(self.extents(op, d, s)?.1);
        }
        checked_numel(op, &padded)?;
        let mut columns = vec![channels, self.cells()];
        columns.extend(out);
        checked_numel(op, &columns)?;
        Ok(())
    }
    /// `Err` naming `op` unless the window is 1-D or 2-D, the ranks the fused
    /// convolution kernels take (a 3-D convolution stays `unfold` + `matmul`).
    pub fn check_fused(&self, op: &str) -> Result<()> {
        if self.rank() > 2 {
            return attr_err(
                op,
                format!(
                    "the fused kernels take 1-D and 2-D windows, got kernel {:?}",
                    self.kernel
                ),
            );
        }
        Ok(())
    }
    /// Dump attributes.
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("dilation", format!("{:?}", self.dilation)),
            ("kernel", format!("{:?}", self.kernel)),
            ("pad", format!("{:?}", self.padding)),
            ("stride", format!("{:?}", self.stride)),
        ]
    }
    /// The window as 2-D parameters `(kernel, stride, padding, dilation)` per
    /// axis `[h, w]`; a 1-D window is a 2-D one of height 1.
    fn as_2d(&self) -> [[usize; 2]; 4] {
        let g = |v: &Vec<usize>, one: usize| {
            if v.len() == 1 {
                [one, v[0]]
            } else {
                [v[0], v[1]]
            }
        };
        [
            g(&self.kernel, 1),
            g(&self.stride, 1),
            g(&self.padding, 0),
            g(&self.dilation, 1),
        ]
    }
}

fn check_nc(op: &str, x: &[usize], w: &Window) -> Result<()> {
    if x.len() != 2 + w.rank() {
        return shape_err(
            op,
            format!(
                "operand 0 has shape {x:?}; a {}-D window needs rank {} ([N, C, spatial...])",
                w.rank(),
                2 + w.rank()
            ),
        );
    }
    Ok(())
}

/// Shape rule of `Unfold`: `[N, C, *S]` → `[N, C, K, L]`.
pub fn unfold_shape(w: &Window, x: &[usize]) -> Result<Vec<usize>> {
    w.validate("unfold")?;
    check_nc("unfold", x, w)?;
    let out = w.out_size("unfold", &x[2..])?;
    Ok(vec![x[0], x[1], w.cells(), checked_numel("unfold", &out)?])
}

/// Shape rule of `Fold`: `[N, C, K, L]` → `[N, C, *spatial]`.
pub fn fold_shape(w: &Window, spatial: &[usize], x: &[usize]) -> Result<Vec<usize>> {
    w.validate("fold")?;
    let out = w.out_size("fold", spatial)?;
    let l = checked_numel("fold", &out)?;
    if x.len() != 4 || x[2] != w.cells() || x[3] != l {
        return shape_err(
            "fold",
            format!(
                "operand 0 has shape {x:?}, expected [N, C, {}, {l}] for kernel {:?} over spatial size {spatial:?}",
                w.cells(),
                w.kernel
            ),
        );
    }
    let mut s = vec![x[0], x[1]];
    s.extend_from_slice(spatial);
    Ok(s)
}

/// The window over one plane of the given spatial size.
pub fn geom(w: &Window, spatial: &[usize]) -> Geom {
    let [kernel, stride, pad, dilation] = w.as_2d();
    let (h, wd) = if w.rank() == 1 {
        (1, spatial[0])
    } else {
        (spatial[0], spatial[1])
    };
    Geom {
        kernel,
        stride,
        pad,
        dilation,
        h,
        w: wd,
    }
}

/// Visits one `[D, H, W]` plane's 3-D windows row by row, for output size
/// `out`: `f(row, base, kw)` for every kernel cell `(kd, kh, kw)` and output
/// `(d, h)` row, in the column tensor's order, with `row` the index of that
/// row of `out[2]` positions and `base` the offset of its input line (`None`
/// when the line lies in the padding); [`w_at`] gives a position's column
/// in that line.
fn for_each_row_3d(
    w: &Window,
    spatial: &[usize],
    out: &[usize],
    mut f: impl FnMut(usize, Option<usize>, usize),
) {
    let at = |d: usize, o: usize, k: usize| {
        (o * w.stride[d] + k * w.dilation[d])
            .checked_sub(w.padding[d])
            .filter(|&i| i < spatial[d])
    };
    let mut row = 0;
    for kd in 0..w.kernel[0] {
        for kh in 0..w.kernel[1] {
            for kw in 0..w.kernel[2] {
                for od in 0..out[0] {
                    for oh in 0..out[1] {
                        let base = at(0, od, kd)
                            .zip(at(1, oh, kh))
                            .map(|(id, ih)| (id * spatial[1] + ih) * spatial[2]);
                        f(row, base, kw);
                        row += 1;
                    }
                }
            }
        }
    }
}

/// A 3-D window's output size over `spatial` (checked when the node was
/// built), without allocating: `(S + 2p − d(k − 1) − 1) / s + 1` per dim.
fn out_3d(w: &Window, spatial: &[usize]) -> [usize; 3] {
    std::array::from_fn(|d| {
        let span = w.dilation[d] * (w.kernel[d] - 1) + 1;
        (spatial[d] + 2 * w.padding[d] - span) / w.stride[d] + 1
    })
}

/// The input column of output column `ow` for kernel column `kw` of a 3-D
/// window over width `width`, if inside.
fn w_at(w: &Window, width: usize, ow: usize, kw: usize) -> Option<usize> {
    (ow * w.stride[2] + kw * w.dilation[2])
        .checked_sub(w.padding[2])
        .filter(|&i| i < width)
}

/// im2col of one `[D, H, W]` plane for a 3-D window with output size
/// `out` into `cols [K, L]`.
fn unfold_3d(w: &Window, spatial: &[usize], out: &[usize], plane: &[f32], cols: &mut [f32]) {
    let ow = out[2];
    for_each_row_3d(w, spatial, out, |row, base, kw| {
        let dst = &mut cols[row * ow..(row + 1) * ow];
        match base {
            Some(b) => {
                for (o, d) in dst.iter_mut().enumerate() {
                    *d = w_at(w, spatial[2], o, kw).map_or(0.0, |i| plane[b + i]);
                }
            }
            None => dst.fill(0.0),
        }
    });
}

/// col2im of `cols [K, L]` into one `[D, H, W]` plane (zeroed first) for a
/// 3-D window with output size `out`: every column cell added back to its
/// input position.
fn fold_3d(w: &Window, spatial: &[usize], out: &[usize], cols: &[f32], plane: &mut [f32]) {
    plane.fill(0.0);
    let ow = out[2];
    for_each_row_3d(w, spatial, out, |row, base, kw| {
        if let Some(b) = base {
            for (o, &v) in cols[row * ow..(row + 1) * ow].iter().enumerate() {
                if let Some(i) = w_at(w, spatial[2], o, kw) {
                    plane[b + i] += v;
                }
            }
        }
    });
}

/// Reference kernel of `Unfold` (zero padding): im2col of every `[N, C]` plane.
pub fn unfold(w: &Window, x: View, out: &mut [f32], out_shape: &[usize]) {
    if w.rank() > 2 {
        let (spatial, plane) = (&x.shape[2..], x.shape[2..].iter().product::<usize>());
        let cols = out_shape[2] * out_shape[3];
        let o = out_3d(w, spatial);
        par::for_each_plane(out, cols, cols, |c, dst| {
            unfold_3d(w, spatial, &o, &x.data[c * plane..(c + 1) * plane], dst)
        });
        return;
    }
    let g = geom(w, &x.shape[2..]);
    let plane = g.h * g.w;
    let cols = out_shape[2] * out_shape[3];
    if plane == 0 {
        return out.fill(0.0); // every window lies in the zero padding
    }
    for (src, dst) in x.data.chunks_exact(plane).zip(out.chunks_exact_mut(cols)) {
        im2col(&g, src, dst);
    }
}

/// Reference kernel of `Fold`: scatter-adds every column cell back to its input position.
pub fn fold(w: &Window, x: View, out: &mut [f32], out_shape: &[usize]) {
    if w.rank() > 2 {
        let (spatial, plane) = (&out_shape[2..], out_shape[2..].iter().product::<usize>());
        let cols = x.shape[2] * x.shape[3];
        let o = out_3d(w, spatial);
        par::for_each_plane(out, plane, cols, |c, dst| {
            fold_3d(w, spatial, &o, &x.data[c * cols..(c + 1) * cols], dst)
        });
        return;
    }
    let g = geom(w, &out_shape[2..]);
    let plane = g.h * g.w;
    let cols = x.shape[2] * x.shape[3];
    out.fill(0.0);
    for (src, dst) in x.data.chunks_exact(cols).zip(out.chunks_exact_mut(plane)) {
        col2im_add(&g, src, dst);
    }
}

/// im2col (`torch.nn.functional.unfold`, per channel): `[N, C, *S]` →
/// `[N, C, K, L]` (K window cells, L window positions), zero padding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Unfold(pub Window);

impl OpDef for Unfold {
    fn name(&self) -> &'static str {
        "unfold"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        self.0.attrs()
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        unfold_shape(&self.0, ins[0])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        unfold(&self.0, ins[0], out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        let spatial = g.shape(xs[0])?[2..].to_vec();
        one(g.fold(gy, self.0.clone(), &spatial))
    }
}

/// col2im (`torch.nn.functional.fold`, per channel): `[N, C, K, L]` →
/// `[N, C, *spatial]`, scatter-adding overlapping cells, padding cropped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// The window that produced the columns.
    pub window: Window,
    /// Spatial size of the (unpadded) output.
    pub spatial: Vec<usize>,
}

impl OpDef for Fold {
    fn name(&self) -> &'static str {
        "fold"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut v = self.window.attrs();
        v.push(("spatial", format!("{:?}", self.spatial)));
        v
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        fold_shape(&self.window, &self.spatial, ins[0])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        fold(&self.window, ins[0], out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(g.unfold(gy, self.window.clone()))
    }
}
