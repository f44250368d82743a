//! The "lstm" eval of GradBench (taken from Microsoft's ADBench), written
//! once and shared through `#[path]` by `tests/gradbench_lstm.rs`,
//! `benches/gradbench_lstm.rs` and `examples/gradbench_lstm.rs`, so the test
//! checks the very code the benchmark times.
//!
//! The model (GradBench `cpp/gradbench/evals/lstm.hpp`, the objective every
//! tool's gradient is validated against): a *diagonal* LSTM — every weight
//! is a vector multiplied elementwise — of `l` layers and width `b` over a
//! text of `c` characters, each character its code point in `b` bits.
//!
//! - Parameters: `main` is `[2l, 4b]` — row `2i` holds layer i's weights,
//!   row `2i+1` its biases, each row the four gate blocks in the order
//!   forget, input, output, change; `extra` is `[3, b]` — the input scale,
//!   the output scale, the output bias. The initial state is `[2l, b]`:
//!   row `2i` layer i's hidden, row `2i+1` its cell.
//! - One layer, elementwise over the `b` lanes, with `x` the layer's input
//!   and `h`, `c` its state:
//!   `f = σ(x·w_f + b_f)`, `i = σ(h·w_i + b_i)`, `o = σ(x·w_o + b_o)`,
//!   `g = tanh(h·w_g + b_g)`, `c ← c·f + i·g`, `h ← o·tanh(c)`.
//!   (The input and change gates read the previous hidden state, the
//!   forget and output gates the input: the eval's own quirk, kept.)
//! - One step: `y = (((x(t)·extra₀) → layer 0 → … → layer l−1) ·extra₁) + extra₂`.
//! - Loss: with `lse = ln(Σ_j e^{y_j} + 2)` (the `+ 2` is the eval's, kept),
//!   `loss = −Σ_{t=0}^{c−2} Σ_j x_j(t+1)·(y_j(t) − lse(t)) / ((c−1)·b)`.
//!
//! Inputs follow GradBench's generator (`python/gradbench/gradbench/evals/lstm/run.py`,
//! `gen_lstm`): the text's first `c` characters as bit rows (most
//! significant bit first), then `state`, `main` and `extra` drawn in that
//! order from U[0, 1) (`numpy.random.random`; here a seeded PCG64 stands in
//! for numpy's generator, so the numbers differ but not their law). The
//! text is the first `c` characters of the bundled corpus
//! (`data/kjv-genesis-deuteronomy.txt`, ASCII); GradBench's own text has
//! code points that need 14 bits, so `b` is fixed at [`BITS`] = 14 here to
//! give the eval's sizes (ASCII leaves the top 7 bits zero).
//!
//! Three ways to compute it: [`primal`], a plain `f64` loop (the
//! "manual" primal — the yardstick GradBench divides every tool's time
//! by); [`tape_objective`], the same formula recorded on a tape the way a
//! user would write it — per step, elementwise ops on `[1, b]` rows, the
//! loss summed step by step; and [`gradient`], its reverse sweep.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use tapegrad::{ParamKey, ParamStore, Tape, Tensor, Var};

/// Bits per character, GradBench's `b` for its text.
pub const BITS: usize = 14;

/// The four sizes the benchmark runs: (layers, characters).
pub const SIZES: [(usize, usize); 4] = [(2, 1024), (4, 1024), (2, 4096), (4, 4096)];

/// The benchmark id of a size: `l2_c1024`.
pub fn size_name(l: usize, c: usize) -> String {
    format!("l{l}_c{c}")
}

/// The bundled corpus.
const TEXT: &str = include_str!("../../data/kjv-genesis-deuteronomy.txt");

/// One instance of the eval: sizes and row-major data.
#[derive(Debug, Clone)]
pub struct Input {
    /// Layers.
    pub l: usize,
    /// Characters.
    pub c: usize,
    /// Bits per character (= hidden width).
    pub b: usize,
    /// `[2l, 4b]`.
    pub main: Vec<f64>,
    /// `[3, b]`.
    pub extra: Vec<f64>,
    /// `[2l, b]`.
    pub state: Vec<f64>,
    /// `[c, b]`, 0/1 bits.
    pub seq: Vec<f64>,
}

