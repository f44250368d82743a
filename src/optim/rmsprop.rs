//! RMSprop, as `torch.optim.RMSprop`.

use super::{check_hyper, export_buffer, flag, refuse_hyper, state_for};
use super::{Optimizer, OptimizerState, StateReader};
use crate::error::{or_panic, Result};
use crate::{Grads, ParamKey, ParamStore, Real, Tensor};
use std::collections::HashMap;

/// RMSprop (Hinton's lecture 6e), with PyTorch's options: divide the
/// gradient by a running root mean square of its recent values.
///
/// ```text
/// g ← g + λ·θ                              (weight decay λ)
/// v ← α·v + (1 − α)·g²
/// ṽ = v − ḡ², ḡ ← α·ḡ + (1 − α)·g first    (centered)   or  ṽ = v
/// b ← μ·b + g / (√ṽ + ε),  θ ← θ − η·b     (momentum μ > 0)
/// θ ← θ − η · g / (√ṽ + ε)                 (μ = 0)
/// ```
///
/// ```
/// use tapegrad::optim::{Optimizer, RmsProp};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::scalar(1.0));
/// let mut opt = RmsProp::new(0.01);
/// let g = Tape::new().param(&store, w).powf(2.0).backward(); // g = 2
/// opt.step(&mut store, &g);
/// // v = 0.01·4 = 0.04, θ = 1 − 0.01·2/(0.2 + 1e-8)
/// assert!((store.get(w).item() - 0.9).abs() < 1e-8);
/// ```
#[derive(Debug, Clone)]
pub struct RmsProp<F: Real> {
    /// Learning rate η.
    pub lr: f64,
    /// Smoothing constant α.
    pub alpha: f64,
    /// ε.
    pub eps: f64,
    /// L2 weight decay λ, added to the gradient.
    pub weight_decay: f64,
    /// Momentum μ (0 = none).
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the second moment.
    pub centered: bool,
    square_avg: HashMap<ParamKey, Tensor<F>>,
    momentum_buffer: HashMap<ParamKey, Tensor<F>>,
    grad_avg: HashMap<ParamKey, Tensor<F>>,
}

impl<F: Real> RmsProp<F> {
    /// RMSprop with PyTorch's defaults: α = 0.99, ε = 1e-8, no decay, no
    /// momentum, not centered (PyTorch's default η is 0.01).
    ///
    /// # Panics
    /// If `lr` is negative or not finite; see [`RmsProp::try_new`].
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        or_panic(Self::try_new(lr))
    }

    /// [`RmsProp::new`], returning the error of [`RmsProp::validate`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// naming `lr` if it is negative or not finite.
    ///
    /// ```
    /// assert!(tapegrad::optim::RmsProp::<f32>::try_new(f64::INFINITY).is_err());
    /// ```
    pub fn try_new(lr: f64) -> Result<Self> {
        let opt = RmsProp {
            lr,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            square_avg: HashMap::new(),
            momentum_buffer: HashMap::new(),
            grad_avg: HashMap::new(),
        };
        opt.validate()?;
        Ok(opt)
    }

    /// Checks the hyper-parameters as `torch.optim.RMSprop` does: lr, α, ε,
    /// weight decay and momentum finite and ≥ 0. The constructors run it,
    /// and so does [`Optimizer::load_state`] on a file's values.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// naming the first value out of range.
    ///
    /// ```
    /// let mut opt = tapegrad::optim::RmsProp::<f64>::new(0.01);
    /// opt.alpha = -0.5;
    /// assert!(opt.validate().unwrap_err().message().contains("alpha = -0.5"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        hyper(
            self.lr,
            self.alpha,
            self.eps,
            self.weight_decay,
            self.momentum,
        )
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

    /// Centered: normalise by √(v − ḡ²).
    pub fn centered(mut self, yes: bool) -> Self {
        self.centered = yes;
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
}

