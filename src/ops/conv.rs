//! The fused convolution primitive `Conv` (1-D or 2-D, groups, optional
//! bias), which the `conv_forward` pass makes out of the layers'
//! unfold + matmul pattern. Its VJP is emitted in the generic form.

use super::elementwise::UnaryOp;
use super::window::{geom, Window};
use super::View;
use super::{Arity, Grads, OpDef, RunCtx};
use super::{NodeId, OpBuilder};
use crate::error::{shape_err, Result};
use crate::kernels::conv::{conv_forward, ConvDims};
use crate::shape::checked_size;
use serde::{Deserialize, Serialize};

/// Shape rule of `Conv`: `x [N, Cin, *S]`, `w [Cout, Cin/groups, *kernel]`,
/// optional `b [Cout]` → `[N, Cout, *O]`.
pub fn conv_shape(window: &Window, groups: usize, ins: &[&[usize]]) -> Result<Vec<usize>> {
    let op = match window.rank() {
        1 => "conv1d",
        2 => "conv2d",
        _ => "conv",
    };
    window.validate(op)?;
    window.check_fused(op)?;
    let (x, w) = (ins[0], ins[1]);
    let r = window.rank() + 2;
    let fits = x.len() == r
        && w.len() == r
        && groups > 0
        && w[0] % groups == 0
        && Some(x[1]) == w[1].checked_mul(groups)
        && w[2..] == window.kernel[..];
    if !fits {
        return shape_err(
            op,
            format!(
                "input {x:?} and weight {w:?} do not fit kernel {:?} with {groups} group(s)",
                window.kernel
            ),
        );
    }
    if let Some(b) = ins.get(2) {
        if *b != [w[0]] {
            return shape_err(
                op,
                format!("operand 2 (bias) has shape {b:?}, expected [{}]", w[0]),
            );
        }
    }
    let mut out = vec![x[0], w[0]];
    out.extend(window.out_size(op, &x[2..])?);
    window.check_scratch(op, w[1], &x[2..])?;
    Ok(out)
}

/// The sizes of a convolution with `window` over input spatial size `spatial`.
fn dims(
    window: &Window,
    groups: usize,
    n: usize,
    cin: usize,
    cout: usize,
    spatial: &[usize],
) -> ConvDims {
    ConvDims {
        n,
        cin,
        cout,
        groups,
        geom: geom(window, spatial),
    }
}

/// The operands of a `Conv` without its residual, and the residual.
fn split_residual<T>(residual: bool, ins: &[T]) -> (&[T], Option<&T>) {
    match residual {
        true => (&ins[..ins.len() - 1], ins.last()),
        false => (ins, None),
    }
}

/// Kernel of `Conv`: the convolution, plus the residual operand (the last)
/// when `residual`, then the epilogue's unary ops in order. Empty operands
/// (batch 0, no channels, an empty plane the padding makes windows over)
/// sum nothing: each output is its bias (or 0), as PyTorch.
pub fn conv(
    window: &Window,
    groups: usize,
    residual: bool,
    epilogue: &[super::UnaryOp],
    ins: &[View],
    out: &mut [f32],
) {
    let (ins, res) = split_residual(residual, ins);
    let (x, w) = (ins[0], ins[1]);
    if out.is_empty() {
        return;
    }
    let per_image = out.len() / x.shape[0];
    let after = |n: usize, y: &mut [f32]| {
        if let Some(r) = res {
            let r = &r.data[n * per_image..(n + 1) * per_image];
            y.iter_mut().zip(r).for_each(|(y, &r)| *y += r);
        }
        for &u in epilogue {
            super::elementwise::unary_in_place(u, y);
        }
    };
    if x.data.is_empty() || w.data.is_empty() {
        let per_channel: usize = out.len() / (x.shape[0] * w.shape[0]);
        for (k, o) in out.chunks_mut(per_channel).enumerate() {
            o.fill(ins.get(2).map_or(0.0, |b| b.data[k % w.shape[0]]));
        }
        out.chunks_mut(per_image)
            .enumerate()
            .for_each(|(n, y)| after(n, y));
        return;
    }
    let d = dims(
        window,
        groups,
        x.shape[0],
        x.shape[1],
        w.shape[0],
        &x.shape[2..],
    );
    conv_forward(&d, x.data, w.data, ins.get(2).map(|b| b.data), out, &after);
}

