//! The transcendental elementwise kernels — tanh, the logistic sigmoid and
//! exp over a slice, in place — that recurrent cells and softmaxes spend
//! their non-GEMM time in.
//!
//! Why a module of their own: a scalar libm `tanhf` costs about 4 ns an
//! element, which made tanh alone 40% of an RNN training step at B = 32,
//! H = 128 (on the tape and the hand-written side alike). For `f32` these
//! kernels call the SIMD implementations of the `rten-vecmath` crate
//! (AVX-512, AVX2 + FMA or NEON, chosen at run time; scalar elsewhere), whose
//! stated accuracy against the standard library is tanh ≤ 3 ULP, σ ≤ 4 ULP
//! and exp ≤ 1 ULP; `tests/vecmath.rs` checks those bounds against `f64` over
//! random and special inputs. Other element types (`f64`, or a user's own
//! [`Real`]) take the scalar [`tanh`], [`sigmoid`] and [`exp`] loops here.
//!
//! Both sides of every comparison run these same kernels — the tape's
//! [`Var::tanh`](crate::Var::tanh), [`Var::sigmoid`](crate::Var::sigmoid),
//! [`Var::exp`](crate::Var::exp) and softmax ops, and the hand-derived
//! reference in `crate::reference` — so the tape-vs-hand benchmarks and
//! property tests compare the same arithmetic. The entry points are the
//! [`Real`] hooks [`Real::tanh_in_place`], [`Real::sigmoid_in_place`] and
//! [`Real::exp_in_place`], which `f32` overrides, and their out-of-place
//! forms [`Real::tanh_extend`], [`Real::sigmoid_extend`] and
//! [`Real::exp_extend`], which write into a fresh buffer's spare capacity.

use crate::Real;
use rten_simd::SimdUnaryOp;
use rten_vecmath::ExtendInit;

/// The scalar logistic function without overflow for any finite input:
/// `1/(1 + e^(−x))` for x ≥ 0, `eˣ/(1 + eˣ)` below.
///
/// ```
/// use tapegrad::tensor::vecmath::sigmoid_scalar;
/// assert_eq!(sigmoid_scalar(0.0f64), 0.5);
/// assert!(sigmoid_scalar(-100.0f32) > 0.0);
/// ```
#[inline]
pub fn sigmoid_scalar<F: Real>(x: F) -> F {
    if x >= F::zero() {
        F::one() / (F::one() + (-x).exp())
    } else {
        let e = x.exp();
        e / (F::one() + e)
    }
}

/// `x ← tanh x` elementwise, the scalar loop ([`Real::tanh_in_place`]'s
/// default).
///
/// ```
/// let mut v = [0.0f64, 1.0];
/// tapegrad::tensor::vecmath::tanh(&mut v);
/// assert_eq!(v, [0.0, 1f64.tanh()]);
/// ```
pub fn tanh<F: Real>(xs: &mut [F]) {
    xs.iter_mut().for_each(|x| *x = x.tanh());
}

/// `x ← σ(x) = 1/(1 + e^(−x))` elementwise, the scalar loop
/// ([`Real::sigmoid_in_place`]'s default).
///
/// ```
/// let mut v = [0.0f64, -1000.0];
/// tapegrad::tensor::vecmath::sigmoid(&mut v);
/// assert_eq!(v, [0.5, 0.0]);
/// ```
pub fn sigmoid<F: Real>(xs: &mut [F]) {
    xs.iter_mut().for_each(|x| *x = sigmoid_scalar(*x));
}

/// `x ← eˣ` elementwise, the scalar loop ([`Real::exp_in_place`]'s
/// default).
///
/// ```
/// let mut v = [0.0f64, 1.0];
/// tapegrad::tensor::vecmath::exp(&mut v);
/// assert_eq!(v, [1.0, 1f64.exp()]);
/// ```
pub fn exp<F: Real>(xs: &mut [F]) {
    xs.iter_mut().for_each(|x| *x = x.exp());
}

/// `f32` tanh through `rten_vecmath::Tanh` (≤ 3 ULP).
pub(crate) fn tanh_f32(xs: &mut [f32]) {
    rten_vecmath::Tanh {}.map_mut(xs);
}

/// `f32` σ through `rten_vecmath::Sigmoid` (≤ 4 ULP; `1/(1 + e^(−x))`, so
/// results below the smallest normal `f32`, x < −87.3, flush to 0).
pub(crate) fn sigmoid_f32(xs: &mut [f32]) {
    rten_vecmath::Sigmoid {}.map_mut(xs);
}

/// `f32` exp through `rten_vecmath::Exp` (≤ 1 ULP).
pub(crate) fn exp_f32(xs: &mut [f32]) {
    rten_vecmath::Exp {}.map_mut(xs);
}

/// Appends `op(x)` for every `x` of `src` to `dst`, writing the results
/// straight into `dst`'s spare capacity (through `rten-vecmath`'s safe
/// `ExtendInit`: no zero-fill, no copy of `src`).
pub(crate) fn extend_f32<Op: SimdUnaryOp<f32>>(op: Op, dst: &mut Vec<f32>, src: &[f32]) {
    dst.reserve(src.len());
    dst.extend_init(|spare| op.map(src, &mut spare[..src.len()]));
}
