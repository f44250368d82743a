//! The LSTM with a softmax readout, forward and backward by hand, gate by
//! gate. See the [module docs](super) for the derivation.

use super::{
    add_into, elems, expect_len, expect_shape, expect_targets, forward_operand, grads_from_dz,
    init_uniform, softmax_xent_rows, Dims, DzGrads,
};
use crate::tensor::gemm::{MatMut, MatRef};
use crate::tensor::Tensor;
use crate::Real;
use std::fmt;

/// The parameters of an LSTM layer plus its linear readout, in PyTorch's
/// layout (gate blocks i, f, g, o stacked along the 4H rows):
///
/// ```text
/// z(t) = x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh = [z_i | z_f | z_g | z_o]
/// o(t) = h(t)·W_outᵀ + b_out
/// ```
///
/// ```
/// use tapegrad::reference::LstmParams;
/// let p = LstmParams::<f32>::random(3, 4, 2, 7);
/// assert_eq!(p.w_ih.shape(), &[16, 3]);
/// assert_eq!(p.w_hh.shape(), &[16, 4]);
/// assert_eq!(p.b_hh.shape(), &[16]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LstmParams<F: Real> {
    /// W_ih, `[4H×I]`: rows 0..H feed gate i, H..2H f, 2H..3H g, 3H..4H o.
    pub w_ih: Tensor<F>,
    /// W_hh, `[4H×H]`: the recurrent weights, same row blocks.
    pub w_hh: Tensor<F>,
    /// b_ih, `[4H]`.
    pub b_ih: Tensor<F>,
    /// b_hh, `[4H]` (redundant with b_ih, kept for PyTorch compatibility).
    pub b_hh: Tensor<F>,
    /// W_out, `[O×H]`: the readout, `o(t) = h(t)·W_outᵀ + b_out`.
    pub w_out: Tensor<F>,
    /// b_out, `[O]`.
    pub b_out: Tensor<F>,
}

impl<F: Real> LstmParams<F> {
    /// Every element drawn from U(−1/√H, 1/√H) (PyTorch's initialisation),
    /// each tensor from its own seed derived from `seed`.
    ///
    /// # Panics
    /// If `hidden` is 0.
    ///
    /// ```
    /// use tapegrad::reference::LstmParams;
    /// let p = LstmParams::<f64>::random(2, 4, 3, 1);
    /// assert!(p.w_ih.data().iter().all(|w| w.abs() < 0.5)); // 1/√4
    /// assert_eq!(p, LstmParams::random(2, 4, 3, 1));
    /// assert_ne!(p, LstmParams::random(2, 4, 3, 2));
    /// ```
    pub fn random(input: usize, hidden: usize, output: usize, seed: u64) -> Self {
        let h = hidden;
        let h4 = elems("LstmParams::random", "4·hidden", &[4, h]);
        LstmParams {
            w_ih: init_uniform(&[h4, input], h, seed, 0),
            w_hh: init_uniform(&[h4, h], h, seed, 1),
            b_ih: init_uniform(&[h4], h, seed, 2),
            b_hh: init_uniform(&[h4], h, seed, 3),
            w_out: init_uniform(&[output, h], h, seed, 4),
            b_out: init_uniform(&[output], h, seed, 5),
        }
    }
}

/// ∂L/∂(everything) after [`LstmBptt::run`], with dz(t) = ∂L/∂z(t)
/// (`[B×4H]`, blocks i, f, g, o) and e(t) = ŷ(t) − onehot(y(t)):
///
/// ```text
/// w_ih = Σ_t dz(t)ᵀ·x(t)     w_hh = Σ_t dz(t)ᵀ·h(t−1)     b_ih = b_hh = Σ_t Σ_b dz(t)
/// w_out = Σ_t e(t)ᵀ·h(t)     b_out = Σ_t Σ_b e(t)         x(t) = dz(t)·W_ih
/// h0 = dz(1)·W_hh            c0 = dc(1) ⊙ f(1)
/// ```
///
/// ```
/// use tapegrad::reference::{LstmBptt, LstmParams};
/// let p = LstmParams::<f64>::random(1, 2, 2, 3);
/// let mut r = LstmBptt::new(1, 1, 2, 2, 2, true);
/// r.run(&p, &[0.5, -1.0], &[0.0; 2], &[0.0; 2], &[0, 1]);
/// let g = r.grads();
/// assert_eq!(g.w_hh.shape(), &[8, 2]);
/// assert_eq!(g.c0.shape(), &[1, 2]);
/// assert_eq!(g.b_ih, g.b_hh);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LstmGrads<F: Real> {
    /// ∂L/∂W_ih = Σ_t dz(t)ᵀ·x(t), `[4H×I]`.
    pub w_ih: Tensor<F>,
    /// ∂L/∂W_hh = Σ_t dz(t)ᵀ·h(t−1), `[4H×H]`.
    pub w_hh: Tensor<F>,
    /// ∂L/∂b_ih = Σ_t Σ_b dz(t), `[4H]`.
    pub b_ih: Tensor<F>,
    /// ∂L/∂b_hh = Σ_t Σ_b dz(t) (equal to `b_ih`), `[4H]`.
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
    /// ∂L/∂c(0) = dc(1) ⊙ f(1), `[B×H]`.
    pub c0: Tensor<F>,
}

