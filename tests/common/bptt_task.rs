//! The BPTT task both sides compute, written once for the tape: a
//! recurrent layer over T steps, the readout `o(t) = h(t)·W_outᵀ + b_out`
//! over all T·B rows in one matmul, softmax cross-entropy summed over time
//! and batch, then `backward()`. Shared by `tests/reference_vs_tape.rs` and
//! `benches/bptt.rs` (through `#[path]`), so the property tests check the
//! very code the benchmarks time.

#![allow(dead_code)]

#[path = "user_lstm.rs"]
mod user_lstm;

use tapegrad::layers::{Linear, Lstm, Recurrent, RecurrentConfig, Rnn};
use tapegrad::reference::{LstmParams, RnnParams};
use tapegrad::{Grads, Nonlinearity, ParamKey, ParamStore, Real, Reduction, Tape, Tensor, Var};
use user_lstm::UserLstm;

/// Which recurrent cell the task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Rnn(Nonlinearity),
    Lstm,
    /// The LSTM of `user_lstm.rs`, written through the public interface.
    UserLstm,
}

/// A tape model holding the same numbers as a reference parameter set.
pub struct TapeModel<F: Real> {
    pub store: ParamStore<F>,
    pub cell: Cell,
    rnn: Option<Rnn>,
    lstm: Option<Lstm>,
    user: Option<Recurrent<UserLstm>>,
    head: Linear,
    pub w_ih: ParamKey,
    pub w_hh: ParamKey,
    pub b_ih: ParamKey,
    pub b_hh: ParamKey,
}

fn copy<F: Real>(store: &mut ParamStore<F>, name: &str, t: &Tensor<F>) -> ParamKey {
    let key = store
        .key(name)
        .unwrap_or_else(|| panic!("no parameter {name}"));
    assert_eq!(store.get(key).shape(), t.shape(), "{name}");
    *store.get_mut(key) = t.clone().into_shared();
    key
}

impl<F: Real> TapeModel<F> {
    fn build(cell: Cell, sizes: [usize; 3], chunk: Option<usize>, w: [&Tensor<F>; 6]) -> Self {
        let [input, hidden, output] = sizes;
        let mut store = ParamStore::new();
        let cfg = RecurrentConfig::new(input, hidden)
            .nonlinearity(match cell {
                Cell::Rnn(phi) => phi,
                Cell::Lstm | Cell::UserLstm => Nonlinearity::Tanh,
            })
            .projection_steps(chunk.unwrap_or(0));
        let (mut rnn, mut lstm, mut user) = (None, None, None);
        match cell {
            Cell::Rnn(_) => rnn = Some(Rnn::new(&mut store, "rnn", cfg, 0)),
            Cell::Lstm => lstm = Some(Lstm::new(&mut store, "rnn", cfg, 0)),
            Cell::UserLstm => user = Some(Recurrent::new(&mut store, "rnn", cfg, 0)),
        }
        let head = Linear::new(&mut store, "decoder", hidden, output, true, 0);
        let w_ih = copy(&mut store, "rnn.weight_ih_l0", w[0]);
        let w_hh = copy(&mut store, "rnn.weight_hh_l0", w[1]);
        let b_ih = copy(&mut store, "rnn.bias_ih_l0", w[2]);
        let b_hh = copy(&mut store, "rnn.bias_hh_l0", w[3]);
        copy(&mut store, "decoder.weight", w[4]);
        copy(&mut store, "decoder.bias", w[5]);
        TapeModel {
            store,
            cell,
            rnn,
            lstm,
            user,
            head,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
        }
    }

    /// The tape twin of a reference RNN.
    pub fn rnn(p: &RnnParams<F>, phi: Nonlinearity) -> Self {
        Self::rnn_chunked(p, phi, None)
    }

    /// The same, hoisting the input projection `chunk` steps at a time
    /// (`None`: the layer's default).
    pub fn rnn_chunked(p: &RnnParams<F>, phi: Nonlinearity, chunk: Option<usize>) -> Self {
        let (h, i) = (p.w_ih.shape()[0], p.w_ih.shape()[1]);
        let o = p.w_out.shape()[0];
        Self::build(
            Cell::Rnn(phi),
            [i, h, o],
            chunk,
            [&p.w_ih, &p.w_hh, &p.b_ih, &p.b_hh, &p.w_out, &p.b_out],
        )
    }

    /// The tape twin of a reference LSTM.
    pub fn lstm(p: &LstmParams<F>) -> Self {
        Self::lstm_chunked(p, None)
    }

    /// The same, hoisting the input projection `chunk` steps at a time.
    pub fn lstm_chunked(p: &LstmParams<F>, chunk: Option<usize>) -> Self {
        Self::lstm_like(Cell::Lstm, p, chunk)
    }

