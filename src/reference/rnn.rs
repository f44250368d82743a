//! The vanilla (Elman) RNN with a softmax readout, forward and backward by
//! hand. See the [module docs](super) for the derivation.

use super::{
    add_into, elems, expect_len, expect_shape, expect_targets, forward_operand, grads_from_dz,
    init_uniform, softmax_xent_rows, Dims, DzGrads,
};
use crate::tensor::gemm::{MatMut, MatRef};
use crate::tensor::Tensor;
use crate::{Nonlinearity, Real};
use std::fmt;

/// The parameters of an RNN layer plus its linear readout, in PyTorch's
/// layout:
///
/// ```text
/// h(t) = φ(x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh)     o(t) = h(t)·W_outᵀ + b_out
/// ```
///
/// ```
/// use tapegrad::reference::RnnParams;
/// let p = RnnParams::<f32>::random(3, 4, 2, 7);
/// assert_eq!(p.w_ih.shape(), &[4, 3]);
/// assert_eq!(p.w_out.shape(), &[2, 4]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RnnParams<F: Real> {
    /// W_ih, `[H×I]`: the input weights, used as `x(t)·W_ihᵀ`.
    pub w_ih: Tensor<F>,
    /// W_hh, `[H×H]`: the recurrent weights, used as `h(t−1)·W_hhᵀ`.
    pub w_hh: Tensor<F>,
    /// b_ih, `[H]`: the input bias.
    pub b_ih: Tensor<F>,
    /// b_hh, `[H]`: the recurrent bias (redundant with b_ih, kept for
    /// PyTorch compatibility).
    pub b_hh: Tensor<F>,
    /// W_out, `[O×H]`: the readout weights, `o(t) = h(t)·W_outᵀ + b_out`.
    pub w_out: Tensor<F>,
    /// b_out, `[O]`: the readout bias.
    pub b_out: Tensor<F>,
}

impl<F: Real> RnnParams<F> {
    /// Every element drawn from U(−1/√H, 1/√H) (PyTorch's initialisation),
    /// each tensor from its own seed derived from `seed`; the same seed gives
    /// the same parameters for `f32` and `f64` up to rounding.
    ///
    /// # Panics
    /// If `hidden` is 0.
    ///
    /// ```
    /// use tapegrad::reference::RnnParams;
    /// let p = RnnParams::<f64>::random(2, 4, 3, 1);
    /// assert!(p.w_hh.data().iter().all(|w| w.abs() < 0.5)); // 1/√4
    /// assert_ne!(p.b_ih, p.b_hh);
    /// assert_eq!(p, RnnParams::random(2, 4, 3, 1));
    /// ```
    pub fn random(input: usize, hidden: usize, output: usize, seed: u64) -> Self {
        let h = hidden;
        RnnParams {
            w_ih: init_uniform(&[h, input], h, seed, 0),
            w_hh: init_uniform(&[h, h], h, seed, 1),
            b_ih: init_uniform(&[h], h, seed, 2),
            b_hh: init_uniform(&[h], h, seed, 3),
            w_out: init_uniform(&[output, h], h, seed, 4),
            b_out: init_uniform(&[output], h, seed, 5),
        }
    }
}

/// ∂L/∂(everything) after [`RnnBptt::run`], with dz(t) = ∂L/∂a(t) and
/// e(t) = ŷ(t) − onehot(y(t)):
///
/// ```text
/// w_ih = Σ_t dz(t)ᵀ·x(t)     w_hh = Σ_t dz(t)ᵀ·h(t−1)     b_ih = b_hh = Σ_t Σ_b dz(t)
/// w_out = Σ_t e(t)ᵀ·h(t)     b_out = Σ_t Σ_b e(t)         x(t) = dz(t)·W_ih    h0 = dz(1)·W_hh
/// ```
///
/// ```
/// use tapegrad::reference::{RnnBptt, RnnParams};
/// use tapegrad::Nonlinearity;
/// let p = RnnParams::<f64>::random(1, 2, 2, 3);
/// let mut r = RnnBptt::new(1, 1, 2, 2, 2, Nonlinearity::Tanh, true);
/// r.run(&p, &[0.5, -1.0], &[0.0, 0.0], &[0, 1]);
/// let g = r.grads();
/// assert_eq!(g.w_hh.shape(), &[2, 2]);
/// assert_eq!(g.x.as_ref().unwrap().shape(), &[2, 1, 1]);
/// // e(t) sums to zero over classes, so b_out's gradient does too
/// assert!(g.b_out.data().iter().sum::<f64>().abs() < 1e-12);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RnnGrads<F: Real> {
    /// ∂L/∂W_ih = Σ_t dz(t)ᵀ·x(t), `[H×I]`.
    pub w_ih: Tensor<F>,
    /// ∂L/∂W_hh = Σ_t dz(t)ᵀ·h(t−1), `[H×H]`.
    pub w_hh: Tensor<F>,
    /// ∂L/∂b_ih = Σ_t Σ_b dz(t), `[H]`.
    pub b_ih: Tensor<F>,
    /// ∂L/∂b_hh = Σ_t Σ_b dz(t) (equal to `b_ih`), `[H]`.
    pub b_hh: Tensor<F>,
    /// ∂L/∂W_out = Σ_t e(t)ᵀ·h(t), `[O×H]`.
    pub w_out: Tensor<F>,
    /// ∂L/∂b_out = Σ_t Σ_b e(t), `[O]`.
    pub b_out: Tensor<F>,
    /// ∂L/∂x(t) = dz(t)·W_ih as `[T×B×I]`, if the instance was built with
    /// `input_grad`.
    pub x: Option<Tensor<F>>,
    /// ∂L/∂h(0) = dz(1)·W_hh, `[B×H]`.
    pub h0: Tensor<F>,
}