impl<F: Real> LstmGrads<F> {
    /// The six parameter gradients in PyTorch's order plus the readout:
    /// `[w_ih, w_hh, b_ih, b_hh, w_out, b_out]` (the same order for
    /// [`RnnGrads::params`](super::RnnGrads::params)).
    ///
    /// ```
    /// use tapegrad::reference::{LstmBptt, LstmParams};
    /// let p = LstmParams::<f64>::random(1, 2, 2, 0);
    /// let mut r = LstmBptt::new(1, 1, 2, 2, 1, false);
    /// r.run(&p, &[1.0], &[0.0, 0.0], &[0.0, 0.0], &[1]);
    /// let g = r.grads();
    /// assert_eq!(g.params()[1], &g.w_hh);
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

/// Hand-written BPTT for an LSTM with a softmax readout and a summed
/// cross-entropy loss; all buffers are allocated by [`LstmBptt::new`] and
/// reused by every [`LstmBptt::run`].
///
/// ```text
/// z(t) = x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh,   i, f, o = σ(z_i, z_f, z_o),  g = tanh z_g
/// c(t) = f ⊙ c(t−1) + i ⊙ g      h(t) = o ⊙ tanh c(t)
/// o(t) = h(t)·W_outᵀ + b_out     L = Σ_t Σ_b CE(o(t)_b, y(t)_b)
/// ```
///
/// The GEMM structure is the RNN's ([`RnnBptt`](super::RnnBptt)): the
/// input projection, the readout, dh's readout terms and all weight
/// gradients are one GEMM each over T·B rows; only `h(t−1)·W_hhᵀ` forward
/// and `dz(t+1)·W_hh` backward are per step. Each step's gates, cell and
/// hidden state (forward) or its four gate gradients and the cell carry
/// (backward) are one fused pass.
///
/// ```
/// use tapegrad::reference::{LstmBptt, LstmParams};
/// use tapegrad::Tensor;
///
/// let (b, i, h, o, t) = (2, 3, 8, 4, 5);
/// let mut p = LstmParams::<f64>::random(i, h, o, 11);
/// let mut bptt = LstmBptt::new(b, i, h, o, t, false);
/// let x = Tensor::<f64>::randn(&[t, b, i], 12);
/// let (h0, c0) = (vec![0.0; b * h], vec![0.0; b * h]);
/// let y: Vec<usize> = (0..t * b).map(|k| (k * 7) % o).collect();
/// let before = bptt.run(&p, x.data(), &h0, &c0, &y);
/// // one small step against the gradient lowers the loss
/// let g = bptt.grads().clone();
/// for (w, dw) in [(&mut p.w_ih, &g.w_ih), (&mut p.w_hh, &g.w_hh), (&mut p.w_out, &g.w_out)] {
///     w.data_mut().iter_mut().zip(dw.data()).for_each(|(w, d)| *w -= 0.01 * d);
/// }
/// assert!(bptt.run(&p, x.data(), &h0, &c0, &y) < before);
/// ```
pub struct LstmBptt<F: Real> {
    dims: Dims,
    /// h(0), …, h(T) as `[(T+1)×B×H]`.
    hs: Vec<F>,
    /// c(0), …, c(T) as `[(T+1)×B×H]`.
    cs: Vec<F>,
    /// tanh c(1), …, tanh c(T) as `[T×B×H]`, kept for backward.
    tc: Vec<F>,
    /// z(t) for all t as `[T·B×4H]`, overwritten by the gate values
    /// i, f, g, o once step t is computed.
    gates: Vec<F>,
    /// The logits o(t) as `[T·B×O]`, overwritten in place by e(t).
    err: Vec<F>,
    /// dh(t) for all t, `[T·B×H]`.
    dh: Vec<F>,
    /// dz(t) for all t, `[T·B×4H]`.
    dz: Vec<F>,
    /// The cell-gradient carry dc(t+1) ⊙ f(t+1), `[B×H]`.
    dc: Vec<F>,
    /// b_ih + b_hh, `[4H]`.
    bias: Vec<F>,
    /// W_ihᵀ and W_hhᵀ, reordered once per run so every product with them is
    /// row-major (the faster GEMM path; the tape layers do the same).
    w_ih_t: Vec<F>,
    w_hh_t: Vec<F>,
    grads: LstmGrads<F>,
}

impl<F: Real> fmt::Debug for LstmBptt<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LstmBptt")
            .field("dtype", &F::NAME)
            .field("dims", &self.dims)
            .field("input_grad", &self.grads.x.is_some())
            .finish()
    }
}

const RUN: &str = "LstmBptt::run";

