//! What the open cell interface costs and buys: one LSTM training step
//! (the `lstm_bptt` task of `benches/bptt.rs`: forward over T steps,
//! readout over all T·B rows, summed cross-entropy, backward to every
//! parameter) three ways, on the same numbers:
//!
//! - `custom_cell/builtin/{S,M,L}`: `tapegrad::layers::Lstm`;
//! - `custom_cell/user/{S,M,L}`: an LSTM cell written in this file through
//!   the public `Cell` interface, run by `Recurrent`;
//! - `custom_cell/naive/{S,M,L}`: the same LSTM from per-step primitives as
//!   the crate docs first teach (`x_t.matmul_t(w_ih) + b_ih +
//!   h.matmul_t(w_hh) + b_hh`, `chunk`, `sigmoid`/`tanh`, `concat`), no
//!   engine at all.
//!
//! One thread (`cargo bench --bench custom_cell`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;
use tapegrad::layers::{Linear, Lstm, Recurrent, RecurrentConfig};
use tapegrad::{Grads, ParamStore, Reduction, Tape, Tensor, Var};

#[path = "../tests/common/user_lstm.rs"]
mod user_lstm;
use user_lstm::UserLstm;

#[path = "common/sizes.rs"]
mod sizes;

use sizes::{Config, CONFIGS};

/// The layer under test.
enum Layer {
    Builtin(Lstm),
    User(Recurrent<UserLstm>),
    Naive,
}

struct Model {
    store: ParamStore<f32>,
    layer: Layer,
    head: Linear,
}

impl Model {
    fn new(c: &Config, which: &str) -> Self {
        let mut store = ParamStore::new();
        let cfg = RecurrentConfig::new(c.i, c.h);
        // The same seed and parameter order: the same numbers every way.
        let layer = match which {
            "builtin" => Layer::Builtin(Lstm::new(&mut store, "lstm", cfg, 5)),
            "user" => Layer::User(Recurrent::new(&mut store, "lstm", cfg, 5)),
            _ => {
                let _ = Lstm::new(&mut store, "lstm", cfg, 5);
                Layer::Naive
            }
        };
        let head = Linear::new(&mut store, "decoder", c.h, c.o, true, 6);
        Model { store, layer, head }
    }

    /// h(t) for every step, stacked as [T·B × H].
    fn hidden<'t>(&self, tape: &'t Tape<f32>, x: Var<'t, f32>, c: &Config) -> Var<'t, f32> {
        match &self.layer {
            Layer::Builtin(l) => l.forward(tape, &self.store, x, None).stacked_rows(),
            Layer::User(l) => l.forward(tape, &self.store, x, None).stacked_rows(),
            Layer::Naive => {
                let p = |n: &str| tape.param(&self.store, self.store.key(n).expect("created"));
                let (w_ih, w_hh) = (p("lstm.weight_ih_l0"), p("lstm.weight_hh_l0"));
                let (b_ih, b_hh) = (p("lstm.bias_ih_l0"), p("lstm.bias_hh_l0"));
                let mut h = tape.zeros(&[c.b, c.h]);
                let mut cs = tape.zeros(&[c.b, c.h]);
                let mut hs = Vec::with_capacity(c.t);
                for t in 0..c.t {
                    let x_t = x.slice(0, t, 1).reshape(&[c.b, c.i]);
                    let z = x_t.matmul_t(w_ih) + b_ih + h.matmul_t(w_hh) + b_hh;
                    let g = z.chunk(4, 1);
                    cs = g[1].sigmoid() * cs + g[0].sigmoid() * g[2].tanh();
                    h = g[3].sigmoid() * cs.tanh();
                    hs.push(h);
                }
                Var::concat(&hs, 0)
            }
        }
    }

    fn step(
        &self,
        tape: &Tape<f32>,
        x: &Tensor<f32>,
        targets: &[usize],
        c: &Config,
    ) -> (f32, Grads<f32>) {
        let xv = tape.constant_from_slice(x.data(), x.shape());
        let rows = self.hidden(tape, xv, c);
        let logits = self.head.forward(tape, &self.store, rows);
        let loss = logits.cross_entropy(targets, Reduction::Sum);
        logits.release(); // cross-entropy saved its probabilities
        (loss.item(), loss.backward())
    }
}

fn custom_cell(cr: &mut Criterion) {
    tapegrad::set_num_threads(1);
    let mut group = cr.benchmark_group("custom_cell");
    for c in CONFIGS {
        match c.name {
            "L" => group
                .sample_size(10)
                .measurement_time(Duration::from_secs(15)),
            "M" => group
                .sample_size(20)
                .measurement_time(Duration::from_secs(6)),
            _ => group
                .sample_size(40)
                .measurement_time(Duration::from_secs(4)),
        };
        let x = Tensor::<f32>::randn(&[c.t, c.b, c.i], 11);
        let targets: Vec<usize> = (0..c.t * c.b).map(|k| (k * 7 + 3) % c.o).collect();
        for which in ["builtin", "user", "naive"] {
            let model = Model::new(&c, which);
            let mut tape = Tape::new();
            group.bench_function(BenchmarkId::new(which, c.name), |bench| {
                bench.iter(|| {
                    let (loss, grads) = model.step(&tape, &x, &targets, &c);
                    black_box(loss);
                    tape.reset_with(grads);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, custom_cell);
criterion_main!(benches);