impl<F: Real> RnnGrads<F> {
    /// The six parameter gradients in PyTorch's order plus the readout:
    /// `[w_ih, w_hh, b_ih, b_hh, w_out, b_out]` (the same order for
    /// [`LstmGrads::params`](super::LstmGrads::params)).
    ///
    /// ```
    /// use tapegrad::reference::{RnnBptt, RnnParams};
    /// use tapegrad::Nonlinearity;
    /// let p = RnnParams::<f64>::random(1, 2, 2, 0);
    /// let mut r = RnnBptt::new(1, 1, 2, 2, 1, Nonlinearity::Tanh, false);
    /// r.run(&p, &[1.0], &[0.0, 0.0], &[1]);
    /// let g = r.grads();
    /// assert_eq!(g.params()[4], &g.w_out);
    /// ```
    pub fn params(&self) -> [&Tensor<F>; 6] {
        [
            &self.w_ih,
            &self.w_hh,
            &self.b_ih,
            &self.b_hh,
            &self.w_out,
            &self.b_out,
        ]
    }
}

/// Hand-written BPTT for an RNN with a softmax readout and a summed
/// cross-entropy loss; all buffers are allocated by [`RnnBptt::new`] and
/// reused by every [`RnnBptt::run`].
///
/// ```text
/// a(t) = x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh    h(t) = φ(a(t))
/// o(t) = h(t)·W_outᵀ + b_out                          L = Σ_t Σ_b CE(o(t)_b, y(t)_b)
/// ```
///
/// Forward is one GEMM for the input projection of all T steps, T small
/// GEMMs for the recurrence (each fused with bias and φ), and one GEMM for
/// all readouts. Backward is one GEMM for every step's readout term of
/// dh(t), T − 1 small GEMMs for the recurrence, and one GEMM each for
/// dW_out, dW_ih, dW_hh, dx and dh(0).
///
/// ```
/// use tapegrad::reference::{RnnBptt, RnnParams};
/// use tapegrad::{Nonlinearity, Tensor};
///
/// let (b, i, h, o, t) = (2, 3, 8, 4, 5);
/// let mut p = RnnParams::<f64>::random(i, h, o, 11);
/// let mut bptt = RnnBptt::new(b, i, h, o, t, Nonlinearity::Tanh, false);
/// let x = Tensor::<f64>::randn(&[t, b, i], 12);
/// let h0 = vec![0.0; b * h];
/// let y: Vec<usize> = (0..t * b).map(|k| (k * 7) % o).collect();
/// let before = bptt.run(&p, x.data(), &h0, &y);
/// // one small step against the gradient lowers the loss
/// let g = bptt.grads().clone();
/// for (w, dw) in [(&mut p.w_ih, &g.w_ih), (&mut p.w_hh, &g.w_hh), (&mut p.w_out, &g.w_out)] {
///     w.data_mut().iter_mut().zip(dw.data()).for_each(|(w, d)| *w -= 0.01 * d);
/// }
/// assert!(bptt.run(&p, x.data(), &h0, &y) < before);
/// ```
pub struct RnnBptt<F: Real> {
    dims: Dims,
    phi: Nonlinearity,
    /// h(0), h(1), …, h(T) as `[(T+1)×B×H]`. During forward, slot t+1
    /// holds a(t+1) until φ overwrites it.
    hs: Vec<F>,
    /// The logits o(t) as `[T·B×O]`, overwritten in place by e(t).
    err: Vec<F>,
    /// δ(t) = dh(t), turned into dz(t) = φ'⊙δ(t) in place, `[T·B×H]`.
    dz: Vec<F>,
    /// b_ih + b_hh, `[H]`.
    bias: Vec<F>,
    /// W_ihᵀ and W_hhᵀ, reordered once per run so every product with them is
    /// row-major (the faster GEMM path; the tape layers do the same).
    w_ih_t: Vec<F>,
    w_hh_t: Vec<F>,
    grads: RnnGrads<F>,
}

impl<F: Real> fmt::Debug for RnnBptt<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RnnBptt")
            .field("dtype", &F::NAME)
            .field("dims", &self.dims)
            .field("nonlinearity", &self.phi)
            .field("input_grad", &self.grads.x.is_some())
            .finish()
    }
}

const RUN: &str = "RnnBptt::run";

