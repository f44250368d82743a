//! The cost of second-order products next to the plain gradient of the same
//! step (`tapegrad::second_order`).
//!
//! The step is `benches/bptt.rs`'s task on the library's layers: a
//! one-layer RNN (tanh) or LSTM over T steps, the readout
//! `o(t) = h(t)·W_outᵀ + b_out` over all T·B rows, softmax cross-entropy
//! summed over time and batch. Sizes S (B = 1, I = 64, H = 100, O = 64,
//! T = 25) and M (B = 32, I = 64, H = 128, O = 64, T = 50) from
//! `benches/common/sizes.rs`, as there (L is left out: an HVP at L takes
//! seconds per iteration).
//!
//! Criterion groups `hvp/{rnn,lstm}/{S,M}`, each with:
//!
//! - `grad_f64`: loss and gradient, one f64 tape reused across iterations
//!   (how a training loop runs);
//! - `hvp_f64`: [`tapegrad::second_order::hvp_in`] on `Dual<f64>` — loss,
//!   gradient and H·v, one dual tape reused across iterations (like the
//!   gradient's);
//! - `gnvp_f64`: [`tapegrad::second_order::gnvp_in`], the Gauss–Newton
//!   product with the same readout;
//! - `grad_f32` and `hvp_f32`: the same in f32.
//!
//! One GEMM thread (`tapegrad::set_num_threads(1)`), as `bptt`'s default.
//!
//! ```text
//! cargo bench --bench second_order
//! ```

#[path = "common/sizes.rs"]
mod sizes;

use criterion::{criterion_group, criterion_main, Criterion};
use sizes::{Config, CONFIGS};
use std::hint::black_box;
use std::time::Duration;
use tapegrad::forward::Dual;
use tapegrad::layers::{Linear, Lstm, RecurrentConfig, Rnn};
use tapegrad::second_order::{gnvp_in, hvp_in, Readout};
use tapegrad::{ParamStore, ParamVec, Real, Reduction, Tape, Tensor, Var};

enum Layer {
    Rnn(Rnn),
    Lstm(Lstm),
}

struct Model {
    layer: Layer,
    head: Linear,
    x: Tensor<f64>,
    targets: Vec<usize>,
}

impl Model {
    fn new(c: &Config, lstm: bool, store: &mut ParamStore<f64>) -> Self {
        let cfg = RecurrentConfig::new(c.i, c.h);
        let layer = if lstm {
            Layer::Lstm(Lstm::new(store, "rnn", cfg, 0))
        } else {
            Layer::Rnn(Rnn::new(store, "rnn", cfg, 0))
        };
        Model {
            layer,
            head: Linear::new(store, "decoder", c.h, c.o, true, 0),
            x: Tensor::randn(&[c.t, c.b, c.i], 11),
            targets: (0..c.t * c.b).map(|k| (k * 7 + 3) % c.o).collect(),
        }
    }

    fn logits<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        s: &ParamStore<F>,
        x: &Tensor<F>,
    ) -> Var<'t, F> {
        let x = tape.constant(x.clone());
        let out = match &self.layer {
            Layer::Rnn(l) => l.forward(tape, s, x, None),
            Layer::Lstm(l) => l.forward(tape, s, x, None),
        };
        self.head.forward(tape, s, out.stacked_rows())
    }

    fn loss<'t, F: Real>(&self, tape: &'t Tape<F>, s: &ParamStore<F>, x: &Tensor<F>) -> Var<'t, F> {
        self.logits(tape, s, x)
            .cross_entropy(&self.targets, Reduction::Sum)
    }
}

fn second_order(c: &mut Criterion) {
    tapegrad::set_num_threads(1);
    for (kind, lstm) in [("rnn", false), ("lstm", true)] {
        for cfg in CONFIGS.iter().filter(|c| c.name != "L") {
            let mut store = ParamStore::<f64>::new();
            let m = Model::new(cfg, lstm, &mut store);
            let v = ParamVec::randn_like(&store, 1);
            let store32: ParamStore<f32> = store.map(|_, p| p.value.cast());
            let v32 = v.map(|_, t| t.cast::<f32>());
            let (x, x32) = (m.x.clone(), m.x.cast::<f32>());
            let (xd, xd32) = (m.x.cast::<Dual<f64>>(), m.x.cast::<Dual<f32>>());
            let readout = Readout::SoftmaxCrossEntropy {
                targets: &m.targets,
                reduction: Reduction::Sum,
            };

            let mut g = c.benchmark_group(format!("hvp/{kind}/{}", cfg.name));
            g.warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3));
            let mut tape = Tape::<f64>::new();
            g.bench_function("grad_f64", |b| {
                b.iter(|| {
                    let grads = m.loss(&tape, &store, &x).backward();
                    black_box(grads.params_norm());
                    tape.reset_with(grads);
                })
            });
            let mut dual = Tape::<Dual<f64>>::new();
            g.bench_function("hvp_f64", |b| {
                b.iter(|| black_box(hvp_in(&mut dual, &store, &v, |t, s| m.loss(t, s, &xd)).hv))
            });
            g.bench_function("gnvp_f64", |b| {
                b.iter(|| {
                    let out = gnvp_in(&mut dual, &store, &v, &readout, |t, s| m.logits(t, s, &xd));
                    black_box(out.gv)
                })
            });
            let mut tape32 = Tape::<f32>::new();
            g.bench_function("grad_f32", |b| {
                b.iter(|| {
                    let grads = m.loss(&tape32, &store32, &x32).backward();
                    black_box(grads.params_norm());
                    tape32.reset_with(grads);
                })
            });
            let mut dual32 = Tape::<Dual<f32>>::new();
            g.bench_function("hvp_f32", |b| {
                b.iter(|| {
                    black_box(hvp_in(&mut dual32, &store32, &v32, |t, s| m.loss(t, s, &xd32)).hv)
                })
            });
            g.finish();
        }
    }
}

criterion_group!(benches, second_order);
criterion_main!(benches);
