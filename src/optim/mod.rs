//! Optimisers, compiled into the training step.
//!
//! An optimiser adds to the graph, for every trainable parameter, the ops that
//! compute its new value from the parameter and its gradient, plus state
//! tensors (momentum, Adam moments) declared with [`Graph::state`]. The
//! executable writes the new values back after each step, so the state lives
//! in the executable and is never re-allocated. The learning rate is itself a
//! state scalar (`optim.lr`), so it can be changed between steps.

mod schedule;
pub use schedule::{CosineWithWarmup, LrSchedule, OneCycleLr, StepLr};

use crate::error::{attr_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::OpBuilder;

/// One trainable parameter with its gradient.
#[derive(Clone, Debug)]
pub struct ParamGrad {
    /// Parameter name.
    pub name: String,
    /// The parameter node.
    pub param: NodeId,
    /// Its gradient node.
    pub grad: NodeId,
}

/// Name of the learning-rate state scalar every optimiser declares.
pub const LR: &str = "optim.lr";

/// Builds the update ops of a training step.
pub trait Optimizer {
    /// Adds the update ops for `params`; returns `(state or parameter, new value)`
    /// pairs to be written back after each step.
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>>;
}

/// A boxed optimiser (one chosen at run time, e.g. from a command line).
impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>> {
        (**self).build(g, params)
    }
}

/// Stochastic gradient descent with optional momentum, dampening, Nesterov
/// momentum and L2 weight decay, matching `torch.optim.SGD` step for step:
///
/// ```text
/// g = grad + λ·w                          (weight decay λ)
/// b = g                                   (first step: the buffer is the gradient, undamped)
/// b = μ·b + (1 − dampening)·g             (later steps)
/// g = g + μ·b  with Nesterov, else  g = b (when μ > 0)
/// w = w − lr·g
/// ```
///
/// The options are checked when the optimiser is built into a graph
/// ([`Optimizer::build`], e.g. by [`crate::Trainer::new`]), with PyTorch's
/// ranges: `lr ≥ 0`, `momentum ≥ 0`, `weight_decay ≥ 0`, every value finite,
/// and Nesterov needs `momentum > 0` and `dampening = 0`. A value outside them
/// is an `Err` naming the option and the value.
#[derive(Clone, Debug)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: bool,
}

impl Sgd {
    /// Plain SGD with learning rate `lr` (`torch.optim.SGD(params, lr)`).
    pub fn new(lr: f32) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
    /// Momentum factor μ ≥ 0 (0, the default, disables momentum).
    pub fn momentum(mut self, m: f32) -> Self {
        self.momentum = m;
        self
    }
    /// Dampening of the gradient added to the momentum buffer after the first
    /// step (default 0; ignored without momentum).
    pub fn dampening(mut self, d: f32) -> Self {
        self.dampening = d;
        self
    }
    /// L2 weight decay λ ≥ 0 added to the gradient as `λ·w` (default 0).
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
    /// Nesterov momentum (needs momentum > 0 and dampening 0).
    pub fn nesterov(mut self, n: bool) -> Self {
        self.nesterov = n;
        self
    }

    /// Checks the options against PyTorch's ranges (see [`Sgd`]).
    fn check(&self) -> Result<()> {
        check_lr(self.lr)?;
        at_least_zero("sgd", "momentum", self.momentum)?;
        finite("sgd", "dampening", self.dampening)?;
        at_least_zero("sgd", "weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return attr_err(
                "sgd",
                format!(
                    "nesterov momentum requires momentum > 0 and dampening = 0, got momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
            );
        }
        Ok(())
    }
}

/// `Err` naming `option` of `opt` unless `v` is finite.
fn finite(opt: &str, option: &str, v: f32) -> Result<()> {
    if !v.is_finite() {
        return attr_err(opt, format!("{option} must be a finite number, got {v}"));
    }
    Ok(())
}

/// `Err` naming `option` of `opt` unless `v` is finite and ≥ 0.
fn at_least_zero(opt: &str, option: &str, v: f32) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return attr_err(
            opt,
            format!("{option} must be a finite number ≥ 0, got {v}"),
        );
    }
    Ok(())
}

/// Checks a learning rate: finite and ≥ 0 (PyTorch's `lr >= 0`). `Err`
/// naming the value otherwise; used by the optimisers and
/// [`crate::Trainer::set_learning_rate`].
pub fn check_lr(lr: f32) -> Result<()> {
    if !(lr.is_finite() && lr >= 0.0) {
        return attr_err(
            "optimizer",
            format!("learning rate (lr) must be a finite number ≥ 0, got {lr}"),
        );
    }
    Ok(())
}

