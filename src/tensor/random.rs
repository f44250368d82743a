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

/// A seed for the `index`-th tensor (or mask) made from `seed`: the layers'
/// parameters, their dropout masks and the hand-written reference's random
/// parameters all derive theirs here, so one seed means the same thing
/// everywhere. The generator ([`rng`]) mixes the result further, so nearby
/// seeds still give unrelated streams.
pub(crate) fn derive_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        ^ 0x94D0_49BB_1331_11EB
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ() {
        let s: Vec<u64> = (0..6).map(|k| derive_seed(1, k)).collect();
        let t: Vec<u64> = (0..6).map(|k| derive_seed(2, k)).collect();
        for (a, x) in s.iter().enumerate() {
            assert!(!t.contains(x));
            assert!(!s[a + 1..].contains(x));
        }
    }

    #[test]
    fn derived_seeds_are_the_layers_seeds() {
        // The values every layer's initialisation has used since the start
        // (changing them would change every seeded model).
        assert_eq!(derive_seed(1, 1), 0xC95F_889D_8F1E_7025);
        assert_eq!(derive_seed(7, 3), 0x055D_63E2_C289_0455);
        assert_eq!(derive_seed(0, 0), 0x94D0_49BB_1331_11EB);
    }
}
