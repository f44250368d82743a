//! [`Dual`]: a dual number `a + a′ε` with ε² = 0, the scalar of forward
//! mode, and its `num_traits::Float` and [`Real`] implementations.
//!
//! Why a scalar type: every op, layer and kernel of tapegrad is generic
//! over [`Real`]. Running the same code on `Dual<f64>` carries, next to
//! every value, its derivative along one direction (f(a + a′ε) =
//! f(a) + f′(a)·a′ε), so a forward pass gives a Jacobian–vector product and
//! a reverse sweep over a `Tape<Dual<f64>>` gives the gradient *and* its
//! directional derivative, a Hessian–vector product (see
//! `docs/second_order.md`). Nothing in the f32/f64 code paths changes:
//! they are separate monomorphisations.
//!
//! The derivative rules, with `a′` the tangent of `a`:
//!
//! ```text
//! a ± b  → a′ ± b′               a·b   → a′b + ab′            a/b → (a′ − (a/b)·b′)/b
//! a % b  → a′ − trunc(a/b)·b′    1/a   → −a′/a²               √a  → a′/(2√a)
//! eᵃ     → a′eᵃ                  2ᵃ    → a′·ln2·2ᵃ            ln a → a′/a
//! aⁿ (n integer) → n·aⁿ⁻¹·a′     aᵇ    → b·aᵇ⁻¹·a′ + aᵇ·ln a·b′  (each term only if its tangent ≠ 0)
//! sin → a′cos   cos → −a′sin     tan → a′(1 + tan²)
//! asin → a′/√(1 − a²)   acos → −a′/√(1 − a²)   atan → a′/(1 + a²)
//! atan2(y, x) → (x·y′ − y·x′)/(x² + y²)
//! sinh → a′cosh   cosh → a′sinh   tanh → a′(1 − tanh²)
//! asinh → a′/√(a² + 1)   acosh → a′/√(a² − 1)   atanh → a′/(1 − a²)
//! ∛a → a′/(3∛a²)   hypot(a, b) → (aa′ + bb′)/hypot(a, b)   (hypot(a′, b′) at the origin)
//! floor, ceil, round, trunc, signum → 0      fract → a′
//! ```
//!
//! **Comparisons are lexicographic**: first the values, and only when they
//! are equal the tangents. That is the sign of `a + a′ε` for an
//! infinitesimal ε > 0, so a branch on a comparison (relu, abs, clamp,
//! `max` in a softmax) takes the side the direction moves into, and the
//! tangent at a kink is the one-sided directional derivative (relu at 0
//! along a′ gives max(a′, 0)). Away from ties — almost everywhere — only
//! the values decide, as the primal program does. **Equality compares both
//! parts**, consistently with that order: a dual is zero only when its
//! value and tangent are, so the tape's structural-zero rule (a zero
//! incoming gradient contributes nothing) never drops a tangent.
//! `is_nan` and `is_finite` look at both parts too (`x != x` exactly when
//! either is NaN), so anomaly mode also names the op whose *tangent* blew
//! up.

use crate::tensor::gemm::{MatMut, MatRef};
use crate::Real;
use num_traits::{Float, FromPrimitive, Num, NumCast, One, ToPrimitive, Zero};
use std::cmp::Ordering;
use std::fmt;
use std::iter::Sum;
use std::num::FpCategory;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Rem, Sub, SubAssign};

/// A dual number `primal + tangent·ε` (ε² = 0): a value and its derivative
/// along one direction.
///
/// ```
/// use tapegrad::forward::Dual;
/// use num_traits::Float;
/// // d/dx (x·sin x) at x = 2, along dx = 1
/// let x = Dual::new(2.0, 1.0);
/// let y = x * x.sin();
/// assert_eq!(y.primal, 2.0 * 2f64.sin());
/// assert!((y.tangent - (2f64.sin() + 2.0 * 2f64.cos())).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Dual<F> {
    /// The value.
    pub primal: F,
    /// The derivative along the direction being pushed forward.
    pub tangent: F,
}

impl<F: Real> Dual<F> {
    /// `primal + tangent·ε`.
    pub fn new(primal: F, tangent: F) -> Self {
        Dual { primal, tangent }
    }