/// `g + λ·w` (the gradient itself when λ = 0).
fn decayed(g: &mut Graph, p: &ParamGrad, wd: f32) -> Result<NodeId> {
    if wd == 0.0 {
        return Ok(p.grad);
    }
    let d = g.mul_scalar(p.param, wd)?;
    g.add(p.grad, d)
}

/// `w − lr·step` as `p`'s new value (named `{name}.updated`), pushed to `updates`.
fn descend(
    g: &mut Graph,
    p: &ParamGrad,
    w: NodeId,
    step: NodeId,
    lr: NodeId,
    updates: &mut Vec<(NodeId, NodeId)>,
) -> Result<()> {
    let delta = g.mul(step, lr)?;
    let w_new = g.sub(w, delta)?;
    g.set_name(w_new, format!("{}.updated", p.name));
    updates.push((p.param, w_new));
    Ok(())
}

fn lr_state(g: &mut Graph, lr: f32) -> Result<NodeId> {
    check_lr(lr)?;
    g.state(LR, [], Init::Constant(lr))
}

/// Name of the SGD state scalar holding the weight of the fresh gradient in
/// the momentum buffer: 1 at the first step (the buffer starts as the
/// gradient itself), `1 − dampening` afterwards.
pub const SGD_FRESH: &str = "optim.sgd.fresh_weight";

impl Optimizer for Sgd {
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>> {
        self.check()?;
        let lr = lr_state(g, self.lr)?;
        let mut updates = Vec::new();
        // with dampening, the first step differs from the later ones: a state
        // scalar holds the fresh gradient's weight (1, then 1 − dampening)
        let fresh_weight = if self.momentum > 0.0 && self.dampening != 0.0 {
            let w = g.state(SGD_FRESH, [], Init::Constant(1.0))?;
            let later = g.scalar(1.0 - self.dampening)?;
            updates.push((w, later));
            Some(w)
        } else {
            None
        };
        for p in params {
            let grad = decayed(g, p, self.weight_decay)?;
            let step = if self.momentum > 0.0 {
                let shape = g.shape(p.param)?.to_vec();
                let v = g.state(&format!("optim.momentum.{}", p.name), shape, Init::Zeros)?;
                // the buffer starts at zero, so μ·v adds nothing at the first step
                let kept = g.mul_scalar(v, self.momentum)?;
                let fresh = match fresh_weight {
                    Some(w) => g.mul(grad, w)?,
                    // (1 − 0)·g; the algebraic pass removes the ·1
                    None => g.mul_scalar(grad, 1.0 - self.dampening)?,
                };
                let v_new = g.add(kept, fresh)?;
                updates.push((v, v_new));
                if self.nesterov {
                    let look = g.mul_scalar(v_new, self.momentum)?;
                    g.add(grad, look)?
                } else {
                    v_new
                }
            } else {
                grad
            };
            descend(g, p, p.param, step, lr, &mut updates)?;
        }
        Ok(updates)
    }
}

/// Adam (Kingma & Ba) as `torch.optim.Adam` computes it, with its defaults
/// (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, no weight decay). At step `t`:
///
/// ```text
/// g = grad + λ·w                          (L2 weight decay λ; see `AdamW` for the decoupled form)
/// m = β₁·m + (1 − β₁)·g
/// v = β₂·v + (1 − β₂)·g²
/// w = w − lr · (m / (1 − β₁ᵗ)) / (sqrt(v / (1 − β₂ᵗ)) + ε)
/// ```
///
/// The options are checked when the optimiser is built into a graph, with
/// PyTorch's ranges: `lr ≥ 0`, `0 ≤ β < 1`, `eps ≥ 0`, `weight_decay ≥ 0`,
/// every value finite; a value outside them is an `Err` naming the option
/// and the value. (With `eps = 0` a parameter whose gradients are all zero
/// becomes NaN, as in PyTorch.)
#[derive(Clone, Debug)]
pub struct Adam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decoupled: bool,
}

/// AdamW (Loshchilov & Hutter), `torch.optim.AdamW`: Adam whose weight decay
/// shrinks the weights directly, `w ← w·(1 − lr·λ)` before the Adam step
/// (which then sees the raw gradient), default λ = 0.01.
/// `AdamW::new(lr)` is an [`Adam`] so configured; its other options are Adam's.
#[derive(Clone, Copy, Debug)]
pub struct AdamW;

impl AdamW {
    /// AdamW with learning rate `lr` and PyTorch's defaults (β 0.9, 0.999;
    /// ε 1e-8; weight decay 0.01).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(lr: f32) -> Adam {
        Adam::new(lr)
            .weight_decay(0.01)
            .decoupled_weight_decay(true)
    }
}