impl Input {
    /// The eval with `l` layers over the first `c` characters, parameters
    /// drawn from a PCG64 seeded with `seed` (see the module docs).
    ///
    /// # Panics
    /// If the corpus has fewer than `c` characters, `c < 2` or `l == 0`.
    pub fn generate(l: usize, c: usize, seed: u64) -> Input {
        assert!(l > 0 && c >= 2, "gradbench lstm: l = {l}, c = {c}");
        let b = BITS;
        let mut seq = Vec::with_capacity(c * b);
        let mut chars = TEXT.chars();
        for _ in 0..c {
            let ch = chars.next().expect("the corpus has enough characters") as u32;
            assert!(ch < 1 << b, "code point {ch} needs more than {b} bits");
            seq.extend((0..b).rev().map(|k| f64::from((ch >> k) & 1)));
        }
        let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
        let mut draw = |n: usize| -> Vec<f64> { (0..n).map(|_| rng.random::<f64>()).collect() };
        let state = draw(2 * l * b);
        let main = draw(2 * l * 4 * b);
        let extra = draw(3 * b);
        Input {
            l,
            c,
            b,
            main,
            extra,
            state,
            seq,
        }
    }

    /// Number of parameters (`main` then `extra`, the gradient's length).
    pub fn n_params(&self) -> usize {
        self.main.len() + self.extra.len()
    }

