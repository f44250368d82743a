//! A recurrent cell the crate does not ship, written in this file alone,
//! with everything the built-in cells get: the minimal gated unit (MGU,
//! Zhou et al. 2016, "Minimal gated unit for recurrent neural networks"),
//! one gate instead of the GRU's two:
//!
//! ```text
//! f = σ(x·W_fᵀ + b_f + h₋·U_fᵀ + c_f)          forget gate
//! n = tanh(x·W_nᵀ + b_n + (f⊙h₋)·U_nᵀ)         candidate
//! h = (1 − f)⊙h₋ + f⊙n = h₋ + f⊙(n − h₋)
//! ```
//!
//! `weight_ih` holds [W_f; W_n] (two gate blocks, hoisted over chunks of
//! steps by the engine), `weight_hh` holds U_f (one block, reordered and
//! its gradient deferred by the engine), and U_n is a further parameter
//! `weight_hn`. The example
//!
//! 1. runs the cell stacked (2 layers) and bidirectional on a padded batch
//!    with per-sequence lengths,
//! 2. checks its gradients with `tapegrad::gradcheck` against central
//!    differences (f64), and
//! 3. trains it with Adam to tell whether a bit sequence of varying length
//!    holds more ones than zeros, until it gets ≥ 90 % of a held-out batch
//!    right.
//!
//! Run: `cargo run --release --example custom_cell`

use tapegrad::gradcheck::gradcheck;
use tapegrad::layers::{
    Cell, CellSpec, Init, Linear, Recurrent, RecurrentConfig, RunOptions, State, Step,
};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{ParamStore, Real, Reduction, Tape, Tensor, Var};

/// The minimal gated unit (public so `tests/custom_cell.rs` can run this
/// very cell under proptest).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mgu;

impl Cell for Mgu {
    fn name(&self) -> &str {
        "mgu"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 2) // x·[W_f; W_n]ᵀ + [b_f; b_n]
            .recurrent_gates(1) //  h₋·U_fᵀ + c_f
            .fold_hidden_bias(false)
            .param("weight_hn", &[hidden, hidden], Init::Uniform) // U_n
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (h, hs, tape) = (state[0], s.hidden(), s.tape());
        let x = s.input();
        let f = {
            let _g = tape.scope("forget_gate");
            (x.slice(1, 0, hs) + s.recurrent(h)).sigmoid()
        };
        let n = {
            let _g = tape.scope("candidate");
            (x.slice(1, hs, hs) + (f * h).matmul_t(s.param("weight_hn"))).tanh()
        };
        vec![h + f * (n - h)]
    }
}

const T: usize = 10;
const B: usize = 32;
const HIDDEN: usize = 16;

/// A batch of bit sequences [T×B×1] (zero-padded past each length), their
/// lengths (3..=T) and labels (1 when more than half the bits are ones).
fn batch(seed: u64) -> (Tensor<f64>, Vec<usize>, Vec<usize>) {
    let u = Tensor::<f64>::uniform(&[T + 1, B], 0.0, 1.0, seed).expect("finite bounds");
    let u = u.data();
    let lengths: Vec<usize> = (0..B)
        .map(|b| 3 + (u[T * B + b] * (T - 2) as f64) as usize)
        .collect();
    let mut x = vec![0.0; T * B];
    let mut labels = vec![0; B];
    for b in 0..B {
        let ones = (0..lengths[b]).filter(|&t| u[t * B + b] < 0.5).count();
        for t in 0..lengths[b] {
            x[t * B + b] = if u[t * B + b] < 0.5 { 1.0 } else { -1.0 };
        }
        labels[b] = usize::from(2 * ones > lengths[b]);
    }
    (
        Tensor::from_vec(x, &[T, B, 1]).expect("T·B values"),
        lengths,
        labels,
    )
}

struct Model {
    rnn: Recurrent<Mgu>,
    head: Linear,
}

impl Model {
    fn new(store: &mut ParamStore<f64>) -> Self {
        let cfg = RecurrentConfig::new(1, HIDDEN)
            .layers(2)
            .bidirectional(true);
        Model {
            rnn: Recurrent::new(store, "mgu", cfg, 1),
            head: Linear::new(store, "head", 2 * HIDDEN, 2, true, 2),
        }
    }

