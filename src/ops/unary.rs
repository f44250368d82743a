//! Elementwise unary ops: affine scalar maps (neg, add/mul by a scalar),
//! activations (tanh, sigmoid, relu) and pointwise math (exp, log, sqrt,
//! powf, abs, clamp).
//!
//! Each rule is `∂L/∂x = gy ⊙ f'(x)`, written with the output `y` wherever
//! that is cheaper (tanh' = 1 − y², σ' = y(1 − y), exp' = y, sqrt' = 1/(2y)).
//!
//! An op may read a window of its input's columns instead of the whole
//! input ([`Cols`]): `z.sigmoid_cols(h, h)` is σ of columns h..2h of a 2-D
//! z, in one op — how an LSTM step activates its four gate blocks without
//! slicing them out first. The rule then adds into that window of ∂L/∂z
//! (0 elsewhere).
//!
//! Boundary conventions (the subgradients PyTorch uses): relu'(0) = 0,
//! abs'(0) = 0, clamp passes the gradient where lo ≤ x ≤ hi (both ends
//! included), d/dx x⁰ = 0 (also at 0); sqrt'(0) = +∞, log'(0) = +∞ and
//! d/dx x^p at 0 for 0 < p < 1 = +∞ as IEEE gives them.

use super::{BackwardCtx, GradSlot, Op};
use crate::error::{fail, Error, ErrorKind};
use crate::tensor::{Shape, Tensor};
use crate::{Real, Var};
use std::borrow::Cow;

/// A window of a 2-D input's columns, `x[:, start..start + len]`, that a
/// unary op reads in place of the whole input (its output is [rows × len]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cols {
    start: usize,
    len: usize,
}

/// The node name: the op's, with its column window if it has one
/// (`sigmoid[:, 8..16]`).
pub(crate) fn name<F: Real>(op: &UnaryOp<F>, cols: &Option<Cols>) -> Cow<'static, str> {
    match cols {
        None => op.name(),
        Some(c) => format!("{}[:, {}..{}]", op.name(), c.start, c.start + c.len).into(),
    }
}

/// An elementwise unary op.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum UnaryOp<F> {
    /// `y = mul·x + add`; y' = mul. (neg, add_scalar, mul_scalar.)
    Affine { mul: F, add: F },
    /// `y = tanh x`; y' = 1 − y².
    Tanh,
    /// `y = σ(x) = 1/(1 + e^(−x))`; y' = y(1 − y).
    Sigmoid,
    /// `y = max(x, 0)`; y' = 1 if x > 0, else 0.
    Relu,
    /// `y = eˣ`; y' = y.
    Exp,
    /// `y = ln x`; y' = 1/x.
    Log,
    /// `y = √x`; y' = 1/(2y).
    Sqrt,
    /// `y = xᵖ`; y' = p·xᵖ⁻¹.
    Powf(F),
    /// `y = |x|`; y' = sign(x), 0 at 0.
    Abs,
    /// `y = min(max(x, lo), hi)`; y' = 1 if lo ≤ x ≤ hi, else 0.
    Clamp { lo: F, hi: F },
}

impl<F: Real> UnaryOp<F> {
    /// Whether backward reads the input's value (the derivative is a
    /// function of x).
    pub(crate) fn reads_input(&self) -> bool {
        matches!(
            self,
            UnaryOp::Relu | UnaryOp::Log | UnaryOp::Powf(_) | UnaryOp::Abs | UnaryOp::Clamp { .. }
        )
    }

    /// Whether backward reads the output's value (the derivative is a
    /// function of y: tanh, σ, exp, sqrt).
    pub(crate) fn reads_output(&self) -> bool {
        matches!(
            self,
            UnaryOp::Tanh | UnaryOp::Sigmoid | UnaryOp::Exp | UnaryOp::Sqrt
        )
    }