    /// A constant: tangent 0.
    ///
    /// ```
    /// use tapegrad::forward::Dual;
    /// assert_eq!(Dual::constant(3.0f32).tangent, 0.0);
    /// ```
    pub fn constant(primal: F) -> Self {
        Dual::new(primal, F::zero())
    }

    /// `self` with its tangent scaled by `f′` and its value replaced by `f`:
    /// the chain rule of a unary function, f(a + a′ε) = f(a) + f′(a)a′ε.
    #[inline]
    fn chain(self, f: F, df: F) -> Self {
        Dual::new(f, self.tangent * df)
    }
}

/// `const` name of a dual type: `"dual<f64>"` for the built-in floats.
const fn dual_name(inner: &str) -> &'static str {
    match inner.as_bytes() {
        b"f32" => "dual<f32>",
        b"f64" => "dual<f64>",
        _ => "dual",
    }
}

// ----- equality and order ---------------------------------------------------

impl<F: PartialEq> PartialEq for Dual<F> {
    fn eq(&self, other: &Self) -> bool {
        self.primal == other.primal && self.tangent == other.tangent
    }
}

impl<F: PartialOrd> PartialOrd for Dual<F> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        match self.primal.partial_cmp(&other.primal)? {
            Ordering::Equal => self.tangent.partial_cmp(&other.tangent),
            unequal => Some(unequal),
        }
    }
}

// ----- arithmetic -----------------------------------------------------------

impl<F: Real> Add for Dual<F> {
    type Output = Self;
    #[inline]
    fn add(self, b: Self) -> Self {
        Dual::new(self.primal + b.primal, self.tangent + b.tangent)
    }
}

impl<F: Real> Sub for Dual<F> {
    type Output = Self;
    #[inline]
    fn sub(self, b: Self) -> Self {
        Dual::new(self.primal - b.primal, self.tangent - b.tangent)
    }
}

impl<F: Real> Mul for Dual<F> {
    type Output = Self;
    #[inline]
    fn mul(self, b: Self) -> Self {
        Dual::new(
            self.primal * b.primal,
            self.tangent * b.primal + self.primal * b.tangent,
        )
    }
}

impl<F: Real> Div for Dual<F> {
    type Output = Self;
    #[inline]
    fn div(self, b: Self) -> Self {
        let q = self.primal / b.primal;
        Dual::new(q, (self.tangent - q * b.tangent) / b.primal)
    }
}

impl<F: Real> Rem for Dual<F> {
    type Output = Self;
    fn rem(self, b: Self) -> Self {
        let k = (self.primal / b.primal).trunc();
        Dual::new(self.primal % b.primal, self.tangent - k * b.tangent)
    }
}

impl<F: Real> Neg for Dual<F> {
    type Output = Self;
    #[inline]
    fn neg(self) -> Self {
        Dual::new(-self.primal, -self.tangent)
    }
}

macro_rules! assign_ops {
    ($($tr:ident $m:ident $op:tt),*) => {$(
        impl<F: Real> $tr for Dual<F> {
            #[inline]
            fn $m(&mut self, b: Self) {
                *self = *self $op b;
            }
        }
    )*};
}
assign_ops!(AddAssign add_assign +, SubAssign sub_assign -, MulAssign mul_assign *, DivAssign div_assign /);

impl<F: Real> Sum for Dual<F> {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::zero(), |s, x| s + x)
    }
}

impl<F: Real> Zero for Dual<F> {
    fn zero() -> Self {
        Dual::constant(F::zero())
    }
    fn is_zero(&self) -> bool {
        self.primal.is_zero() && self.tangent.is_zero()
    }
}

impl<F: Real> One for Dual<F> {
    fn one() -> Self {
        Dual::constant(F::one())
    }
}

impl<F: Real> Num for Dual<F> {
    type FromStrRadixErr = F::FromStrRadixErr;
    fn from_str_radix(s: &str, radix: u32) -> Result<Self, Self::FromStrRadixErr> {
        F::from_str_radix(s, radix).map(Dual::constant)
    }
}

// ----- conversions ----------------------------------------------------------