    /// The tape twin of a reference LSTM, its cell written through the
    /// public `Cell` interface outside the crate.
    pub fn user_lstm(p: &LstmParams<F>) -> Self {
        Self::lstm_like(Cell::UserLstm, p, None)
    }

    fn lstm_like(cell: Cell, p: &LstmParams<F>, chunk: Option<usize>) -> Self {
        let (h4, i) = (p.w_ih.shape()[0], p.w_ih.shape()[1]);
        let o = p.w_out.shape()[0];
        Self::build(
            cell,
            [i, h4 / 4, o],
            chunk,
            [&p.w_ih, &p.w_hh, &p.b_ih, &p.b_hh, &p.w_out, &p.b_out],
        )
    }

    /// The same model with the recurrent layer's checkpointing set to
    /// `how` (`benches/bptt.rs`: `lstm_bptt/checkpointed/…`).
    pub fn with_checkpoint(mut self, how: tapegrad::layers::Checkpointing) -> Self {
        for l in self.rnn.iter_mut() {
            l.set_checkpoint(how);
        }
        for l in self.lstm.iter_mut() {
            l.set_checkpoint(how);
        }
        for l in self.user.iter_mut() {
            l.set_checkpoint(how);
        }
        self
    }

    pub fn w_out(&self) -> ParamKey {
        self.head.weight
    }

    pub fn b_out(&self) -> ParamKey {
        self.head.bias.expect("readout has a bias")
    }

    /// The six parameter keys in the order of the reference's
    /// `RnnGrads::params` / `LstmGrads::params`.
    pub fn keys(&self) -> [ParamKey; 6] {
        [
            self.w_ih,
            self.w_hh,
            self.b_ih,
            self.b_hh,
            self.w_out(),
            self.b_out(),
        ]
    }

    /// Forward over all steps + readout + summed cross-entropy on `tape`.
    /// `x` is [T×B×I]; `h0`/`c0` are [B×H] vars. Returns the loss var.
    pub fn loss<'t>(
        &self,
        tape: &'t Tape<F>,
        x: Var<'t, F>,
        h0: Var<'t, F>,
        c0: Option<Var<'t, F>>,
        targets: &[usize],
    ) -> Var<'t, F> {
        let init = tapegrad::layers::State {
            h: vec![h0],
            c: c0.map(|c| vec![c]),
            extra: Vec::new(),
        };
        let out = match (&self.rnn, &self.lstm, &self.user) {
            (Some(r), _, _) => r.forward(tape, &self.store, x, Some(&init)),
            (_, Some(l), _) => l.forward(tape, &self.store, x, Some(&init)),
            (_, _, Some(u)) => u.forward(tape, &self.store, x, Some(&init)),
            _ => unreachable!(),
        };
        let logits = self.head.forward(tape, &self.store, out.stacked_rows());
        let loss = logits.cross_entropy(targets, Reduction::Sum);
        logits.release(); // cross-entropy saved its probabilities
        loss
    }

    /// [`TapeModel::step`] with the input given as a tensor and bound on the
    /// tape as it is: without a copy when it is shared
    /// (`Tensor::into_shared`), as a data set held across steps would be.
    pub fn step_tensor(&self, tape: &Tape<F>, x: &Tensor<F>, targets: &[usize]) -> (F, Grads<F>) {
        self.step_on(tape, tape.constant(x.clone()), targets)
    }

    /// The step from the input `xv` [T×B×I] on `tape`: zero initial state,
    /// the loss, `backward()`.
    fn step_on<'t>(&self, tape: &'t Tape<F>, xv: Var<'t, F>, targets: &[usize]) -> (F, Grads<F>) {
        let (b, h) = (xv.shape()[1], self.hidden());
        let h0 = tape.zeros(&[b, h]);
        let c0 = (!matches!(self.cell, Cell::Rnn(_))).then(|| tape.zeros(&[b, h]));
        let loss = self.loss(tape, xv, h0, c0, targets);
        (loss.item(), loss.backward())
    }

    fn hidden(&self) -> usize {
        match (&self.rnn, &self.lstm, &self.user) {
            (Some(r), _, _) => r.config().hidden_size,
            (_, Some(l), _) => l.config().hidden_size,
            (_, _, Some(u)) => u.config().hidden_size,
            _ => unreachable!(),
        }
    }

    /// One training step's gradient computation: constants for the data
    /// (so no dL/dx is computed), zero initial state, `backward()`.
    pub fn step(
        &self,
        tape: &Tape<F>,
        x: &[F],
        shape: [usize; 3],
        targets: &[usize],
    ) -> (F, Grads<F>) {
        self.step_on(tape, tape.constant_from_slice(x, &shape), targets)
    }
}
