//! Softmax, log-softmax and the losses: cross-entropy with integer class
//! targets, mean squared error.
//!
//! All softmax-family ops work along the last axis and subtract the row
//! maximum first, so logits of ±1e4 (f64) or ±1e3 (f32) neither overflow
//! nor lose the answer. With p = softmax(x) per row:
//!
//! ```text
//! softmax:        ∂L/∂x = p ⊙ (gy − ⟨gy, p⟩)
//! log_softmax:    ∂L/∂x = gy − p·Σ gy
//! cross-entropy:  ℓᵢ = logsumexp(xᵢ) − xᵢ[tᵢ],   ∂ℓᵢ/∂xᵢ = pᵢ − onehot(tᵢ)
//! mse:            ℓ = Σ (a − b)²,                ∂ℓ/∂a = 2(a − b) = −∂ℓ/∂b
//! ```
//!
//! Cross-entropy saves p from the forward pass (as PyTorch's fused kernel
//! does), so backward costs one subtraction per logit.

use super::{BackwardCtx, GradSlot, Op};
use crate::error::{Error, ErrorKind};
use crate::tape::pool::Pool;
use crate::tensor::{Shape, Tensor};
use crate::{Real, Var};
use std::borrow::Cow;

/// How a per-sample loss is reduced.
///
/// ```
/// use tapegrad::{Reduction, Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let logits = tape.var(Tensor::zeros(&[2, 4]));
/// let each = logits.cross_entropy(&[0, 3], Reduction::None);
/// assert_eq!(each.shape().as_slice(), &[2]);
/// let mean = logits.cross_entropy(&[0, 3], Reduction::Mean);
/// assert!((mean.item() - 4f64.ln()).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Add up the per-sample losses.
    Sum,
    /// Average the per-sample losses.
    Mean,
    /// Keep one loss per sample (shape `[N]`); weight or mask them yourself.
    None,
}

/// A softmax-family op or a loss.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum LossOp<F> {
    Softmax,
    LogSoftmax,
    CrossEntropy {
        targets: Vec<usize>,
        reduction: Reduction,
        /// softmax(x), saved from forward.
        probs: Vec<F>,
    },
    Mse {
        reduction: Reduction,
    },
}

/// [rows, cols] of a tensor seen along its last axis.
fn rows_cols(shape: &[usize]) -> (usize, usize) {
    let cols = shape.last().copied().unwrap_or(1);
    (shape.iter().product::<usize>() / cols.max(1), cols)
}

/// Writes softmax of each row of `x` into `out` (stable), and calls
/// `lse(row, logsumexp of the row)` — one exp per element for both.
fn softmax_rows<F: Real>(x: &[F], cols: usize, out: &mut [F], mut lse: impl FnMut(usize, F)) {
    if cols == 0 {
        return;
    }
    for (r, (xr, or)) in x
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .enumerate()
    {
        let m = xr.iter().copied().fold(F::neg_infinity(), F::max);
        for (o, &v) in or.iter_mut().zip(xr) {
            *o = v - m;
        }
        F::exp_in_place(or);
        let s = or.iter().fold(F::zero(), |s, &v| s + v);
        let inv = F::one() / s;
        or.iter_mut().for_each(|o| *o = *o * inv);
        lse(r, m + s.ln());
    }
}

impl<F: Real> LossOp<F> {
    /// Whether backward reads input `k`'s value: only the MSE's operands
    /// (cross-entropy saved its probabilities, the softmaxes read y).
    pub(crate) fn reads_input(&self, _k: usize) -> bool {
        matches!(self, LossOp::Mse { .. })
    }

    /// Whether backward reads the output's value (softmax, log-softmax).
    pub(crate) fn reads_output(&self) -> bool {
        matches!(self, LossOp::Softmax | LossOp::LogSoftmax)
    }

