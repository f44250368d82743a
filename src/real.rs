//! [`Real`]: the element types a tensor can hold.
//!
//! Everything in tapegrad is generic over `F: Real`. `Real` is
//! `num_traits::Float` plus the few things a tape needs (printing, thread
//! safety, conversion from `f64`) and a few hooks with generic defaults:
//! [`Real::gemm`], so that `f32` and `f64` run the optimised kernels of the
//! `gemm` crate, and the slice kernels [`Real::tanh_in_place`],
//! [`Real::sigmoid_in_place`], [`Real::exp_in_place`] (and their
//! out-of-place `*_extend` forms), which `f32` runs through SIMD
//! (`tensor::vecmath`). Any other `Float` type gets plain,
//! correct loops by implementing `Real` with an empty body.

use crate::tensor::gemm::{self, MatMut, MatRef};
use crate::tensor::vecmath;
use num_traits::{Float, FromPrimitive, ToPrimitive};
use std::fmt::{Debug, Display};
use std::iter::Sum;

/// A floating-point element type: `f32`, `f64`, or any `num_traits::Float`
/// that implements this trait (an empty `impl` uses the generic GEMM).
///
/// ```
/// use tapegrad::Real;
/// fn half<F: Real>(x: F) -> F { x * F::from_f64(0.5).unwrap() }
/// assert_eq!(half(3.0f32), 1.5);
/// assert_eq!(<f64 as Real>::NAME, "f64");
/// ```
pub trait Real:
    Float + FromPrimitive + ToPrimitive + Debug + Display + Default + Sum + Send + Sync + 'static
{
    /// The dtype name used in listings and checkpoints (`"f32"`, `"f64"`).
    const NAME: &'static str;

    /// `c ← a·b` (or `c ← c + a·b` when `accumulate`), where `a` is m×k and
    /// `b` is k×n, each read through its strides, and `c` is m×n row-major.
    ///
    /// The default is the plain generic fallback; `f32` and `f64` override it
    /// with the `gemm` crate. Shapes and strides are already checked.
    fn gemm(c: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, accumulate: bool) {
        gemm::naive(c, a, b, accumulate)
    }

    /// `x ← tanh x` for every element of `xs`. The default is the scalar
    /// loop; `f32` overrides it with a SIMD kernel (≤ 3 ULP, see
    /// `tensor::vecmath`).
    ///
    /// ```
    /// use tapegrad::Real;
    /// let mut v = [0.0f32, 20.0, -20.0];
    /// f32::tanh_in_place(&mut v);
    /// assert_eq!(v, [0.0, 1.0, -1.0]);
    /// ```
    fn tanh_in_place(xs: &mut [Self]) {
        vecmath::tanh(xs)
    }

    /// `x ← σ(x) = 1/(1 + e^(−x))` for every element of `xs`. The default is
    /// the scalar loop, stable for any finite x; `f32` overrides it with a
    /// SIMD kernel (≤ 4 ULP).
    ///
    /// ```
    /// use tapegrad::Real;
    /// let mut v = [0.0f64, 1000.0, -1000.0];
    /// f64::sigmoid_in_place(&mut v);
    /// assert_eq!(v, [0.5, 1.0, 0.0]);
    /// ```
    fn sigmoid_in_place(xs: &mut [Self]) {
        vecmath::sigmoid(xs)
    }

    /// `x ← eˣ` for every element of `xs`. The default is the scalar loop;
    /// `f32` overrides it with a SIMD kernel (≤ 1 ULP).
    ///
    /// ```
    /// use tapegrad::Real;
    /// let mut v = [0.0f32, f32::NEG_INFINITY];
    /// f32::exp_in_place(&mut v);
    /// assert_eq!(v, [1.0, 0.0]);
    /// ```
    fn exp_in_place(xs: &mut [Self]) {
        vecmath::exp(xs)
    }

    /// Appends `tanh x` for every element of `src` to `dst`: the
    /// out-of-place form of [`Real::tanh_in_place`], for a result that goes
    /// into a fresh buffer (no copy of `src` first). Same kernel, same bits.
    ///
    /// ```
    /// use tapegrad::Real;
    /// let mut out = vec![9.0f32];
    /// f32::tanh_extend(&mut out, &[0.0, 20.0]);
    /// assert_eq!(out, [9.0, 0.0, 1.0]);
    /// ```
    fn tanh_extend(dst: &mut Vec<Self>, src: &[Self]) {
        dst.extend(src.iter().map(|x| x.tanh()))
    }

    /// Appends `σ(x)` for every element of `src` to `dst` (the out-of-place
    /// form of [`Real::sigmoid_in_place`]).
    ///
    /// ```
    /// use tapegrad::Real;
    /// let mut out = Vec::new();
    /// f64::sigmoid_extend(&mut out, &[0.0, -1000.0]);
    /// assert_eq!(out, [0.5, 0.0]);
    /// ```
    fn sigmoid_extend(dst: &mut Vec<Self>, src: &[Self]) {
        dst.extend(src.iter().map(|&x| vecmath::sigmoid_scalar(x)))
    }

    /// Appends `eˣ` for every element of `src` to `dst` (the out-of-place
    /// form of [`Real::exp_in_place`]).
    ///
    /// ```
    /// use tapegrad::Real;
    /// let mut out = Vec::new();
    /// f32::exp_extend(&mut out, &[0.0, f32::NEG_INFINITY]);
    /// assert_eq!(out, [1.0, 0.0]);
    /// ```
    fn exp_extend(dst: &mut Vec<Self>, src: &[Self]) {
        dst.extend(src.iter().map(|x| x.exp()))
    }

    /// Converts from `f64` (rounding for narrower types).
    fn of(x: f64) -> Self {
        Self::from_f64(x).expect("Real::of: value not representable")
    }

    /// Converts to `f64`.
    fn to_f64_lossy(self) -> f64 {
        self.to_f64().unwrap_or(f64::NAN)
    }
}

impl Real for f32 {
    const NAME: &'static str = "f32";
    fn gemm(c: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, accumulate: bool) {
        gemm::fast_f32(c, a, b, accumulate)
    }
    fn tanh_in_place(xs: &mut [Self]) {
        vecmath::tanh_f32(xs)
    }
    fn sigmoid_in_place(xs: &mut [Self]) {
        vecmath::sigmoid_f32(xs)
    }
    fn exp_in_place(xs: &mut [Self]) {
        vecmath::exp_f32(xs)
    }
    fn tanh_extend(dst: &mut Vec<Self>, src: &[Self]) {
        vecmath::extend_f32(rten_vecmath::Tanh {}, dst, src)
    }
    fn sigmoid_extend(dst: &mut Vec<Self>, src: &[Self]) {
        vecmath::extend_f32(rten_vecmath::Sigmoid {}, dst, src)
    }
    fn exp_extend(dst: &mut Vec<Self>, src: &[Self]) {
        vecmath::extend_f32(rten_vecmath::Exp {}, dst, src)
    }
}

impl Real for f64 {
    const NAME: &'static str = "f64";
    fn gemm(c: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, accumulate: bool) {
        gemm::fast_f64(c, a, b, accumulate)
    }
}
