//! An LSTM language model over one long sequence (readout and softmax
//! cross-entropy at every step, summed), its gradient computed in one of
//! four memory regimes ([`Mode`]). Shared by `tests/checkpointing.rs`,
//! `tests/checkpoint_memory.rs` and `examples/bptt_memory.rs` (through
//! `#[path]`), so the tests check the very code the memory sweep measures.

#![allow(dead_code)]

use std::sync::Arc;
use tapegrad::layers::{Checkpointing, Linear, Lstm, RecurrentConfig, State};
use tapegrad::{ParamStore, Real, Reduction, Tape, Tensor, Var};

/// How the gradient of one sequence is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Full BPTT, every step's activations on one tape.
    Full,
    /// Full BPTT with the layer's own checkpointing: the LSTM's steps in
    /// checkpointed segments, the readout outside (so every h(t) and the
    /// softmax probabilities of every step stay on the tape).
    Layer(Checkpointing),
    /// Full BPTT, user code: segments of k steps, each one
    /// `Tape::checkpoint` over the LSTM, the readout and the loss, from
    /// (h, c, parameters) to (h, c, the segment's loss).
    Segments(usize),
    /// Truncated BPTT: windows of k steps, each its own forward and
    /// backward on a reset tape, the state carried as values; the
    /// gradients of the windows summed (another objective than full BPTT).
    Truncated(usize),
}

/// The model and its data.
pub struct LongLm<F: Real> {
    pub store: ParamStore<F>,
    pub lstm: Lstm,
    pub head: Linear,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
    pub classes: usize,
    /// [T×B×I], row-major.
    pub x: Arc<Vec<F>>,
    /// One label per step and sequence.
    pub y: Arc<Vec<usize>>,
}

impl<F: Real> LongLm<F> {
    /// A model of the given sizes and `steps` steps of random data.
    pub fn new(batch: usize, input: usize, hidden: usize, classes: usize, steps: usize) -> Self {
        let mut store = ParamStore::new();
        let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(input, hidden), 11);
        let head = Linear::new(&mut store, "head", hidden, classes, true, 12);
        let x = Tensor::<F>::randn(&[steps, batch, input], 21).into_vec();
        let y = (0..steps * batch)
            .map(|k| (k * 7 + k / 3) % classes)
            .collect();
        LongLm {
            store,
            lstm,
            head,
            batch,
            input,
            hidden,
            classes,
            x: Arc::new(x),
            y: Arc::new(y),
        }
    }

    /// Steps of data.
    pub fn steps(&self) -> usize {
        self.x.len() / (self.batch * self.input)
    }

    /// The loss and every parameter's gradient (in `store.keys()` order)
    /// of the whole sequence, computed as `mode` says.
    pub fn gradient(&self, mode: Mode) -> (f64, Vec<Tensor<F>>) {
        let (b, i, h) = (self.batch, self.input, self.hidden);
        let steps = self.steps();
        if let Mode::Truncated(k) = mode {
            return self.truncated(k);
        }
        let tape = Tape::new();
        let loss = match mode {
            Mode::Full | Mode::Layer(_) => {
                let mut lstm = self.lstm.clone();
                if let Mode::Layer(how) = mode {
                    lstm.set_checkpoint(how);
                }
                let x = tape.constant_from_slice(&self.x, &[steps, b, i]);
                let out = lstm.forward(&tape, &self.store, x, None);
                x.release(); // read by no rule once the layer has run (checkpointed)
                let rows = out.stacked_rows();
                for o in &out.outputs {
                    o.release(); // concat read them; pinned ones stay
                }
                let logits = self.head.forward(&tape, &self.store, rows);
                let loss = logits.cross_entropy(&self.y, Reduction::Sum);
                logits.release();
                loss
            }
            Mode::Segments(k) => {
                let params: Vec<Var<'_, F>> = self
                    .store
                    .keys()
                    .map(|key| tape.param(&self.store, key))
                    .collect();
                let (mut hs, mut cs) = (tape.zeros(&[b, h]), tape.zeros(&[b, h]));
                let mut loss: Option<Var<'_, F>> = None;
                for t0 in (0..steps).step_by(k) {
                    let len = k.min(steps - t0);
                    let mut inputs = vec![hs, cs];
                    inputs.extend_from_slice(&params);
                    let (x, y) = (Arc::clone(&self.x), Arc::clone(&self.y));
                    let (lstm, head) = (self.lstm.clone(), self.head.clone());
                    let out = tape.checkpoint(&inputs, move |t, v| {
                        // Every parameter comes in `v`: any store will do.
                        let store = ParamStore::new();
                        let xs =
                            t.constant_from_slice(&x[t0 * b * i..(t0 + len) * b * i], &[len, b, i]);
                        let init = State::new(vec![v[0]], Some(vec![v[1]]));
                        let out = lstm.forward(t, &store, xs, Some(&init));
                        let logits = head.forward(t, &store, out.stacked_rows());
                        let seg = logits.cross_entropy(&y[t0 * b..(t0 + len) * b], Reduction::Sum);
                        let c = out.state.c.as_ref().expect("an LSTM has c")[0];
                        vec![out.state.h[0], c, seg]
                    });
                    (hs, cs) = (out[0], out[1]);
                    loss = Some(match loss {
                        Some(l) => l + out[2],
                        None => out[2],
                    });
                }
                loss.expect("at least one step").sum()
            }
            Mode::Truncated(_) => unreachable!(),
        };
        let g = loss.backward();
        let grads = self
            .store
            .keys()
            .map(|key| g.param(key).expect("bound").clone())
            .collect();
        (loss.item().to_f64_lossy(), grads)
    }

    fn truncated(&self, k: usize) -> (f64, Vec<Tensor<F>>) {
        let (b, i) = (self.batch, self.input);
        let steps = self.steps();
        let mut tape = Tape::new();
        let mut carried = self.lstm.zero_state(&tape, b).to_tensors();
        tape.reset();
        let mut total = 0.0;
        let mut sum: Option<Vec<Tensor<F>>> = None;
        for t0 in (0..steps).step_by(k) {
            let len = k.min(steps - t0);
            let (loss, next, g) = {
                let x =
                    tape.constant_from_slice(&self.x[t0 * b * i..(t0 + len) * b * i], &[len, b, i]);
                let out = self
                    .lstm
                    .forward(&tape, &self.store, x, Some(&carried.bind(&tape)));
                let logits = self.head.forward(&tape, &self.store, out.stacked_rows());
                let loss = logits.cross_entropy(&self.y[t0 * b..(t0 + len) * b], Reduction::Sum);
                logits.release();
                (
                    loss.item().to_f64_lossy(),
                    out.state.to_tensors(),
                    loss.backward(),
                )
            };
            total += loss;
            let grads: Vec<Tensor<F>> = self
                .store
                .keys()
                .map(|key| g.param(key).expect("bound").clone())
                .collect();
            sum = Some(match sum {
                None => grads,
                Some(mut s) => {
                    for (a, g) in s.iter_mut().zip(&grads) {
                        for (p, &q) in a.data_mut().iter_mut().zip(g.data()) {
                            *p = *p + q;
                        }
                    }
                    s
                }
            });
            tape.reset_with(g);
            carried = next;
        }
        (total, sum.expect("at least one window"))
    }
}
