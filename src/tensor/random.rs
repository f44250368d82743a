//! Seeded random constructors: the same seed gives the same tensor on every
//! machine and every run (PCG-64 via `rand_pcg`, distributions via
//! `rand_distr`; sampled in `f64` and rounded, so f32 and f64 tensors made
//! with one seed hold the same numbers up to rounding).

use super::{numel, Tensor};
use crate::error::{or_panic, Error, ErrorKind, Result};
use crate::Real;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Uniform};

/// The generator behind every seeded constructor and dropout mask.
pub type SeededRng = rand_pcg::Pcg64Mcg;

/// A generator seeded with `seed`.
pub fn rng(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}

impl<F: Real> Tensor<F> {
    /// Samples from the standard normal distribution N(0, 1).
    ///
    /// ```
    /// let a = tapegrad::Tensor::<f64>::randn(&[1000], 7);
    /// assert_eq!(a, tapegrad::Tensor::randn(&[1000], 7)); // reproducible
    /// let mean = a.data().iter().sum::<f64>() / 1000.0;
    /// assert!(mean.abs() < 0.1);
    /// ```
    #[track_caller]
    pub fn randn(shape: &[usize], seed: u64) -> Self {
        let mut r = rng(seed);
        let n = or_panic(numel(shape));
        Tensor::from_parts(
            shape.into(),
            (0..n)
                .map(|_| F::of(StandardNormal.sample(&mut r)))
                .collect(),
        )
    }

    /// Samples uniformly from `[lo, hi)`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] unless `lo < hi` and both are finite.
    ///
    /// ```
    /// let a = tapegrad::Tensor::<f32>::uniform(&[100], -0.5, 0.5, 1).unwrap();
    /// assert!(a.data().iter().all(|&x| (-0.5..0.5).contains(&x)));
    /// ```
    pub fn uniform(shape: &[usize], lo: f64, hi: f64, seed: u64) -> Result<Self> {
        let dist = Uniform::new(lo, hi)
            .ok()
            .filter(|_| lo.is_finite() && hi.is_finite())
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "Tensor::uniform",
                    format!("need finite lo < hi, got [{lo}, {hi})"),
                )
            })?;
        let n = numel(shape)?;
        let mut r = rng(seed);
        Ok(Tensor::from_parts(
            shape.into(),
            (0..n)
                .map(|_| {
                    // Rounding to f32 may land on `hi`; keep the interval half-open.
                    let x = F::of(r.sample(dist));
                    if x.to_f64_lossy() >= hi {
                        F::of(lo)
                    } else {
                        x
                    }
                })
                .collect(),
        ))
    }
}