impl<F: Real> LstmBptt<F> {
    /// Allocates every buffer for `steps` steps of a batch of `batch`
    /// sequences: an LSTM `input → hidden`, a readout `hidden → output`.
    /// With `input_grad`, `run` also computes ∂L/∂x(t) = dz(t)·W_ih.
    ///
    /// # Panics
    /// If `steps`, `batch`, `hidden` or `output` is 0 (`input` may be 0), or
    /// a buffer size overflows.
    ///
    /// ```
    /// use tapegrad::reference::LstmBptt;
    /// let r = LstmBptt::<f32>::new(4, 10, 32, 10, 25, true);
    /// assert_eq!(r.hidden_states().len(), 25 * 4 * 32);
    /// assert_eq!(r.grads().x.as_ref().unwrap().shape(), &[25, 4, 10]);
    /// ```
    #[track_caller]
    pub fn new(
        batch: usize,
        input: usize,
        hidden: usize,
        output: usize,
        steps: usize,
        input_grad: bool,
    ) -> Self {
        const OP: &str = "LstmBptt::new";
        let d = Dims::new(OP, batch, input, hidden, output, steps);
        let h4 = elems(OP, "4H", &[4, hidden]);
        let states = elems(OP, "the hidden states", &[steps + 1, batch, hidden]);
        let per_step = elems(OP, "dh", &[steps, batch, hidden]);
        let gates = elems(OP, "the gates", &[steps, batch, h4]);
        let err = elems(OP, "the logits", &[steps, batch, output]);
        elems(OP, "W_ih", &[h4, input]);
        elems(OP, "W_hh", &[h4, hidden]);
        elems(OP, "W_out", &[output, hidden]);
        elems(OP, "x", &[steps, batch, input]);
        let bh = batch * hidden;
        LstmBptt {
            dims: d,
            hs: vec![F::zero(); states],
            cs: vec![F::zero(); states],
            tc: vec![F::zero(); per_step],
            gates: vec![F::zero(); gates],
            err: vec![F::zero(); err],
            dh: vec![F::zero(); per_step],
            dz: vec![F::zero(); gates],
            dc: vec![F::zero(); bh],
            bias: vec![F::zero(); h4],
            w_ih_t: vec![F::zero(); h4 * input],
            w_hh_t: vec![F::zero(); h4 * hidden],
            grads: LstmGrads {
                w_ih: Tensor::zeros(&[h4, input]),
                w_hh: Tensor::zeros(&[h4, hidden]),
                b_ih: Tensor::zeros(&[h4]),
                b_hh: Tensor::zeros(&[h4]),
                w_out: Tensor::zeros(&[output, hidden]),
                b_out: Tensor::zeros(&[output]),
                x: input_grad.then(|| Tensor::zeros(&[steps, batch, input])),
                h0: Tensor::zeros(&[batch, hidden]),
                c0: Tensor::zeros(&[batch, hidden]),
            },
        }
    }