    pub(crate) fn name(&self) -> Cow<'static, str> {
        match *self {
            UnaryOp::Affine { mul, add } => {
                if mul == -F::one() && add == F::zero() {
                    "neg".into()
                } else if mul == F::one() {
                    format!("add_scalar({add})").into()
                } else if add == F::zero() {
                    format!("mul_scalar({mul})").into()
                } else {
                    format!("affine({mul}·x + {add})").into()
                }
            }
            UnaryOp::Tanh => "tanh".into(),
            UnaryOp::Sigmoid => "sigmoid".into(),
            UnaryOp::Relu => "relu".into(),
            UnaryOp::Exp => "exp".into(),
            UnaryOp::Log => "log".into(),
            UnaryOp::Sqrt => "sqrt".into(),
            UnaryOp::Powf(p) => format!("powf({p})").into(),
            UnaryOp::Abs => "abs".into(),
            UnaryOp::Clamp { lo, hi } => format!("clamp({lo}, {hi})").into(),
        }
    }

    /// The op's name without its parameters (no formatting on the hot path).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            UnaryOp::Affine { .. } => "affine",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Powf(_) => "powf",
            UnaryOp::Abs => "abs",
            UnaryOp::Clamp { .. } => "clamp",
        }
    }

    /// Appends `f(x)` for every element of `x` to `out`, the op matched
    /// once outside the loop. The transcendental ones run the slice kernels
    /// of `tensor::vecmath` (SIMD for f32), reading `x` and writing `out`
    /// directly (no copy of `x` first).
    fn forward(self, out: &mut Vec<F>, x: &[F]) {
        let zero = F::zero();
        let it = x.iter().copied();
        match self {
            UnaryOp::Affine { mul, add } => out.extend(it.map(|x| mul * x + add)),
            UnaryOp::Tanh => F::tanh_extend(out, x),
            UnaryOp::Sigmoid => F::sigmoid_extend(out, x),
            UnaryOp::Relu => out.extend(it.map(|x| if x > zero { x } else { zero })),
            UnaryOp::Exp => F::exp_extend(out, x),
            UnaryOp::Log => out.extend(it.map(|x| x.ln())),
            UnaryOp::Sqrt => out.extend(it.map(|x| x.sqrt())),
            UnaryOp::Powf(p) => out.extend(it.map(|x| x.powf(p))),
            UnaryOp::Abs => out.extend(it.map(|x| x.abs())),
            UnaryOp::Clamp { lo, hi } => out.extend(it.map(|x| x.max(lo).min(hi))),
        }
    }

    pub(crate) fn backward(
        &self,
        cols: Option<Cols>,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        // Only the values the rule declares are read (the others may have
        // been released); gy stands in for them below.
        let x = if self.reads_input() {
            c.x[0].data()
        } else {
            &[]
        };
        let y = if self.reads_output() { c.y.data() } else { &[] };
        let Some(w) = cols else {
            return self.backward_rows(c.gy.data(), x, y, slot);
        };
        // A window: add each output row's rule into its row of the window
        // (the rest of ∂L/∂x gets nothing from this op).
        let width = c.x[0].shape()[1];
        let d = slot.for_adding();
        for (r, gy) in c.gy.data().chunks_exact(w.len.max(1)).enumerate() {
            let at = r * width + w.start;
            let x = if self.reads_input() {
                &x[at..at + w.len]
            } else {
                gy
            };
            let y = if self.reads_output() {
                &y[r * w.len..(r + 1) * w.len]
            } else {
                gy
            };
            let slot = GradSlot {
                data: &mut d[at..at + w.len],
                fresh: false,
            };
            self.backward_rows(gy, x, y, slot);
        }
    }

    /// The rule over equal-length slices: ∂L/∂x (=|+=) gy ⊙ f'(x or y).
    fn backward_rows(&self, gy: &[F], x: &[F], y: &[F], slot: GradSlot<'_, F>) {
        // A value the rule does not read may have been released (empty):
        // gy, of the same length, stands in for it.
        let x = if self.reads_input() { x } else { gy };
        let y = if self.reads_output() { y } else { gy };
        let (one, zero, half) = (F::one(), F::zero(), F::of(0.5));
        match *self {
            UnaryOp::Affine { mul, .. } => rule(gy, x, y, slot, |g, _, _| g * mul),
            UnaryOp::Tanh => rule(gy, x, y, slot, |g, _, y| g * (one - y * y)),
            UnaryOp::Sigmoid => rule(gy, x, y, slot, |g, _, y| g * y * (one - y)),
            UnaryOp::Relu => rule(gy, x, y, slot, |g, x, _| if x > zero { g } else { zero }),
            UnaryOp::Exp => rule(gy, x, y, slot, |g, _, y| g * y),
            UnaryOp::Log => rule(gy, x, y, slot, |g, x, _| g / x),
            UnaryOp::Sqrt => rule(gy, x, y, slot, |g, _, y| g * half / y),
            // x⁰ = 1 is constant: its derivative is 0 everywhere, also at
            // x = 0 where p·x^(p−1) would be 0·∞ (PyTorch's convention).
            UnaryOp::Powf(p) if p == zero => rule(gy, x, y, slot, |_, _, _| zero),
            UnaryOp::Powf(p) => rule(gy, x, y, slot, |g, x, _| g * p * x.powf(p - one)),
            UnaryOp::Abs => rule(gy, x, y, slot, |g, x, _| {
                if x > zero {
                    g
                } else if x < zero {
                    -g
                } else {
                    zero
                }
            }),
            UnaryOp::Clamp { lo, hi } => {
                rule(
                    gy,
                    x,
                    y,
                    slot,
                    |g, x, _| if x >= lo && x <= hi { g } else { zero },
                )
            }
        }
    }
}