/// VJP of `Conv`: `dx = input_grad(w, gy)`, `dw = kernel_grad(x, gy)`,
/// `db = Σ gy` over batch and space, and the residual's gradient `gy`.
/// (`Conv` exists only after the passes, so its rule uses the fused
/// gradient ops directly.) An epilogue is differentiated first, with each
/// op's own rule on the recomputed convolution without it.
pub fn conv_vjp(
    window: &Window,
    groups: usize,
    residual: bool,
    epilogue: &[super::UnaryOp],
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    gy: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let gy = if epilogue.is_empty() {
        gy
    } else {
        let plain = super::Op::Conv(Conv {
            window: window.clone(),
            groups,
            residual,
            epilogue: vec![],
        });
        let mut stages = vec![g.add_op(plain, xs)?];
        for &u in epilogue {
            let prev = *stages.last().expect("starts non-empty");
            stages.push(g.add_op(super::Op::Unary(u), &[prev])?);
        }
        let mut grad = gy;
        for (i, &u) in epilogue.iter().enumerate().rev() {
            grad = super::elementwise::unary_vjp(u, g, stages[i], stages[i + 1], grad)?;
        }
        grad
    };
    let (xs, res) = split_residual(residual, xs);
    let (x, w) = (xs[0], xs[1]);
    let xshape = g.shape(x)?.to_vec();
    let spatial = xshape[2..].to_vec();
    let dx = g.add_op(
        super::Op::ConvInputGrad(ConvInputGrad {
            window: window.clone(),
            groups,
            spatial,
        }),
        &[w, gy],
    )?;
    let dw = g.add_op(
        super::Op::ConvKernelGrad(ConvKernelGrad {
            window: window.clone(),
            groups,
        }),
        &[x, gy],
    )?;
    let mut grads = vec![Some(dx), Some(dw)];
    if xs.len() == 3 {
        let axes: Vec<isize> = std::iter::once(0).chain(2..xshape.len() as isize).collect();
        grads.push(Some(g.sum(gy, &axes, false)?));
    }
    if res.is_some() {
        grads.push(Some(gy));
    }
    Ok(grads)
}

fn conv_name(window: &Window, what: &str) -> String {
    format!("conv{}d_{what}", window.rank())
}

/// Checks `gy [N, Cout, *O]` against input spatial size `spatial` and `Cout`.
fn check_gy(
    op: &str,
    window: &Window,
    gy: &[usize],
    n: usize,
    cout: usize,
    spatial: &[usize],
) -> Result<()> {
    let mut want = vec![n, cout];
    want.extend(window.out_size(op, spatial)?);
    if gy != want {
        return shape_err(
            op,
            format!("operand 1 (gradient) has shape {gy:?}, expected {want:?}"),
        );
    }
    Ok(())
}

/// Shape rule of `ConvKernelGrad`: `x [N, Cin, *S]`, `gy [N, Cout, *O]` → `dw [Cout, Cin/G, *kernel]`.
pub fn kernel_grad_shape(window: &Window, groups: usize, ins: &[&[usize]]) -> Result<Vec<usize>> {
    let op = conv_name(window, "kernel_grad");
    window.validate(&op)?;
    window.check_fused(&op)?;
    let (x, gy) = (ins[0], ins[1]);
    if x.len() != window.rank() + 2
        || groups == 0
        || x[1] % groups != 0
        || gy.len() < 2
        || gy[1] % groups != 0
    {
        return shape_err(
            &op,
            format!("input {x:?} and gradient {gy:?} do not fit {groups} group(s)"),
        );
    }
    check_gy(&op, window, gy, x[0], gy[1], &x[2..])?;
    window.check_scratch(&op, x[1] / groups, &x[2..])?;
    let mut out = vec![gy[1], x[1] / groups];
    out.extend(&window.kernel);
    Ok(out)
}