    /// Class scores [B×2] from the top layer's final forward and reverse
    /// states (padded steps leave the state as it was, so these are the
    /// states after each sequence's last valid bit and after its first).
    fn logits<'t>(
        &self,
        tape: &'t Tape<f64>,
        store: &ParamStore<f64>,
        x: &Tensor<f64>,
        lengths: &[usize],
    ) -> Var<'t, f64> {
        let x = tape.constant(x.clone());
        let opts = RunOptions {
            lengths: Some(lengths),
            dropout_seed: None,
        };
        let out = self.rnn.forward_with(tape, store, x, None, opts);
        let n = out.state.h.len();
        let last = Var::concat(&out.state.h[n - 2..], 1);
        self.head.forward(tape, store, last)
    }
}

fn accuracy(logits: &Tensor<f64>, labels: &[usize]) -> f64 {
    let right = labels
        .iter()
        .enumerate()
        .filter(|&(b, &y)| usize::from(logits.data()[2 * b + 1] > logits.data()[2 * b]) == y)
        .count();
    right as f64 / labels.len() as f64
}

fn main() {
    let mut store = ParamStore::<f64>::new();
    let model = Model::new(&mut store);
    println!("parameters:");
    for (_, p) in store.iter() {
        println!("  {:<28} {:?}", p.name, p.value.shape());
    }

    // 1. Stacked, bidirectional, per-sequence lengths.
    let (x, lengths, _) = batch(7);
    let tape = Tape::new();
    let xv = tape.constant(x.clone());
    let opts = RunOptions {
        lengths: Some(&lengths),
        dropout_seed: None,
    };
    let out = model.rnn.forward_with(&tape, &store, xv, None, opts);
    assert_eq!(out.outputs.len(), T);
    assert_eq!(out.outputs[0].shape().as_slice(), &[B, 2 * HIDDEN]);
    assert!(tape.listing().contains("mgu.l1_reverse/t=0/forget_gate"));
    // Past a sequence's length its outputs are zeros.
    let short = (0..B).find(|&b| lengths[b] < T).expect("a padded sequence");
    let padded = out.outputs[T - 1].to_tensor();
    assert!(padded.data()[short * 2 * HIDDEN..(short + 1) * 2 * HIDDEN]
        .iter()
        .all(|&v| v == 0.0));
    println!("forward: {} steps, {} nodes on the tape", T, tape.len());

    // 2. Gradients against central differences: d/dx and d/dh(0) of a
    // weighted sum of every output, through both layers and directions.
    let (x, lengths, _) = batch(8);
    let small_x = x.data()[..4 * 3].to_vec();
    let small_x = Tensor::from_vec(small_x, &[4, 3, 1]).expect("4·3 values");
    let h0 = Tensor::randn(&[4, 3, HIDDEN], 9);
    let weights = Tensor::randn(&[4 * 3, 2 * HIDDEN], 10);
    let lens = [4, 2, 3];
    let report = gradcheck(&[small_x, h0], |tape, v| {
        let init = State::new(
            (0..4)
                .map(|i| v[1].slice(0, i, 1).reshape(&[3, HIDDEN]))
                .collect(),
            None,
        );
        let opts = RunOptions {
            lengths: Some(&lens),
            dropout_seed: None,
        };
        let out = model
            .rnn
            .forward_with(tape, &store, v[0], Some(&init), opts);
        (out.stacked_rows() * tape.constant(weights.clone())).sum()
    });
    println!(
        "gradcheck: worst relative error {:.2e}",
        report.max_rel_error()
    );
    assert!(report.passes(1e-8, 1e-6), "{report:?}");
    let _ = lengths;

    // 3. Train until it learns.
    let mut adam = Adam::new(0.01);
    let mut tape = Tape::new();
    let (test_x, test_len, test_y) = batch(1_000_000);
    let mut acc = 0.0;
    for step in 0..400u64 {
        let (x, lengths, labels) = batch(step);
        let grads = {
            let loss = model
                .logits(&tape, &store, &x, &lengths)
                .cross_entropy(&labels, Reduction::Mean);
            if step % 50 == 0 {
                println!("step {step:>3}: loss {:.4}", loss.item());
            }
            loss.backward()
        };
        adam.step(&mut store, &grads);
        tape.reset_with(grads);
        if step % 50 == 49 {
            acc = accuracy(
                &model.logits(&tape, &store, &test_x, &test_len).to_tensor(),
                &test_y,
            );
            tape.reset();
            println!("          held-out accuracy {:.1} %", 100.0 * acc);
            if acc >= 0.97 {
                break;
            }
        }
    }
    assert!(
        acc >= 0.9,
        "the MGU did not learn majority: {:.1} %",
        100.0 * acc
    );
    println!("learned: {:.1} % of a held-out batch", 100.0 * acc);
}