/// Applies `∂L/∂x = f(gy, x, y)` elementwise, with a zero incoming gradient
/// as a structural zero: where gy = 0 the result is 0 even if f'(x) is NaN
/// or ∞, so the untaken branch of a select cannot leak NaN.
#[inline]
fn rule<F: Real>(gy: &[F], x: &[F], y: &[F], slot: GradSlot<'_, F>, f: impl Fn(F, F, F) -> F) {
    slot.put3(gy, x, y, |g, x, y| {
        // Both sides computed, then a select (no branch): the loop
        // vectorizes.
        let v = f(g, x, y);
        if g == F::zero() {
            F::zero()
        } else {
            v
        }
    });
}

impl<'t, F: Real> Var<'t, F> {
    #[track_caller]
    pub(crate) fn unary(self, op: UnaryOp<F>) -> Var<'t, F> {
        self.tape().record(op.kind(), &[self], |x, pool| {
            let x = x[0];
            // A pooled buffer's room, refilled by the op (the length is
            // back to numel when it returns).
            let mut out = pool.take(x.numel(), op.kind())?;
            out.clear();
            op.forward(&mut out, x.data());
            Ok((
                Op::Unary(op, None),
                Tensor::from_parts(Shape::from_slice(x.shape()), out),
            ))
        })
    }

    /// `op` applied to columns `start..start + len` of a 2-D var.
    #[track_caller]
    fn unary_cols(self, op: UnaryOp<F>, start: usize, len: usize) -> Var<'t, F> {
        let name = op.kind();
        self.tape().record(name, &[self], |x, pool| {
            let x = x[0];
            let fits = x.rank() == 2 && start.checked_add(len).is_some_and(|e| e <= x.shape()[1]);
            if !fits {
                return Err(Error::shape(
                    name,
                    format!(
                        "columns {start}..{} of {:?}: needs a 2-D input with at least {} columns",
                        start.saturating_add(len),
                        x.shape(),
                        start.saturating_add(len)
                    ),
                ));
            }
            let (rows, width) = (x.shape()[0], x.shape()[1]);
            let mut out = pool.take(rows * len, name)?;
            out.clear();
            if len > 0 {
                for row in x.data().chunks_exact(width) {
                    op.forward(&mut out, &row[start..start + len]);
                }
            }
            Ok((
                Op::Unary(op, Some(Cols { start, len })),
                Tensor::from_parts(Shape::from_slice(&[rows, len]), out),
            ))
        })
    }

    /// Negation, `y = −x` (also the unary `-` operator).
    ///
    /// Gradient: ∂L/∂x = −gy.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(2.0));
    /// assert_eq!((-x).backward().wrt(x).item(), -1.0);
    /// ```
    #[allow(clippy::should_implement_trait)]
    #[track_caller]
    pub fn neg(self) -> Var<'t, F> {
        self.unary(UnaryOp::Affine {
            mul: -F::one(),
            add: F::zero(),
        })
    }

    /// Adds a scalar, `y = x + c`.
    ///
    /// Gradient: ∂L/∂x = gy.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(2.0));
    /// assert_eq!(x.add_scalar(1.5).item(), 3.5);
    /// ```
    #[track_caller]
    pub fn add_scalar(self, c: F) -> Var<'t, F> {
        self.unary(UnaryOp::Affine {
            mul: F::one(),
            add: c,
        })
    }

    /// Multiplies by a scalar, `y = c·x`.
    ///
    /// Gradient: ∂L/∂x = c·gy.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(2.0));
    /// assert_eq!(x.mul_scalar(3.0).backward().wrt(x).item(), 3.0);
    /// ```
    #[track_caller]
    pub fn mul_scalar(self, c: F) -> Var<'t, F> {
        self.unary(UnaryOp::Affine {
            mul: c,
            add: F::zero(),
        })
    }

    /// Multiplies by an `f64` constant converted to `F` ([`Real::of`]),
    /// `y = c·x`: `x * 3.0` for code generic over the element type, where
    /// the operator only takes an `F` (`x.scale(0.5)` is
    /// `x.mul_scalar(F::of(0.5))`).
    ///
    /// Gradient: ∂L/∂x = c·gy.
    ///
    /// ```
    /// use tapegrad::{Real, Tape, Tensor, Var};
    /// // (3x + 1)/2 in any element type
    /// fn f<'t, F: Real>(x: Var<'t, F>) -> Var<'t, F> {
    ///     x.scale(3.0).shift(1.0).scale(0.5)
    /// }
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::scalar(3.0));
    /// assert_eq!(f(x).item(), 5.0);
    /// assert_eq!(f(x).backward().wrt(x).item(), 1.5);
    /// let tape = Tape::<f64>::new();
    /// assert_eq!(f(tape.scalar(1.0)).item(), 2.0);
    /// ```
    #[track_caller]
    pub fn scale(self, c: f64) -> Var<'t, F> {
        self.mul_scalar(F::of(c))
    }

    /// Adds an `f64` constant converted to `F` ([`Real::of`]), `y = x + c`:
    /// `x + 1.0` for code generic over the element type (see
    /// [`Var::scale`]).
    ///
    /// Gradient: ∂L/∂x = gy.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(2.0));
    /// assert_eq!(x.shift(-0.5).item(), 1.5);
    /// ```
    #[track_caller]
    pub fn shift(self, c: f64) -> Var<'t, F> {
        self.add_scalar(F::of(c))
    }

    /// `y = c − x` in one op (for `1 − z` in a GRU).
    ///
    /// Gradient: ∂L/∂x = −gy.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(0.25));
    /// assert_eq!(x.rsub_scalar(1.0).item(), 0.75);
    /// ```
    #[track_caller]
    pub fn rsub_scalar(self, c: F) -> Var<'t, F> {
        self.unary(UnaryOp::Affine {
            mul: -F::one(),
            add: c,
        })
    }

    /// Hyperbolic tangent, `y = tanh x`.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ (1 − y²).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(0.5));
    /// let y = x.tanh();
    /// let t = 0.5f64.tanh();
    /// assert!((y.backward().wrt(x).item() - (1.0 - t * t)).abs() < 1e-15);
    /// ```
    #[track_caller]
    pub fn tanh(self) -> Var<'t, F> {
        self.unary(UnaryOp::Tanh)
    }

    /// tanh of a window of columns, `y = tanh x[:, start..start + len]`, in
    /// one op (no slice copy): an LSTM's cell-gate block.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ (1 − y²) in the window, 0 elsewhere.
    ///
    /// # Panics
    /// If the var is not 2-D or has fewer than `start + len` columns.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.0, 0.5, 9.0, 1.0], &[2, 2]).unwrap());
    /// let y = x.tanh_cols(1, 1); // column 1
    /// assert_eq!(y.value().data(), &[0.5f64.tanh(), 1f64.tanh()]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.wrt(x).data()[0], 0.0);
    /// assert_eq!(g.wrt(x).data()[1], 1.0 - 0.5f64.tanh().powi(2));
    /// ```
    #[track_caller]
    pub fn tanh_cols(self, start: usize, len: usize) -> Var<'t, F> {
        self.unary_cols(UnaryOp::Tanh, start, len)
    }

    /// σ of a window of columns, `y = σ(x[:, start..start + len])`, in one
    /// op (no slice copy): an LSTM's input, forget and output gate blocks.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ y(1 − y) in the window, 0 elsewhere.
    ///
    /// # Panics
    /// If the var is not 2-D or has fewer than `start + len` columns.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let z = tape.var(Tensor::zeros(&[1, 4]));
    /// let gates = z.sigmoid_cols(0, 2);
    /// assert_eq!(gates.value().data(), &[0.5, 0.5]);
    /// assert_eq!(gates.sum().backward().wrt(z).data(), &[0.25, 0.25, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn sigmoid_cols(self, start: usize, len: usize) -> Var<'t, F> {
        self.unary_cols(UnaryOp::Sigmoid, start, len)
    }

    /// Logistic sigmoid, `y = 1/(1 + e^(−x))`, stable for any finite x.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ y ⊙ (1 − y).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(0.0));
    /// let y = x.sigmoid();
    /// assert_eq!(y.item(), 0.5);
    /// assert_eq!(y.backward().wrt(x).item(), 0.25);
    /// ```
    #[track_caller]
    pub fn sigmoid(self) -> Var<'t, F> {
        self.unary(UnaryOp::Sigmoid)
    }

    /// Rectified linear unit, `y = max(x, 0)`.
    ///
    /// Gradient: ∂L/∂x = gy where x > 0, else 0 (also at x = 0).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-1.0, 0.0, 2.0], &[3]).unwrap());
    /// let g = x.relu().sum().backward();
    /// assert_eq!(g.wrt(x).data(), &[0.0, 0.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn relu(self) -> Var<'t, F> {
        self.unary(UnaryOp::Relu)
    }

    /// Exponential, `y = eˣ`.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ y.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(1.0));
    /// assert_eq!(x.exp().backward().wrt(x).item(), 1f64.exp());
    /// ```
    #[track_caller]
    pub fn exp(self) -> Var<'t, F> {
        self.unary(UnaryOp::Exp)
    }

    /// Natural logarithm, `y = ln x` (ln 0 = −∞, ln of a negative = NaN).
    ///
    /// Gradient: ∂L/∂x = gy ⊘ x.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(4.0));
    /// assert_eq!(x.log().backward().wrt(x).item(), 0.25);
    /// ```
    #[track_caller]
    pub fn log(self) -> Var<'t, F> {
        self.unary(UnaryOp::Log)
    }

    /// Square root, `y = √x`.
    ///
    /// Gradient: ∂L/∂x = gy ⊘ (2y) (+∞ at x = 0).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(4.0));
    /// assert_eq!(x.sqrt().backward().wrt(x).item(), 0.25);
    /// ```
    #[track_caller]
    pub fn sqrt(self) -> Var<'t, F> {
        self.unary(UnaryOp::Sqrt)
    }

    /// Power with a scalar exponent, `y = xᵖ`.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ p·xᵖ⁻¹.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(3.0));
    /// assert_eq!(x.powf(2.0).backward().wrt(x).item(), 6.0);
    /// ```
    #[track_caller]
    pub fn powf(self, p: F) -> Var<'t, F> {
        self.unary(UnaryOp::Powf(p))
    }

    /// Absolute value, `y = |x|`.
    ///
    /// Gradient: ∂L/∂x = gy ⊙ sign(x), with sign(0) = 0.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(-3.0));
    /// assert_eq!(x.abs().backward().wrt(x).item(), -1.0);
    /// ```
    #[track_caller]
    pub fn abs(self) -> Var<'t, F> {
        self.unary(UnaryOp::Abs)
    }

    /// Clamps into `[lo, hi]`, `y = min(max(x, lo), hi)`.
    ///
    /// Gradient: ∂L/∂x = gy where lo ≤ x ≤ hi, else 0.
    ///
    /// # Panics
    /// If `lo > hi` or either bound is NaN.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-2.0, 0.5, 2.0], &[3]).unwrap());
    /// let y = x.clamp(-1.0, 1.0);
    /// assert_eq!(y.value().data(), &[-1.0, 0.5, 1.0]);
    /// assert_eq!(y.sum().backward().wrt(x).data(), &[0.0, 1.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn clamp(self, lo: F, hi: F) -> Var<'t, F> {
        if lo.is_nan() || hi.is_nan() || lo > hi {
            fail(
                Error::new(
                    ErrorKind::InvalidArgument,
                    "clamp",
                    format!("needs lo ≤ hi, got lo = {lo}, hi = {hi}"),
                )
                .with_label(Some(self.label())),
            );
        }
        self.unary(UnaryOp::Clamp { lo, hi })
    }
}