    /// Parameter `k` of `main ++ extra`, writable (finite differences).
    pub fn param_mut(&mut self, k: usize) -> &mut f64 {
        let m = self.main.len();
        if k < m {
            &mut self.main[k]
        } else {
            &mut self.extra[k - m]
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The objective as a plain `f64` loop, no tape: GradBench's "manual"
/// primal, the yardstick of every ratio.
pub fn primal(inp: &Input) -> f64 {
    let (l, c, b) = (inp.l, inp.c, inp.b);
    let (main, extra) = (&inp.main[..], &inp.extra[..]);
    let mut state = inp.state.clone();
    let mut y = vec![0.0; b];
    let mut total = 0.0;
    for t in 0..c - 1 {
        let x = &inp.seq[t * b..(t + 1) * b];
        for j in 0..b {
            y[j] = x[j] * extra[j];
        }
        for layer in 0..l {
            let w = &main[2 * layer * 4 * b..(2 * layer + 1) * 4 * b];
            let bias = &main[(2 * layer + 1) * 4 * b..(2 * layer + 2) * 4 * b];
            // The layer's input: y for layer 0, else the hidden state the
            // layer below has just written (copied into y).
            let (below, here) = state.split_at_mut(2 * layer * b);
            if layer > 0 {
                y.copy_from_slice(&below[2 * (layer - 1) * b..(2 * layer - 1) * b]);
            }
            let (h, cell) = here[..2 * b].split_at_mut(b);
            for j in 0..b {
                let f = sigmoid(y[j] * w[j] + bias[j]);
                let i = sigmoid(h[j] * w[b + j] + bias[b + j]);
                let o = sigmoid(y[j] * w[2 * b + j] + bias[2 * b + j]);
                let g = (h[j] * w[3 * b + j] + bias[3 * b + j]).tanh();
                cell[j] = cell[j] * f + i * g;
                h[j] = o * cell[j].tanh();
            }
        }
        let top = &state[2 * (l - 1) * b..(2 * l - 1) * b];
        for j in 0..b {
            y[j] = top[j] * extra[b + j] + extra[2 * b + j];
        }
        let lse = (y.iter().map(|v| v.exp()).sum::<f64>() + 2.0).ln();
        let gold = &inp.seq[(t + 1) * b..(t + 2) * b];
        for j in 0..b {
            total += gold[j] * (y[j] - lse);
        }
    }
    -total / ((c - 1) * b) as f64
}

/// The parameters in a store, as a model would hold them.
pub struct Model {
    pub store: ParamStore<f64>,
    pub main: ParamKey,
    pub extra: ParamKey,
}

impl Model {
    pub fn new(inp: &Input) -> Model {
        let (l, b) = (inp.l, inp.b);
        let mut store = ParamStore::new();
        let main = store.insert(
            "main",
            Tensor::from_slice(&inp.main, &[2 * l, 4 * b]).expect("main"),
        );
        let extra = store.insert(
            "extra",
            Tensor::from_slice(&inp.extra, &[3, b]).expect("extra"),
        );
        Model { store, main, extra }
    }
}

/// The objective recorded on `tape` the natural way: the parameters bound
/// once and cut into `[1, b]` rows, then per step and layer the gate
/// formulas as elementwise ops, and the loss summed step by step.
pub fn tape_objective<'t>(tape: &'t Tape<f64>, model: &Model, inp: &Input) -> Var<'t, f64> {
    let (l, c, b) = (inp.l, inp.c, inp.b);
    let main = tape.param(&model.store, model.main);
    let extra = tape.param(&model.store, model.extra);
    let state = tape.constant_from_slice(&inp.state, &[2 * l, b]);
    let seq = tape.constant_from_slice(&inp.seq, &[c, b]);

    // [1, b] rows of the parameters: block k of row r of `main`.
    let block = |r: usize, k: usize| main.slice(0, r, 1).slice(1, k * b, b);
    struct Layer<'t> {
        w: [Var<'t, f64>; 4],
        bias: [Var<'t, f64>; 4],
    }
    let layers: Vec<Layer<'_>> = (0..l)
        .map(|i| Layer {
            w: [0, 1, 2, 3].map(|k| block(2 * i, k)),
            bias: [0, 1, 2, 3].map(|k| block(2 * i + 1, k)),
        })
        .collect();
    let (in_w, out_w, out_b) = (
        extra.slice(0, 0, 1),
        extra.slice(0, 1, 1),
        extra.slice(0, 2, 1),
    );
    let mut h: Vec<Var<'_, f64>> = (0..l).map(|i| state.slice(0, 2 * i, 1)).collect();
    let mut cell: Vec<Var<'_, f64>> = (0..l).map(|i| state.slice(0, 2 * i + 1, 1)).collect();

    let mut x = seq.slice(0, 0, 1);
    let mut total: Option<Var<'_, f64>> = None;
    for t in 0..c - 1 {
        let mut input = x * in_w;
        for (i, p) in layers.iter().enumerate() {
            let [wf, wi, wo, wg] = p.w;
            let [bf, bi, bo, bg] = p.bias;
            let f = (input * wf + bf).sigmoid();
            let ig = (h[i] * wi + bi).sigmoid();
            let o = (input * wo + bo).sigmoid();
            let g = (h[i] * wg + bg).tanh();
            cell[i] = cell[i] * f + ig * g;
            h[i] = o * cell[i].tanh();
            input = h[i];
        }
        let y = input * out_w + out_b;
        let lse = (y.exp().sum() + 2.0).log();
        let gold = seq.slice(0, t + 1, 1);
        let term = (gold * (y - lse)).sum();
        total = Some(match total {
            None => term,
            Some(s) => s + term,
        });
        x = gold;
    }
    total.expect("c ≥ 2") * (-1.0 / ((c - 1) * b) as f64)
}

/// The objective and its gradient (`main` then `extra`, row-major) on
/// `tape`, which is reset afterwards (its buffers kept for the next call).
pub fn gradient(tape: &mut Tape<f64>, model: &Model, inp: &Input) -> (f64, Vec<f64>) {
    let (loss, grads) = {
        let loss = tape_objective(tape, model, inp);
        (loss.item(), loss.backward())
    };
    let mut g = grads.param(model.main).expect("main").data().to_vec();
    g.extend_from_slice(grads.param(model.extra).expect("extra").data());
    tape.reset_with(grads);
    (loss, g)
}
