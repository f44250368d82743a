//! Normalisation: layer normalisation over the last axis (Ba, Kiros &
//! Hinton 2016), with or without a gain and a bias, PyTorch's
//! `F.layer_norm` semantics (biased variance, ε inside the square root).
//!
//! Per row x of n elements (every index but the last is a row):
//!
//! ```text
//! μ = (1/n) Σ x,   σ² = (1/n) Σ (x − μ)²,   r = 1/√(σ² + ε)
//! x̂ = (x − μ)·r,   y = x̂ ⊙ γ + β          (γ = 1, β = 0 without affine)
//!
//! g̃ = gy ⊙ γ
//! ∂L/∂x = r·(g̃ − mean(g̃) − x̂ ⊙ mean(g̃ ⊙ x̂))
//! ∂L/∂γ = Σ_rows gy ⊙ x̂,    ∂L/∂β = Σ_rows gy
//! ```
//!
//! Forward saves μ and r per row (2 numbers a row); backward rebuilds x̂
//! from x, so the op keeps its input (and γ), not a copy of x̂.
//!
//! **Stability.** μ is refined once (μ = μ₀ + mean(x − μ₀)) and σ² is taken
//! from the deviations, never as E[x²] − μ²: rows at 1e8 with unit spread
//! keep their digits in f64, and a constant row — at any magnitude, in f32
//! too — gets x − μ = 0 exactly, σ² = 0, r = 1/√ε and y = β exactly, with
//! finite gradients (a refined mean of equal numbers is that number, since
//! c − μ₀ is exact). Every rule is a smooth expression in these values, so
//! the op runs on dual numbers for forward mode and second order as it is.
//! The derivation is in `docs/design.md` ("Layer norm").

use super::{BackwardCtx, GradSlot, Op};
use crate::error::Error;
use crate::tape::pool::Pool;
use crate::tensor::Tensor;
use crate::{Real, Var};
use std::borrow::Cow;

/// Layer normalisation with its saved per-row statistics.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NormOp<F> {
    /// Inputs are (x, γ, β) rather than x alone.
    affine: bool,
    /// μ and r of each row, interleaved: [μ₀, r₀, μ₁, r₁, …].
    stats: Vec<F>,
}

impl<F: Real> NormOp<F> {
    pub(crate) fn name(&self) -> Cow<'static, str> {
        if self.affine {
            "layer_norm(affine)".into()
        } else {
            "layer_norm".into()
        }
    }

    /// Backward reads x (every rule rebuilds x̂) and γ (for ∂L/∂x), not β.
    pub(crate) fn reads_input(&self, k: usize) -> bool {
        k < 2
    }

    pub(crate) fn recycle(self, pool: &mut Pool<F>) {
        pool.give(self.stats);
    }

    pub(crate) fn backward(&self, k: usize, c: &BackwardCtx<'_, F>, slot: GradSlot<'_, F>) {
        let n = c.x[0].shape().last().copied().unwrap_or(1);
        if n == 0 {
            return;
        }
        let (x, gy) = (c.x[0].data(), c.gy.data());
        let rows = x.chunks_exact(n).zip(gy.chunks_exact(n));
        let stats = self.stats.chunks_exact(2);
        match k {
            0 => {
                let ones;
                let gain = if self.affine {
                    &c.x[1].data()[..n]
                } else {
                    ones = vec![F::one(); n];
                    &ones[..]
                };
                let inv_n = F::one() / F::of(n as f64);
                let fresh = slot.fresh;
                let out = slot.data.chunks_exact_mut(n);
                for (((xr, gr), st), d) in rows.zip(stats).zip(out) {
                    let (mu, r) = (st[0], st[1]);
                    // mean(g̃) and mean(g̃ ⊙ x̂), g̃ = gy ⊙ γ.
                    let [s1, s2] = lane_sums(gr, gain, xr, |g, w, x| {
                        let g = g * w;
                        [g, g * (x - mu) * r]
                    });
                    let (m1, m2) = (s1 * inv_n, s2 * inv_n);
                    GradSlot { data: d, fresh }
                        .put3(gr, gain, xr, |g, w, x| r * (g * w - m1 - (x - mu) * r * m2));
                }
            }
            1 => {
                let d = &mut slot.for_adding()[..n];
                for ((xr, gr), st) in rows.zip(stats) {
                    let (mu, r) = (st[0], st[1]);
                    for j in 0..n {
                        d[j] = d[j] + gr[j] * (xr[j] - mu) * r;
                    }
                }
            }
            _ => {
                let d = &mut slot.for_adding()[..n];
                for gr in gy.chunks_exact(n) {
                    for j in 0..n {
                        d[j] = d[j] + gr[j];
                    }
                }
            }
        }
    }
}

