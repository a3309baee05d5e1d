//! The generic op set. `Op` is a closed enum; each family's file holds its
//! shape rule and reference kernel (and, with autodiff, its VJP rule).
//! The exhaustive `match`es here dispatch to them.

pub mod builder;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod fused;
pub mod matmul;
pub mod movement;
pub mod pool;
pub mod reduce;
pub mod source;
pub mod window;

pub use builder::{NodeId, OpBuilder};
pub use elementwise::{BinaryOp, UnaryOp};
pub use pool::{AvgDivisor, PoolWindow};
pub use reduce::ReduceKind;
pub use window::Window;

use crate::error::{shape_err, Result};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// A read-only view of an operand: its shape and row-major data.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    /// Dimensions.
    pub shape: &'a [usize],
    /// Row-major data, `shape.iter().product()` elements.
    pub data: &'a [f32],
}

/// Per-run context handed to kernels.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunCtx {
    /// Training mode: dropout masks are applied. In evaluation mode dropout is the identity.
    pub training: bool,
    /// How many runs the executable has done before this one (varies dropout masks per step).
    pub step: u64,
}

/// An operation of the graph, with its attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// A value fed at run time by name.
    Input {
        /// Feed name.
        name: String,
    },
    /// A trainable parameter; its value lives in the graph / executable.
    Param {
        /// Parameter name (unique in the graph).
        name: String,
    },
    /// A constant tensor.
    Constant {
        /// The value.
        value: Tensor,
    },
    /// A tensor of `shape` filled with one value (a compact constant).
    Fill {
        /// Output shape.
        shape: Vec<usize>,
        /// The value of every element.
        #[serde(with = "source::serde_f32")]
        value: f32,
    },
    /// Element-wise unary op.
    Unary(UnaryOp),
    /// Element-wise binary op with numpy broadcasting.
    Binary(BinaryOp),
    /// `select(cond, a, b)`: `a` where `cond != 0`, else `b`; all three broadcast.
    Select,
    /// Reduction over `axes` (sorted, unique).
    Reduce {
        /// Sum, mean or max.
        kind: ReduceKind,
        /// Reduced axes, sorted and unique.
        axes: Vec<usize>,
        /// Keep reduced axes as size-1 dimensions.
        keepdims: bool,
    },
    /// 1 at the argmax along `axis`, 0 elsewhere: the first (lowest-index)
    /// maximum, or the last NaN where there is one (PyTorch's max-pooling rule).
    FirstMaxMask {
        /// The axis searched.
        axis: usize,
    },
    /// Same data, new shape of equal size.
    Reshape {
        /// The new shape.
        shape: Vec<usize>,
    },
    /// Element-wise transpose: output dim `i` is input dim `perm[i]` (index arithmetic per element).
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// The fused form of `Transpose`: the same values, computed by a blocked
    /// copy kernel instead of per-element index arithmetic.
    Permute {
        /// The permutation (output dim `i` is input dim `perm[i]`).
        perm: Vec<usize>,
    },
    /// Numpy broadcast to `shape`.
    Broadcast {
        /// Target shape.
        shape: Vec<usize>,
    },
    /// `start..end` with `step` along `axis`.
    Slice {
        /// Sliced axis.
        axis: usize,
        /// First index taken.
        start: usize,
        /// One past the last index considered.
        end: usize,
        /// Step (≥ 1).
        step: usize,
    },
    /// Constant padding: `pads[d] = (before, after)` for every dimension `d`.
    Pad {
        /// Padding per dimension.
        pads: Vec<(usize, usize)>,
        /// The value of padded cells.
        #[serde(with = "source::serde_f32")]
        value: f32,
    },
    /// Concatenation of all operands along an existing `axis`.
    Concat {
        /// The axis.
        axis: usize,
    },
    /// Stacking of equally shaped operands along a new `axis`.
    Stack {
        /// Position of the new axis.
        axis: usize,
    },
    /// im2col: `[N, C, *S]` → `[N, C, K, L]` (K window cells, L window positions), zero padding.
    Unfold(Window),
    /// col2im: `[N, C, K, L]` → `[N, C, *spatial]`, scatter-adding overlapping cells, padding cropped.
    Fold {
        /// The window that produced the columns.
        window: Window,
        /// Spatial size of the (unpadded) output.
        spatial: Vec<usize>,
    },
    /// Batched matrix product `op(a) · op(b)` with `op(a) [..., M, K]`,
    /// `op(b) [..., K, N]` and batch dims broadcast; `op` transposes the last
    /// two axes of an operand whose flag is set (read by strides, no copy).
    MatMul {
        /// Use `a` transposed.
        #[serde(default)]
        trans_a: bool,
        /// Use `b` transposed.
        #[serde(default)]
        trans_b: bool,
    },
    /// Fused convolution `[x, w]` or `[x, w, b]` (see `ops/conv.rs`).
    Conv {
        /// The sliding window (1-D or 2-D).
        window: Window,
        /// Channel groups.
        groups: usize,
        /// Element-wise ops applied to the result, in order, in the same pass
        /// over the output (an activation such as ReLU).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        epilogue: Vec<UnaryOp>,
    },
    /// Fused convolution weight gradient `[x, gy]` → `[Cout, Cin/groups, *kernel]`.
    ConvKernelGrad {
        /// The forward convolution's window.
        window: Window,
        /// Channel groups.
        groups: usize,
    },
    /// Fused convolution input gradient (transposed convolution) `[w, gy]` → `[N, Cin, *spatial]`.
    ConvInputGrad {
        /// The forward convolution's window.
        window: Window,
        /// Channel groups.
        groups: usize,
        /// Spatial size of the forward input.
        spatial: Vec<usize>,
    },
    /// A chain of element-wise ops in one loop (see `ops/fused.rs`).
    Fused {
        /// The instructions; the last one's register is the result.
        expr: Vec<fused::Instr>,
    },
    /// The identity whose gradient is zero (`torch.Tensor.detach`, `jax.lax.stop_gradient`).
    StopGradient,
    /// Output `index` of a multi-output op: a view of part of its buffer, no kernel.
    Output {
        /// Which output.
        index: usize,
    },
    /// Fused max pooling (see `ops/pool.rs`) with two outputs: the window
    /// maxima and the plane index of each window's first maximum.
    MaxPoolWithIndices(PoolWindow),
    /// Fused max pooling, the window maxima only (where no gradient needs
    /// the indices).
    MaxPool(PoolWindow),
    /// Fused max-pooling gradient `[gy, indices]` → `[N, C, *spatial]`.
    MaxPoolBackward {
        /// The forward pool's window.
        window: PoolWindow,
        /// Spatial size of the forward input.
        spatial: Vec<usize>,
    },
    /// Fused average pooling.
    AvgPool {
        /// The window.
        window: PoolWindow,
        /// What each window sum is divided by.
        divisor: AvgDivisor,
    },
    /// Fused average-pooling gradient `[gy]` → `[N, C, *spatial]`.
    AvgPoolBackward {
        /// The forward pool's window.
        window: PoolWindow,
        /// The forward pool's divisor.
        divisor: AvgDivisor,
        /// Spatial size of the forward input.
        spatial: Vec<usize>,
    },
    /// Inverted dropout with a seeded mask in training mode, identity in evaluation mode.
    Dropout {
        /// Probability of zeroing an element.
        p: f32,
        /// Mask seed (the mask also depends on the run step).
        seed: u64,
    },
}

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exact(usize),
    /// One or more.
    AtLeastOne,
    /// Between the two counts, inclusive.
    Between(usize, usize),
}

