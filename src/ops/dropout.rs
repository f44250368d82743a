//! Dropout: `y = x ⊙ m`, where each mᵢ is 0 with probability p and 1/(1 − p)
//! otherwise (inverted dropout, so the expectation of y is x and evaluation
//! needs no rescaling). The mask is drawn from a seeded generator and saved
//! on the node; the gradient is `∂L/∂x = gy ⊙ m`.

use super::{BackwardCtx, GradSlot, Op};
use crate::error::{Error, ErrorKind};
use crate::tape::pool::Pool;
use crate::tensor::Tensor;
use crate::{Real, Var};
use rand::Rng;
use std::borrow::Cow;

/// Dropout with its saved, already-scaled mask.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DropoutOp<F> {
    p: f64,
    mask: Vec<F>,
}

impl<F: Real> DropoutOp<F> {
    pub(crate) fn name(&self) -> Cow<'static, str> {
        format!("dropout(p={})", self.p).into()
    }

    pub(crate) fn recycle(self, pool: &mut Pool<F>) {
        pool.give(self.mask);
    }

    pub(crate) fn backward(&self, _k: usize, c: &BackwardCtx<'_, F>, slot: GradSlot<'_, F>) {
        slot.put(c.gy.data().iter().zip(&self.mask).map(|(&g, &m)| g * m));
    }
}

impl<'t, F: Real> Var<'t, F> {
    /// Inverted dropout with drop probability `p`, mask drawn from `seed`:
    /// `y = x ⊙ m`, mᵢ ∈ {0, 1/(1 − p)}. Use a new seed every step.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ m (the mask saved in forward).
    ///
    /// # Panics
    /// Unless 0 ≤ p < 1.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::ones(&[1000]));
    /// let y = x.dropout(0.5, 42);
    /// let kept = y.value().data().iter().filter(|&&v| v == 2.0).count();
    /// assert!((400..600).contains(&kept));
    /// // the gradient uses the same mask
    /// let g = y.sum().backward();
    /// assert_eq!(g.wrt(x).data(), y.value().data());
    /// ```
    #[track_caller]
    pub fn dropout(self, p: f64, seed: u64) -> Var<'t, F> {
        self.tape().record("dropout", &[self], |x, pool| {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "dropout",
                    format!("drop probability must be in [0, 1), got {p}"),
                ));
            }
            let x = x[0];
            let keep = F::of(1.0 / (1.0 - p));
            let mut rng = crate::tensor::rng(seed);
            let mut mask = pool.take(x.numel(), "dropout")?;
            for m in mask.iter_mut() {
                *m = if rng.random::<f64>() < p {
                    F::zero()
                } else {
                    keep
                };
            }
            let mut out = pool.take(x.numel(), "dropout")?;
            for ((o, &v), &m) in out.iter_mut().zip(x.data()).zip(&mask) {
                *o = v * m;
            }
            Ok((
                Op::Dropout(DropoutOp { p, mask }),
                Tensor::from_parts(x.shape().into(), out),
            ))
        })
    }
}
