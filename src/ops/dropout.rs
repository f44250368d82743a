//! Dropout: `y = x ⊙ m`, where each mᵢ is 0 with probability p and 1/(1 − p)
//! otherwise (inverted dropout, so the expectation of y is x and evaluation
//! needs no rescaling). The mask is drawn from a seeded generator and saved
//! on the node; the gradient is `∂L/∂x = gy ⊙ m`.
//!
//! Variational ("locked") dropout (Gal & Ghahramani 2016; Merity et al.
//! 2017, AWD-LSTM) is the same mask for every step of a sequence:
//! [`Var::locked_dropout`] draws one mask of the shape of a step and
//! multiplies it into every step (a broadcast product, whose gradient is
//! `gy ⊙ m` summed over nothing: each step's own gy times the shared m).
//! [`dropout_mask`] is the mask itself, for DropConnect on a weight
//! (weight drop) and whole-row embedding dropout, which multiply it in.

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
        check_p("dropout", p);
        self.tape().record("dropout", &[self], |x, pool| {
            if !(0.0..1.0).contains(&p) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "dropout",
                    format!("drop probability must be in [0, 1), got {p}"),
                ));
            }
            let x = x[0];
            let mut mask = pool.take(x.numel(), "dropout")?;
            fill_mask(&mut mask, p, seed);
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

/// Fills `mask` with 0 (probability p) or 1/(1 − p), from `seed`.
fn fill_mask<F: Real>(mask: &mut [F], p: f64, seed: u64) {
    let keep = F::of(1.0 / (1.0 - p));
    let mut rng = crate::tensor::rng(seed);
    for m in mask.iter_mut() {
        *m = if rng.random::<f64>() < p {
            F::zero()
        } else {
            keep
        };
    }
}

/// Refuses a drop probability outside [0, 1), naming `op`.
#[track_caller]
fn check_p(op: &str, p: f64) {
    if !(0.0..1.0).contains(&p) {
        crate::error::fail(Error::new(
            ErrorKind::InvalidArgument,
            op,
            format!("drop probability must be in [0, 1), got {p}"),
        ));
    }
}

/// An inverted-dropout mask of `shape`: each element 0 with probability
/// `p`, else 1/(1 − p), drawn from `seed` (the same draws as
/// [`Var::dropout`] with that seed). Multiplied into a weight it is
/// DropConnect; into a step of a sequence, at every step, locked dropout.
///
/// # Panics
/// Unless 0 ≤ p < 1.
///
/// ```
/// use tapegrad::dropout_mask;
/// let m = dropout_mask::<f64>(&[1000], 0.25, 3);
/// assert!(m.data().iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
/// let mean = m.data().iter().sum::<f64>() / 1000.0;
/// assert!((mean - 1.0).abs() < 0.1); // the expectation is kept
/// ```
#[track_caller]
pub fn dropout_mask<F: Real>(shape: &[usize], p: f64, seed: u64) -> Tensor<F> {
    check_p("dropout_mask", p);
    let mut t = Tensor::zeros(shape);
    fill_mask(t.data_mut(), p, seed);
    t
}

impl<'t, F: Real> Var<'t, F> {
    /// Variational ("locked") dropout over the leading (time) axis: one
    /// mask m of the shape of a step, drawn from `seed`, multiplied into
    /// every step, `y(t) = x(t) ⊙ m` for x [T, …]. Training only; p = 0
    /// returns `self` unchanged.
    ///
    /// Gradient: ∂L/∂x(t) = gy(t) ⊙ m (the broadcast product's rule).
    ///
    /// # Panics
    /// Unless 0 ≤ p < 1, or if `self` has no leading axis.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::ones(&[4, 2, 50])); // T = 4, B = 2, 50 features
    /// let y = x.locked_dropout(0.5, 9);
    /// let v = y.value();
    /// let step = |t: usize| v.data()[t * 100..(t + 1) * 100].to_vec();
    /// assert!((1..4).all(|t| step(t) == step(0))); // the same mask at every step
    /// assert!(step(0).iter().all(|&m| m == 0.0 || m == 2.0));
    /// ```
    #[track_caller]
    pub fn locked_dropout(self, p: f64, seed: u64) -> Var<'t, F> {
        check_p("locked_dropout", p);
        let shape = self.shape();
        if shape.is_empty() {
            crate::error::fail(Error::shape(
                "locked_dropout",
                "needs a leading time axis, got a scalar",
            ));
        }
        if p == 0.0 {
            return self;
        }
        let mask = dropout_mask(&shape[1..], p, seed);
        self * self.tape().constant(mask)
    }
}
