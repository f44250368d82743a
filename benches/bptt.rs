//! Tape vs hand-written BPTT, paired on the same inputs and the same GEMM
//! crate (the body of each side is written once and run on S, M and L).
//!
//! One step = forward over all T steps, readout `o(t) = h(t)·W_outᵀ + b_out`,
//! softmax cross-entropy summed over steps and batch, backward to the
//! gradients of every parameter (no dL/dx on either side: x is data).
//!
//! Criterion ids: `rnn_bptt/{tape,hand}/{S,M,L}`, `lstm_bptt/{tape,hand}/{S,M,L}`,
//! and `gemm/…` for the raw kernel. Threads follow `TAPEGRAD_BENCH_THREADS`
//! (default 1) so 1- and 2-thread runs are separate invocations:
//!
//! ```text
//! cargo bench --bench bptt
//! TAPEGRAD_BENCH_THREADS=2 cargo bench --bench bptt
//! ```

#[path = "../tests/common/bptt_task.rs"]
mod bptt_task;

use bptt_task::TapeModel;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;
use tapegrad::reference::{LstmBptt, LstmParams, RnnBptt, RnnParams};
use tapegrad::tensor::gemm::{MatMut, MatRef};
use tapegrad::{Nonlinearity, Real, Tape, Tensor};

/// A benchmark configuration.
#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    b: usize,
    i: usize,
    h: usize,
    o: usize,
    t: usize,
}

const CONFIGS: [Config; 3] = [
    Config {
        name: "S",
        b: 1,
        i: 64,
        h: 100,
        o: 64,
        t: 25,
    },
    Config {
        name: "M",
        b: 32,
        i: 64,
        h: 128,
        o: 64,
        t: 50,
    },
    Config {
        name: "L",
        b: 64,
        i: 256,
        h: 512,
        o: 256,
        t: 100,
    },
];

fn threads() -> usize {
    std::env::var("TAPEGRAD_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn data(c: &Config) -> (Tensor<f32>, Vec<usize>) {
    let x = Tensor::randn(&[c.t, c.b, c.i], 11);
    let targets = (0..c.t * c.b).map(|k| (k * 7 + 3) % c.o).collect();
    (x, targets)
}

fn tune(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, c: &Config) {
    match c.name {
        "L" => group
            .sample_size(10)
            .measurement_time(Duration::from_secs(20)),
        "M" => group
            .sample_size(20)
            .measurement_time(Duration::from_secs(8)),
        _ => group
            .sample_size(50)
            .measurement_time(Duration::from_secs(5)),
    };
}

fn rnn_bptt(cr: &mut Criterion) {
    tapegrad::set_num_threads(threads());
    let mut group = cr.benchmark_group("rnn_bptt");
    for c in CONFIGS {
        tune(&mut group, &c);
        let p = RnnParams::<f32>::random(c.i, c.h, c.o, 5);
        let (x, targets) = data(&c);
        let shape = [c.t, c.b, c.i];
        let model = TapeModel::rnn(&p, Nonlinearity::Tanh);
        let mut tape = Tape::new();
        group.bench_function(BenchmarkId::new("tape", c.name), |bench| {
            bench.iter(|| {
                let (loss, grads) = model.step(&tape, x.data(), shape, &targets);
                black_box(loss);
                tape.reset_with(grads);
            })
        });
        let mut hand = RnnBptt::new(c.b, c.i, c.h, c.o, c.t, Nonlinearity::Tanh, false);
        let h0 = vec![0.0f32; c.b * c.h];
        group.bench_function(BenchmarkId::new("hand", c.name), |bench| {
            bench.iter(|| black_box(hand.run(&p, x.data(), &h0, &targets)))
        });
    }
    group.finish();
}

fn lstm_bptt(cr: &mut Criterion) {
    tapegrad::set_num_threads(threads());
    let mut group = cr.benchmark_group("lstm_bptt");
    for c in CONFIGS {
        tune(&mut group, &c);
        let p = LstmParams::<f32>::random(c.i, c.h, c.o, 5);
        let (x, targets) = data(&c);
        let shape = [c.t, c.b, c.i];
        let model = TapeModel::lstm(&p);
        let mut tape = Tape::new();
        group.bench_function(BenchmarkId::new("tape", c.name), |bench| {
            bench.iter(|| {
                let (loss, grads) = model.step(&tape, x.data(), shape, &targets);
                black_box(loss);
                tape.reset_with(grads);
            })
        });
        let mut hand = LstmBptt::new(c.b, c.i, c.h, c.o, c.t, false);
        let z = vec![0.0f32; c.b * c.h];
        group.bench_function(BenchmarkId::new("hand", c.name), |bench| {
            bench.iter(|| black_box(hand.run(&p, x.data(), &z, &z, &targets)))
        });
    }
    group.finish();
}

/// The raw kernel, for reading achieved GFLOP/s against: 2·m·k·n FLOPs.
fn gemm(cr: &mut Criterion) {
    tapegrad::set_num_threads(threads());
    let mut group = cr.benchmark_group("gemm");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    // 512³, and the L LSTM shapes: hoisted input projection, one recurrent
    // step, and the hoisted weight gradient.
    for (name, m, k, n) in [
        ("512x512x512", 512, 512, 512),
        ("L_input_6400x256x2048", 6400, 256, 2048),
        ("L_step_64x512x2048", 64, 512, 2048),
        ("L_dw_2048x6400x512", 2048, 6400, 512),
    ] {
        let a = Tensor::<f32>::randn(&[m, k], 1);
        let b = Tensor::<f32>::randn(&[k, n], 2);
        let mut out = vec![0.0f32; m * n];
        group.bench_function(name, |bench| {
            bench.iter(|| {
                f32::gemm(
                    MatMut::row_major(&mut out, m, n),
                    MatRef::row_major(a.data(), m, k),
                    MatRef::row_major(b.data(), k, n),
                    false,
                );
                black_box(out[0]);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, gemm, rnn_bptt, lstm_bptt);
criterion_main!(benches);