    pub(crate) fn name(&self) -> Cow<'static, str> {
        match self {
            LossOp::Softmax => "softmax".into(),
            LossOp::LogSoftmax => "log_softmax".into(),
            LossOp::CrossEntropy { reduction, .. } => {
                format!("cross_entropy({reduction:?})").into()
            }
            LossOp::Mse { reduction } => format!("mse({reduction:?})").into(),
        }
    }

    pub(crate) fn recycle(self, pool: &mut Pool<F>) {
        if let LossOp::CrossEntropy { probs, .. } = self {
            pool.give(probs);
        }
    }

    pub(crate) fn backward(&self, k: usize, c: &BackwardCtx<'_, F>, slot: GradSlot<'_, F>) {
        let gy = c.gy.data();
        match self {
            LossOp::Softmax => {
                // Per row: ∂L/∂x = p ⊙ (gy − ⟨gy, p⟩).
                let cols = rows_cols(c.y.shape()).1.max(1);
                let fresh = slot.fresh;
                let rows = gy.chunks_exact(cols).zip(c.y.data().chunks_exact(cols));
                for ((g, p), d) in rows.zip(slot.data.chunks_exact_mut(cols)) {
                    let dot: F = g.iter().zip(p).map(|(&g, &p)| g * p).sum();
                    let vals = g.iter().zip(p).map(|(&g, &p)| p * (g - dot));
                    GradSlot { data: d, fresh }.put(vals);
                }
            }
            LossOp::LogSoftmax => {
                // Per row: ∂L/∂x = gy − softmax(x)·Σ gy, softmax(x) = e^y.
                let cols = rows_cols(c.y.shape()).1.max(1);
                let fresh = slot.fresh;
                let rows = gy.chunks_exact(cols).zip(c.y.data().chunks_exact(cols));
                for ((g, ly), d) in rows.zip(slot.data.chunks_exact_mut(cols)) {
                    let sum: F = g.iter().copied().sum();
                    let vals = g.iter().zip(ly).map(|(&g, &ly)| g - ly.exp() * sum);
                    GradSlot { data: d, fresh }.put(vals);
                }
            }
            LossOp::CrossEntropy {
                targets,
                reduction,
                probs,
            } => {
                // Per row: ∂ℓ/∂x = (p − onehot(t))·s, s the row's seed.
                let cols = rows_cols(c.x[0].shape()).1.max(1);
                let n = F::of(targets.len() as f64);
                let fresh = slot.fresh;
                let rows = slot
                    .data
                    .chunks_exact_mut(cols)
                    .zip(probs.chunks_exact(cols));
                for (r, (d, p)) in rows.enumerate() {
                    let s = match reduction {
                        Reduction::Sum => gy[0],
                        Reduction::Mean => gy[0] / n,
                        Reduction::None => gy[r],
                    };
                    if fresh {
                        for j in 0..cols {
                            d[j] = p[j] * s;
                        }
                    } else {
                        for j in 0..cols {
                            d[j] = d[j] + p[j] * s;
                        }
                    }
                    d[targets[r]] = d[targets[r]] - s;
                }
            }
            LossOp::Mse { reduction } => {
                let (a, b) = (c.x[0].data(), c.x[1].data());
                let two = F::of(2.0);
                let n = a.len();
                let sign = if k == 0 { F::one() } else { -F::one() };
                let scale = |i: usize| match reduction {
                    Reduction::Sum => gy[0],
                    Reduction::Mean => gy[0] / F::of(n as f64),
                    Reduction::None => gy[i],
                };
                slot.put(
                    a.iter()
                        .zip(b)
                        .enumerate()
                        .map(|(i, (&x, &y))| sign * two * (x - y) * scale(i)),
                );
            }
        }
    }
}