    /// Runs forward and backward; returns `L = Σ_t Σ_b CE(o(t)_b, y(t)_b)`
    /// and leaves every gradient in [`LstmBptt::grads`].
    ///
    /// `x` is `[T×B×I]` row-major, `h0` and `c0` are `[B×H]`, `targets` is
    /// `[T×B]` class indices.
    ///
    /// # Panics
    /// With a message naming the argument if a length, a parameter shape or
    /// a target index does not fit the sizes given to [`LstmBptt::new`].
    ///
    /// ```
    /// use tapegrad::reference::{LstmBptt, LstmParams};
    /// // With W_out = 0 and b_out = 0 every logit is 0: each of the T·B
    /// // cross-entropies is ln O, and nothing flows back into the LSTM.
    /// let mut p = LstmParams::<f64>::random(2, 3, 4, 5);
    /// p.w_out.data_mut().fill(0.0);
    /// p.b_out.data_mut().fill(0.0);
    /// let mut r = LstmBptt::new(1, 2, 3, 4, 3, false);
    /// let loss = r.run(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[0.0; 3], &[0.5; 3], &[0, 1, 3]);
    /// assert!((loss - 3.0 * 4f64.ln()).abs() < 1e-12);
    /// assert!(r.grads().c0.data().iter().all(|&g| g == 0.0));
    /// ```
    #[track_caller]
    pub fn run(&mut self, p: &LstmParams<F>, x: &[F], h0: &[F], c0: &[F], targets: &[usize]) -> F {
        self.check(p, x, h0, c0, targets);
        let Dims {
            batch: b,
            input: ni,
            hidden: nh,
            output: no,
            steps: nt,
        } = self.dims;
        let rows = self.dims.rows();
        let h4 = 4 * nh;
        let bh = b * nh;
        let b4h = b * h4;
        let LstmBptt {
            hs,
            cs,
            tc,
            gates,
            err,
            dh,
            dz,
            dc,
            bias,
            w_ih_t,
            w_hh_t,
            grads,
            ..
        } = self;
        let w_ih = MatRef::row_major(p.w_ih.data(), h4, ni);
        let w_hh = MatRef::row_major(p.w_hh.data(), h4, nh);
        let w_ih_t = forward_operand(&p.w_ih, b, w_ih_t);
        let w_hh_t = forward_operand(&p.w_hh, b, w_hh_t);
        let w_out = MatRef::row_major(p.w_out.data(), no, nh);
        let xm = MatRef::row_major(x, rows, ni);

        // ---- forward ----
        add_into(bias, p.b_ih.data(), p.b_hh.data());
        hs[..bh].copy_from_slice(h0);
        cs[..bh].copy_from_slice(c0);
        // z(t) ← x(t)·W_ihᵀ for all t: one GEMM over T·B rows.
        F::gemm(MatMut::row_major(gates, rows, h4), xm, w_ih_t, false);
        for t in 0..nt {
            let z = &mut gates[t * b4h..(t + 1) * b4h];
            // z(t) += h(t−1)·W_hhᵀ
            F::gemm(
                MatMut::row_major(z, b, h4),
                MatRef::row_major(&hs[t * bh..(t + 1) * bh], b, nh),
                w_hh_t,
                true,
            );
            let (c_done, c_todo) = cs.split_at_mut((t + 1) * bh);
            lstm_cell_forward(
                z,
                bias,
                &c_done[t * bh..],
                &mut c_todo[..bh],
                &mut tc[t * bh..(t + 1) * bh],
                &mut hs[(t + 1) * bh..(t + 2) * bh],
            );
        }
        // Readout and loss for all steps, e = ŷ − onehot in place.
        let h_all = MatRef::row_major(&hs[bh..], rows, nh);
        F::gemm(MatMut::row_major(err, rows, no), h_all, w_out.t(), false);
        let loss = softmax_xent_rows(err, p.b_out.data(), targets, grads.b_out.data_mut());

        // ---- backward ----
        let e = MatRef::row_major(&err[..], rows, no);
        F::gemm(
            MatMut::row_major(grads.w_out.data_mut(), no, nh),
            e.t(),
            h_all,
            false,
        );
        // dh(t) ← e(t)·W_out for all t.
        F::gemm(MatMut::row_major(dh, rows, nh), e, w_out, false);
        dc.fill(F::zero());
        let db = grads.b_ih.data_mut();
        db.fill(F::zero());
        for t in (0..nt).rev() {
            let dh_t = &mut dh[t * bh..(t + 1) * bh];
            let (dz_upto, dz_after) = dz.split_at_mut((t + 1) * b4h);
            if t + 1 < nt {
                // dh(t) += dz(t+1)·W_hh
                F::gemm(
                    MatMut::row_major(dh_t, b, nh),
                    MatRef::row_major(&dz_after[..b4h], b, h4),
                    w_hh,
                    true,
                );
            }
            // The four gate gradients of step t, dc carried to step t−1,
            // and db += dz(t), in one pass.
            lstm_cell_backward(
                &mut dz_upto[t * b4h..],
                &gates[t * b4h..(t + 1) * b4h],
                &cs[t * bh..(t + 1) * bh],
                &tc[t * bh..(t + 1) * bh],
                dh_t,
                dc,
                db,
            );
        }
        grads.b_hh.data_mut().copy_from_slice(grads.b_ih.data());
        // dc(0) = dc(1) ⊙ f(1): what the carry holds after step 1.
        grads.c0.data_mut().copy_from_slice(dc);
        grads_from_dz(
            MatRef::row_major(&dz[..], rows, h4),
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

    /// The gradients of the last [`LstmBptt::run`] (zeros before the first).
    ///
    /// ```
    /// use tapegrad::reference::{LstmBptt, LstmParams};
    /// let p = LstmParams::<f64>::random(1, 1, 2, 0);
    /// let mut r = LstmBptt::new(1, 1, 1, 2, 1, false);
    /// r.run(&p, &[1.0], &[0.0], &[0.0], &[1]);
    /// let g = r.grads();
    /// // one step from h(0) = 0: dW_hh = dz(1)ᵀ·h(0) = 0
    /// assert_eq!(g.w_hh.data(), &[0.0; 4]);
    /// // and from c(0) = 0: dz_f = dc ⊙ c(0) ⊙ f(1 − f) = 0
    /// assert_eq!(g.b_ih.data()[1], 0.0);
    /// ```
    pub fn grads(&self) -> &LstmGrads<F> {
        &self.grads
    }

    /// h(1), …, h(T) of the last [`LstmBptt::run`] as `[T×B×H]` row-major.
    ///
    /// ```
    /// use tapegrad::reference::{LstmBptt, LstmParams};
    /// let p = LstmParams::<f64>::random(1, 2, 2, 0);
    /// let mut r = LstmBptt::new(1, 1, 2, 2, 3, false);
    /// r.run(&p, &[0.1, 0.2, 0.3], &[0.0; 2], &[0.0; 2], &[0, 1, 0]);
    /// // h = o ⊙ tanh c with o ∈ (0, 1): |h| < 1
    /// assert!(r.hidden_states().iter().all(|h| h.abs() < 1.0));
    /// assert_eq!(r.hidden_states().len(), 3 * 2);
    /// ```
    pub fn hidden_states(&self) -> &[F] {
        &self.hs[self.dims.batch * self.dims.hidden..]
    }

    #[track_caller]
    fn check(&self, p: &LstmParams<F>, x: &[F], h0: &[F], c0: &[F], targets: &[usize]) {
        let Dims {
            batch: b,
            input: i,
            hidden: h,
            output: o,
            steps: t,
        } = self.dims;
        expect_shape(RUN, "w_ih", &p.w_ih, &[4 * h, i], "[4H×I]");
        expect_shape(RUN, "w_hh", &p.w_hh, &[4 * h, h], "[4H×H]");
        expect_shape(RUN, "b_ih", &p.b_ih, &[4 * h], "[4H]");
        expect_shape(RUN, "b_hh", &p.b_hh, &[4 * h], "[4H]");
        expect_shape(RUN, "w_out", &p.w_out, &[o, h], "[O×H]");
        expect_shape(RUN, "b_out", &p.b_out, &[o], "[O]");
        expect_len(RUN, "x", x.len(), t * b * i, "T·B·I");
        expect_len(RUN, "h0", h0.len(), b * h, "B·H");
        expect_len(RUN, "c0", c0.len(), b * h, "B·H");
        expect_len(RUN, "targets", targets.len(), t * b, "T·B");
        expect_targets(RUN, targets, o);
    }
}

/// One forward step for every batch row: `z` (`[B×4H]`, holding
/// x·W_ihᵀ + h·W_hhᵀ) gets the bias and becomes the gate values
/// [i | f | g | o]; then c = f ⊙ c_prev + i ⊙ g, tc = tanh c, h = o ⊙ tc.
fn lstm_cell_forward<F: Real>(
    z: &mut [F],
    bias: &[F],
    c_prev: &[F],
    c: &mut [F],
    tc: &mut [F],
    h: &mut [F],
) {
    let nh = bias.len() / 4;
    let rows = z
        .chunks_exact_mut(4 * nh)
        .zip(c_prev.chunks_exact(nh))
        .zip(c.chunks_exact_mut(nh))
        .zip(tc.chunks_exact_mut(nh))
        .zip(h.chunks_exact_mut(nh));
    for ((((zr, cp), cr), tr), hr) in rows {
        for (v, &c) in zr.iter_mut().zip(bias) {
            *v = *v + c;
        }
        // The tape's activation kernels (SIMD for f32), one call per block.
        let (zif, rest) = zr.split_at_mut(2 * nh);
        let (zg, zo) = rest.split_at_mut(nh);
        F::sigmoid_in_place(zif);
        F::tanh_in_place(zg);
        F::sigmoid_in_place(zo);
        let (zi, zf) = zif.split_at(nh);
        for j in 0..nh {
            let cn = zf[j] * cp[j] + zi[j] * zg[j];
            cr[j] = cn;
            tr[j] = cn;
        }
        F::tanh_in_place(tr);
        for ((hv, &o), &t) in hr.iter_mut().zip(zo.iter()).zip(tr.iter()) {
            *hv = o * t;
        }
    }
}

/// One backward step for every batch row. In: the gate values, c(t−1),
/// tanh c(t), dh(t), and `dc` = dc(t+1) ⊙ f(t+1). Out: dz(t) (`[B×4H]`),
/// `dc` = dc(t) ⊙ f(t) for step t−1, and `db += dz(t)` summed over rows.
fn lstm_cell_backward<F: Real>(
    dz: &mut [F],
    gates: &[F],
    c_prev: &[F],
    tc: &[F],
    dh: &[F],
    dc: &mut [F],
    db: &mut [F],
) {
    let nh = db.len() / 4;
    let one = F::one();
    let (dbi, rest) = db.split_at_mut(nh);
    let (dbf, rest) = rest.split_at_mut(nh);
    let (dbg, dbo) = rest.split_at_mut(nh);
    let rows = dz
        .chunks_exact_mut(4 * nh)
        .zip(gates.chunks_exact(4 * nh))
        .zip(c_prev.chunks_exact(nh))
        .zip(tc.chunks_exact(nh))
        .zip(dh.chunks_exact(nh))
        .zip(dc.chunks_exact_mut(nh));
    for (((((dzr, gr), cp), tr), dhr), dcr) in rows {
        let (dzi, rest) = dzr.split_at_mut(nh);
        let (dzf, rest) = rest.split_at_mut(nh);
        let (dzg, dzo) = rest.split_at_mut(nh);
        let (gi, rest) = gr.split_at(nh);
        let (gf, rest) = rest.split_at(nh);
        let (gg, go) = rest.split_at(nh);
        for j in 0..nh {
            let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
            let (t, d_h) = (tr[j], dhr[j]);
            // dc(t) = dh ⊙ o ⊙ (1 − tanh²c) + dc(t+1) ⊙ f(t+1)
            let d_c = d_h * o * (one - t * t) + dcr[j];
            let (vi, vf, vg, vo) = (
                d_c * g * i * (one - i),
                d_c * cp[j] * f * (one - f),
                d_c * i * (one - g * g),
                d_h * t * o * (one - o),
            );
            dzi[j] = vi;
            dzf[j] = vf;
            dzg[j] = vg;
            dzo[j] = vo;
            dbi[j] = dbi[j] + vi;
            dbf[j] = dbf[j] + vf;
            dbg[j] = dbg[j] + vg;
            dbo[j] = dbo[j] + vo;
            dcr[j] = d_c * f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0),
                "{what}[{k}]: got {g}, want {w}"
            );
        }
    }