impl<F: Real> Optimizer<F> for RmsProp<F> {
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Grads<F>) {
        let (lr, alpha, eps, wd, mu) = (
            F::of(self.lr),
            F::of(self.alpha),
            F::of(self.eps),
            F::of(self.weight_decay),
            F::of(self.momentum),
        );
        let one = F::one();
        for (key, g) in grads.params() {
            let Ok(theta) = store.try_get_mut(key) else {
                continue;
            };
            let n = theta.numel();
            let v = state_for(&mut self.square_avg, key, theta).data_mut();
            let mut gbar = self
                .centered
                .then(|| state_for(&mut self.grad_avg, key, theta).data_mut());
            let mut buf = (self.momentum > 0.0)
                .then(|| state_for(&mut self.momentum_buffer, key, theta).data_mut());
            let (p, g) = (theta.data_mut(), g.data());
            for i in 0..n {
                let gi = g[i] + wd * p[i];
                v[i] = alpha * v[i] + (one - alpha) * gi * gi;
                let var = match gbar.as_deref_mut() {
                    Some(ga) => {
                        ga[i] = alpha * ga[i] + (one - alpha) * gi;
                        v[i] - ga[i] * ga[i]
                    }
                    None => v[i],
                };
                let d = gi / (var.sqrt() + eps);
                match buf.as_deref_mut() {
                    Some(b) => {
                        b[i] = mu * b[i] + d;
                        p[i] = p[i] - lr * b[i];
                    }
                    None => p[i] = p[i] - lr * d,
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
        "rmsprop"
    }

    /// Scalars `lr`, `alpha`, `eps`, `weight_decay`, `momentum`,
    /// `centered` (0/1); buffers `square_avg.{name}` (v),
    /// `momentum_buffer.{name}` (b) and `grad_avg.{name}` (ḡ), PyTorch's
    /// names.
    fn state(&self, store: &ParamStore<F>) -> OptimizerState<F> {
        let mut tensors = Vec::new();
        export_buffer(&mut tensors, store, "square_avg", &self.square_avg);
        export_buffer(
            &mut tensors,
            store,
            "momentum_buffer",
            &self.momentum_buffer,
        );
        export_buffer(&mut tensors, store, "grad_avg", &self.grad_avg);
        OptimizerState {
            kind: "rmsprop".into(),
            scalars: vec![
                ("lr".into(), self.lr),
                ("alpha".into(), self.alpha),
                ("eps".into(), self.eps),
                ("weight_decay".into(), self.weight_decay),
                ("momentum".into(), self.momentum),
                ("centered".into(), flag(self.centered)),
            ],
            tensors,
        }
    }

    fn load_state(&mut self, store: &ParamStore<F>, state: &OptimizerState<F>) -> Result<()> {
        let buffers = ["square_avg", "momentum_buffer", "grad_avg"];
        let r = StateReader::new("rmsprop", &buffers, store, state)?;
        let (lr, alpha, eps, wd, mu, centered) = (
            r.scalar("lr")?,
            r.scalar("alpha")?,
            r.scalar("eps")?,
            r.scalar("weight_decay")?,
            r.scalar("momentum")?,
            r.flag("centered")?,
        );
        refuse_hyper("rmsprop", hyper(lr, alpha, eps, wd, mu))?;
        let (v, b, ga) = (
            r.buffer("square_avg"),
            r.buffer("momentum_buffer"),
            r.buffer("grad_avg"),
        );
        if centered {
            r.same_params(("square_avg", &v), ("grad_avg", &ga))?;
        }
        (
            self.lr,
            self.alpha,
            self.eps,
            self.weight_decay,
            self.momentum,
            self.centered,
        ) = (lr, alpha, eps, wd, mu, centered);
        (self.square_avg, self.momentum_buffer, self.grad_avg) = (v, b, ga);
        Ok(())
    }
}

/// [`RmsProp::validate`] on loose values.
fn hyper(lr: f64, alpha: f64, eps: f64, weight_decay: f64, momentum: f64) -> Result<()> {
    check_hyper(
        "RmsProp",
        &[
            ("lr", lr, None),
            ("alpha", alpha, None),
            ("eps", eps, None),
            ("weight_decay", weight_decay, None),
            ("momentum", momentum, None),
        ],
    )
}