impl<'t, F: Real> Var<'t, F> {
    /// Softmax along the last axis, `yᵢ = e^(xᵢ − m) / Σⱼ e^(xⱼ − m)` with m
    /// the row maximum.
    ///
    /// Gradient: ∂L/∂x = y ⊙ (gy − ⟨gy, y⟩) per row.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1e4, 0.0], &[1, 2]).unwrap());
    /// let p = x.softmax();
    /// assert_eq!(p.value().data(), &[1.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn softmax(self) -> Var<'t, F> {
        self.tape().record("softmax", &[self], |x, pool| {
            let x = x[0];
            let (_, cols) = rows_cols(x.shape());
            let mut out = pool.take(x.numel(), "softmax")?;
            softmax_rows(x.data(), cols, &mut out, |_, _| {});
            Ok((
                Op::Loss(LossOp::Softmax),
                Tensor::from_parts(x.shape().into(), out),
            ))
        })
    }

    /// Log-softmax along the last axis, `yᵢ = xᵢ − m − ln Σⱼ e^(xⱼ − m)`.
    ///
    /// Gradient: ∂L/∂x = gy − softmax(x)·Σ gy per row.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![-1e4, 1e4], &[1, 2]).unwrap());
    /// let y = x.log_softmax();
    /// assert_eq!(y.value().data(), &[-2e4, 0.0]);
    /// ```
    #[track_caller]
    pub fn log_softmax(self) -> Var<'t, F> {
        self.tape().record("log_softmax", &[self], |x, pool| {
            let x = x[0];
            let (_, cols) = rows_cols(x.shape());
            let mut out = pool.take(x.numel(), "log_softmax")?;
            if cols > 0 {
                for (xr, or) in x.data().chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
                    let m = xr.iter().copied().fold(F::neg_infinity(), F::max);
                    // (x − m) − ln Σ e^(x−m): subtracting m first keeps the
                    // rounding at the scale of the shifted logits.
                    let ln_sum = xr.iter().map(|&v| (v - m).exp()).sum::<F>().ln();
                    for (o, &v) in or.iter_mut().zip(xr) {
                        *o = (v - m) - ln_sum;
                    }
                }
            }
            Ok((
                Op::Loss(LossOp::LogSoftmax),
                Tensor::from_parts(x.shape().into(), out),
            ))
        })
    }

    /// Cross-entropy of logits `[N×C]` (or `[C]` for one sample) against
    /// integer class `targets` (length N): `ℓᵢ = logsumexp(xᵢ) − xᵢ[tᵢ]`,
    /// reduced by `reduction`. Softmax and loss in one stable op.
    ///
    /// Gradient: ∂ℓᵢ/∂xᵢ = softmax(xᵢ) − onehot(tᵢ), times gy (and 1/N for
    /// [`Reduction::Mean`]).
    ///
    /// # Panics
    /// If `targets.len()` is not the number of rows, or a target is ≥ C.
    ///
    /// ```
    /// use tapegrad::{Reduction, Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![0.0, 0.0], &[1, 2]).unwrap());
    /// let loss = x.cross_entropy(&[1], Reduction::Sum);
    /// assert!((loss.item() - 2f64.ln()).abs() < 1e-15);
    /// assert_eq!(loss.backward().wrt(x).data(), &[0.5, -0.5]);
    /// ```
    #[track_caller]
    pub fn cross_entropy(self, targets: &[usize], reduction: Reduction) -> Var<'t, F> {
        self.tape().record("cross_entropy", &[self], |x, pool| {
            let x = x[0];
            let (rows, cols) = rows_cols(x.shape());
            if x.rank() == 0 || x.rank() > 2 || targets.len() != rows {
                return Err(Error::shape(
                    "cross_entropy",
                    format!(
                        "logits {:?} need [N×C] (or [C]) with one target per row, got {} targets",
                        x.shape(),
                        targets.len()
                    ),
                ));
            }
            if let Some(bad) = targets.iter().find(|&&t| t >= cols) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "cross_entropy",
                    format!(
                        "target class {bad} out of range for {cols} classes (logits {:?})",
                        x.shape()
                    ),
                ));
            }
            let mut probs = pool.take(x.numel(), "cross_entropy")?;
            let mut losses = pool.take(rows, "cross_entropy")?;
            let xd = x.data();
            // ℓ = logsumexp(x) − x[t]: stable even where p[t] underflows.
            softmax_rows(xd, cols, &mut probs, |r, lse| {
                losses[r] = lse - xd[r * cols + targets[r]];
            });
            let value = match reduction {
                Reduction::None => Tensor::from_parts(Shape::from_slice(&[rows]), losses),
                Reduction::Sum | Reduction::Mean => {
                    let mut s: F = losses.iter().copied().sum();
                    if reduction == Reduction::Mean {
                        s = s / F::of(rows as f64);
                    }
                    pool.give(losses);
                    let mut one = pool.take(1, "cross_entropy")?;
                    one[0] = s;
                    Tensor::from_parts(Shape::new(), one)
                }
            };
            Ok((
                Op::Loss(LossOp::CrossEntropy {
                    targets: targets.to_vec(),
                    reduction,
                    probs,
                }),
                value,
            ))
        })
    }

    /// Squared error against `target` (same shape): `ℓ = (a − b)²`
    /// elementwise, reduced by `reduction`.
    ///
    /// Gradient: ∂ℓ/∂a = 2(a − b)·gy (÷n for mean), ∂ℓ/∂b = −∂ℓ/∂a.
    ///
    /// # Panics
    /// If the shapes differ.
    ///
    /// ```
    /// use tapegrad::{Reduction, Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 3.0], &[2]).unwrap());
    /// let b = tape.constant(Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap());
    /// let l = a.mse(b, Reduction::Mean);
    /// assert_eq!(l.item(), 2.5);
    /// assert_eq!(l.backward().wrt(a).data(), &[1.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn mse(self, target: Var<'t, F>, reduction: Reduction) -> Var<'t, F> {
        self.tape().record("mse", &[self, target], |x, pool| {
            let (a, b) = (x[0], x[1]);
            if a.shape() != b.shape() {
                return Err(Error::shape(
                    "mse",
                    format!("prediction and target differ: {}", super::shapes(x)),
                ));
            }
            let sq = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(&p, &q)| (p - q) * (p - q));
            let value = match reduction {
                Reduction::None => {
                    let mut out = pool.take(a.numel(), "mse")?;
                    out.iter_mut().zip(sq).for_each(|(o, v)| *o = v);
                    Tensor::from_parts(a.shape().into(), out)
                }
                Reduction::Sum | Reduction::Mean => {
                    let mut s: F = sq.sum();
                    if reduction == Reduction::Mean {
                        s = s / F::of(a.numel() as f64);
                    }
                    let mut one = pool.take(1, "mse")?;
                    one[0] = s;
                    Tensor::from_parts(Shape::new(), one)
                }
            };
            Ok((Op::Loss(LossOp::Mse { reduction }), value))
        })
    }
}