impl Adam {
    /// Adam with learning rate `lr`.
    pub fn new(lr: f32) -> Self {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
    /// Applies the weight decay to the weights instead of the gradient
    /// (PyTorch's `decoupled_weight_decay`; AdamW, see [`AdamW`]).
    pub fn decoupled_weight_decay(mut self, decoupled: bool) -> Self {
        self.decoupled = decoupled;
        self
    }
    /// The moment decay rates β₁ and β₂, each in `[0, 1)`.
    pub fn betas(mut self, b1: f32, b2: f32) -> Self {
        self.beta1 = b1;
        self.beta2 = b2;
        self
    }
    /// ε ≥ 0 added to the denominator.
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// L2 weight decay λ ≥ 0, added to the gradient as `λ·w` (default 0).
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
}

impl Optimizer for Adam {
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>> {
        let (b1, b2) = (self.beta1, self.beta2);
        check_lr(self.lr)?;
        for (i, b) in [b1, b2].into_iter().enumerate() {
            if !(0.0..1.0).contains(&b) {
                return attr_err(
                    "adam",
                    format!("betas ({b1}, {b2}): beta{} = {b} must be in [0, 1)", i + 1),
                );
            }
        }
        at_least_zero("adam", "eps", self.eps)?;
        at_least_zero("adam", "weight_decay", self.weight_decay)?;
        let lr = lr_state(g, self.lr)?;
        // running β₁ᵗ and β₂ᵗ give the bias corrections without a power op
        let b1t = g.state("optim.beta1_pow", [], Init::Constant(1.0))?;
        let b2t = g.state("optim.beta2_pow", [], Init::Constant(1.0))?;
        let b1t_new = g.mul_scalar(b1t, b1)?;
        let b2t_new = g.mul_scalar(b2t, b2)?;
        let one = g.scalar(1.0)?;
        let corr1 = g.sub(one, b1t_new)?;
        let corr2 = g.sub(one, b2t_new)?;
        let mut updates = vec![(b1t, b1t_new), (b2t, b2t_new)];
        for p in params {
            let shape = g.shape(p.param)?.to_vec();
            let (grad, w) = match self.decoupled {
                false => (decayed(g, p, self.weight_decay)?, p.param),
                true if self.weight_decay == 0.0 => (p.grad, p.param),
                // w·(1 − lr·λ), as torch's param.mul_(1 - lr * weight_decay)
                true => {
                    let lr_wd = g.mul_scalar(lr, self.weight_decay)?;
                    let keep = g.sub(one, lr_wd)?;
                    (p.grad, g.mul(p.param, keep)?)
                }
            };
            let m = g.state(
                &format!("optim.adam_m.{}", p.name),
                shape.clone(),
                Init::Zeros,
            )?;
            let v = g.state(&format!("optim.adam_v.{}", p.name), shape, Init::Zeros)?;
            let (m_keep, g1) = (g.mul_scalar(m, b1)?, g.mul_scalar(grad, 1.0 - b1)?);
            let m_new = g.add(m_keep, g1)?;
            let g2 = g.mul(grad, grad)?;
            let (v_keep, g2) = (g.mul_scalar(v, b2)?, g.mul_scalar(g2, 1.0 - b2)?);
            let v_new = g.add(v_keep, g2)?;
            let m_hat = g.div(m_new, corr1)?;
            let v_hat = g.div(v_new, corr2)?;
            let root = g.sqrt(v_hat)?;
            let denom = g.add_scalar(root, self.eps)?;
            let ratio = g.div(m_hat, denom)?;
            updates.extend([(m, m_new), (v, v_new)]);
            descend(g, p, w, ratio, lr, &mut updates)?;
        }
        Ok(updates)
    }
}

/// RMSprop as `torch.optim.RMSprop` computes it, with its defaults (lr
/// given, α = 0.99, ε = 1e-8, no weight decay, no momentum, not centred):
///
/// ```text
/// g = grad + λ·w
/// v = α·v + (1 − α)·g²
/// avg = √(v − ḡ²) + ε   with ḡ = α·ḡ + (1 − α)·g when centred, else √v + ε
/// b = μ·b + g / avg,  w = w − lr·b   with momentum μ > 0, else w = w − lr·g / avg
/// ```
///
/// Options checked when built, with PyTorch's ranges: `lr ≥ 0`, `α ≥ 0`,
/// `eps ≥ 0`, `momentum ≥ 0`, `weight_decay ≥ 0`, every value finite.
#[derive(Clone, Debug)]
pub struct RmsProp {
    lr: f32,
    alpha: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
    centered: bool,
}

impl RmsProp {
    /// RMSprop with learning rate `lr` (PyTorch's default is 0.01).
    pub fn new(lr: f32) -> Self {
        RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
    /// The smoothing constant α (default 0.99).
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
    /// ε added to the denominator (default 1e-8).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// L2 weight decay λ, added to the gradient as `λ·w` (default 0).
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
    /// Momentum μ (default 0).
    pub fn momentum(mut self, m: f32) -> Self {
        self.momentum = m;
        self
    }
    /// Normalise by the estimated variance instead of the second moment.
    pub fn centered(mut self, c: bool) -> Self {
        self.centered = c;
        self
    }
}

impl Optimizer for RmsProp {
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>> {
        for (option, v) in [
            ("alpha", self.alpha),
            ("eps", self.eps),
            ("weight_decay", self.weight_decay),
            ("momentum", self.momentum),
        ] {
            at_least_zero("rmsprop", option, v)?;
        }
        let lr = lr_state(g, self.lr)?;
        let a = self.alpha;
        let mut updates = Vec::new();
        for p in params {
            let shape = g.shape(p.param)?.to_vec();
            let state = |g: &mut Graph, what: &str| {
                g.state(
                    &format!("optim.rmsprop_{what}.{}", p.name),
                    shape.clone(),
                    Init::Zeros,
                )
            };
            let grad = decayed(g, p, self.weight_decay)?;
            let v = state(g, "square_avg")?;
            let sq = g.mul(grad, grad)?;
            let (keep, fresh) = (g.mul_scalar(v, a)?, g.mul_scalar(sq, 1.0 - a)?);
            let v_new = g.add(keep, fresh)?;
            updates.push((v, v_new));
            let var = if self.centered {
                let m = state(g, "grad_avg")?;
                let (keep, fresh) = (g.mul_scalar(m, a)?, g.mul_scalar(grad, 1.0 - a)?);
                let m_new = g.add(keep, fresh)?;
                updates.push((m, m_new));
                let m2 = g.mul(m_new, m_new)?;
                g.sub(v_new, m2)?
            } else {
                v_new
            };
            let root = g.sqrt(var)?;
            let avg = g.add_scalar(root, self.eps)?;
            let mut step = g.div(grad, avg)?;
            if self.momentum > 0.0 {
                let b = state(g, "momentum")?;
                let kept = g.mul_scalar(b, self.momentum)?;
                let b_new = g.add(kept, step)?;
                updates.push((b, b_new));
                step = b_new;
            }
            descend(g, p, p.param, step, lr, &mut updates)?;
        }
        Ok(updates)
    }
}

/// Clips the gradients by their global norm before `inner` uses them, as
/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` called between
/// `backward()` and `step()`: with `n = √(Σ ‖g‖²)` over every parameter's
/// gradient, each gradient is scaled by `min(1, max_norm / (n + 1e-6))`,
/// inside the compiled step. A NaN or ∞ norm scales by NaN (PyTorch's
/// default, `error_if_nonfinite=False`). `max_norm` must be finite and > 0,
/// checked when built.
#[derive(Clone, Debug)]
pub struct ClipGradNorm<O> {
    max_norm: f32,
    inner: O,
}

impl<O: Optimizer> ClipGradNorm<O> {
    /// `inner` stepping on gradients clipped to global norm `max_norm`.
    pub fn new(max_norm: f32, inner: O) -> Self {
        ClipGradNorm { max_norm, inner }
    }
}

impl<O: Optimizer> Optimizer for ClipGradNorm<O> {
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>> {
        if !(self.max_norm.is_finite() && self.max_norm > 0.0) {
            return attr_err(
                "clip_grad_norm",
                format!(
                    "max_norm must be a finite number > 0, got {}",
                    self.max_norm
                ),
            );
        }
        let mut total: Option<NodeId> = None;
        for p in params {
            let sq = g.mul(p.grad, p.grad)?;
            let s = g.sum_all(sq)?;
            total = Some(match total {
                Some(t) => g.add(t, s)?,
                None => s,
            });
        }
        let Some(total) = total else {
            return self.inner.build(g, params);
        };
        let norm = g.sqrt(total)?;
        let denom = g.add_scalar(norm, 1e-6)?;
        let max = g.scalar(self.max_norm)?;
        let coef = g.div(max, denom)?;
        let one = g.scalar(1.0)?;
        // min(coef, 1) that keeps a NaN coefficient (as torch.clamp(max=1))
        let above = g.gt(coef, one)?;
        let coef = g.select(above, one, coef)?;
        let clipped: Vec<ParamGrad> = params
            .iter()
            .map(|p| {
                Ok(ParamGrad {
                    grad: g.mul(p.grad, coef)?,
                    ..p.clone()
                })
            })
            .collect::<Result<_>>()?;
        self.inner.build(g, &clipped)
    }
}