impl<F: Real> RnnBptt<F> {
    /// Allocates every buffer for `steps` steps of a batch of `batch`
    /// sequences: an RNN `input → hidden` with φ = `nonlinearity`, a readout
    /// `hidden → output`. With `input_grad`, `run` also computes
    /// ∂L/∂x(t) = dz(t)·W_ih (one more GEMM).
    ///
    /// # Panics
    /// If `steps`, `batch`, `hidden` or `output` is 0 (`input` may be 0), or
    /// a buffer size overflows.
    ///
    /// ```
    /// use tapegrad::reference::RnnBptt;
    /// use tapegrad::Nonlinearity;
    /// let r = RnnBptt::<f32>::new(4, 10, 32, 10, 25, Nonlinearity::Relu, false);
    /// assert_eq!(r.hidden_states().len(), 25 * 4 * 32);
    /// assert!(r.grads().x.is_none());
    /// ```
    #[track_caller]
    pub fn new(
        batch: usize,
        input: usize,
        hidden: usize,
        output: usize,
        steps: usize,
        nonlinearity: Nonlinearity,
        input_grad: bool,
    ) -> Self {
        const OP: &str = "RnnBptt::new";
        let d = Dims::new(OP, batch, input, hidden, output, steps);
        let hs = elems(OP, "the hidden states", &[steps + 1, batch, hidden]);
        let err = elems(OP, "the logits", &[steps, batch, output]);
        let dz = elems(OP, "dz", &[steps, batch, hidden]);
        elems(OP, "W_ih", &[hidden, input]);
        elems(OP, "W_hh", &[hidden, hidden]);
        elems(OP, "W_out", &[output, hidden]);
        elems(OP, "x", &[steps, batch, input]);
        RnnBptt {
            dims: d,
            phi: nonlinearity,
            hs: vec![F::zero(); hs],
            err: vec![F::zero(); err],
            dz: vec![F::zero(); dz],
            bias: vec![F::zero(); hidden],
            w_ih_t: vec![F::zero(); hidden * input],
            w_hh_t: vec![F::zero(); hidden * hidden],
            grads: RnnGrads {
                w_ih: Tensor::zeros(&[hidden, input]),
                w_hh: Tensor::zeros(&[hidden, hidden]),
                b_ih: Tensor::zeros(&[hidden]),
                b_hh: Tensor::zeros(&[hidden]),
                w_out: Tensor::zeros(&[output, hidden]),
                b_out: Tensor::zeros(&[output]),
                x: input_grad.then(|| Tensor::zeros(&[steps, batch, input])),
                h0: Tensor::zeros(&[batch, hidden]),
            },
        }
    }

