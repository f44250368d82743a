//! Stochastic gradient descent with momentum, Nesterov momentum and
//! (coupled) weight decay, as `torch.optim.SGD` defines them.

use super::{check_hyper, export_buffer, flag, refuse_hyper, state_for};
use super::{Optimizer, OptimizerState, StateReader};
use crate::error::{or_panic, Error, ErrorKind, Result};
use crate::{Grads, ParamKey, ParamStore, Real, Tensor};
use std::collections::HashMap;

/// SGD, PyTorch's formulation:
///
/// ```text
/// g ← g + λ·θ                        (weight decay λ)
/// v ← μ·v + g                        (momentum μ; v = g on the first step)
/// d = g + μ·v  (Nesterov)  or  d = v
/// θ ← θ − η·d
/// ```
///
/// ```
/// use tapegrad::optim::{Optimizer, Sgd};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::scalar(1.0));
/// let mut opt = Sgd::new(0.1);
/// let tape = Tape::new();
/// let g = tape.param(&store, w).powf(2.0).backward(); // dL/dw = 2w = 2
/// opt.step(&mut store, &g);
/// assert!((store.get(w).item() - 0.8).abs() < 1e-15);
/// ```
#[derive(Debug, Clone)]
pub struct Sgd<F: Real> {
    /// Learning rate η.
    pub lr: f64,
    /// Momentum μ (0 = plain SGD).
    pub momentum: f64,
    /// Use Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay λ, added to the gradient.
    pub weight_decay: f64,
    velocity: HashMap<ParamKey, Tensor<F>>,
}

impl<F: Real> Sgd<F> {
    /// Plain SGD with learning rate `lr`.
    ///
    /// # Panics
    /// If `lr` is negative or not finite; see [`Sgd::try_new`].
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        or_panic(Self::try_new(lr))
    }

    /// [`Sgd::new`], returning the error of [`Sgd::validate`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming `lr` if it is negative or not
    /// finite.
    ///
    /// ```
    /// assert!(tapegrad::optim::Sgd::<f32>::try_new(f64::NAN).is_err());
    /// ```
    pub fn try_new(lr: f64) -> Result<Self> {
        let sgd = Sgd {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            velocity: HashMap::new(),
        };
        sgd.validate()?;
        Ok(sgd)
    }

    /// With momentum μ.
    ///
    /// # Panics
    /// If μ is negative or not finite.
    #[track_caller]
    pub fn momentum(mut self, mu: f64) -> Self {
        self.momentum = mu;
        or_panic(self.validate());
        self
    }

    /// With Nesterov momentum μ.
    ///
    /// # Panics
    /// If μ is not finite and > 0 (Nesterov needs a momentum).
    #[track_caller]
    pub fn nesterov(mut self, mu: f64) -> Self {
        self.momentum = mu;
        self.nesterov = true;
        or_panic(self.validate());
        self
    }

    /// With weight decay λ.
    ///
    /// # Panics
    /// If λ is negative or not finite.
    #[track_caller]
    pub fn weight_decay(mut self, lambda: f64) -> Self {
        self.weight_decay = lambda;
        or_panic(self.validate());
        self
    }

    /// Checks the hyper-parameters as `torch.optim.SGD` does: lr, momentum
    /// and weight decay finite and ≥ 0, and Nesterov only with a positive
    /// momentum. The constructors run it, and so does
    /// [`Optimizer::load_state`] on a file's values.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] naming the first value out of range.
    ///
    /// ```
    /// let mut opt = tapegrad::optim::Sgd::<f64>::new(0.1);
    /// opt.nesterov = true; // without a momentum
    /// assert!(opt.validate().unwrap_err().message().contains("Nesterov"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        hyper(self.lr, self.momentum, self.nesterov, self.weight_decay)
    }
}

impl<F: Real> Optimizer<F> for Sgd<F> {
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Grads<F>) {
        let (lr, mu, wd) = (
            F::of(self.lr),
            F::of(self.momentum),
            F::of(self.weight_decay),
        );
        for (key, g) in grads.params() {
            let Ok(theta) = store.try_get_mut(key) else {
                continue;
            };
            let first = !self.velocity.contains_key(&key);
            let v = if self.momentum != 0.0 {
                Some(state_for(&mut self.velocity, key, theta))
            } else {
                None
            };
            match v {
                None => {
                    for (t, &g) in theta.data_mut().iter_mut().zip(g.data()) {
                        let g = g + wd * *t;
                        *t = *t - lr * g;
                    }
                }
                Some(v) => {
                    for ((t, &g), v) in theta.data_mut().iter_mut().zip(g.data()).zip(v.data_mut())
                    {
                        let g = g + wd * *t;
                        *v = if first { g } else { mu * *v + g };
                        let d = if self.nesterov { g + mu * *v } else { *v };
                        *t = *t - lr * d;
                    }
                }
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
        "sgd"
    }

    /// Scalars `lr`, `momentum`, `nesterov` (0/1), `weight_decay`; buffers
    /// `momentum_buffer.{name}` (PyTorch's name for v).
    fn state(&self, store: &ParamStore<F>) -> OptimizerState<F> {
        let mut tensors = Vec::new();
        export_buffer(&mut tensors, store, "momentum_buffer", &self.velocity);
        OptimizerState {
            kind: "sgd".into(),
            scalars: vec![
                ("lr".into(), self.lr),
                ("momentum".into(), self.momentum),
                ("nesterov".into(), flag(self.nesterov)),
                ("weight_decay".into(), self.weight_decay),
            ],
            tensors,
        }
    }

    fn load_state(&mut self, store: &ParamStore<F>, state: &OptimizerState<F>) -> Result<()> {
        let r = StateReader::new("sgd", &["momentum_buffer"], store, state)?;
        let (lr, momentum, nesterov, weight_decay) = (
            r.scalar("lr")?,
            r.scalar("momentum")?,
            r.flag("nesterov")?,
            r.scalar("weight_decay")?,
        );
        refuse_hyper("sgd", hyper(lr, momentum, nesterov, weight_decay))?;
        self.velocity = r.buffer("momentum_buffer");
        (self.lr, self.momentum, self.nesterov, self.weight_decay) =
            (lr, momentum, nesterov, weight_decay);
        Ok(())
    }
}

/// [`Sgd::validate`] on loose values.
fn hyper(lr: f64, momentum: f64, nesterov: bool, weight_decay: f64) -> Result<()> {
    check_hyper(
        "Sgd",
        &[
            ("lr", lr, None),
            ("momentum", momentum, None),
            ("weight_decay", weight_decay, None),
        ],
    )?;
    if nesterov && momentum <= 0.0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "Sgd",
            format!("Nesterov momentum needs momentum > 0, not {momentum}"),
        ));
    }
    Ok(())
}