/// Shape rule of `ConvInputGrad`: `w [Cout, Cin/G, *kernel]`, `gy [N, Cout, *O]` → `dx [N, Cin, *spatial]`.
pub fn input_grad_shape(
    window: &Window,
    groups: usize,
    spatial: &[usize],
    ins: &[&[usize]],
) -> Result<Vec<usize>> {
    let op = conv_name(window, "input_grad");
    window.validate(&op)?;
    window.check_fused(&op)?;
    let (w, gy) = (ins[0], ins[1]);
    if w.len() != window.rank() + 2
        || w[2..] != window.kernel[..]
        || groups == 0
        || w[0] % groups != 0
        || gy.is_empty()
    {
        return shape_err(
            &op,
            format!(
                "weight {w:?} does not fit kernel {:?} with {groups} group(s)",
                window.kernel
            ),
        );
    }
    check_gy(&op, window, gy, gy[0], w[0], spatial)?;
    let cin = checked_size(&op, "input channels", w[1].checked_mul(groups))?;
    window.check_scratch(&op, w[1], spatial)?;
    let mut out = vec![gy[0], cin];
    out.extend(spatial);
    Ok(out)
}

/// Kernel of `ConvKernelGrad`.
/// Empty operands contribute nothing: the gradient is 0.
pub fn kernel_grad(window: &Window, groups: usize, ins: &[View], out: &mut [f32]) {
    let (x, gy) = (ins[0], ins[1]);
    if out.is_empty() || x.data.is_empty() || gy.data.is_empty() {
        return out.fill(0.0);
    }
    let d = dims(
        window,
        groups,
        x.shape[0],
        x.shape[1],
        gy.shape[1],
        &x.shape[2..],
    );
    crate::kernels::conv::conv_kernel_grad(&d, x.data, gy.data, out);
}

/// Kernel of `ConvInputGrad`. Empty operands contribute nothing: the gradient is 0.
pub fn input_grad(
    window: &Window,
    groups: usize,
    spatial: &[usize],
    ins: &[View],
    out: &mut [f32],
) {
    let (w, gy) = (ins[0], ins[1]);
    if out.is_empty() || w.data.is_empty() || gy.data.is_empty() {
        return out.fill(0.0);
    }
    let d = dims(
        window,
        groups,
        gy.shape[0],
        w.shape[1] * groups,
        w.shape[0],
        spatial,
    );
    crate::kernels::conv::conv_input_grad(&d, w.data, gy.data, out);
}

/// VJP of `ConvKernelGrad(x, gy)` (bilinear): `d gy = conv(x, g)`,
/// `d x = input_grad(g, gy)` for the upstream gradient `g` of the weight shape.
pub fn kernel_grad_vjp(
    window: &Window,
    groups: usize,
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    up: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let (x, gy) = (xs[0], xs[1]);
    let spatial = g.shape(x)?[2..].to_vec();
    let dx = g.add_op(
        super::Op::ConvInputGrad(ConvInputGrad {
            window: window.clone(),
            groups,
            spatial,
        }),
        &[up, gy],
    )?;
    let dgy = g.add_op(
        super::Op::Conv(Conv {
            window: window.clone(),
            groups,
            residual: false,
            epilogue: vec![],
        }),
        &[x, up],
    )?;
    Ok(vec![Some(dx), Some(dgy)])
}

/// VJP of `ConvInputGrad(w, gy)` (bilinear): `d w = kernel_grad(g, gy)`,
/// `d gy = conv(g, w)` for the upstream gradient `g` of the input shape.
pub fn input_grad_vjp(
    window: &Window,
    groups: usize,
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    up: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let (w, gy) = (xs[0], xs[1]);
    let dw = g.add_op(
        super::Op::ConvKernelGrad(ConvKernelGrad {
            window: window.clone(),
            groups,
        }),
        &[up, gy],
    )?;
    let dgy = g.add_op(
        super::Op::Conv(Conv {
            window: window.clone(),
            groups,
            residual: false,
            epilogue: vec![],
        }),
        &[up, w],
    )?;
    Ok(vec![Some(dw), Some(dgy)])
}

