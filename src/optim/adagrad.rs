//! Adagrad, as `torch.optim.Adagrad` (and min-char-rnn's update).

use super::{check_hyper, export_buffer, refuse_hyper, Optimizer, OptimizerState, StateReader};
use crate::error::{or_panic, Result};
use crate::{Grads, ParamKey, ParamStore, Real, Tensor};
use std::collections::HashMap;

/// Adagrad (Duchi et al.): every coordinate's step shrinks with the sum of
/// its squared gradients so far. PyTorch's formulation:
///
/// ```text
/// t ← t + 1
/// η_t = η / (1 + (t − 1)·δ)              (learning-rate decay δ)
/// g ← g + λ·θ                            (weight decay λ)
/// s ← s + g²                             (s starts at s₀, default 0)
/// θ ← θ − η_t · g / (√s + ε)
/// ```
///
/// min-char-rnn's `mem += dparam²; param −= lr·dparam/√(mem + 1e-8)` is
/// the same rule with ε under the root. `t` counts the optimizer's steps
/// (one counter for all parameters).
///
/// ```
/// use tapegrad::optim::{Adagrad, Optimizer};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::scalar(1.0));
/// let mut opt = Adagrad::new(0.1);
/// let g = Tape::new().param(&store, w).powf(2.0).backward(); // g = 2
/// opt.step(&mut store, &g);
/// // s = 4, θ = 1 − 0.1·2/(2 + 1e-10)
/// assert!((store.get(w).item() - 0.9).abs() < 1e-10);
/// ```
#[derive(Debug, Clone)]
pub struct Adagrad<F: Real> {
    /// Learning rate η.
    pub lr: f64,
    /// Learning-rate decay δ.
    pub lr_decay: f64,
    /// L2 weight decay λ, added to the gradient.
    pub weight_decay: f64,
    /// Initial value s₀ of every accumulator.
    pub initial_accumulator_value: f64,
    /// ε.
    pub eps: f64,
    step: u64,
    sum: HashMap<ParamKey, Tensor<F>>,
}

impl<F: Real> Adagrad<F> {
    /// Adagrad with PyTorch's defaults: no decay, s₀ = 0, ε = 1e-10.
    ///
    /// # Panics
    /// If `lr` is negative or not finite; see [`Adagrad::try_new`].
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        or_panic(Self::try_new(lr))
    }

    /// [`Adagrad::new`], returning the error of [`Adagrad::validate`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// naming `lr` if it is negative or not finite.
    ///
    /// ```
    /// assert!(tapegrad::optim::Adagrad::<f32>::try_new(-0.1).is_err());
    /// ```
    pub fn try_new(lr: f64) -> Result<Self> {
        let opt = Adagrad {
            lr,
            lr_decay: 0.0,
            weight_decay: 0.0,
            initial_accumulator_value: 0.0,
            eps: 1e-10,
            step: 0,
            sum: HashMap::new(),
        };
        opt.validate()?;
        Ok(opt)
    }

    /// Checks the hyper-parameters as `torch.optim.Adagrad` does: lr, lr
    /// decay, weight decay, s₀ and ε finite and ≥ 0. The constructors run
    /// it, and so does [`Optimizer::load_state`] on a file's values.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// naming the first value out of range.
    ///
    /// ```
    /// let mut opt = tapegrad::optim::Adagrad::<f64>::new(0.1);
    /// opt.eps = -1.0;
    /// assert!(opt.validate().unwrap_err().message().contains("eps = -1"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        hyper(
            self.lr,
            self.lr_decay,
            self.weight_decay,
            self.initial_accumulator_value,
            self.eps,
        )
    }

    /// The number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }
}

impl<F: Real> Optimizer<F> for Adagrad<F> {
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Grads<F>) {
        self.step += 1;
        let clr = F::of(self.lr / (1.0 + (self.step - 1) as f64 * self.lr_decay));
        let (wd, eps, s0) = (
            F::of(self.weight_decay),
            F::of(self.eps),
            F::of(self.initial_accumulator_value),
        );
        for (key, g) in grads.params() {
            let Ok(theta) = store.try_get_mut(key) else {
                continue;
            };
            let s = self
                .sum
                .entry(key)
                .or_insert_with(|| Tensor::full(theta.shape(), s0));
            for ((p, &g), s) in theta.data_mut().iter_mut().zip(g.data()).zip(s.data_mut()) {
                let g = g + wd * *p;
                *s = *s + g * g;
                *p = *p - clr * g / (s.sqrt() + eps);
            }
        }
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn kind(&self) -> &'static str {
        "adagrad"
    }

    /// Scalars `lr`, `lr_decay`, `weight_decay`, `initial_accumulator_value`,
    /// `eps`, `step`; buffers `sum.{name}` (s, PyTorch's name).
    fn state(&self, store: &ParamStore<F>) -> OptimizerState<F> {
        let mut tensors = Vec::new();
        export_buffer(&mut tensors, store, "sum", &self.sum);
        OptimizerState {
            kind: "adagrad".into(),
            scalars: vec![
                ("lr".into(), self.lr),
                ("lr_decay".into(), self.lr_decay),
                ("weight_decay".into(), self.weight_decay),
                (
                    "initial_accumulator_value".into(),
                    self.initial_accumulator_value,
                ),
                ("eps".into(), self.eps),
                ("step".into(), self.step as f64),
            ],
            tensors,
        }
    }

    fn load_state(&mut self, store: &ParamStore<F>, state: &OptimizerState<F>) -> Result<()> {
        let r = StateReader::new("adagrad", &["sum"], store, state)?;
        let (lr, lr_decay, wd, s0, eps, step) = (
            r.scalar("lr")?,
            r.scalar("lr_decay")?,
            r.scalar("weight_decay")?,
            r.scalar("initial_accumulator_value")?,
            r.scalar("eps")?,
            r.counter("step")?,
        );
        refuse_hyper("adagrad", hyper(lr, lr_decay, wd, s0, eps))?;
        self.sum = r.buffer("sum");
        (
            self.lr,
            self.lr_decay,
            self.weight_decay,
            self.initial_accumulator_value,
            self.eps,
            self.step,
        ) = (lr, lr_decay, wd, s0, eps, step);
        Ok(())
    }
}

/// [`Adagrad::validate`] on loose values.
fn hyper(lr: f64, lr_decay: f64, weight_decay: f64, s0: f64, eps: f64) -> Result<()> {
    check_hyper(
        "Adagrad",
        &[
            ("lr", lr, None),
            ("lr_decay", lr_decay, None),
            ("weight_decay", weight_decay, None),
            ("initial_accumulator_value", s0, None),
            ("eps", eps, None),
        ],
    )
}
