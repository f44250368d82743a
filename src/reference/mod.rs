//! Hand-derived backpropagation through time for the vanilla RNN and the
//! LSTM: the yardstick the tape is tested and benchmarked against.
//!
//! Nothing here touches the tape. Every matrix product is one
//! [`Real::gemm`] call on preallocated buffers, with transposes taken as
//! stride views ([`MatRef::t`]); elementwise work is fused into one pass per
//! step. Buffers are allocated once in `new` and reused by every `run`.
//!
//! # Conventions
//!
//! PyTorch's layout: batch rows, weights stored `[out × in]`, so a layer is
//! `x·Wᵀ + b`. Sequences are sequence-major `[T×B×·]` row-major, which makes
//! "all T steps at once" a plain `[T·B × ·]` matrix. The loss is the sum
//! of the cross-entropies over every step and every batch row:
//!
//! ```text
//! o(t) = h(t)·W_outᵀ + b_out          ŷ(t) = softmax(o(t))   (row-wise)
//! L    = Σ_t Σ_b −log ŷ(t)_b[y(t)_b]
//! ```
//!
//! The `d` prefix means ∂L/∂(·): `dh(t)` is ∂L/∂h(t) (`[B×H]`), `dw_ih` is
//! ∂L/∂W_ih. `docs/bptt.md` has the long form of what follows, and names the
//! tape nodes that produce each term when a layer is built from primitives.
//!
//! # Readout and loss (both cells)
//!
//! For one row, `ℓ = logsumexp(o) − o[y]`, so
//!
//! ```text
//! e(t) = do(t) = ŷ(t) − onehot(y(t))                         [B×O]
//! dw_out = Σ_t e(t)ᵀ·h(t)        db_out = Σ_t Σ_b e(t)_b
//! dh(t) ∋ e(t)·W_out                                          (readout term)
//! ```
//!
//! All T readouts are independent, so `o = H·W_outᵀ` is one GEMM over the
//! `[T·B × H]` stack of hidden states, and so are `dw_out = Eᵀ·H` and the
//! readout terms `E·W_out` of every `dh(t)`.
//!
//! # Vanilla RNN: the δ(t) recursion
//!
//! ```text
//! a(t) = x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh          h(t) = φ(a(t))
//! ```
//!
//! h(t) reaches the loss through o(t) and through a(t+1), so with
//! δ(t) = dh(t) and dz(t) = da(t):
//!
//! ```text
//! δ(T)  = e(T)·W_out
//! δ(t)  = e(t)·W_out + dz(t+1)·W_hh                 t = T−1, …, 1
//! dz(t) = φ'(a(t)) ⊙ δ(t)         φ' = 1 − h(t)² (tanh), [h(t) > 0] (relu)
//! ```
//!
//! The weights are shared by every step, so their gradients are sums over
//! t of the per-step contributions (the chain rule over every use):
//!
//! ```text
//! dw_ih = Σ_t dz(t)ᵀ·x(t)      dw_hh = Σ_t dz(t)ᵀ·h(t−1)
//! db_ih = db_hh = Σ_t Σ_b dz(t)_b
//! dx(t) = dz(t)·W_ih           dh(0) = dz(1)·W_hh
//! ```
//!
//! Stacking the steps turns each sum into one GEMM: `dw_ih = DZᵀ·X` and
//! `dw_hh = DZᵀ·H₋` over `[T·B]` rows, with `H₋ = [h(0); …; h(T−1)]` (the
//! hidden-state buffer keeps h(0) in front, so `H₋` and `H = [h(1); …;
//! h(T)]` are two overlapping windows of it, not copies). Only the
//! `dz(t+1)·W_hh` product is inherently sequential.
//!
//! # LSTM, gate by gate
//!
//! ```text
//! z(t) = x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh = [z_i | z_f | z_g | z_o]
//! i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
//! c(t) = f ⊙ c(t−1) + i ⊙ g          h(t) = o ⊙ tanh(c(t))
//! ```
//!
//! Going backwards, step t receives dh(t) (readout term plus
//! `dz(t+1)·W_hh`) and the cell gradient carried from step t+1,
//! `dc(t)·f(t+1)` (zero at t = T). Then, with every gate value at step t:
//!
//! ```text
//! dc(t) = dh(t) ⊙ o ⊙ (1 − tanh²c(t)) + dc(t+1) ⊙ f(t+1)
//! dz_o  = dh(t) ⊙ tanh c(t) ⊙ o(1 − o)
//! dz_i  = dc(t) ⊙ g ⊙ i(1 − i)
//! dz_g  = dc(t) ⊙ i ⊙ (1 − g²)
//! dz_f  = dc(t) ⊙ c(t−1) ⊙ f(1 − f)
//! dz(t) = [dz_i | dz_f | dz_g | dz_o]                       [B×4H]
//! dh(t−1) ∋ dz(t)·W_hh     dc(t−1) = dc(t) ⊙ f(t)    dx(t) = dz(t)·W_ih
//! ```
//!
//! and the weight gradients are the same sums as for the RNN, each one GEMM
//! over all steps: `dw_ih = DZᵀ·X`, `dw_hh = DZᵀ·H₋`, `db = Σ dz`. At the
//! end, `dh(0) = dz(1)·W_hh` and `dc(0) = dc(1) ⊙ f(1)`.
//!
//! ```
//! use tapegrad::reference::{RnnBptt, RnnParams};
//! use tapegrad::{Nonlinearity, Tensor};
//!
//! let (b, i, h, o, t) = (2, 3, 4, 5, 6);
//! let p = RnnParams::<f64>::random(i, h, o, 1);
//! let mut bptt = RnnBptt::new(b, i, h, o, t, Nonlinearity::Tanh, false);
//! let x = Tensor::<f64>::randn(&[t, b, i], 2);
//! let targets: Vec<usize> = (0..t * b).map(|k| k % o).collect();
//! let loss = bptt.run(&p, x.data(), &[0.0; 8], &targets);
//! assert!(loss > 0.0);
//! // the two biases feed the same sum, so their gradients are equal
//! assert_eq!(bptt.grads().b_ih, bptt.grads().b_hh);
//! ```
//!
//! [`Real::gemm`]: crate::Real::gemm
//! [`MatRef::t`]: crate::tensor::gemm::MatRef::t

