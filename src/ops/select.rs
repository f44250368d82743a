//! Elementwise select: `y = cond ? a : b` (`torch.where`).
//!
//! The gradient goes only to the branch that was taken: ∂L/∂a = gy where
//! cond, 0 elsewhere; ∂L/∂b = gy where ¬cond. The untaken branch receives an
//! exact zero, and the elementwise rules treat a zero incoming gradient as a
//! structural zero, so a NaN or ∞ in the untaken branch does not leak into
//! the gradient (it does in PyTorch and JAX).

use super::{BackwardCtx, GradSlot, Op};
use crate::error::Error;
use crate::tensor::Tensor;
use crate::{Real, Var};

/// Select with its condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SelectOp {
    cond: Vec<bool>,
}

impl SelectOp {
    pub(crate) fn name(&self) -> &'static str {
        "select"
    }

    pub(crate) fn backward<F: Real>(
        &self,
        k: usize,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        let take = k == 0;
        slot.put(
            c.gy.data()
                .iter()
                .zip(&self.cond)
                .map(|(&g, &m)| if m == take { g } else { F::zero() }),
        );
    }
}

impl<'t, F: Real> Var<'t, F> {
    /// Elementwise `cond ? a : b` with a row-major condition of the same
    /// shape as `a` and `b`.
    ///
    /// Gradient: ∂L/∂a = gy where cond, ∂L/∂b = gy where not; exactly 0 for
    /// the untaken branch.
    ///
    /// # Panics
    /// If `a`, `b` and `cond` differ in shape or length.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-1.0, 4.0], &[2]).unwrap());
    /// let cond: Vec<bool> = x.value().data().iter().map(|&v| v > 0.0).collect();
    /// let y = Var::select(&cond, x.sqrt(), x.mul_scalar(0.0));
    /// let g = y.sum().backward();
    /// assert_eq!(g.wrt(x).data(), &[0.0, 0.25]); // no NaN from sqrt(-1)
    /// ```
    #[track_caller]
    pub fn select(cond: &[bool], a: Var<'t, F>, b: Var<'t, F>) -> Var<'t, F> {
        a.tape().record("select", &[a, b], |x, pool| {
            let (ta, tb) = (x[0], x[1]);
            if ta.shape() != tb.shape() || cond.len() != ta.numel() {
                return Err(Error::shape(
                    "select",
                    format!(
                        "branches {} with a condition of {} elements",
                        super::shapes(x),
                        cond.len()
                    ),
                ));
            }
            let mut out = pool.take(ta.numel(), "select")?;
            for (((o, &m), &p), &q) in out.iter_mut().zip(cond).zip(ta.data()).zip(tb.data()) {
                *o = if m { p } else { q };
            }
            Ok((
                Op::Select(SelectOp {
                    cond: cond.to_vec(),
                }),
                Tensor::from_parts(ta.shape().into(), out),
            ))
        })
    }
}