impl<F: Real> ToPrimitive for Dual<F> {
    fn to_i64(&self) -> Option<i64> {
        self.primal.to_i64()
    }
    fn to_u64(&self) -> Option<u64> {
        self.primal.to_u64()
    }
    fn to_f32(&self) -> Option<f32> {
        self.primal.to_f32()
    }
    fn to_f64(&self) -> Option<f64> {
        self.primal.to_f64()
    }
}

impl<F: Real> FromPrimitive for Dual<F> {
    fn from_i64(n: i64) -> Option<Self> {
        F::from_i64(n).map(Dual::constant)
    }
    fn from_u64(n: u64) -> Option<Self> {
        F::from_u64(n).map(Dual::constant)
    }
    fn from_f32(n: f32) -> Option<Self> {
        F::from_f32(n).map(Dual::constant)
    }
    fn from_f64(n: f64) -> Option<Self> {
        F::from_f64(n).map(Dual::constant)
    }
}

impl<F: Real> NumCast for Dual<F> {
    fn from<T: ToPrimitive>(n: T) -> Option<Self> {
        <F as NumCast>::from(n).map(Dual::constant)
    }
}

/// `a` alone for a constant, `a+a′ε` otherwise (so op names such as
/// `mul_scalar(0.5)` read as they do on an f64 tape).
impl<F: Real> fmt::Display for Dual<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tangent.is_zero() {
            write!(f, "{}", self.primal)
        } else if self.tangent.is_sign_negative() {
            write!(f, "{}-{}ε", self.primal, -self.tangent)
        } else {
            write!(f, "{}+{}ε", self.primal, self.tangent)
        }
    }
}

// ----- num_traits::Float ----------------------------------------------------