/// Independent partial sums per lane: a row's reductions vectorize (one
/// running sum is a chain of dependent adds the compiler may not reorder).
const LANES: usize = 8;

/// `[Σⱼ f(aⱼ, bⱼ, cⱼ)[0], Σⱼ f(aⱼ, bⱼ, cⱼ)[1]]` over equal-length slices,
/// in [`LANES`] interleaved partial sums (fixed-size chunks: no bounds
/// checks in the loop).
#[inline(always)]
fn lane_sums<F: Real>(a: &[F], b: &[F], c: &[F], f: impl Fn(F, F, F) -> [F; 2]) -> [F; 2] {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let (ac, at) = a.as_chunks::<LANES>();
    let (bc, bt) = b.as_chunks::<LANES>();
    let (cc, ct) = c.as_chunks::<LANES>();
    let mut acc = [[F::zero(); LANES]; 2];
    for ((a, b), c) in ac.iter().zip(bc).zip(cc) {
        for l in 0..LANES {
            let v = f(a[l], b[l], c[l]);
            acc[0][l] = acc[0][l] + v[0];
            acc[1][l] = acc[1][l] + v[1];
        }
    }
    let mut tail = [F::zero(); 2];
    for ((&a, &b), &c) in at.iter().zip(bt).zip(ct) {
        let v = f(a, b, c);
        tail = [tail[0] + v[0], tail[1] + v[1]];
    }
    let total = |a: &[F; LANES], t: F| a.iter().fold(t, |s, &v| s + v);
    [total(&acc[0], tail[0]), total(&acc[1], tail[1])]
}

/// μ and r = 1/√(σ² + ε) of one row (see the module docs for why the mean
/// is refined).
fn row_stats<F: Real>(x: &[F], eps: F) -> (F, F) {
    let n = x.len();
    let inv_n = F::one() / F::of(n as f64);
    let mu0 = lane_sums(x, x, x, |v, _, _| [v, F::zero()])[0] * inv_n;
    let [d, sq] = lane_sums(x, x, x, |v, _, _| {
        let e = v - mu0;
        [e, e * e]
    });
    let d = d * inv_n;
    // Σ(x − μ)² = Σ(x − μ₀)² − n·d²; rounding may leave it a hair below 0.
    let var = (sq * inv_n - d * d).max(F::zero());
    (mu0 + d, F::one() / (var + eps).sqrt())
}

