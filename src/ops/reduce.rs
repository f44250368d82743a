//! Reductions: sum and mean, over everything or along one axis.
//!
//! `y = s·Σ x` over the reduced elements, with s = 1 (sum) or 1/n (mean).
//! The gradient spreads back: ∂L/∂x = s·gy broadcast over the reduced axis.

use super::{BackwardCtx, GradSlot, Op};
use crate::error::Error;
use crate::tensor::{Shape, Tensor};
use crate::{Real, Var};
use std::borrow::Cow;

/// A reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReduceOp {
    /// `None` reduces everything to a scalar.
    axis: Option<usize>,
    mean: bool,
}

/// The input seen as [outer, n, inner] around `axis`.
fn split_at_axis(shape: &[usize], axis: Option<usize>) -> (usize, usize, usize) {
    match axis {
        None => (1, shape.iter().product(), 1),
        Some(a) => (
            shape[..a].iter().product(),
            shape[a],
            shape[a + 1..].iter().product(),
        ),
    }
}

impl ReduceOp {
    pub(crate) fn name(&self) -> Cow<'static, str> {
        let base = if self.mean { "mean" } else { "sum" };
        match self.axis {
            None => base.into(),
            Some(a) => format!("{base}(axis={a})").into(),
        }
    }

    pub(crate) fn backward<F: Real>(
        &self,
        _k: usize,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        let (outer, n, inner) = split_at_axis(c.x[0].shape(), self.axis);
        let s = if self.mean {
            F::one() / F::of(n as f64)
        } else {
            F::one()
        };
        let gy = c.gy.data();
        slot.put((0..outer * n * inner).map(|p| {
            let (o, i) = (p / (n * inner), p % inner);
            gy[o * inner + i] * s
        }));
    }
}

impl<'t, F: Real> Var<'t, F> {
    #[track_caller]
    fn reduce(self, op: ReduceOp) -> Var<'t, F> {
        let name = if op.mean { "mean" } else { "sum" };
        self.tape().record(name, &[self], |x, pool| {
            let x = x[0];
            if let Some(a) = op.axis {
                if a >= x.rank() {
                    return Err(Error::shape(
                        name,
                        format!("axis {a} out of range for shape {:?}", x.shape()),
                    ));
                }
            }
            let (outer, n, inner) = split_at_axis(x.shape(), op.axis);
            let shape: Shape = match op.axis {
                None => Shape::new(),
                Some(a) => x
                    .shape()
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != a)
                    .map(|(_, &d)| d)
                    .collect(),
            };
            let mut out = pool.zeroed(outer * inner, name)?;
            let d = x.data();
            for o in 0..outer {
                let dst = &mut out[o * inner..(o + 1) * inner];
                for j in 0..n {
                    let src = &d[(o * n + j) * inner..(o * n + j + 1) * inner];
                    for (y, &v) in dst.iter_mut().zip(src) {
                        *y = *y + v;
                    }
                }
            }
            if op.mean {
                let s = F::one() / F::of(n as f64);
                out.iter_mut().for_each(|y| *y = *y * s);
            }
            Ok((Op::Reduce(op), Tensor::from_parts(shape, out)))
        })
    }

    /// Sum of all elements, a scalar: `y = Σᵢ xᵢ`.
    ///
    /// Gradient: ∂L/∂xᵢ = gy.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::ones(&[2, 3]));
    /// let s = x.sum();
    /// assert_eq!(s.item(), 6.0);
    /// assert_eq!(s.backward().wrt(x).data(), &[1.0; 6]);
    /// ```
    #[track_caller]
    pub fn sum(self) -> Var<'t, F> {
        self.reduce(ReduceOp {
            axis: None,
            mean: false,
        })
    }

    /// Mean of all elements, a scalar: `y = (1/n) Σᵢ xᵢ`.
    ///
    /// Gradient: ∂L/∂xᵢ = gy / n.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::ones(&[4]));
    /// assert_eq!(x.mean().backward().wrt(x).data(), &[0.25; 4]);
    /// ```
    #[track_caller]
    pub fn mean(self) -> Var<'t, F> {
        self.reduce(ReduceOp {
            axis: None,
            mean: true,
        })
    }

    /// Sum along `axis`, which is removed from the shape.
    ///
    /// Gradient: ∂L/∂x = gy broadcast back along `axis`.
    ///
    /// # Panics
    /// If `axis` is out of range.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_fn(&[2, 3], |i| i as f64));
    /// let s = x.sum_axis(0);
    /// assert_eq!(s.value().data(), &[3.0, 5.0, 7.0]);
    /// assert_eq!(x.sum_axis(1).value().data(), &[3.0, 12.0]);
    /// ```
    #[track_caller]
    pub fn sum_axis(self, axis: usize) -> Var<'t, F> {
        self.reduce(ReduceOp {
            axis: Some(axis),
            mean: false,
        })
    }

    /// Mean along `axis`, which is removed from the shape.
    ///
    /// Gradient: ∂L/∂x = gy / n broadcast back along `axis` (n its length).
    ///
    /// # Panics
    /// If `axis` is out of range.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_fn(&[2, 2], |i| i as f64));
    /// assert_eq!(x.mean_axis(1).value().data(), &[0.5, 2.5]);
    /// ```
    #[track_caller]
    pub fn mean_axis(self, axis: usize) -> Var<'t, F> {
        self.reduce(ReduceOp {
            axis: Some(axis),
            mean: true,
        })
    }
}
