//! Learning-rate schedules: constant, step decay, cosine annealing, and a
//! linear warm-up in front of any of them.

use super::Optimizer;
use crate::Real;

/// A learning rate as a function of the optimizer step t = 0, 1, 2, …
/// (t is the number of updates already made, so `lr_at(0)` is the rate of
/// the first update).
///
/// ```text
/// Constant { lr }                          η(t) = lr
/// Step { lr, step_size, gamma }            η(t) = lr · γ^⌊t / step_size⌋
/// Cosine { lr, min_lr, total_steps }       η(t) = min + (lr − min)·(1 + cos(π·min(t, T)/T))/2
/// Warmup { steps: w, then }                η(t) = then(0)·(t + 1)/w  for t < w,  then(t − w) after
/// ```
///
/// `Step` is PyTorch's `StepLR`, `Cosine` its `CosineAnnealingLR` (held at
/// `min_lr` after T steps). A warm-up of w steps delays the schedule behind
/// it by w steps, so a cosine after a warm-up should get T = total − w.
///
/// ```
/// use tapegrad::optim::LrSchedule;
/// let s = LrSchedule::Warmup {
///     steps: 10,
///     then: Box::new(LrSchedule::Cosine { lr: 1.0, min_lr: 0.1, total_steps: 90 }),
/// };
/// assert_eq!(s.lr_at(0), 0.1);          // warming up: 1/10 of the peak
/// assert_eq!(s.lr_at(9), 1.0);          // the peak
/// assert_eq!(s.lr_at(10), 1.0);         // the cosine starts
/// assert!((s.lr_at(55) - 0.55).abs() < 1e-12); // half way down
/// assert_eq!(s.lr_at(100), 0.1);        // and stays at min_lr
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant {
        /// η.
        lr: f64,
    },
    /// Multiply by `gamma` every `step_size` steps.
    Step {
        /// The initial rate.
        lr: f64,
        /// Steps between two decays (0 is treated as 1).
        step_size: u64,
        /// The decay factor γ.
        gamma: f64,
    },
    /// Half a cosine from `lr` down to `min_lr` over `total_steps`.
    Cosine {
        /// The initial (peak) rate.
        lr: f64,
        /// The final rate.
        min_lr: f64,
        /// The length T of the decay (0 means `min_lr` throughout).
        total_steps: u64,
    },
    /// A linear ramp over `steps` steps up to the schedule `then`, which
    /// starts when the ramp ends.
    Warmup {
        /// The ramp length w (0 = no warm-up).
        steps: u64,
        /// The schedule after the ramp.
        then: Box<LrSchedule>,
    },
}

impl LrSchedule {
    /// The learning rate for step `t`.
    ///
    /// ```
    /// use tapegrad::optim::LrSchedule;
    /// let s = LrSchedule::Step { lr: 0.1, step_size: 2, gamma: 0.5 };
    /// let lrs: Vec<f64> = (0..6).map(|t| s.lr_at(t)).collect();
    /// assert_eq!(lrs, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]);
    /// ```
    pub fn lr_at(&self, t: u64) -> f64 {
        match self {
            LrSchedule::Constant { lr } => *lr,
            LrSchedule::Step {
                lr,
                step_size,
                gamma,
            } => {
                let k = t / (*step_size).max(1);
                lr * gamma.powi(k.min(i32::MAX as u64) as i32)
            }
            LrSchedule::Cosine {
                lr,
                min_lr,
                total_steps,
            } => {
                if *total_steps == 0 {
                    return *min_lr;
                }
                let progress = t.min(*total_steps) as f64 / *total_steps as f64;
                min_lr + (lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            LrSchedule::Warmup { steps, then } => {
                if t < *steps {
                    then.lr_at(0) * (t + 1) as f64 / *steps as f64
                } else {
                    then.lr_at(t - steps)
                }
            }
        }
    }

    /// Sets `optimizer`'s learning rate for step `t` and returns it.
    ///
    /// ```
    /// use tapegrad::optim::{LrSchedule, Optimizer, Sgd};
    /// let mut opt = Sgd::<f32>::new(1.0);
    /// let s = LrSchedule::Step { lr: 0.1, step_size: 10, gamma: 0.1 };
    /// assert_eq!(s.apply(&mut opt, 10), 0.1 * 0.1);
    /// assert_eq!(opt.lr(), 0.1 * 0.1);
    /// ```
    pub fn apply<F: Real>(&self, optimizer: &mut dyn Optimizer<F>, t: u64) -> f64 {
        let lr = self.lr_at(t);
        optimizer.set_lr(lr);
        lr
    }
}