mod lstm;
mod rnn;

pub use lstm::{LstmBptt, LstmGrads, LstmParams};
pub use rnn::{RnnBptt, RnnGrads, RnnParams};

use crate::error::{fail, or_panic, Error, ErrorKind};
use crate::tensor::gemm::{MatMut, MatRef, REORDER_MIN_ROWS};
use crate::tensor::{derive_seed, transpose_into, Tensor};
use crate::Real;

/// The sizes one BPTT instance is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dims {
    batch: usize,
    input: usize,
    hidden: usize,
    output: usize,
    steps: usize,
}

impl Dims {
    /// Checks the sizes; `op` names the constructor in panic messages.
    #[track_caller]
    fn new(
        op: &str,
        batch: usize,
        input: usize,
        hidden: usize,
        output: usize,
        steps: usize,
    ) -> Self {
        for (what, n) in [("steps", steps), ("batch", batch), ("hidden", hidden)] {
            if n == 0 {
                invalid(op, format!("{what} must be at least 1, got 0"));
            }
        }
        if output == 0 {
            invalid(
                op,
                "output must be at least 1 (the softmax needs a class), got 0",
            );
        }
        Dims {
            batch,
            input,
            hidden,
            output,
            steps,
        }
    }

    /// T·B, the row count of every all-steps matrix.
    fn rows(&self) -> usize {
        self.steps * self.batch
    }
}

/// Fails with an [`ErrorKind::InvalidArgument`] error raised by `op`.
#[track_caller]
fn invalid(op: &str, message: impl Into<String>) -> ! {
    fail(Error::new(ErrorKind::InvalidArgument, op, message))
}

/// The product of `factors`, or a panic naming `what` if it overflows.
#[track_caller]
fn elems(op: &str, what: &str, factors: &[usize]) -> usize {
    match factors.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(n) => n,
        None => fail(Error::new(
            ErrorKind::Size,
            op,
            format!("the size of {what} {factors:?} overflows usize"),
        )),
    }
}

/// Panics unless `t` has shape `want`.
#[track_caller]
fn expect_shape<F: Real>(op: &str, name: &str, t: &Tensor<F>, want: &[usize], formula: &str) {
    if t.shape() != want {
        fail(Error::shape(
            op,
            format!(
                "parameter {name} has shape {:?}, expected {formula} = {want:?}",
                t.shape()
            ),
        ));
    }
}

/// Panics unless a slice argument has `want` elements.
#[track_caller]
fn expect_len(op: &str, name: &str, got: usize, want: usize, formula: &str) {
    if got != want {
        fail(Error::shape(
            op,
            format!("{name} has {got} elements, expected {formula} = {want}"),
        ));
    }
}

/// Panics unless every target is a class index below `classes`.
#[track_caller]
fn expect_targets(op: &str, targets: &[usize], classes: usize) {
    if let Some((k, &y)) = targets.iter().enumerate().find(|(_, &y)| y >= classes) {
        invalid(
            op,
            format!("targets[{k}] = {y} is not a class index below output = {classes}"),
        );
    }
}

/// U(−1/√H, 1/√H) samples of `shape` (PyTorch's RNN initialisation).
#[track_caller]
fn init_uniform<F: Real>(shape: &[usize], hidden: usize, seed: u64, k: u64) -> Tensor<F> {
    if hidden == 0 {
        invalid("random parameters", "hidden must be at least 1");
    }
    let bound = 1.0 / (hidden as f64).sqrt();
    or_panic(Tensor::uniform(shape, -bound, bound, derive_seed(seed, k)))
}