    /// Runs forward and backward; returns `L = Σ_t Σ_b CE(o(t)_b, y(t)_b)`
    /// and leaves every gradient in [`RnnBptt::grads`].
    ///
    /// `x` is `[T×B×I]` row-major, `h0` is `[B×H]`, `targets` is `[T×B]`
    /// class indices.
    ///
    /// # Panics
    /// With a message naming the argument if a length, a parameter shape or
    /// a target index does not fit the sizes given to [`RnnBptt::new`].
    ///
    /// ```
    /// use tapegrad::reference::{RnnBptt, RnnParams};
    /// use tapegrad::Nonlinearity;
    /// // With W_out = 0 and b_out = 0 every logit is 0, so each of the
    /// // T·B cross-entropies is ln O.
    /// let mut p = RnnParams::<f64>::random(2, 3, 4, 5);
    /// p.w_out.data_mut().fill(0.0);
    /// p.b_out.data_mut().fill(0.0);
    /// let mut r = RnnBptt::new(1, 2, 3, 4, 3, Nonlinearity::Tanh, false);
    /// let loss = r.run(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[0.0; 3], &[0, 1, 3]);
    /// assert!((loss - 3.0 * 4f64.ln()).abs() < 1e-12);
    /// assert!(r.grads().w_ih.data().iter().all(|&g| g == 0.0)); // dh = e·W_out = 0
    /// ```
    #[track_caller]
    pub fn run(&mut self, p: &RnnParams<F>, x: &[F], h0: &[F], targets: &[usize]) -> F {
        self.check(p, x, h0, targets);
        let Dims {
            batch: b,
            input: ni,
            hidden: nh,
            output: no,
            steps: nt,
        } = self.dims;
        let rows = self.dims.rows();
        let bh = b * nh;
        let RnnBptt {
            phi,
            hs,
            err,
            dz,
            bias,
            w_ih_t,
            w_hh_t,
            grads,
            ..
        } = self;
        let phi = *phi;
        let w_ih = MatRef::row_major(p.w_ih.data(), nh, ni);
        let w_hh = MatRef::row_major(p.w_hh.data(), nh, nh);
        let w_ih_t = forward_operand(&p.w_ih, b, w_ih_t);
        let w_hh_t = forward_operand(&p.w_hh, b, w_hh_t);
        let w_out = MatRef::row_major(p.w_out.data(), no, nh);
        let xm = MatRef::row_major(x, rows, ni);

        // ---- forward ----
        add_into(bias, p.b_ih.data(), p.b_hh.data());
        hs[..bh].copy_from_slice(h0);
        // a(t) ← x(t)·W_ihᵀ for all t: one GEMM over T·B rows.
        F::gemm(
            MatMut::row_major(&mut hs[bh..], rows, nh),
            xm,
            w_ih_t,
            false,
        );
        for t in 0..nt {
            let (done, todo) = hs.split_at_mut((t + 1) * bh);
            let prev = &done[t * bh..];
            let cur = &mut todo[..bh];
            // a(t+1) += h(t)·W_hhᵀ, then h(t+1) = φ(a + b_ih + b_hh) in place.
            F::gemm(
                MatMut::row_major(cur, b, nh),
                MatRef::row_major(prev, b, nh),
                w_hh_t,
                true,
            );
            activate(phi, cur, bias);
        }
        // o = H·W_outᵀ for all t (one GEMM); then b_out, softmax, CE and
        // e = ŷ − onehot in place, with db_out = Σ e fused in.
        let h_all = MatRef::row_major(&hs[bh..], rows, nh);
        F::gemm(MatMut::row_major(err, rows, no), h_all, w_out.t(), false);
        let loss = softmax_xent_rows(err, p.b_out.data(), targets, grads.b_out.data_mut());

        // ---- backward ----
        let e = MatRef::row_major(&err[..], rows, no);
        // dW_out = Eᵀ·H, and the readout term e(t)·W_out of every δ(t).
        F::gemm(
            MatMut::row_major(grads.w_out.data_mut(), no, nh),
            e.t(),
            h_all,
            false,
        );
        F::gemm(MatMut::row_major(dz, rows, nh), e, w_out, false);
        let db = grads.b_ih.data_mut();
        db.fill(F::zero());
        for t in (0..nt).rev() {
            let (upto, after) = dz.split_at_mut((t + 1) * bh);
            let cur = &mut upto[t * bh..];
            if t + 1 < nt {
                // δ(t) += dz(t+1)·W_hh
                F::gemm(
                    MatMut::row_major(cur, b, nh),
                    MatRef::row_major(&after[..bh], b, nh),
                    w_hh,
                    true,
                );
            }
            // dz(t) = φ'(h(t)) ⊙ δ(t), with db += dz(t) fused in.
            derivative(phi, cur, &hs[(t + 1) * bh..(t + 2) * bh], db);
        }
        grads.b_hh.data_mut().copy_from_slice(grads.b_ih.data());
        grads_from_dz(
            MatRef::row_major(&dz[..], rows, nh),
            b,
            xm,
            MatRef::row_major(&hs[..rows * nh], rows, nh),
            w_ih,
            w_hh,
            DzGrads {
                dh0: grads.h0.data_mut(),
                dw_ih: grads.w_ih.data_mut(),
                dw_hh: grads.w_hh.data_mut(),
                dx: grads.x.as_mut().map(|dx| dx.data_mut()),
            },
        );
        loss
    }

    /// The gradients of the last [`RnnBptt::run`] (zeros before the first).
    ///
    /// ```
    /// use tapegrad::reference::{RnnBptt, RnnParams};
    /// use tapegrad::Nonlinearity;
    /// let p = RnnParams::<f64>::random(1, 1, 2, 0);
    /// let mut r = RnnBptt::new(1, 1, 1, 2, 1, Nonlinearity::Tanh, false);
    /// r.run(&p, &[1.0], &[0.0], &[1]);
    /// // one step from h(0) = 0: dW_hh = dz(1)ᵀ·h(0) = 0
    /// assert_eq!(r.grads().w_hh.data(), &[0.0]);
    /// ```
    pub fn grads(&self) -> &RnnGrads<F> {
        &self.grads
    }

    /// h(1), …, h(T) of the last [`RnnBptt::run`] as `[T×B×H]` row-major.
    ///
    /// ```
    /// use tapegrad::reference::{RnnBptt, RnnParams};
    /// use tapegrad::Nonlinearity;
    /// let p = RnnParams::<f64>::random(1, 2, 2, 0);
    /// let mut r = RnnBptt::new(1, 1, 2, 2, 3, Nonlinearity::Tanh, false);
    /// r.run(&p, &[0.1, 0.2, 0.3], &[0.0, 0.0], &[0, 1, 0]);
    /// // h(t) = tanh(·) lies in (−1, 1)
    /// assert!(r.hidden_states().iter().all(|h| h.abs() < 1.0));
    /// assert_eq!(r.hidden_states().len(), 3 * 2);
    /// ```
    pub fn hidden_states(&self) -> &[F] {
        &self.hs[self.dims.batch * self.dims.hidden..]
    }

    #[track_caller]
    fn check(&self, p: &RnnParams<F>, x: &[F], h0: &[F], targets: &[usize]) {
        let Dims {
            batch: b,
            input: i,
            hidden: h,
            output: o,
            steps: t,
        } = self.dims;
        expect_shape(RUN, "w_ih", &p.w_ih, &[h, i], "[H×I]");
        expect_shape(RUN, "w_hh", &p.w_hh, &[h, h], "[H×H]");
        expect_shape(RUN, "b_ih", &p.b_ih, &[h], "[H]");
        expect_shape(RUN, "b_hh", &p.b_hh, &[h], "[H]");
        expect_shape(RUN, "w_out", &p.w_out, &[o, h], "[O×H]");
        expect_shape(RUN, "b_out", &p.b_out, &[o], "[O]");
        expect_len(RUN, "x", x.len(), t * b * i, "T·B·I");
        expect_len(RUN, "h0", h0.len(), b * h, "B·H");
        expect_len(RUN, "targets", targets.len(), t * b, "T·B");
        expect_targets(RUN, targets, o);
    }
}