impl<F: Real> Float for Dual<F> {
    fn nan() -> Self {
        Dual::constant(F::nan())
    }
    fn infinity() -> Self {
        Dual::constant(F::infinity())
    }
    fn neg_infinity() -> Self {
        Dual::constant(F::neg_infinity())
    }
    fn neg_zero() -> Self {
        Dual::constant(F::neg_zero())
    }
    fn min_value() -> Self {
        Dual::constant(F::min_value())
    }
    fn min_positive_value() -> Self {
        Dual::constant(F::min_positive_value())
    }
    fn max_value() -> Self {
        Dual::constant(F::max_value())
    }
    fn epsilon() -> Self {
        Dual::constant(F::epsilon())
    }
    fn is_nan(self) -> bool {
        self.primal.is_nan() || self.tangent.is_nan()
    }
    fn is_infinite(self) -> bool {
        !self.is_nan() && (self.primal.is_infinite() || self.tangent.is_infinite())
    }
    fn is_finite(self) -> bool {
        self.primal.is_finite() && self.tangent.is_finite()
    }
    fn is_normal(self) -> bool {
        self.primal.is_normal()
    }
    fn classify(self) -> FpCategory {
        self.primal.classify()
    }
    fn floor(self) -> Self {
        Dual::constant(self.primal.floor())
    }
    fn ceil(self) -> Self {
        Dual::constant(self.primal.ceil())
    }
    fn round(self) -> Self {
        Dual::constant(self.primal.round())
    }
    fn trunc(self) -> Self {
        Dual::constant(self.primal.trunc())
    }
    fn fract(self) -> Self {
        Dual::new(self.primal.fract(), self.tangent)
    }
    fn abs(self) -> Self {
        if self < Self::zero() {
            -self
        } else {
            self
        }
    }
    fn signum(self) -> Self {
        Dual::constant(self.primal.signum())
    }
    fn is_sign_positive(self) -> bool {
        self.primal.is_sign_positive()
    }
    fn is_sign_negative(self) -> bool {
        self.primal.is_sign_negative()
    }
    fn mul_add(self, a: Self, b: Self) -> Self {
        self * a + b
    }
    fn recip(self) -> Self {
        let r = self.primal.recip();
        self.chain(r, -r * r)
    }
    fn powi(self, n: i32) -> Self {
        if n == 0 {
            return Self::one();
        }
        let p = self.primal.powi(n - 1);
        self.chain(p * self.primal, F::of(n as f64) * p)
    }
    fn powf(self, b: Self) -> Self {
        let y = self.primal.powf(b.primal);
        // Each term only where its tangent is non-zero: a constant
        // exponent must not bring ln a (NaN for a < 0) into the tangent,
        // and x⁰ is constant (0·0^(−1) would be NaN at 0).
        let mut t = F::zero();
        if !self.tangent.is_zero() && !b.primal.is_zero() {
            t = t + b.primal * self.primal.powf(b.primal - F::one()) * self.tangent;
        }
        if !b.tangent.is_zero() {
            t = t + y * self.primal.ln() * b.tangent;
        }
        Dual::new(y, t)
    }
    fn sqrt(self) -> Self {
        let s = self.primal.sqrt();
        Dual::new(s, self.tangent / (s + s))
    }
    fn exp(self) -> Self {
        let e = self.primal.exp();
        self.chain(e, e)
    }
    fn exp2(self) -> Self {
        let e = self.primal.exp2();
        self.chain(e, e * F::of(std::f64::consts::LN_2))
    }
    fn exp_m1(self) -> Self {
        self.chain(self.primal.exp_m1(), self.primal.exp())
    }
    fn ln(self) -> Self {
        Dual::new(self.primal.ln(), self.tangent / self.primal)
    }
    fn log(self, base: Self) -> Self {
        self.ln() / base.ln()
    }
    fn log2(self) -> Self {
        let d = self.primal * F::of(std::f64::consts::LN_2);
        Dual::new(self.primal.log2(), self.tangent / d)
    }
    fn log10(self) -> Self {
        let d = self.primal * F::of(std::f64::consts::LN_10);
        Dual::new(self.primal.log10(), self.tangent / d)
    }
    fn ln_1p(self) -> Self {
        Dual::new(self.primal.ln_1p(), self.tangent / (F::one() + self.primal))
    }
    fn max(self, other: Self) -> Self {
        if self.is_nan() || (!other.is_nan() && other > self) {
            other
        } else {
            self
        }
    }
    fn min(self, other: Self) -> Self {
        if self.is_nan() || (!other.is_nan() && other < self) {
            other
        } else {
            self
        }
    }
    #[allow(deprecated)]
    fn abs_sub(self, other: Self) -> Self {
        (self - other).max(Self::zero())
    }
    fn cbrt(self) -> Self {
        let c = self.primal.cbrt();
        Dual::new(c, self.tangent / (F::of(3.0) * c * c))
    }
    fn hypot(self, other: Self) -> Self {
        let h = self.primal.hypot(other.primal);
        if h.is_zero() {
            // hypot(εa′, εb′) = ε·hypot(a′, b′): the directional derivative.
            return Dual::new(h, self.tangent.hypot(other.tangent));
        }
        Dual::new(
            h,
            (self.primal * self.tangent + other.primal * other.tangent) / h,
        )
    }
    fn sin(self) -> Self {
        let (s, c) = self.primal.sin_cos();
        self.chain(s, c)
    }
    fn cos(self) -> Self {
        let (s, c) = self.primal.sin_cos();
        self.chain(c, -s)
    }
    fn tan(self) -> Self {
        let t = self.primal.tan();
        self.chain(t, F::one() + t * t)
    }
    fn asin(self) -> Self {
        let d = (F::one() - self.primal * self.primal).sqrt();
        Dual::new(self.primal.asin(), self.tangent / d)
    }
    fn acos(self) -> Self {
        let d = (F::one() - self.primal * self.primal).sqrt();
        Dual::new(self.primal.acos(), -self.tangent / d)
    }
    fn atan(self) -> Self {
        let d = F::one() + self.primal * self.primal;
        Dual::new(self.primal.atan(), self.tangent / d)
    }
    fn atan2(self, x: Self) -> Self {
        let (y0, x0) = (self.primal, x.primal);
        let r2 = x0 * x0 + y0 * y0;
        Dual::new(y0.atan2(x0), (x0 * self.tangent - y0 * x.tangent) / r2)
    }
    fn sin_cos(self) -> (Self, Self) {
        let (s, c) = self.primal.sin_cos();
        (self.chain(s, c), self.chain(c, -s))
    }
    fn sinh(self) -> Self {
        self.chain(self.primal.sinh(), self.primal.cosh())
    }
    fn cosh(self) -> Self {
        self.chain(self.primal.cosh(), self.primal.sinh())
    }
    fn tanh(self) -> Self {
        let t = self.primal.tanh();
        self.chain(t, F::one() - t * t)
    }
    fn asinh(self) -> Self {
        let d = (self.primal * self.primal + F::one()).sqrt();
        Dual::new(self.primal.asinh(), self.tangent / d)
    }
    fn acosh(self) -> Self {
        let d = (self.primal * self.primal - F::one()).sqrt();
        Dual::new(self.primal.acosh(), self.tangent / d)
    }
    fn atanh(self) -> Self {
        let d = F::one() - self.primal * self.primal;
        Dual::new(self.primal.atanh(), self.tangent / d)
    }
    fn integer_decode(self) -> (u64, i16, i8) {
        self.primal.integer_decode()
    }
    fn to_degrees(self) -> Self {
        let k = F::of(180.0 / std::f64::consts::PI);
        Dual::new(self.primal * k, self.tangent * k)
    }
    fn to_radians(self) -> Self {
        let k = F::of(std::f64::consts::PI / 180.0);
        Dual::new(self.primal * k, self.tangent * k)
    }
}