impl<'t, F: Real> Var<'t, F> {
    #[track_caller]
    fn layer_norm_op(self, affine: Option<(Var<'t, F>, Var<'t, F>)>, eps: f64) -> Var<'t, F> {
        let name = if affine.is_some() {
            "layer_norm_affine"
        } else {
            "layer_norm"
        };
        let inputs: Vec<Var<'t, F>> = match affine {
            Some((g, b)) => vec![self, g, b],
            None => vec![self],
        };
        self.tape().record(name, &inputs, |x, pool| {
            let xs = x[0];
            let n = match xs.shape().last() {
                Some(&n) => n,
                None => {
                    return Err(Error::shape(
                        name,
                        "needs at least one axis to normalise over, got a scalar",
                    ))
                }
            };
            if affine.is_some() && (x[1].shape() != [n] || x[2].shape() != [n]) {
                return Err(Error::shape(
                    name,
                    format!(
                        "gain and bias must both be [{n}] (the last axis of x), got {}",
                        super::shapes(x)
                    ),
                ));
            }
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(Error::new(
                    crate::ErrorKind::InvalidArgument,
                    name,
                    format!("eps = {eps} must be positive and finite"),
                ));
            }
            let rows = xs.numel().checked_div(n).unwrap_or(0);
            let mut out = pool.take(xs.numel(), name)?;
            let mut stats = pool.take(2 * rows, name)?;
            let e = F::of(eps);
            let gb = affine.map(|_| (x[1].data(), x[2].data()));
            if n > 0 {
                let rows_in = xs.data().chunks_exact(n);
                for ((xr, yr), st) in rows_in
                    .zip(out.chunks_exact_mut(n))
                    .zip(stats.chunks_exact_mut(2))
                {
                    let (mu, r) = row_stats(xr, e);
                    st[0] = mu;
                    st[1] = r;
                    match gb {
                        Some((g, b)) => {
                            let (g, b) = (&g[..n], &b[..n]);
                            for j in 0..n {
                                yr[j] = (xr[j] - mu) * r * g[j] + b[j];
                            }
                        }
                        None => {
                            let xr = &xr[..n];
                            for j in 0..n {
                                yr[j] = (xr[j] - mu) * r;
                            }
                        }
                    }
                }
            }
            let op = NormOp {
                affine: affine.is_some(),
                stats,
            };
            Ok((Op::Norm(op), Tensor::from_parts(xs.shape().into(), out)))
        })
    }

    /// Layer normalisation over the last axis, without gain or bias:
    /// `y = (x − μ)/√(σ² + ε)` per row, μ and σ² the row's mean and biased
    /// variance (PyTorch's `F.layer_norm(x, (n,), eps=eps)`). A constant
    /// row gives zeros.
    ///
    /// Gradient, with x̂ = y and r = 1/√(σ² + ε):
    /// ∂L/∂x = r·(gy − mean(gy) − x̂ ⊙ mean(gy ⊙ x̂)) per row.
    ///
    /// # Panics
    /// If x is a scalar or `eps` is not positive and finite.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 3.0, 5e8, 5e8], &[2, 2]).unwrap());
    /// let y = x.layer_norm(1e-5);
    /// let r = 1.0 / (1.0f64 + 1e-5).sqrt();
    /// assert!((y.value().data()[0] + r).abs() < 1e-15 && (y.value().data()[1] - r).abs() < 1e-15);
    /// assert_eq!(&y.value().data()[2..], &[0.0, 0.0]); // a constant row
    /// let g = (y * tape.constant(Tensor::from_vec(vec![1.0, 0.0, 1.0, 0.0], &[2, 2]).unwrap()))
    ///     .sum()
    ///     .backward();
    /// assert!(g.wrt(x).data().iter().all(|d| d.is_finite()));
    /// ```
    #[track_caller]
    pub fn layer_norm(self, eps: f64) -> Var<'t, F> {
        self.layer_norm_op(None, eps)
    }

    /// Layer normalisation over the last axis with a gain γ and a bias β,
    /// both `[n]` (n the last axis): `y = (x − μ)/√(σ² + ε) ⊙ γ + β` per
    /// row, PyTorch's `F.layer_norm(x, (n,), γ, β, eps)`, in one op.
    ///
    /// Gradient, with x̂ = (x − μ)·r, r = 1/√(σ² + ε), g̃ = gy ⊙ γ:
    /// ∂L/∂x = r·(g̃ − mean(g̃) − x̂ ⊙ mean(g̃ ⊙ x̂)) per row,
    /// ∂L/∂γ = Σ_rows gy ⊙ x̂, ∂L/∂β = Σ_rows gy.
    ///
    /// # Panics
    /// If x is a scalar, γ or β is not `[n]`, or `eps` is not positive and
    /// finite.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![2.0, 4.0, 7.0, 7.0], &[2, 2]).unwrap());
    /// let gain = tape.var(Tensor::from_vec(vec![2.0, 3.0], &[2]).unwrap());
    /// let bias = tape.var(Tensor::from_vec(vec![0.5, -0.5], &[2]).unwrap());
    /// let y = x.layer_norm_affine(gain, bias, 1e-12);
    /// let v = y.to_tensor();
    /// assert!((v.data()[0] - (-2.0 + 0.5)).abs() < 1e-9 && (v.data()[1] - (3.0 - 0.5)).abs() < 1e-9);
    /// assert_eq!(&v.data()[2..], &[0.5, -0.5]); // a constant row gives β
    /// let g = y.sum().backward();
    /// assert_eq!(g.wrt(bias).data(), &[2.0, 2.0]); // Σ_rows gy
    /// ```
    #[track_caller]
    pub fn layer_norm_affine(self, gain: Var<'t, F>, bias: Var<'t, F>, eps: f64) -> Var<'t, F> {
        self.layer_norm_op(Some((gain, bias)), eps)
    }
}
