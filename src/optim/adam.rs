//! Adam and AdamW (decoupled weight decay), as `torch.optim.Adam`/`AdamW`.

use super::{export_buffer, state_for, Optimizer, OptimizerState, StateReader};
use crate::error::Result;
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
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            step: 0,
            m: HashMap::new(),
            v: HashMap::new(),
        }
    }

    /// AdamW with decoupled weight decay λ (PyTorch's default λ is 0.01).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Adam {
            weight_decay,
            decoupled_weight_decay: true,
            ..Self::new(lr)
        }
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
        let t = self.step as i32;
        let c1 = F::of(1.0 - b1.powi(t));
        let c2 = F::of(1.0 - b2.powi(t));
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
        let (m, v) = (r.buffer("exp_avg"), r.buffer("exp_avg_sq"));
        r.same_params(("exp_avg", &m), ("exp_avg_sq", &v))?;
        (self.lr, self.betas, self.eps, self.weight_decay, self.step) =
            (lr, (b1, b2), eps, wd, step);
        (self.m, self.v) = (m, v);
        Ok(())
    }
}