    fn t1(v: &[f64]) -> Tensor<f64> {
        Tensor::from_slice(v, &[v.len()]).unwrap()
    }

    fn t2(v: &[f64], r: usize, c: usize) -> Tensor<f64> {
        Tensor::from_slice(v, &[r, c]).unwrap()
    }

    /// H = I = 1 (so 4H = 4 gate rows i, f, g, o), O = 2, T = 2, B = 1.
    /// Numbers to 17 digits (computed at 30 digits, step by step as here).
    ///
    /// W_ih = [0.5, −0.4, 0.3, 0.2]ᵀ, W_hh = [0.1, 0.6, −0.7, 0.25]ᵀ,
    /// b_ih = [0.05, 0.3, −0.1, 0], b_hh = [−0.15, 0.2, 0, 0.1]
    ///   (b = b_ih + b_hh = [−0.1, 0.5, −0.1, 0.1]),
    /// W_out = [0.8; −0.6], b_out = [0.1, 0], x = [1, −1.5], h0 = 0.2,
    /// c0 = −0.4, y = [0, 1].
    ///
    /// Forward, t = 1: z = W_ih·1 + W_hh·0.2 + b
    ///   z = [0.5+0.02−0.1, −0.4+0.12+0.5, 0.3−0.14−0.1, 0.2+0.05+0.1]
    ///     = [0.42, 0.22, 0.06, 0.35]
    ///   i = σ(0.42) = 0.60348324986472629   f = σ(0.22) = 0.55477923510721476
    ///   g = tanh 0.06 = 0.059928103529143502  o = σ(0.35) = 0.58661757891733006
    ///   c(1) = f·(−0.4) + i·g = −0.18574608736688861
    ///   tanh c(1) = −0.18363898237681068,  h(1) = o·tanh c(1) = −0.10772585523672692
    ///   logits = [0.8 h(1) + 0.1, −0.6 h(1)] = [0.013819315810618463, 0.064635513142036153]
    ///   ŷ = [0.48729868375202107, 0.51270131624797893], L(1) = −ln ŷ[0] = 0.71887803024032399
    /// Forward, t = 2: z = W_ih·(−1.5) + W_hh·h(1) + b
    ///   z = [−0.86077258552367269, 1.0353644868579638, −0.47459190133429116, −0.22693146380918173]
    ///   i = 0.2971779556749959  f = 0.73795459090296225
    ///   g = −0.44190200905272595  o = 0.44350935530649375
    ///   c(2) = f·c(1) + i·g = −0.2683957135736208
    ///   tanh c(2) = −0.2621314134989692,  h(2) = −0.11625773420650776
    ///   logits = [0.0069938126347937888, 0.069754640523904658]
    ///   ŷ = [0.48431494120772529, 0.51568505879227471], L(2) = −ln ŷ[1] = 0.66225905101844241
    ///   L = 1.3811370812587664
    /// Backward:
    ///   e(1) = ŷ(1) − [1, 0] = [−0.51270131624797893, 0.51270131624797893]
    ///   e(2) = ŷ(2) − [0, 1] = [0.48431494120772529, −0.48431494120772529]
    ///   t = 2: dh = e(2)·W_out = 0.4843…·0.8 + (−0.4843…)·(−0.6) = 1.4·0.48431494120772529
    ///        = 0.67804091769081541
    ///     dc = dh·o·(1 − tanh²c(2)) + 0 = 0.28005432607179384
    ///     dz_i = dc·g·i(1−i) = −0.025848195361515775
    ///     dz_f = dc·c(1)·f(1−f) = −0.010059309127994578
    ///     dz_g = dc·i·(1−g²) = 0.066973821853854324
    ///     dz_o = dh·tanh c(2)·o(1−o) = −0.043866766734224687
    ///     into dh(1): W_hhᵀdz = −0.066468771994202523;  into dc(1): dc·f(2) = 0.20666737562691542
    ///   t = 1: dh = e(1)·W_out + W_hhᵀdz(2) = −1.4·0.51270131624797893 − 0.066468771994202523
    ///        = −0.71778184274717050 − 0.066468771994202523 = −0.78425061474137303
    ///     dc = dh·o·(1 − tanh²c(1)) + 0.20666… = −0.23787325294709141
    ///     dz_i = −0.0034111663937376155   dz_f = dc·c(0)·f(1−f) = 0.023501804640118616
    ///     dz_g = −0.14303697242726801     dz_o = 0.034924228652512267
    ///   dh0 = W_hhᵀ dz(1) = 0.12261690400691308,  dc0 = dc(1)·f(1) = −0.13196714132245239
    ///   dW_ih = dz(1)·1 + dz(2)·(−1.5), dW_hh = dz(1)·h0 + dz(2)·h(1), db = dz(1) + dz(2)
    ///   dx(t) = W_ihᵀ dz(t),  dW_out = e(1)ᵀh(1) + e(2)ᵀh(2),  db_out = e(1) + e(2)
    #[test]
    fn hand_case() {
        let p = LstmParams {
            w_ih: t2(&[0.5, -0.4, 0.3, 0.2], 4, 1),
            w_hh: t2(&[0.1, 0.6, -0.7, 0.25], 4, 1),
            b_ih: t1(&[0.05, 0.3, -0.1, 0.0]),
            b_hh: t1(&[-0.15, 0.2, 0.0, 0.1]),
            w_out: t2(&[0.8, -0.6], 2, 1),
            b_out: t1(&[0.1, 0.0]),
        };
        let mut r = LstmBptt::new(1, 1, 1, 2, 2, true);
        let loss = r.run(&p, &[1.0, -1.5], &[0.2], &[-0.4], &[0, 1]);
        let tol = 1e-14;
        assert_close("loss", &[loss], &[1.3811370812587664], tol);
        assert_close(
            "h",
            r.hidden_states(),
            &[-0.10772585523672693, -0.11625773420650776],
            tol,
        );
        let g = r.grads();
        assert_close(
            "dw_ih",
            g.w_ih.data(),
            &[
                0.03536112664853605,
                0.03859076833211048,
                -0.2434977052080495,
                0.1007243787538493,
            ],
            tol,
        );
        assert_close(
            "dw_hh",
            g.w_hh.data(),
            &[
                0.0021022856728977616,
                0.005784008606927553,
                -0.03582220672313225,
                0.01171043069341681,
            ],
            tol,
        );
        let db = [
            -0.029259361755253392,
            0.013442495512124038,
            -0.07606315057341369,
            -0.00894253808171242,
        ];
        assert_close("db_ih", g.b_ih.data(), &db, tol);
        assert_close("db_hh", g.b_hh.data(), &db, tol);
        assert_close(
            "dw_out",
            g.w_out.data(),
            &[-0.0010741699333590348, 0.0010741699333590348],
            tol,
        );
        assert_close(
            "db_out",
            g.b_out.data(),
            &[-0.02838637504025364, 0.02838637504025364],
            tol,
        );
        assert_close(
            "dx",
            g.x.as_ref().unwrap().data(),
            &[-0.0470325510505942, 0.002418419179751303],
            tol,
        );
        assert_close("dh0", g.h0.data(), &[0.12261690400691308], tol);
        assert_close("dc0", g.c0.data(), &[-0.13196714132245238], tol);
    }

