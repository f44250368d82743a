//! Adam and AdamW (decoupled weight decay), as `torch.optim.Adam`/`AdamW`.

use super::{check_hyper, export_buffer, refuse_hyper, state_for};
use super::{Optimizer, OptimizerState, StateReader};
use crate::error::{or_panic, Result};
use crate::{Grads, ParamKey, ParamStore, Real, Tensor};
use std::collections::HashMap;

/// Adam (Kingma & Ba), with optional L2 (`weight_decay`) or decoupled
/// (`decoupled_weight_decay`, i.e. AdamW) decay:
///
/// ```text
/// t ← t + 1
/// g ← g + λ·θ                      (Adam's L2 decay)   or  θ ← θ − η·λ·θ  (AdamW)
/// m ← β₁·m + (1 − β₁)·g
/// v ← β₂·v + (1 − β₂)·g²
/// θ ← θ − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
/// ```
///
/// ```
/// use tapegrad::optim::{Adam, Optimizer};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::scalar(1.0));
/// let mut opt = Adam::new(0.1);
/// let tape = Tape::new();
/// let g = tape.param(&store, w).powf(2.0).backward();
/// opt.step(&mut store, &g);
/// // the first Adam step moves by η·sign(g) (up to ε)
/// assert!((store.get(w).item() - 0.9).abs() < 1e-7);
/// ```
#[derive(Debug, Clone)]
pub struct Adam<F: Real> {
    /// Learning rate η.
    pub lr: f64,
    /// β₁, β₂.
    pub betas: (f64, f64),
    /// ε.
    pub eps: f64,
    /// Weight decay λ.
    pub weight_decay: f64,
    /// Decouple the decay from the gradient (AdamW).
    pub decoupled_weight_decay: bool,
    step: u64,
    m: HashMap<ParamKey, Tensor<F>>,
    v: HashMap<ParamKey, Tensor<F>>,
}

impl<F: Real> Adam<F> {
    /// Adam with PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, no decay.
    ///
    /// # Panics
    /// If `lr` is negative or not finite; see [`Adam::try_new`].
    #[track_caller]
    pub fn new(lr: f64) -> Self {
        or_panic(Self::try_new(lr))
    }

    /// [`Adam::new`], returning the error of [`Adam::validate`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// naming `lr` if it is negative or not finite.
    ///
    /// ```
    /// use tapegrad::optim::Adam;
    /// let e = Adam::<f32>::try_new(-1.0).unwrap_err();
    /// assert!(e.to_string().contains("lr = -1 is not finite and ≥ 0"));
    /// ```
    pub fn try_new(lr: f64) -> Result<Self> {
        let adam = Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            step: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        };
        adam.validate()?;
        Ok(adam)
    }

    /// AdamW with decoupled weight decay λ (PyTorch's default λ is 0.01).
    ///
    /// # Panics
    /// If `lr` or `weight_decay` is negative or not finite.
    #[track_caller]
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        let adam = Adam {
            weight_decay,
            decoupled_weight_decay: true,
            ..Self::new(lr)
        };
        or_panic(adam.validate());
        adam
    }

    /// Checks the hyper-parameters as `torch.optim.Adam` does: lr, ε and
    /// the weight decay finite and ≥ 0, each β in [0, 1). The constructors
    /// run it, and so does [`Optimizer::load_state`] on a file's values.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument)
    /// naming the first value out of range.
    ///
    /// ```
    /// use tapegrad::optim::Adam;
    /// let mut opt = Adam::<f64>::new(0.01);
    /// assert!(opt.validate().is_ok());
    /// opt.betas = (1.5, 0.999);
    /// assert!(opt.validate().unwrap_err().message().contains("beta1 = 1.5 is not in [0, 1)"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        check_hyper(
            if self.decoupled_weight_decay {
                "AdamW"
            } else {
                "Adam"
            },
            &[
                ("lr", self.lr, None),
                ("beta1", self.betas.0, Some(1.0)),
                ("beta2", self.betas.1, Some(1.0)),
                ("eps", self.eps, None),
                ("weight_decay", self.weight_decay, None),
            ],
        )
    }

    /// The number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }
}