// ----- Real -----------------------------------------------------------------

/// The GEMM is three GEMMs of the inner type (`forward::gemm`), so a
/// `Dual<f64>` product runs at the `gemm` crate's f64 rate. tanh, σ and
/// exp run the inner type's slice kernel on the values (SIMD for f32) and
/// take the tangent from the output (`a′(1 − y²)`, `a′y(1 − y)`, `a′y`),
/// so the values are bitwise those of an `F` tape.
impl<F: Real> Real for Dual<F> {
    const NAME: &'static str = dual_name(F::NAME);

    fn gemm(c: MatMut<'_, Self>, a: MatRef<'_, Self>, b: MatRef<'_, Self>, accumulate: bool) {
        super::gemm::dual_gemm(c, a, b, accumulate)
    }
    fn tanh_in_place(xs: &mut [Self]) {
        by_kernel(xs, F::tanh_in_place, |y| F::one() - y * y)
    }
    fn sigmoid_in_place(xs: &mut [Self]) {
        by_kernel(xs, F::sigmoid_in_place, |y| y * (F::one() - y))
    }
    fn exp_in_place(xs: &mut [Self]) {
        by_kernel(xs, F::exp_in_place, |y| y)
    }
    fn tanh_extend(dst: &mut Vec<Self>, src: &[Self]) {
        let at = dst.len();
        dst.extend_from_slice(src);
        Self::tanh_in_place(&mut dst[at..]);
    }
    fn sigmoid_extend(dst: &mut Vec<Self>, src: &[Self]) {
        let at = dst.len();
        dst.extend_from_slice(src);
        Self::sigmoid_in_place(&mut dst[at..]);
    }
    fn exp_extend(dst: &mut Vec<Self>, src: &[Self]) {
        let at = dst.len();
        dst.extend_from_slice(src);
        Self::exp_in_place(&mut dst[at..]);
    }
}