    type Dims5 = (usize, usize, usize, usize, usize);

    fn loss_of(
        dims: Dims5,
        p: &LstmParams<f64>,
        x: &[f64],
        h0: &[f64],
        c0: &[f64],
        y: &[usize],
    ) -> f64 {
        let (b, i, h, o, t) = dims;
        LstmBptt::new(b, i, h, o, t, false).run(p, x, h0, c0, y)
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

    fn fd_check(seed: u64, scale: f64) -> f64 {
        let dims @ (b, i, h, o, t) = (2, 3, 3, 3, 4);
        let mut p = LstmParams::<f64>::random(i, h, o, seed);
        // Scale the weights up so that the gates leave their linear range.
        for w in [&mut p.w_ih, &mut p.w_hh, &mut p.b_ih, &mut p.w_out] {
            w.data_mut().iter_mut().for_each(|v| *v *= scale);
        }
        let x = Tensor::<f64>::randn(&[t, b, i], seed + 100).into_vec();
        let h0 = Tensor::<f64>::randn(&[b, h], seed + 200).into_vec();
        let c0 = Tensor::<f64>::randn(&[b, h], seed + 300).into_vec();
        let y: Vec<usize> = (0..t * b).map(|k| (k * 5 + seed as usize) % o).collect();
        let mut r = LstmBptt::new(b, i, h, o, t, true);
        r.run(&p, &x, &h0, &c0, &y);
        let g = r.grads().clone();
        let mut worst = 0.0f64;
        let mut record = |name: &str, (rel, k): (f64, usize)| {
            assert!(rel <= 1e-6, "d{name}[{k}]: relative error {rel:e}");
            worst = worst.max(rel);
        };
        type Pick = fn(&mut LstmParams<f64>) -> &mut Tensor<f64>;
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
                loss_of(dims, &q, &x, &h0, &c0, &y)
            });
            record(name, res);
        }
        let mut v = x.clone();
        let res = fd_worst(g.x.as_ref().unwrap().data(), &mut v, |v| {
            loss_of(dims, &p, v, &h0, &c0, &y)
        });
        record("x", res);
        let mut v = h0.clone();
        let res = fd_worst(g.h0.data(), &mut v, |v| loss_of(dims, &p, &x, v, &c0, &y));
        record("h0", res);
        let mut v = c0.clone();
        let res = fd_worst(g.c0.data(), &mut v, |v| loss_of(dims, &p, &x, &h0, v, &y));
        record("c0", res);
        worst
    }

    #[test]
    fn finite_differences() {
        for (seed, scale) in [(1, 1.0), (2, 1.0), (3, 3.0)] {
            let w = fd_check(seed, scale);
            eprintln!("lstm seed {seed} scale {scale}: worst relative FD error {w:e}");
        }
    }

    #[test]
    fn f32_agrees_with_f64() {
        let (b, i, h, o, t) = (3, 5, 16, 7, 10);
        let p64 = LstmParams::<f64>::random(i, h, o, 9);
        let p32 = LstmParams::<f32> {
            w_ih: p64.w_ih.cast(),
            w_hh: p64.w_hh.cast(),
            b_ih: p64.b_ih.cast(),
            b_hh: p64.b_hh.cast(),
            w_out: p64.w_out.cast(),
            b_out: p64.b_out.cast(),
        };
        let x = Tensor::<f64>::randn(&[t, b, i], 10);
        let h0 = Tensor::<f64>::randn(&[b, h], 11);
        let c0 = Tensor::<f64>::randn(&[b, h], 12);
        let y: Vec<usize> = (0..t * b).map(|k| (k * 3) % o).collect();
        let mut r64 = LstmBptt::new(b, i, h, o, t, true);
        let mut r32 = LstmBptt::<f32>::new(b, i, h, o, t, true);
        let l64 = r64.run(&p64, x.data(), h0.data(), c0.data(), &y);
        let l32 = r32.run(
            &p32,
            x.cast().data(),
            h0.cast().data(),
            c0.cast().data(),
            &y,
        );
        assert!(((l32 as f64) - l64).abs() < 1e-5 * l64.abs());
        let (g64, g32) = (r64.grads(), r32.grads());
        let pairs = [
            (&g64.w_ih, &g32.w_ih),
            (&g64.w_hh, &g32.w_hh),
            (&g64.b_ih, &g32.b_ih),
            (&g64.w_out, &g32.w_out),
            (&g64.b_out, &g32.b_out),
            (&g64.h0, &g32.h0),
            (&g64.c0, &g32.c0),
            (g64.x.as_ref().unwrap(), g32.x.as_ref().unwrap()),
        ];
        for (a, c) in pairs {
            let scale = a.data().iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let diff = a.max_abs_diff(&c.cast());
            assert!(diff < 1e-4 * scale, "{diff} vs scale {scale}");
        }
    }

    #[test]
    fn reuse_leaves_no_stale_state_and_single_step_works() {
        let (b, i, h, o, t) = (2, 2, 3, 3, 3);
        let p = LstmParams::<f64>::random(i, h, o, 21);
        let xa = Tensor::<f64>::randn(&[t, b, i], 22).into_vec();
        let xb = Tensor::<f64>::randn(&[t, b, i], 23).into_vec();
        let (h0, c0) = (vec![0.1; b * h], vec![-0.2; b * h]);
        let y = [0, 1, 2, 2, 1, 0];
        let mut reused = LstmBptt::new(b, i, h, o, t, true);
        reused.run(&p, &xa, &h0, &c0, &y);
        let lb = reused.run(&p, &xb, &h0, &c0, &y);
        let mut fresh = LstmBptt::new(b, i, h, o, t, true);
        assert_eq!(fresh.run(&p, &xb, &h0, &c0, &y), lb);
        assert_eq!(fresh.grads(), reused.grads());
        assert_eq!(fresh.hidden_states(), reused.hidden_states());

        // T = 1, B = 1: dc0 = dc(1)·f(1) with dc(1) = dh·o·(1 − tanh²c(1)),
        // and dz_f = dc(1)·c(0)·f(1−f) so dc0 = dz_f / (c(0)·(1 − f)).
        let p = LstmParams::<f64>::random(2, 1, 2, 5);
        let mut r = LstmBptt::new(1, 2, 1, 2, 1, false);
        r.run(&p, &[1.0, -1.0], &[0.5], &[0.8], &[1]);
        let g = r.grads();
        let zf = p.w_ih.at(&[1, 0]) - p.w_ih.at(&[1, 1])
            + p.w_hh.at(&[1, 0]) * 0.5
            + p.b_ih.data()[1]
            + p.b_hh.data()[1];
        let f = 1.0 / (1.0 + (-zf).exp());
        let dz_f = g.b_ih.data()[1]; // = dz_f(1) when T = B = 1
        assert!((g.c0.data()[0] - dz_f / (0.8 * (1.0 - f))).abs() < 1e-14);
        assert!(g.x.is_none());
    }

    #[test]
    fn saturated_gates_stay_finite() {
        // Pre-activations of ±1000 would overflow a naive 1/(1 + e^−z).
        let mut p = LstmParams::<f32>::random(1, 2, 2, 3);
        p.w_ih.data_mut().iter_mut().for_each(|w| *w *= 4000.0);
        let mut r = LstmBptt::new(1, 1, 2, 2, 3, true);
        let loss = r.run(&p, &[1.0, -1.0, 0.5], &[0.0; 2], &[0.0; 2], &[0, 1, 0]);
        assert!(loss.is_finite());
        let g = r.grads();
        for t in [&g.w_ih, &g.w_hh, &g.b_ih, &g.h0, &g.c0] {
            assert!(t.data().iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    #[should_panic(expected = "LstmBptt::run: c0 has 2 elements, expected B·H = 3")]
    fn wrong_c0_length_panics() {
        let p = LstmParams::<f64>::random(1, 3, 2, 5);
        let mut r = LstmBptt::new(1, 1, 3, 2, 1, false);
        r.run(&p, &[0.0], &[0.0; 3], &[0.0; 2], &[0]);
    }

    #[test]
    #[should_panic(expected = "parameter w_ih has shape [4, 1], expected [4H×I] = [8, 1]")]
    fn wrong_parameter_shape_panics() {
        let mut p = LstmParams::<f64>::random(1, 2, 2, 5);
        p.w_ih = Tensor::zeros(&[4, 1]);
        let mut r = LstmBptt::new(1, 1, 2, 2, 1, false);
        r.run(&p, &[0.0], &[0.0; 2], &[0.0; 2], &[0]);
    }

    #[test]
    #[should_panic(expected = "LstmBptt::new: steps must be at least 1")]
    fn zero_steps_panics() {
        LstmBptt::<f64>::new(1, 1, 1, 1, 0, false);
    }
}
