//! Learning-rate schedules: the rate for each step, which
//! [`crate::Trainer::set_lr_schedule`] writes into the compiled step's
//! learning-rate state scalar before the step runs (PyTorch's
//! `torch.optim.lr_scheduler`, stepped once per optimiser step).

use crate::error::{attr_err, Result};

/// A learning rate per step (0-based: the rate of the first step is `lr(0)`).
pub trait LrSchedule {
    /// The learning rate of step `step`.
    fn lr(&self, step: u64) -> f32;
    /// `Err` naming the option when the schedule's settings are out of
    /// range ([`crate::Trainer::set_lr_schedule`] checks); default `Ok`.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// `Err` naming `option` of `schedule` unless `ok`.
fn need(ok: bool, schedule: &str, option: &str, value: impl std::fmt::Display) -> Result<()> {
    match ok {
        true => Ok(()),
        false => attr_err(schedule, format!("{option} {value} is out of range")),
    }
}

/// `lr · gamma^⌊step / step_size⌋` (`torch.optim.lr_scheduler.StepLR`).
#[derive(Clone, Debug)]
pub struct StepLr {
    /// The starting rate.
    pub lr: f32,
    /// Steps between decays (at least 1; 0 counts as 1).
    pub step_size: u64,
    /// The factor of each decay.
    pub gamma: f32,
}

impl LrSchedule for StepLr {
    /// `lr` and `gamma` finite and ≥ 0, `step_size` ≥ 1.
    fn check(&self) -> Result<()> {
        need(
            self.lr.is_finite() && self.lr >= 0.0,
            "StepLr",
            "lr",
            self.lr,
        )?;
        need(self.step_size >= 1, "StepLr", "step_size", self.step_size)?;
        need(
            self.gamma.is_finite() && self.gamma >= 0.0,
            "StepLr",
            "gamma",
            self.gamma,
        )
    }
    fn lr(&self, step: u64) -> f32 {
        let decays = step / self.step_size.max(1);
        (self.lr as f64 * (self.gamma as f64).powf(decays as f64)) as f32
    }
}

/// A linear warm-up from 0 over `warmup` steps, then a half cosine from
/// `lr` down to 0 at step `total` (and 0 after it), as Hugging Face
/// `transformers.get_cosine_schedule_with_warmup`; with `warmup` 0 it is
/// `torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total, eta_min=0)`.
#[derive(Clone, Debug)]
pub struct CosineWithWarmup {
    /// The peak rate, reached at the end of the warm-up.
    pub lr: f32,
    /// Warm-up steps.
    pub warmup: u64,
    /// Steps in all (warm-up included).
    pub total: u64,
}

impl LrSchedule for CosineWithWarmup {
    /// `lr` finite and ≥ 0, `total` ≥ 1.
    fn check(&self) -> Result<()> {
        need(
            self.lr.is_finite() && self.lr >= 0.0,
            "CosineWithWarmup",
            "lr",
            self.lr,
        )?;
        need(self.total >= 1, "CosineWithWarmup", "total", self.total)
    }
    fn lr(&self, step: u64) -> f32 {
        let base = self.lr as f64;
        if step < self.warmup {
            return (base * step as f64 / self.warmup as f64) as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / span).min(1.0);
        (base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32
    }
}

/// The one-cycle policy (`torch.optim.lr_scheduler.OneCycleLR` with its
/// defaults: cosine annealing, two phases): from `max_lr / div_factor` up to
/// `max_lr` over the first `pct_start` of `total` steps, then down to
/// `max_lr / div_factor / final_div_factor`. PyTorch also cycles SGD's
/// momentum by default; kiln does not.
#[derive(Clone, Debug)]
pub struct OneCycleLr {
    /// The peak rate.
    pub max_lr: f32,
    /// Steps in all.
    pub total: u64,
    /// The fraction of the steps spent rising (PyTorch's default 0.3).
    pub pct_start: f64,
    /// The starting rate is `max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// The final rate is the starting one over this (default 1e4).
    pub final_div_factor: f64,
}

impl OneCycleLr {
    /// PyTorch's defaults for `max_lr` over `total` steps.
    pub fn new(max_lr: f32, total: u64) -> Self {
        OneCycleLr {
            max_lr,
            total,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
        }
    }
}

impl LrSchedule for OneCycleLr {
    /// PyTorch's ranges: `max_lr` finite and ≥ 0, `total` ≥ 1, `pct_start`
    /// in [0, 1], and the two divisors finite and > 0.
    fn check(&self) -> Result<()> {
        let s = "OneCycleLr";
        need(
            self.max_lr.is_finite() && self.max_lr >= 0.0,
            s,
            "max_lr",
            self.max_lr,
        )?;
        need(self.total >= 1, s, "total", self.total)?;
        need(
            (0.0..=1.0).contains(&self.pct_start),
            s,
            "pct_start",
            self.pct_start,
        )?;
        for (option, v) in [
            ("div_factor", self.div_factor),
            ("final_div_factor", self.final_div_factor),
        ] {
            need(v.is_finite() && v > 0.0, s, option, v)?;
        }
        Ok(())
    }
    fn lr(&self, step: u64) -> f32 {
        let max = self.max_lr as f64;
        let initial = max / self.div_factor;
        let min = initial / self.final_div_factor;
        let rise_end = self.pct_start * self.total as f64 - 1.0;
        let last = self.total as f64 - 1.0;
        let t = step as f64;
        // torch's _annealing_cos: end + (start − end)/2 · (cos(π·pct) + 1)
        let cos = |start: f64, end: f64, pct: f64| {
            end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
        };
        let lr = if t <= rise_end && rise_end > 0.0 {
            cos(initial, max, t / rise_end)
        } else {
            // past `total` it stays at the final rate (PyTorch raises there)
            cos(max, min, ((t - rise_end) / (last - rise_end)).min(1.0))
        };
        lr as f32
    }
}