/// `x ← f(x)` for a unary `f` with a slice kernel for the values and its
/// derivative as a function of the output `y`: `(a, a′) → (y, a′·f′(y))`.
fn by_kernel<F: Real>(xs: &mut [Dual<F>], kernel: fn(&mut [F]), df: impl Fn(F) -> F) {
    let mut y: Vec<F> = xs.iter().map(|x| x.primal).collect();
    kernel(&mut y);
    for (x, y) in xs.iter_mut().zip(y) {
        *x = Dual::new(y, x.tangent * df(y));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unary rule against a central difference of the primal.
    #[test]
    fn unary_rules_match_finite_differences() {
        type D = Dual<f64>;
        type Case = (&'static str, fn(D) -> D, f64);
        let fs: Vec<Case> = vec![
            ("recip", D::recip, 0.7),
            ("powi3", |x| x.powi(3), -0.7),
            ("powf", |x| x.powf(D::constant(2.5)), 0.7),
            ("sqrt", D::sqrt, 0.7),
            ("exp", D::exp, 0.7),
            ("exp2", D::exp2, 0.7),
            ("exp_m1", D::exp_m1, 0.7),
            ("ln", D::ln, 0.7),
            ("log2", D::log2, 0.7),
            ("log10", D::log10, 0.7),
            ("ln_1p", D::ln_1p, 0.7),
            ("cbrt", D::cbrt, 0.7),
            ("sin", D::sin, 0.7),
            ("cos", D::cos, 0.7),
            ("tan", D::tan, 0.7),
            ("asin", D::asin, 0.3),
            ("acos", D::acos, 0.3),
            ("atan", D::atan, 0.7),
            ("sinh", D::sinh, 0.7),
            ("cosh", D::cosh, 0.7),
            ("tanh", D::tanh, 0.7),
            ("asinh", D::asinh, 0.7),
            ("acosh", D::acosh, 1.7),
            ("atanh", D::atanh, 0.3),
            ("abs", D::abs, -0.7),
            ("fract", D::fract, 2.3),
            ("to_degrees", D::to_degrees, 0.7),
            ("log3", |x| x.log(D::constant(3.0)), 0.7),
            ("hypot", |x| x.hypot(D::constant(0.4)), 0.7),
            ("atan2", |x| x.atan2(D::constant(-0.4)), 0.7),
            ("atan2x", |x| D::constant(0.3).atan2(x), 0.7),
            ("rem", |x| x % D::constant(0.4), 0.7),
            ("pow_exp", |x| D::constant(1.7).powf(x), 0.7),
        ];
        let h = 1e-6;
        for (name, f, x) in fs {
            let y = f(Dual::new(x, 1.0));
            let fd = (f(D::constant(x + h)).primal - f(D::constant(x - h)).primal) / (2.0 * h);
            assert!(
                (y.tangent - fd).abs() <= 1e-7 * fd.abs().max(1.0),
                "{name}: {} vs {fd}",
                y.tangent
            );
            assert_eq!(y.primal, f(D::constant(x)).primal, "{name}");
        }
    }

    #[test]
    fn order_is_lexicographic_and_equality_sees_tangents() {
        let z = Dual::<f64>::zero();
        let up = Dual::new(0.0, 1.0);
        assert!(up > z && up != z && !up.is_zero());
        assert_eq!(up.max(z), up);
        assert_eq!(Dual::new(0.0, -1.0).max(z), z);
        assert_eq!(Dual::new(0.0, -2.0).abs().tangent, 2.0); // |εa′| = ε|a′|
        assert!(Dual::new(1.0, f64::NAN).is_nan());
        assert!(!Dual::new(1.0, f64::INFINITY).is_finite());
        assert_eq!(Dual::new(1.0, 0.0).max(Dual::nan()).primal, 1.0);
        assert_eq!(<Dual<f64> as Real>::NAME, "dual<f64>");
        assert_eq!(format!("{}", Dual::new(1.5, -2.0)), "1.5-2ε");
        assert_eq!(format!("{}", Dual::constant(0.5f32)), "0.5");
    }

    #[test]
    fn slice_kernels_match_the_scalar_rules() {
        let xs: Vec<Dual<f64>> = (0..9)
            .map(|i| Dual::new(i as f64 * 0.7 - 3.0, 1.0 - i as f64 * 0.3))
            .collect();
        type Case = (fn(&mut [Dual<f64>]), fn(Dual<f64>) -> Dual<f64>);
        let cases: [Case; 3] = [
            (Dual::tanh_in_place, Dual::tanh),
            (
                Dual::sigmoid_in_place,
                crate::tensor::vecmath::sigmoid_scalar,
            ),
            (Dual::exp_in_place, Dual::exp),
        ];
        for (kernel, scalar) in cases {
            let mut got = xs.clone();
            kernel(&mut got);
            for (g, &x) in got.iter().zip(&xs) {
                let want = scalar(x);
                assert_eq!(g.primal, want.primal);
                assert!((g.tangent - want.tangent).abs() <= 1e-15 * want.tangent.abs().max(1.0));
            }
        }
    }

    #[test]
    fn constant_exponent_keeps_negative_bases_finite() {
        let y = Dual::new(-2.0f64, 1.0).powf(Dual::constant(2.0));
        assert_eq!((y.primal, y.tangent), (4.0, -4.0));
        let y = Dual::new(0.0f64, 1.0).powf(Dual::constant(0.0));
        assert_eq!((y.primal, y.tangent), (1.0, 0.0));
    }
}