/// `names[rank]` for a 1-D or 2-D window, else the generic `names[0]` (a
/// window of another rank is refused by the shape rule, which names the op
/// by its generic name).
fn by_rank(window: &Window, names: [&'static str; 3]) -> &'static str {
    let rank = window.rank();
    names.get(rank).filter(|_| rank > 0).unwrap_or(&names[0])
}

/// The window's attributes and the group count.
fn window_attrs(window: &Window, groups: usize) -> Vec<(&'static str, String)> {
    let mut v = window.attrs();
    v.push(("groups", groups.to_string()));
    v
}

/// Fused convolution `[x, w]` or `[x, w, b]` (`torch.nn.functional.conv1d`
/// / `conv2d`: NCHW, weight `[Cout, Cin/groups, *kernel]`), with a residual
/// operand `r` of the output's shape added (operands `[x, w, (b,) r]`) and
/// element-wise ops applied to the result in the same pass over the output:
/// `epilogue(conv(x, w) + b + r)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv {
    /// The sliding window (1-D or 2-D).
    pub window: Window,
    /// Channel groups.
    pub groups: usize,
    /// The last operand is a residual added to the result (a residual
    /// block's shortcut), before the epilogue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub residual: bool,
    /// Element-wise ops applied to the result, in order (an activation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub epilogue: Vec<UnaryOp>,
}

impl OpDef for Conv {
    fn name(&self) -> &'static str {
        by_rank(&self.window, ["conv", "conv1d", "conv2d"])
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut v = window_attrs(&self.window, self.groups);
        if self.residual {
            v.push(("residual", "true".into()));
        }
        if !self.epilogue.is_empty() {
            let names: Vec<String> = self.epilogue.iter().map(|u| u.to_string()).collect();
            v.push(("epilogue", format!("[{}]", names.join(","))));
        }
        v
    }
    fn arity(&self) -> Arity {
        Arity::Between(2, 3 + usize::from(self.residual))
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let (main, res) = split_residual(self.residual, ins);
        if main.len() < 2 {
            return shape_err(
                self.name(),
                "a convolution with a residual takes [x, w, (b,) residual]",
            );
        }
        let shape = conv_shape(&self.window, self.groups, main)?;
        match res {
            Some(r) if **r != shape[..] => shape_err(
                self.name(),
                format!(
                    "operand {} (the residual) has shape {r:?}, expected the output's {shape:?}",
                    main.len()
                ),
            ),
            _ => Ok(shape),
        }
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        conv(
            &self.window,
            self.groups,
            self.residual,
            &self.epilogue,
            ins,
            out,
        )
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        conv_vjp(
            &self.window,
            self.groups,
            self.residual,
            &self.epilogue,
            g,
            xs,
            gy,
        )
    }
}

/// Fused convolution weight gradient `[x, gy]` → `[Cout, Cin/groups,
/// *kernel]` (`torch.nn.grad.conv2d_weight`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvKernelGrad {
    /// The forward convolution's window.
    pub window: Window,
    /// Channel groups.
    pub groups: usize,
}

impl OpDef for ConvKernelGrad {
    fn name(&self) -> &'static str {
        let names = [
            "conv_kernel_grad",
            "conv1d_kernel_grad",
            "conv2d_kernel_grad",
        ];
        by_rank(&self.window, names)
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        window_attrs(&self.window, self.groups)
    }
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        kernel_grad_shape(&self.window, self.groups, ins)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        kernel_grad(&self.window, self.groups, ins, out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        kernel_grad_vjp(&self.window, self.groups, g, xs, gy)
    }
}

/// Fused convolution input gradient (transposed convolution, as
/// `torch.nn.grad.conv2d_input`) `[w, gy]` → `[N, Cin, *spatial]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvInputGrad {
    /// The forward convolution's window.
    pub window: Window,
    /// Channel groups.
    pub groups: usize,
    /// Spatial size of the forward input.
    pub spatial: Vec<usize>,
}

impl OpDef for ConvInputGrad {
    fn name(&self) -> &'static str {
        let names = ["conv_input_grad", "conv1d_input_grad", "conv2d_input_grad"];
        by_rank(&self.window, names)
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut v = window_attrs(&self.window, self.groups);
        v.push(("spatial", format!("{:?}", self.spatial)));
        v
    }
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        input_grad_shape(&self.window, self.groups, &self.spatial, ins)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        input_grad(&self.window, self.groups, &self.spatial, ins, out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        input_grad_vjp(&self.window, self.groups, g, xs, gy)
    }
}