impl Op {
    /// The op's name in dumps and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Constant { .. } => "constant",
            Op::Fill { .. } => "fill",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Select => "select",
            Op::Reduce { kind, .. } => kind.name(),
            Op::FirstMaxMask { .. } => "first_max_mask",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Permute { .. } => "permute",
            Op::Broadcast { .. } => "broadcast",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::Stack { .. } => "stack",
            Op::Unfold(_) => "unfold",
            Op::Fold { .. } => "fold",
            Op::MatMul { .. } => "matmul",
            Op::Dropout { .. } => "dropout",
            // a window of another rank is refused by the shape rule, which
            // names the op by its generic name
            Op::Conv { window, .. } => by_rank(window.rank(), ["conv", "conv1d", "conv2d"]),
            Op::ConvKernelGrad { window, .. } => by_rank(
                window.rank(),
                [
                    "conv_kernel_grad",
                    "conv1d_kernel_grad",
                    "conv2d_kernel_grad",
                ],
            ),
            Op::ConvInputGrad { window, .. } => by_rank(
                window.rank(),
                ["conv_input_grad", "conv1d_input_grad", "conv2d_input_grad"],
            ),
            Op::Output { .. } => "output",
            Op::StopGradient => "stop_gradient",
            Op::Fused { .. } => "fused",
            Op::MaxPoolWithIndices(w) => pool::pool_name("max", w.rank(), "with_indices"),
            Op::MaxPool(w) => pool::pool_name("max", w.rank(), ""),
            Op::MaxPoolBackward { window, .. } => pool::pool_name("max", window.rank(), "backward"),
            Op::AvgPool { window, .. } => pool::pool_name("avg", window.rank(), ""),
            Op::AvgPoolBackward { window, .. } => pool::pool_name("avg", window.rank(), "backward"),
        }
    }

    /// Whether the op is part of the graph's interface (an input or a
    /// parameter): never merged, replaced or removed by the passes, fed or
    /// loaded by the executor.
    pub fn is_interface(&self) -> bool {
        matches!(self, Op::Input { .. } | Op::Param { .. })
    }

    /// Whether the op's value is known at compile time from its attributes
    /// alone (`Constant`, `Fill`).
    pub fn is_constant(&self) -> bool {
        matches!(self, Op::Constant { .. } | Op::Fill { .. })
    }

    /// Whether the op's value may change from run to run for the same
    /// operands (`Dropout` in training): never folded at compile time.
    pub fn is_random(&self) -> bool {
        matches!(self, Op::Dropout { .. })
    }

    /// Whether the op is element-wise: output element `i` depends only on
    /// element `i` of each operand (after broadcasting), so chains of such
    /// ops fuse into one loop (`Unary`, `Binary`, `Select`, `Fused`).
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Fused { .. }
        )
    }

    /// Where the result lies in operand 0's memory, when it is a view of it
    /// (no data of its own): `Output { index }` at `index · len` (`len` the
    /// elements of one output), `Reshape` and `StopGradient` at 0.
    pub fn view_offset(&self, len: usize) -> Option<usize> {
        match self {
            Op::Output { index } => Some(index * len),
            Op::Reshape { .. } | Op::StopGradient => Some(0),
            _ => None,
        }
    }

    /// How many outputs the op has; all of a multi-output op's outputs share
    /// its node's shape, and other ops read them through `Output` nodes.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::MaxPoolWithIndices(_) => 2,
            _ => 1,
        }
    }

    /// Number of operands the op takes.
    pub fn arity(&self) -> Arity {
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } | Op::Fill { .. } => {
                Arity::Exact(0)
            }
            Op::Binary(_)
            | Op::MatMul { .. }
            | Op::ConvKernelGrad { .. }
            | Op::ConvInputGrad { .. }
            | Op::MaxPoolBackward { .. } => Arity::Exact(2),
            Op::Select => Arity::Exact(3),
            Op::Concat { .. } | Op::Stack { .. } | Op::Fused { .. } => Arity::AtLeastOne,
            Op::Conv { .. } => Arity::Between(2, 3),
            _ => Arity::Exact(1),
        }
    }

    /// Attributes for dumps as `(key, value)` pairs, sorted by key.
    pub fn attrs(&self) -> Vec<(&'static str, String)> {
        let mut a: Vec<(&'static str, String)> = match self {
            Op::Input { name } | Op::Param { name } => vec![("name", format!("{name:?}"))],
            Op::Constant { value } => vec![("checksum", fmt_f32(value.sum() as f32))],
            Op::Fill { value, .. } => vec![("value", fmt_f32(*value))],
            Op::Unary(_) | Op::Binary(_) | Op::Select | Op::StopGradient => vec![],
            Op::MatMul { trans_a, trans_b } => {
                let mut v = vec![];
                if *trans_a {
                    v.push(("trans_a", "true".to_string()));
                }
                if *trans_b {
                    v.push(("trans_b", "true".to_string()));
                }
                v
            }
            Op::Reduce { axes, keepdims, .. } => vec![
                ("axes", format!("{axes:?}")),
                ("keepdims", keepdims.to_string()),
            ],
            Op::FirstMaxMask { axis } | Op::Concat { axis } | Op::Stack { axis } => {
                vec![("axis", axis.to_string())]
            }
            Op::Reshape { shape } | Op::Broadcast { shape } => {
                vec![("shape", format!("{shape:?}"))]
            }
            Op::Transpose { perm } | Op::Permute { perm } => vec![("perm", format!("{perm:?}"))],
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => vec![
                ("axis", axis.to_string()),
                ("end", end.to_string()),
                ("start", start.to_string()),
                ("step", step.to_string()),
            ],
            Op::Pad { pads, value } => {
                vec![("pads", format!("{pads:?}")), ("value", fmt_f32(*value))]
            }
            Op::Unfold(w) => w.attrs(),
            Op::Fold { window, spatial } => {
                let mut v = window.attrs();
                v.push(("spatial", format!("{spatial:?}")));
                v
            }
            Op::Dropout { p, seed } => vec![("p", fmt_f32(*p)), ("seed", seed.to_string())],
            Op::Conv {
                window,
                groups,
                epilogue,
            } => {
                let mut v = window.attrs();
                v.push(("groups", groups.to_string()));
                if !epilogue.is_empty() {
                    let names: Vec<&str> = epilogue.iter().map(|u| u.name()).collect();
                    v.push(("epilogue", format!("[{}]", names.join(","))));
                }
                v
            }
            Op::ConvKernelGrad { window, groups } => {
                let mut v = window.attrs();
                v.push(("groups", groups.to_string()));
                v
            }
            Op::ConvInputGrad {
                window,
                groups,
                spatial,
            } => {
                let mut v = window.attrs();
                v.push(("groups", groups.to_string()));
                v.push(("spatial", format!("{spatial:?}")));
                v
            }
            Op::Output { index } => vec![("index", index.to_string())],
            Op::Fused { expr } => vec![("expr", fused::expr_text(expr))],
            Op::MaxPoolWithIndices(w) | Op::MaxPool(w) => w.attrs(),
            Op::MaxPoolBackward { window, spatial } => {
                let mut v = window.attrs();
                v.push(("spatial", format!("{spatial:?}")));
                v
            }
            Op::AvgPool { window, divisor } => pool::avg_attrs(window, *divisor),
            Op::AvgPoolBackward {
                window,
                divisor,
                spatial,
            } => {
                let mut v = pool::avg_attrs(window, *divisor);
                v.push(("spatial", format!("{spatial:?}")));
                v
            }
        };
        for (k, v) in a.iter_mut() {
            if *k != "name" {
                v.retain(|c| c != ' ');
            }
        }
        a.sort_by(|x, y| x.0.cmp(y.0));
        a
    }

    /// The shape rule: the output shape for operands of shapes `ins`, or an
    /// `Err` naming this op, the offending operand and the shapes.
    pub fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let op = self.name();
        match self.arity() {
            Arity::Exact(n) if ins.len() != n => {
                return shape_err(op, format!("takes {n} operand(s), got {}", ins.len()));
            }
            Arity::Between(lo, hi) if ins.len() < lo || ins.len() > hi => {
                return shape_err(
                    op,
                    format!("takes {lo} to {hi} operands, got {}", ins.len()),
                );
            }
            Arity::AtLeastOne if ins.is_empty() => {
                return shape_err(op, "takes at least one operand, got none");
            }
            _ => {}
        }
        match self {
            Op::Input { .. } | Op::Param { .. } => {
                shape_err(op, "input and parameter shapes are declared, not inferred")
            }
            Op::Constant { value } => Ok(value.shape().to_vec()),
            Op::Fill { shape, .. } => Ok(shape.clone()),
            Op::Unary(_) => Ok(ins[0].to_vec()),
            Op::Binary(_) => elementwise::broadcast_shapes(op, ins),
            Op::Select => elementwise::broadcast_shapes(op, ins),
            Op::Reduce {
                kind,
                axes,
                keepdims,
            } => reduce::reduce_shape(*kind, ins[0], axes, *keepdims),
            Op::FirstMaxMask { axis } => reduce::first_max_mask_shape(ins[0], *axis),
            Op::Reshape { shape } => movement::reshape_shape(ins[0], shape),
            Op::Transpose { perm } | Op::Permute { perm } => {
                movement::transpose_shape(self.name(), ins[0], perm)
            }
            Op::Broadcast { shape } => movement::broadcast_shape(ins[0], shape),
            Op::Slice {
                axis,
                start,
                end,
                step,
            } => movement::slice_shape(ins[0], *axis, *start, *end, *step),
            Op::Pad { pads, .. } => movement::pad_shape(ins[0], pads),
            Op::Concat { axis } => movement::concat_shape(ins, *axis),
            Op::Stack { axis } => movement::stack_shape(ins, *axis),
            Op::Unfold(w) => window::unfold_shape(w, ins[0]),
            Op::Fold { window, spatial } => window::fold_shape(window, spatial, ins[0]),
            Op::MatMul { trans_a, trans_b } => {
                matmul::matmul_shape(ins[0], ins[1], *trans_a, *trans_b)
            }
            Op::Dropout { p, .. } => dropout::dropout_shape(ins[0], *p),
            Op::Conv { window, groups, .. } => conv::conv_shape(window, *groups, ins),
            Op::ConvKernelGrad { window, groups } => conv::kernel_grad_shape(window, *groups, ins),
            Op::ConvInputGrad {
                window,
                groups,
                spatial,
            } => conv::input_grad_shape(window, *groups, spatial, ins),
            Op::Output { .. } | Op::StopGradient => Ok(ins[0].to_vec()),
            Op::Fused { expr } => fused::fused_shape(expr, ins),
            Op::MaxPoolWithIndices(w) => pool::max_pool_shape(w, ins[0]),
            Op::MaxPool(w) => pool::max_pool_values_shape(w, ins[0]),
            Op::MaxPoolBackward { window, spatial } => {
                pool::max_pool_backward_shape(window, spatial, ins)
            }
            Op::AvgPool { window, .. } => pool::avg_pool_shape(window, ins[0]),
            Op::AvgPoolBackward {
                window, spatial, ..
            } => pool::avg_pool_backward_shape(window, spatial, ins[0]),
        }
    }

    /// The operand positions whose memory the op's result may take over
    /// (element-wise ops reading that operand at the output's shape); the
    /// memory plan picks one when that operand is dead afterwards.
    pub fn in_place_operands(&self, ins: &[&[usize]], out_shape: &[usize]) -> Vec<usize> {
        let same = |k: usize| ins[k] == out_shape;
        match self {
            Op::Unary(_) => vec![0],
            Op::Binary(_) => (0..2).filter(|&k| same(k)).collect(),
            Op::Fused { .. } => (0..ins.len()).filter(|&k| same(k)).collect(),
            _ => vec![],
        }
    }

    /// [`eval`](Self::eval) for a step that writes over operand `aliased`:
    /// `out` holds that operand's value on entry (and `ins[aliased]` has its
    /// shape but no data). Only for the positions
    /// [`in_place_operands`](Self::in_place_operands) names.
    pub fn eval_in_place(
        &self,
        ins: &[View],
        aliased: usize,
        out: &mut [f32],
        out_shape: &[usize],
    ) {
        if out.is_empty() {
            return;
        }
        match self {
            Op::Unary(u) => elementwise::unary_in_place(*u, out),
            Op::Binary(b) => elementwise::binary_in_place(*b, ins, aliased, out, out_shape),
            Op::Fused { expr } => fused::fused_over(expr, ins, Some(aliased), out),
            other => unreachable!("{} has no in-place kernel", other.name()),
        }
    }

    /// The reference kernel: writes the op's output for operands `ins` into
    /// `out` (of the inferred shape `out_shape`; a multi-output op writes its
    /// outputs back to back, and an operand that is one holds them all).
    /// `Input` and `Param` are filled by the executor, not here.
    ///
    /// An empty result has nothing to compute; a kernel whose operands are
    /// empty but whose result is not (a sum over an empty axis, a padded
    /// empty plane) writes what PyTorch gives for it.
    pub fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], ctx: &RunCtx) {
        if out.is_empty() {
            return;
        }
        match self {
            Op::Input { .. } | Op::Param { .. } => {}
            Op::Constant { value } => out.copy_from_slice(value.data()),
            Op::Fill { value, .. } => out.fill(*value),
            Op::Unary(u) => elementwise::unary(*u, ins[0].data, out),
            Op::Binary(b) => elementwise::binary(*b, ins[0], ins[1], out, out_shape),
            Op::Select => elementwise::select(ins[0], ins[1], ins[2], out, out_shape),
            Op::Reduce { kind, axes, .. } => reduce::reduce(*kind, axes, ins[0], out),
            Op::FirstMaxMask { axis } => reduce::first_max_mask(*axis, ins[0], out),
            Op::Reshape { .. } | Op::StopGradient => out.copy_from_slice(ins[0].data),
            Op::Transpose { perm } => movement::transpose(perm, ins[0], out, out_shape),
            Op::Permute { perm } => {
                crate::kernels::permute::permute(ins[0].data, ins[0].shape, perm, out)
            }
            Op::Broadcast { .. } => movement::broadcast(ins[0], out, out_shape),
            Op::Slice {
                axis, start, step, ..
            } => movement::slice(ins[0], *axis, *start, *step, out, out_shape),
            Op::Pad { pads, value } => movement::pad(ins[0], pads, *value, out, out_shape),
            Op::Concat { axis } => movement::concat(ins, *axis, out, out_shape),
            Op::Stack { axis } => movement::stack(ins, *axis, out),
            Op::Unfold(w) => window::unfold(w, ins[0], out, out_shape),
            Op::Fold { window, .. } => window::fold(window, ins[0], out, out_shape),
            Op::MatMul { trans_a, trans_b } => {
                matmul::matmul(ins[0], ins[1], *trans_a, *trans_b, out, out_shape)
            }
            Op::Dropout { p, seed } => dropout::dropout(*p, *seed, ins[0].data, out, ctx),
            Op::Conv {
                window,
                groups,
                epilogue,
            } => conv::conv(window, *groups, epilogue, ins, out),
            Op::ConvKernelGrad { window, groups } => conv::kernel_grad(window, *groups, ins, out),
            Op::ConvInputGrad {
                window,
                groups,
                spatial,
            } => conv::input_grad(window, *groups, spatial, ins, out),
            Op::Output { index } => {
                let len = out.len();
                out.copy_from_slice(&ins[0].data[index * len..(index + 1) * len]);
            }
            Op::MaxPoolWithIndices(w) => pool::max_pool(w, ins[0], out),
            Op::MaxPool(w) => pool::max_pool_values(w, ins[0], out),
            Op::Fused { expr } => fused::fused(expr, ins, out),
            Op::MaxPoolBackward { window, spatial } => {
                pool::max_pool_backward(window, spatial, ins, out)
            }
            Op::AvgPool { window, divisor } => pool::avg_pool(window, *divisor, ins[0], out),
            Op::AvgPoolBackward {
                window,
                divisor,
                spatial,
            } => pool::avg_pool_backward(window, *divisor, spatial, ins[0], out),
        }
    }
}