impl<F: Real> Optimizer<F> for Adam<F> {
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Grads<F>) {
        self.step += 1;
        let (b1, b2) = self.betas;
        let c1 = F::of(1.0 - power(b1, self.step));
        let c2 = F::of(1.0 - power(b2, self.step));
        let (b1, b2) = (F::of(b1), F::of(b2));
        let (lr, eps, wd) = (F::of(self.lr), F::of(self.eps), F::of(self.weight_decay));
        let one = F::one();
        for (key, g) in grads.params() {
            let Ok(theta) = store.try_get_mut(key) else {
                continue;
            };
            let m = state_for(&mut self.m, key, theta);
            let v = state_for(&mut self.v, key, theta);
            for (((p, &g), m), v) in theta
                .data_mut()
                .iter_mut()
                .zip(g.data())
                .zip(m.data_mut())
                .zip(v.data_mut())
            {
                let g = if self.decoupled_weight_decay {
                    *p = *p - lr * wd * *p;
                    g
                } else {
                    g + wd * *p
                };
                *m = b1 * *m + (one - b1) * g;
                *v = b2 * *v + (one - b2) * g * g;
                *p = *p - lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            }
        }
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// `"adam"`, or `"adamw"` with decoupled weight decay.
    fn kind(&self) -> &'static str {
        if self.decoupled_weight_decay {
            "adamw"
        } else {
            "adam"
        }
    }

    /// Scalars `lr`, `beta1`, `beta2`, `eps`, `weight_decay`, `step`;
    /// buffers `exp_avg.{name}` (m) and `exp_avg_sq.{name}` (v), PyTorch's
    /// names.
    fn state(&self, store: &ParamStore<F>) -> OptimizerState<F> {
        let mut tensors = Vec::new();
        export_buffer(&mut tensors, store, "exp_avg", &self.m);
        export_buffer(&mut tensors, store, "exp_avg_sq", &self.v);
        OptimizerState {
            kind: self.kind().into(),
            scalars: vec![
                ("lr".into(), self.lr),
                ("beta1".into(), self.betas.0),
                ("beta2".into(), self.betas.1),
                ("eps".into(), self.eps),
                ("weight_decay".into(), self.weight_decay),
                ("step".into(), self.step as f64),
            ],
            tensors,
        }
    }

    fn load_state(&mut self, store: &ParamStore<F>, state: &OptimizerState<F>) -> Result<()> {
        let r = StateReader::new(self.kind(), &["exp_avg", "exp_avg_sq"], store, state)?;
        let (lr, b1, b2, eps, wd, step) = (
            r.scalar("lr")?,
            r.scalar("beta1")?,
            r.scalar("beta2")?,
            r.scalar("eps")?,
            r.scalar("weight_decay")?,
            r.counter("step")?,
        );
        let candidate = Adam::<F> {
            lr,
            betas: (b1, b2),
            eps,
            weight_decay: wd,
            decoupled_weight_decay: self.decoupled_weight_decay,
            step,
            m: HashMap::new(),
            v: HashMap::new(),
        };
        refuse_hyper(self.kind(), candidate.validate())?;
        let (m, v) = (r.buffer("exp_avg"), r.buffer("exp_avg_sq"));
        r.same_params(("exp_avg", &m), ("exp_avg_sq", &v))?;
        (self.lr, self.betas, self.eps, self.weight_decay, self.step) =
            (lr, (b1, b2), eps, wd, step);
        (self.m, self.v) = (m, v);
        Ok(())
    }
}

/// `β^t` for a step counter of any size: `powi` (exact repeated squaring,
/// what every step up to 2³¹ − 1 has always used) while `t` fits in an
/// `i32`, `powf` beyond — a counter is never narrowed, so a resumed run at
/// step 3·10⁹ gets β^t ≈ 0 (full bias correction), not β to a wrapped
/// negative power.
fn power(beta: f64, t: u64) -> f64 {
    match i32::try_from(t) {
        Ok(t) => beta.powi(t),
        Err(_) => beta.powf(t as f64),
    }
}
