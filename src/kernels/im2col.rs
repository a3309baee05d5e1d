//! im2col / col2im over one `[H, W]` plane (a 1-D signal is a plane of
//! height 1). Columns are laid out `[K, L]`: `K` window cells (row-major over
//! the kernel) by `L` window positions (row-major over the output).

/// A 2-D sliding window over an `h × w` plane, zero padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding on both sides `[ph, pw]`.
    pub pad: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Plane height.
    pub h: usize,
    /// Plane width.
    pub w: usize,
}

impl Geom {
    /// Output size `(oh, ow)`; the window must fit in the padded plane.
    pub fn out(&self) -> (usize, usize) {
        let o = |i: usize, size: usize| {
            (size + 2 * self.pad[i] - self.dilation[i] * (self.kernel[i] - 1) - 1) / self.stride[i]
                + 1
        };
        (o(0, self.h), o(1, self.w))
    }
    /// Cells per window.
    pub fn cells(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    /// Window positions.
    pub fn positions(&self) -> usize {
        let (oh, ow) = self.out();
        oh * ow
    }
}

/// Calls `f(column index, plane index)` for every window cell that falls
/// inside the plane (cells in the padding are skipped).
pub fn for_each_cell(g: &Geom, mut f: impl FnMut(usize, usize)) {
    let (k, s, p, d) = (g.kernel, g.stride, g.pad, g.dilation);
    let (oh, ow) = g.out();
    let l = oh * ow;
    for ki in 0..k[0] {
        for kj in 0..k[1] {
            let cell = ki * k[1] + kj;
            for y in 0..oh {
                let iy = (y * s[0] + ki * d[0]) as isize - p[0] as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let row = iy as usize * g.w;
                for x in 0..ow {
                    let ix = (x * s[1] + kj * d[1]) as isize - p[1] as isize;
                    if ix >= 0 && ix < g.w as isize {
                        f(cell * l + y * ow + x, row + ix as usize);
                    }
                }
            }
        }
    }
}

/// Writes the `[K, L]` columns of `plane` into `cols` (padding cells are 0).
pub fn im2col(g: &Geom, plane: &[f32], cols: &mut [f32]) {
    cols.fill(0.0);
    for_each_cell(g, |c, i| cols[c] = plane[i]);
}

/// Adds every column cell of `cols [K, L]` to its position in `plane`.
pub fn col2im_add(g: &Geom, cols: &[f32], plane: &mut [f32]) {
    for_each_cell(g, |c, i| plane[i] += cols[c]);
}
