//! Optimisers, compiled into the training step.
//!
//! An optimiser adds to the graph, for every trainable parameter, the ops that
//! compute its new value from the parameter and its gradient, plus state
//! tensors (momentum, Adam moments) declared with [`Graph::state`]. The
//! executable writes the new values back after each step, so the state lives
//! in the executable and is never re-allocated. The learning rate is itself a
//! state scalar (`optim.lr`), so it can be changed between steps.

use crate::error::{attr_err, Result};
use crate::graph::{Graph, Init, NodeId};

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

/// Stochastic gradient descent with optional momentum (PyTorch semantics:
/// `v = μ·v + (1 − dampening)·(g + λ·w)`, `w −= lr·v`, or `w −= lr·(g + μ·v)`
/// with Nesterov) and L2 weight decay `λ`.
#[derive(Clone, Debug)]
pub struct Sgd {
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    nesterov: bool,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f32) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }
    /// Momentum factor μ (0 disables momentum).
    pub fn momentum(mut self, m: f32) -> Self {
        self.momentum = m;
        self
    }
    /// Dampening of the gradient added to the momentum buffer.
    pub fn dampening(mut self, d: f32) -> Self {
        self.dampening = d;
        self
    }
    /// L2 weight decay λ.
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
    /// Nesterov momentum.
    pub fn nesterov(mut self, n: bool) -> Self {
        self.nesterov = n;
        self
    }
}

/// `g + λ·w` (the gradient itself when λ = 0).
fn decayed(g: &mut Graph, p: &ParamGrad, wd: f32) -> Result<NodeId> {
    if wd == 0.0 {
        return Ok(p.grad);
    }
    let d = g.mul_scalar(p.param, wd)?;
    g.add(p.grad, d)
}

fn lr_state(g: &mut Graph, lr: f32) -> Result<NodeId> {
    if !(lr.is_finite() && lr > 0.0) {
        return attr_err(
            "optimizer",
            format!("learning rate must be positive and finite, got {lr}"),
        );
    }
    g.state(LR, [], Init::Constant(lr))
}

impl Optimizer for Sgd {
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>> {
        if !(0.0..1.0).contains(&self.momentum)
            || self.weight_decay < 0.0
            || self.nesterov && self.momentum == 0.0
        {
            return attr_err(
                "sgd",
                format!("momentum {} must be in [0, 1) (and > 0 for Nesterov); weight decay {} must be ≥ 0", self.momentum, self.weight_decay),
            );
        }
        let lr = lr_state(g, self.lr)?;
        let mut updates = Vec::new();
        for p in params {
            let grad = decayed(g, p, self.weight_decay)?;
            let step = if self.momentum > 0.0 {
                let shape = g.shape(p.param)?.to_vec();
                let v = g.state(&format!("optim.momentum.{}", p.name), shape, Init::Zeros)?;
                let kept = g.mul_scalar(v, self.momentum)?;
                let fresh = g.mul_scalar(grad, 1.0 - self.dampening)?;
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
            let delta = g.mul(step, lr)?;
            let w_new = g.sub(p.param, delta)?;
            g.set_name(w_new, format!("{}.updated", p.name));
            updates.push((p.param, w_new));
        }
        Ok(updates)
    }
}

/// Adam (Kingma & Ba) with PyTorch's defaults (β₁ = 0.9, β₂ = 0.999,
/// ε = 1e-8) and optional L2 weight decay added to the gradient.
#[derive(Clone, Debug)]
pub struct Adam {
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
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
        }
    }
    /// The moment decay rates β₁ and β₂.
    pub fn betas(mut self, b1: f32, b2: f32) -> Self {
        self.beta1 = b1;
        self.beta2 = b2;
        self
    }
    /// ε added to the denominator.
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// L2 weight decay λ.
    pub fn weight_decay(mut self, wd: f32) -> Self {
        self.weight_decay = wd;
        self
    }
}

impl Optimizer for Adam {
    fn build(&self, g: &mut Graph, params: &[ParamGrad]) -> Result<Vec<(NodeId, NodeId)>> {
        let (b1, b2) = (self.beta1, self.beta2);
        if !(0.0..1.0).contains(&b1)
            || !(0.0..1.0).contains(&b2)
            || self.eps <= 0.0
            || self.weight_decay < 0.0
        {
            return attr_err(
                "adam",
                format!("betas ({b1}, {b2}) must be in [0, 1), eps > 0, weight decay ≥ 0"),
            );
        }
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
            let grad = decayed(g, p, self.weight_decay)?;
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
            let delta = g.mul(ratio, lr)?;
            let w_new = g.sub(p.param, delta)?;
            g.set_name(w_new, format!("{}.updated", p.name));
            updates.extend([(m, m_new), (v, v_new), (p.param, w_new)]);
        }
        Ok(updates)
    }
}