/// `a ← φ(a + bias)` row by row (`bias.len()` columns), the φ match hoisted
/// out of the loop.
fn activate<F: Real>(phi: Nonlinearity, a: &mut [F], bias: &[F]) {
    let n = bias.len();
    match phi {
        Nonlinearity::Tanh => {
            for row in a.chunks_exact_mut(n) {
                for (v, &c) in row.iter_mut().zip(bias) {
                    *v = *v + c;
                }
            }
            // The tape's tanh kernel (SIMD for f32), over the whole block.
            F::tanh_in_place(a);
        }
        Nonlinearity::Relu => {
            for row in a.chunks_exact_mut(n) {
                for (v, &c) in row.iter_mut().zip(bias) {
                    *v = (*v + c).max(F::zero());
                }
            }
        }
    }
}

/// `δ ← φ'(h) ⊙ δ` (φ' from the output h), and `db += δ` summed over rows.
fn derivative<F: Real>(phi: Nonlinearity, delta: &mut [F], h: &[F], db: &mut [F]) {
    let n = db.len();
    let rows = delta.chunks_exact_mut(n).zip(h.chunks_exact(n));
    match phi {
        Nonlinearity::Tanh => {
            for (dr, hr) in rows {
                for ((d, &h), s) in dr.iter_mut().zip(hr).zip(db.iter_mut()) {
                    *d = *d * (F::one() - h * h);
                    *s = *s + *d;
                }
            }
        }
        Nonlinearity::Relu => {
            for (dr, hr) in rows {
                for ((d, &h), s) in dr.iter_mut().zip(hr).zip(db.iter_mut()) {
                    // relu'(0) = 0, PyTorch's convention.
                    if h <= F::zero() {
                        *d = F::zero();
                    }
                    *s = *s + *d;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, tol: f64) -> bool {
        (got - want).abs() <= tol * want.abs().max(1.0)
    }

    #[track_caller]
    fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(close(g, w, tol), "{what}[{k}]: got {g}, want {w}");
        }
    }

    fn t1(v: &[f64]) -> Tensor<f64> {
        Tensor::from_slice(v, &[v.len()]).unwrap()
    }

    fn t2(v: &[f64], r: usize, c: usize) -> Tensor<f64> {
        Tensor::from_slice(v, &[r, c]).unwrap()
    }

    /// H = I = 1, O = 2, T = 2, B = 1, relu, chosen so that everything
    /// is an exact binary fraction except the loss.
    ///
    /// w_ih = 1, w_hh = 0.5, b_ih = b_hh = 0.25 (b = 0.5),
    /// W_out = [1; 2], b_out = [3, 0], x = [1, 1], h0 = 3, y = [0, 0].
    ///
    /// Forward:
    ///   a(1) = 1·1 + 0.5·3 + 0.5 = 3,  h(1) = relu(3) = 3
    ///   a(2) = 1·1 + 0.5·3 + 0.5 = 3,  h(2) = 3            (h0 is a fixed point)
    ///   o(t) = [1·3 + 3, 2·3 + 0] = [6, 6]  →  ŷ(t) = [½, ½]
    ///   L = 2·(−ln ½) = 2 ln 2
    /// Backward:
    ///   e(t) = ŷ − onehot(0) = [−½, ½]                       (both steps)
    ///   dW_out = Σ_t e(t)ᵀ h(t) = [−½·3·2, ½·3·2] = [−3, 3]
    ///   db_out = Σ_t e(t) = [−1, 1]
    ///   readout term e·W_out = −½·1 + ½·2 = ½
    ///   δ(2) = ½                 dz(2) = relu'(3)·½ = ½
    ///   δ(1) = ½ + w_hh·dz(2) = ½ + ¼ = ¾     dz(1) = ¾
    ///   dW_ih = dz(1)x(1) + dz(2)x(2) = ¾ + ½ = 5/4
    ///   dW_hh = dz(1)h(0) + dz(2)h(1) = ¾·3 + ½·3 = 15/4
    ///   db_ih = db_hh = ¾ + ½ = 5/4
    ///   dx = [dz(1)·w_ih, dz(2)·w_ih] = [¾, ½]
    ///   dh0 = w_hh·dz(1) = 3/8
    #[test]
    fn hand_case_relu_exact() {
        let p = RnnParams {
            w_ih: t2(&[1.0], 1, 1),
            w_hh: t2(&[0.5], 1, 1),
            b_ih: t1(&[0.25]),
            b_hh: t1(&[0.25]),
            w_out: t2(&[1.0, 2.0], 2, 1),
            b_out: t1(&[3.0, 0.0]),
        };
        let mut r = RnnBptt::new(1, 1, 1, 2, 2, Nonlinearity::Relu, true);
        let loss = r.run(&p, &[1.0, 1.0], &[3.0], &[0, 0]);
        assert!((loss - 2.0 * 2f64.ln()).abs() < 1e-15);
        assert_eq!(r.hidden_states(), &[3.0, 3.0]);
        let g = r.grads();
        assert_eq!(g.w_out.data(), &[-3.0, 3.0]);
        assert_eq!(g.b_out.data(), &[-1.0, 1.0]);
        assert_eq!(g.w_ih.data(), &[1.25]);
        assert_eq!(g.w_hh.data(), &[3.75]);
        assert_eq!(g.b_ih.data(), &[1.25]);
        assert_eq!(g.b_hh.data(), &[1.25]);
        assert_eq!(g.x.as_ref().unwrap().data(), &[0.75, 0.5]);
        assert_eq!(g.h0.data(), &[0.375]);
    }

    /// H = I = 1, O = 2, T = 2, B = 1, tanh, all values distinct, so that
    /// φ', h(t) vs h(t−1) and the order of steps all matter. Numbers to 17
    /// digits (computed at 30 digits, step by step as written here).
    ///
    /// w_ih = 0.5, w_hh = −0.8, b_ih = 0.1, b_hh = −0.3 (b = −0.2),
    /// W_out = [1; −0.5], b_out = [0.2, −0.1], x = [1, −2], h0 = 0.3, y = [1, 0].
    ///
    /// Forward:
    ///   a(1) = 0.5·1 − 0.8·0.3 − 0.2 = 0.06
    ///   h(1) = tanh 0.06 = 0.059928103529143502
    ///   o(1) = [h(1) + 0.2, −0.5 h(1) − 0.1] = [0.25992810352914350, −0.12996405176457175]
    ///   ŷ(1) = [0.59625673760972207, 0.40374326239027793]
    ///   L(1) = −ln ŷ(1)[1] = 0.90697609216276893
    ///   a(2) = 0.5·(−2) − 0.8·h(1) − 0.2 = −1.2479424828233148
    ///   h(2) = tanh a(2) = −0.84770567361105273
    ///   o(2) = [−0.64770567361105273, 0.32385283680552636]
    ///   ŷ(2) = [0.27456996703993103, 0.72543003296006897]
    ///   L(2) = −ln ŷ(2)[0] = 1.2925491614768857
    ///   L = 2.1995252536396546
    /// Backward:
    ///   e(1) = ŷ(1) − [0, 1] = [0.59625673760972207, −0.59625673760972207]
    ///   e(2) = ŷ(2) − [1, 0] = [−0.72543003296006897, 0.72543003296006897]
    ///   δ(2) = e(2)·W_out = −0.725…·1 + 0.725…·(−0.5) = −1.0881450494401035
    ///   dz(2) = (1 − h(2)²)·δ(2) = 0.28139509092763134·δ(2) = −0.30619867512964981
    ///   δ(1) = e(1)·W_out + w_hh·dz(2) = 0.8943851064145831 + 0.24495894010371985
    ///        = 1.1393440465183029
    ///   dz(1) = (1 − h(1)²)·δ(1) = 0.99640862240740026·δ(1) = 1.1352522318393752
    ///   dW_ih = dz(1)·1 + dz(2)·(−2) = 1.7476495820986748
    ///   dW_hh = dz(1)·h(0) + dz(2)·h(1) = 0.32222576364815633
    ///   db = dz(1) + dz(2) = 0.82905355670972539
    ///   dW_out = e(1)ᵀh(1) + e(2)ᵀh(2) = [0.65068369024952822, −0.65068369024952822]
    ///   db_out = e(1) + e(2) = [−0.1291732953503469, 0.1291732953503469]
    ///   dx = [dz(1)·0.5, dz(2)·0.5] = [0.5676261159196876, −0.15309933756482491]
    ///   dh0 = w_hh·dz(1) = −0.90820178547150016
    #[test]
    fn hand_case_tanh() {
        let p = RnnParams {
            w_ih: t2(&[0.5], 1, 1),
            w_hh: t2(&[-0.8], 1, 1),
            b_ih: t1(&[0.1]),
            b_hh: t1(&[-0.3]),
            w_out: t2(&[1.0, -0.5], 2, 1),
            b_out: t1(&[0.2, -0.1]),
        };
        let mut r = RnnBptt::new(1, 1, 1, 2, 2, Nonlinearity::Tanh, true);
        let loss = r.run(&p, &[1.0, -2.0], &[0.3], &[1, 0]);
        let tol = 1e-14;
        assert_close("loss", &[loss], &[2.1995252536396546], tol);
        assert_close(
            "h",
            r.hidden_states(),
            &[0.0599281035291435, -0.8477056736110528],
            tol,
        );
        let g = r.grads();
        assert_close("dw_ih", g.w_ih.data(), &[1.7476495820986748], tol);
        assert_close("dw_hh", g.w_hh.data(), &[0.3222257636481563], tol);
        assert_close("db_ih", g.b_ih.data(), &[0.8290535567097254], tol);
        assert_close("db_hh", g.b_hh.data(), &[0.8290535567097254], tol);
        assert_close(
            "dw_out",
            g.w_out.data(),
            &[0.6506836902495282, -0.6506836902495282],
            tol,
        );
        assert_close(
            "db_out",
            g.b_out.data(),
            &[-0.1291732953503469, 0.1291732953503469],
            tol,
        );
        assert_close(
            "dx",
            g.x.as_ref().unwrap().data(),
            &[0.5676261159196876, -0.1530993375648249],
            tol,
        );
        assert_close("dh0", g.h0.data(), &[-0.9082017854715002], tol);
    }

    /// Loss of a fresh instance, for finite differences.
    fn loss_of(
        phi: Nonlinearity,
        dims: (usize, usize, usize, usize, usize),
        p: &RnnParams<f64>,
        x: &[f64],
        h0: &[f64],
        y: &[usize],
    ) -> f64 {
        let (b, i, h, o, t) = dims;
        RnnBptt::new(b, i, h, o, t, phi, false).run(p, x, h0, y)
    }

    /// |analytic − numeric| / max(|analytic|, |numeric|, 1e-2) for every
    /// element of `v`, by central differences with step 1e-5·max(1, |v|).
    fn fd_worst(
        analytic: &[f64],
        v: &mut [f64],
        mut loss: impl FnMut(&[f64]) -> f64,
    ) -> (f64, usize) {
        let mut worst = (0.0f64, 0);
        for k in 0..v.len() {
            let orig = v[k];
            let eps = 1e-5 * orig.abs().max(1.0);
            v[k] = orig + eps;
            let up = loss(v);
            v[k] = orig - eps;
            let down = loss(v);
            v[k] = orig;
            let num = (up - down) / (2.0 * eps);
            let rel = (analytic[k] - num).abs() / analytic[k].abs().max(num.abs()).max(1e-2);
            if rel > worst.0 {
                worst = (rel, k);
            }
        }
        worst
    }

    fn fd_check(phi: Nonlinearity, seed: u64) -> f64 {
        let dims @ (b, i, h, o, t) = (2, 3, 4, 3, 4);
        let p = RnnParams::<f64>::random(i, h, o, seed);
        let x = Tensor::<f64>::randn(&[t, b, i], seed + 100).into_vec();
        let h0 = Tensor::<f64>::randn(&[b, h], seed + 200).into_vec();
        let y: Vec<usize> = (0..t * b).map(|k| (k * 5 + seed as usize) % o).collect();
        let mut r = RnnBptt::new(b, i, h, o, t, phi, true);
        r.run(&p, &x, &h0, &y);
        let g = r.grads().clone();
        let mut worst = 0.0f64;
        let mut record = |name: &str, (rel, k): (f64, usize)| {
            assert!(rel <= 1e-6, "{phi:?} d{name}[{k}]: relative error {rel:e}");
            worst = worst.max(rel);
        };
        type Pick = fn(&mut RnnParams<f64>) -> &mut Tensor<f64>;
        let picks: [(&str, Pick, &Tensor<f64>); 6] = [
            ("w_ih", |p| &mut p.w_ih, &g.w_ih),
            ("w_hh", |p| &mut p.w_hh, &g.w_hh),
            ("b_ih", |p| &mut p.b_ih, &g.b_ih),
            ("b_hh", |p| &mut p.b_hh, &g.b_hh),
            ("w_out", |p| &mut p.w_out, &g.w_out),
            ("b_out", |p| &mut p.b_out, &g.b_out),
        ];
        for (name, pick, analytic) in picks {
            let mut q = p.clone();
            let mut v = pick(&mut q).data().to_vec();
            let res = fd_worst(analytic.data(), &mut v, |v| {
                pick(&mut q).data_mut().copy_from_slice(v);
                loss_of(phi, dims, &q, &x, &h0, &y)
            });
            record(name, res);
        }
        let mut xv = x.clone();
        let res = fd_worst(g.x.as_ref().unwrap().data(), &mut xv, |v| {
            loss_of(phi, dims, &p, v, &h0, &y)
        });
        record("x", res);
        let mut hv = h0.clone();
        let res = fd_worst(g.h0.data(), &mut hv, |v| loss_of(phi, dims, &p, &x, v, &y));
        record("h0", res);
        worst
    }

    #[test]
    fn finite_differences_tanh() {
        for seed in [1, 2] {
            let w = fd_check(Nonlinearity::Tanh, seed);
            eprintln!("rnn tanh seed {seed}: worst relative FD error {w:e}");
        }
    }

    #[test]
    fn finite_differences_relu() {
        for seed in [3, 4] {
            let w = fd_check(Nonlinearity::Relu, seed);
            eprintln!("rnn relu seed {seed}: worst relative FD error {w:e}");
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let (b, i, h, o, t) = (3, 5, 16, 7, 10);
        let p64 = RnnParams::<f64>::random(i, h, o, 9);
        let p32 = RnnParams::<f32> {
            w_ih: p64.w_ih.cast(),
            w_hh: p64.w_hh.cast(),
            b_ih: p64.b_ih.cast(),
            b_hh: p64.b_hh.cast(),
            w_out: p64.w_out.cast(),
            b_out: p64.b_out.cast(),
        };
        let x64 = Tensor::<f64>::randn(&[t, b, i], 10);
        let h064 = Tensor::<f64>::randn(&[b, h], 11);
        let y: Vec<usize> = (0..t * b).map(|k| (k * 3) % o).collect();
        for phi in [Nonlinearity::Tanh, Nonlinearity::Relu] {
            let mut r64 = RnnBptt::new(b, i, h, o, t, phi, true);
            let mut r32 = RnnBptt::<f32>::new(b, i, h, o, t, phi, true);
            let l64 = r64.run(&p64, x64.data(), h064.data(), &y);
            let l32 = r32.run(&p32, x64.cast().data(), h064.cast().data(), &y);
            assert!(((l32 as f64) - l64).abs() < 1e-5 * l64.abs());
            let (g64, g32) = (r64.grads(), r32.grads());
            let pairs = [
                (&g64.w_ih, &g32.w_ih),
                (&g64.w_hh, &g32.w_hh),
                (&g64.b_ih, &g32.b_ih),
                (&g64.w_out, &g32.w_out),
                (&g64.b_out, &g32.b_out),
                (&g64.h0, &g32.h0),
                (g64.x.as_ref().unwrap(), g32.x.as_ref().unwrap()),
            ];
            for (a, c) in pairs {
                let scale = a.data().iter().fold(1.0f64, |m, v| m.max(v.abs()));
                let diff = a.max_abs_diff(&c.cast());
                assert!(diff < 1e-4 * scale, "{phi:?}: {diff} vs scale {scale}");
            }
        }
    }

    #[test]
    fn reuse_leaves_no_stale_state_and_single_step_works() {
        let (b, i, h, o, t) = (2, 2, 3, 3, 3);
        let p = RnnParams::<f64>::random(i, h, o, 21);
        let xa = Tensor::<f64>::randn(&[t, b, i], 22).into_vec();
        let xb = Tensor::<f64>::randn(&[t, b, i], 23).into_vec();
        let h0 = vec![0.1; b * h];
        let y = [0, 1, 2, 2, 1, 0];
        let mut reused = RnnBptt::new(b, i, h, o, t, Nonlinearity::Tanh, true);
        reused.run(&p, &xa, &h0, &y);
        let lb = reused.run(&p, &xb, &h0, &y);
        let mut fresh = RnnBptt::new(b, i, h, o, t, Nonlinearity::Tanh, true);
        assert_eq!(fresh.run(&p, &xb, &h0, &y), lb);
        assert_eq!(fresh.grads(), reused.grads());
        assert_eq!(fresh.hidden_states(), reused.hidden_states());

        // T = 1, B = 1: dW_hh = dz(1)ᵀh(0), dh0 = dz(1)·W_hh, one term each.
        let p = RnnParams::<f64>::random(2, 3, 2, 5);
        let mut r = RnnBptt::new(1, 2, 3, 2, 1, Nonlinearity::Tanh, false);
        let h0 = [0.5, -0.25, 1.0];
        r.run(&p, &[1.0, -1.0], &h0, &[1]);
        let g = r.grads();
        let dz = g.b_ih.data(); // = dz(1) when T = B = 1
        for (row, dw) in g.w_hh.data().chunks_exact(3).enumerate() {
            for (col, &v) in dw.iter().enumerate() {
                assert!((v - dz[row] * h0[col]).abs() < 1e-15);
            }
        }
        assert!(g.x.is_none());
    }

    #[test]
    #[should_panic(expected = "RnnBptt::run: x has 5 elements, expected T·B·I = 6")]
    fn wrong_x_length_panics() {
        let p = RnnParams::<f64>::random(2, 3, 2, 5);
        let mut r = RnnBptt::new(1, 2, 3, 2, 3, Nonlinearity::Tanh, false);
        r.run(&p, &[0.0; 5], &[0.0; 3], &[0, 0, 0]);
    }

    #[test]
    #[should_panic(expected = "parameter w_hh has shape [4, 4], expected [H×H] = [3, 3]")]
    fn wrong_parameter_shape_panics() {
        let p = RnnParams::<f64>::random(2, 4, 2, 5);
        let mut r = RnnBptt::new(1, 2, 3, 2, 1, Nonlinearity::Tanh, false);
        let mut q = RnnParams::random(2, 3, 2, 5);
        q.w_hh = p.w_hh;
        r.run(&q, &[0.0; 2], &[0.0; 3], &[0]);
    }

    #[test]
    #[should_panic(expected = "targets[1] = 2 is not a class index below output = 2")]
    fn bad_target_panics() {
        let p = RnnParams::<f64>::random(1, 1, 2, 5);
        let mut r = RnnBptt::new(1, 1, 1, 2, 2, Nonlinearity::Tanh, false);
        r.run(&p, &[0.0; 2], &[0.0], &[0, 2]);
    }

    #[test]
    #[should_panic(expected = "RnnBptt::new: steps must be at least 1")]
    fn zero_steps_panics() {
        RnnBptt::<f64>::new(1, 1, 1, 1, 0, Nonlinearity::Tanh, false);
    }
}