impl Op {
    /// The VJP rule: given operands `xs`, this op's output `y` and the
    /// upstream gradient `gy`, adds generic ops computing one gradient per
    /// operand (`None`: the gradient is zero). A gradient may have the
    /// broadcast output shape; the autodiff driver sums it to the operand's.
    pub fn vjp(
        &self,
        g: &mut dyn OpBuilder,
        xs: &[NodeId],
        y: NodeId,
        gy: NodeId,
    ) -> Result<Vec<Option<NodeId>>> {
        let one = |n: Result<NodeId>| n.map(|n| vec![Some(n)]);
        match self {
            Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } | Op::Fill { .. } => {
                Ok(vec![])
            }
            Op::Unary(u) => one(elementwise::unary_vjp(*u, g, xs[0], y, gy)),
            Op::Binary(b) => elementwise::binary_vjp(*b, g, xs[0], xs[1], y, gy),
            Op::Select => elementwise::select_vjp(g, xs[0], gy),
            Op::Reduce { kind, axes, .. } => one(reduce::reduce_vjp(*kind, axes, g, xs[0], y, gy)),
            Op::FirstMaxMask { .. } | Op::StopGradient => Ok(vec![None]),
            Op::Reshape { .. } => {
                let shape: Vec<isize> = g.shape(xs[0])?.iter().map(|&d| d as isize).collect();
                one(g.reshape(gy, &shape))
            }
            Op::Transpose { perm } => one(movement::transpose_vjp(perm, g, gy)),
            Op::Permute { perm } => one(g.add_op(
                Op::Permute {
                    perm: movement::inverse_perm(perm),
                },
                &[gy],
            )),
            Op::Broadcast { .. } => Ok(vec![Some(gy)]),
            Op::Slice {
                axis, start, step, ..
            } => one(movement::slice_vjp(*axis, *start, *step, g, xs[0], gy)),
            Op::Pad { pads, .. } => one(movement::pad_vjp(pads, g, xs[0], gy)),
            Op::Concat { axis } => movement::concat_vjp(*axis, g, xs, gy),
            Op::Stack { axis } => movement::stack_vjp(*axis, g, xs, gy),
            Op::Unfold(w) => {
                let spatial = g.shape(xs[0])?[2..].to_vec();
                one(g.fold(gy, w.clone(), &spatial))
            }
            Op::Fold { window, .. } => one(g.unfold(gy, window.clone())),
            Op::MatMul { trans_a, trans_b } => {
                matmul::matmul_vjp(g, xs[0], xs[1], *trans_a, *trans_b, gy)
            }
            // The mask is a function of (seed, step, index): the same op on the
            // gradient in the same run applies the forward's mask.
            Op::Dropout { p, seed } => one(g.dropout(gy, *p, *seed)),
            Op::Conv {
                window,
                groups,
                epilogue,
            } => conv::conv_vjp(window, *groups, epilogue, g, xs, gy),
            Op::ConvKernelGrad { window, groups } => {
                conv::kernel_grad_vjp(window, *groups, g, xs, gy)
            }
            Op::ConvInputGrad { window, groups, .. } => {
                conv::input_grad_vjp(window, *groups, g, xs, gy)
            }
            // A multi-output op's cotangent is its first output's; the other
            // outputs (max-pool indices) are piecewise constant.
            Op::Output { index } => Ok(vec![(*index == 0).then_some(gy)]),
            Op::MaxPoolWithIndices(w) => one(pool::max_pool_vjp(w, g, xs[0], y, gy)),
            Op::MaxPool(w) => one(pool::max_pool_values_vjp(w, g, xs[0], gy)),
            Op::Fused { expr } => fused::fused_vjp(expr, g, xs, gy),
            Op::MaxPoolBackward { window, spatial } => {
                pool::max_pool_backward_vjp(window, spatial, g, xs, gy)
            }
            Op::AvgPool { window, divisor } => {
                one(pool::avg_pool_vjp(window, *divisor, g, xs[0], gy))
            }
            Op::AvgPoolBackward {
                window, divisor, ..
            } => one(pool::avg_pool_backward_vjp(window, *divisor, g, gy)),
        }
    }
}

/// `names[rank]` for a 1-D or 2-D window, else the generic `names[0]`.
fn by_rank(rank: usize, names: [&'static str; 3]) -> &'static str {
    names.get(rank).filter(|_| rank > 0).unwrap_or(&names[0])
}

/// Fixed, round-trippable float format for dumps.
pub fn fmt_f32(v: f32) -> String {
    if v.is_finite() {
        format!("{v:?}")
    } else if v.is_nan() {
        "nan".into()
    } else if v > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}