/// For each row of `logits` (`[rows × O]`, `O = bias.len()`): adds `bias`,
/// replaces the row by `e = softmax − onehot(target)` (stable: the row
/// maximum is subtracted first), adds `e` into `db_out` (zeroed first), and
/// returns the summed cross-entropy `Σ_rows logsumexp(o) − o[y]`.
fn softmax_xent_rows<F: Real>(
    logits: &mut [F],
    bias: &[F],
    targets: &[usize],
    db_out: &mut [F],
) -> F {
    let classes = bias.len();
    db_out.fill(F::zero());
    let mut loss = F::zero();
    for (row, &y) in logits.chunks_exact_mut(classes).zip(targets) {
        let mut m = F::neg_infinity();
        for (v, &c) in row.iter_mut().zip(bias) {
            *v = *v + c;
            m = m.max(*v);
        }
        let oy = row[y];
        row.iter_mut().for_each(|v| *v = *v - m);
        F::exp_in_place(row);
        let s = row.iter().fold(F::zero(), |s, &v| s + v);
        loss = loss + (s.ln() + m - oy);
        let inv = s.recip();
        row[y] = row[y] * inv - F::one();
        for (k, (v, d)) in row.iter_mut().zip(db_out.iter_mut()).enumerate() {
            if k != y {
                *v = *v * inv;
            }
            *d = *d + *v;
        }
    }
    loss
}

/// Where [`grads_from_dz`] writes: ∂L/∂h(0), ∂L/∂W_ih, ∂L/∂W_hh and, when
/// the caller asked for it, ∂L/∂x (all T·B rows).
struct DzGrads<'a, F> {
    dh0: &'a mut [F],
    dw_ih: &'a mut [F],
    dw_hh: &'a mut [F],
    dx: Option<&'a mut [F]>,
}

/// What flows out of the gate gradients DZ = [dz(1); …; dz(T)] (`[T·B × G]`,
/// G = gates·H) once the backward loop is done, one GEMM each over all T·B
/// rows — the same for both cells:
///
/// ```text
/// dh(0) = dz(1)·W_hh    dW_ih = DZᵀ·X    dW_hh = DZᵀ·[h(0); …; h(T−1)]    dx = DZ·W_ih
/// ```
fn grads_from_dz<F: Real>(
    dz: MatRef<'_, F>,
    batch: usize,
    x: MatRef<'_, F>,
    h_prev: MatRef<'_, F>,
    w_ih: MatRef<'_, F>,
    w_hh: MatRef<'_, F>,
    out: DzGrads<'_, F>,
) {
    let (g, ni, nh) = (dz.cols, x.cols, h_prev.cols);
    let dz1 = MatRef::row_major(&dz.data[..batch * g], batch, g);
    F::gemm(MatMut::row_major(out.dh0, batch, nh), dz1, w_hh, false);
    F::gemm(MatMut::row_major(out.dw_ih, g, ni), dz.t(), x, false);
    F::gemm(MatMut::row_major(out.dw_hh, g, nh), dz.t(), h_prev, false);
    if let Some(dx) = out.dx {
        F::gemm(MatMut::row_major(dx, dz.rows, ni), dz, w_ih, false);
    }
}

/// `w` [rows × cols] as the right operand `wᵀ` of the forward products:
/// reordered row-major into `scratch` once per run when the batch makes
/// them GEMMs (`b ≥ REORDER_MIN_ROWS`, the tape layers' rule), else read as
/// a transposed view.
fn forward_operand<'a, F: Real>(w: &'a Tensor<F>, b: usize, scratch: &'a mut [F]) -> MatRef<'a, F> {
    let (rows, cols) = (w.shape()[0], w.shape()[1]);
    if b >= REORDER_MIN_ROWS {
        transpose_into(w.data(), rows, cols, scratch, false);
        MatRef::row_major(scratch, cols, rows)
    } else {
        MatRef::row_major(w.data(), rows, cols).t()
    }
}

/// `dst[j] = a[j] + b[j]`: the two biases folded into one, once per run.
fn add_into<F: Real>(dst: &mut [F], a: &[F], b: &[F]) {
    for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
        *d = x + y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_xent_rows_hand_case() {
        // logits [0, ln 3] + bias [0, 0], target 1: ŷ = [1/4, 3/4],
        // ℓ = ln(1 + 3) − ln 3 = ln(4/3), e = [1/4, −1/4].
        let mut o = [0.0f64, 3f64.ln()];
        let mut db = [9.0; 2];
        let l = softmax_xent_rows(&mut o, &[0.0, 0.0], &[1], &mut db);
        assert!((l - (4.0f64 / 3.0).ln()).abs() < 1e-15);
        assert!((o[0] - 0.25).abs() < 1e-15 && (o[1] + 0.25).abs() < 1e-15);
        assert_eq!(db, o);
        // huge logits do not overflow
        let mut o = [1e4f64, 0.0];
        let l = softmax_xent_rows(&mut o, &[0.0, 0.0], &[0], &mut db);
        assert_eq!(l, 0.0);
        assert_eq!(o, [0.0, 0.0]);
    }
}
