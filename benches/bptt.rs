//! Tape vs hand-written BPTT, paired on the same inputs and the same GEMM
//! crate (the body of each side is written once and run on S, M and L).
//!
//! One step = forward over all T steps, readout `o(t) = h(t)·W_outᵀ + b_out`,
//! softmax cross-entropy summed over steps and batch, backward to the
//! gradients of every parameter (no dL/dx on either side: x is data).
//!
//! Criterion ids: `rnn_bptt/{tape,hand}/{S,M,L}`, `lstm_bptt/{tape,hand}/{S,M,L}`,
//! `lstm_bptt/checkpointed/{M,L}` (the tape side with
//! `Checkpointing::Auto`: ⌈√T⌉-step segments recomputed in backward), and
//! `gemm/…` for the raw kernel. Threads follow `TAPEGRAD_BENCH_THREADS`
//! (default 1) so 1- and 2-thread runs are separate invocations:
//!
//! ```text
//! cargo bench --bench bptt
//! TAPEGRAD_BENCH_THREADS=2 cargo bench --bench bptt
//! ```
//!
//! How the threads are used, identically on both sides:
//!
//! - **1 thread**: one serial step (one tape; one reference instance).
//! - **W ≥ 2 threads and B = 1** (config S): the serial step, with the large
//!   GEMMs split over W threads (`tapegrad::set_num_threads(W)`).
//! - **W ≥ 2 threads and B ≥ 2** (M, L): data-parallel over batch shards.
//!   The batch is cut into `min(W, B)` balanced column shards
//!   (`tapegrad::parallel::shard_ranges`), cut once outside the timed loop as
//!   a data loader would hand each worker its part. Each timed step runs
//!   every shard at once — shard 0 on the bench thread, the others on scoped
//!   threads, each shard's GEMMs on one thread — and sums the parameter
//!   gradients on the bench thread. The tape side is
//!   `tapegrad::parallel::DataParallel` (one tape per worker, reused across
//!   steps; `Grads::accumulate_params`); the hand side runs one
//!   `RnnBptt`/`LstmBptt` per shard, built for that shard's batch size, the
//!   same way (`tapegrad::parallel::run_workers`) and sums their gradients into one set
//!   ([`sum_into`]). Both losses are sums over the batch, so either side's
//!   summed gradients are its full-batch gradients.
//!
//! The `gemm` group always runs on the bench thread with the process-wide
//! thread count, so at W threads it measures the W-thread GEMM rate.

#[path = "../tests/common/bptt_task.rs"]
mod bptt_task;

use bptt_task::TapeModel;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::ops::Range;
use std::time::Duration;
use tapegrad::layers::Checkpointing;
use tapegrad::parallel::{run_workers, shard_columns, shard_ranges, shard_targets, DataParallel};
use tapegrad::reference::{LstmBptt, LstmParams, RnnBptt, RnnParams};
use tapegrad::tensor::gemm::{MatMut, MatRef};
use tapegrad::{Nonlinearity, Real, Tape, Tensor};

#[path = "common/sizes.rs"]
mod sizes;

use sizes::{Config, CONFIGS};

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

/// The batch cut into shards for a data-parallel step, or `None` for the
/// serial step (1 thread, or a batch of one).
struct Shards {
    ranges: Vec<Range<usize>>,
    /// `[T, |shard|, I]` inputs.
    xs: Vec<Tensor<f32>>,
    /// `[T·|shard|]` targets.
    ys: Vec<Vec<usize>>,
    /// Zero initial states, `[|shard|·H]`.
    zeros: Vec<Vec<f32>>,
}

impl Shards {
    fn new(c: &Config, x: &Tensor<f32>, targets: &[usize]) -> Option<Self> {
        let workers = threads();
        if workers < 2 || c.b < 2 {
            return None;
        }
        let ranges = shard_ranges(c.b, workers);
        Some(Shards {
            xs: ranges.iter().map(|r| shard_columns(x, r.clone())).collect(),
            ys: ranges
                .iter()
                .map(|r| shard_targets(targets, c.b, r.clone()))
                .collect(),
            zeros: ranges.iter().map(|r| vec![0.0; r.len() * c.h]).collect(),
            ranges,
        })
    }

    fn shape(&self, c: &Config, k: usize) -> [usize; 3] {
        [c.t, self.ranges[k].len(), c.i]
    }
}

/// `out[p] = Σ_k parts[k][p]`, element by element: the hand side's gradient
/// sum over shards. Like `Grads::accumulate_params` on the tape side (which
/// adds each further shard into shard 0's set), it makes one pass per
/// further shard: `out = g₀ + g₁`, then `out += g_k`.
fn sum_into(out: &mut [Tensor<f32>], parts: &[[&Tensor<f32>; 6]]) {
    for (p, acc) in out.iter_mut().enumerate() {
        let acc = acc.data_mut();
        match parts {
            [] => acc.fill(0.0),
            [only] => acc.copy_from_slice(only[p].data()),
            [g0, g1, rest @ ..] => {
                for ((a, &x), &y) in acc.iter_mut().zip(g0[p].data()).zip(g1[p].data()) {
                    *a = x + y;
                }
                for part in rest {
                    for (a, &g) in acc.iter_mut().zip(part[p].data()) {
                        *a += g;
                    }
                }
            }
        }
    }
}

/// Zero tensors shaped like `grads`, to sum shard gradients into.
fn zeros_like(grads: &[&Tensor<f32>]) -> Vec<Tensor<f32>> {
    grads.iter().map(|g| Tensor::zeros(g.shape())).collect()
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

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// The tape side on one tape, reset and reused every iteration.
fn bench_tape_serial(
    group: &mut Group<'_>,
    id: &str,
    c: &Config,
    model: &TapeModel<f32>,
    x: &Tensor<f32>,
    targets: &[usize],
) {
    let mut tape = Tape::new();
    let shape = [c.t, c.b, c.i];
    group.bench_function(BenchmarkId::new(id, c.name), |bench| {
        bench.iter(|| {
            let (loss, grads) = model.step(&tape, x.data(), shape, targets);
            black_box(loss);
            tape.reset_with(grads);
        })
    });
}

/// The tape side data-parallel: one tape per shard, gradients summed.
fn bench_tape_sharded(
    group: &mut Group<'_>,
    id: &str,
    c: &Config,
    model: &TapeModel<f32>,
    sh: &Shards,
) {
    let mut dp = DataParallel::new(sh.ranges.len());
    group.bench_function(BenchmarkId::new(id, c.name), |bench| {
        bench.iter(|| {
            let (losses, grads) =
                dp.step(|k, tape| model.step(tape, sh.xs[k].data(), sh.shape(c, k), &sh.ys[k]));
            black_box(losses);
            dp.reset_with(grads);
        })
    });
}

fn rnn_bptt(cr: &mut Criterion) {
    tapegrad::set_num_threads(threads());
    let mut group = cr.benchmark_group("rnn_bptt");
    for c in CONFIGS {
        tune(&mut group, &c);
        let p = RnnParams::<f32>::random(c.i, c.h, c.o, 5);
        let (x, targets) = data(&c);
        let model = TapeModel::rnn(&p, Nonlinearity::Tanh);
        if let Some(sh) = Shards::new(&c, &x, &targets) {
            bench_tape_sharded(&mut group, "tape", &c, &model, &sh);
            let mut hands: Vec<_> = (sh.ranges.iter())
                .map(|r| RnnBptt::new(r.len(), c.i, c.h, c.o, c.t, Nonlinearity::Tanh, false))
                .collect();
            let mut sum = zeros_like(&hands[0].grads().params());
            group.bench_function(BenchmarkId::new("hand", c.name), |bench| {
                bench.iter(|| {
                    let losses = run_workers(&mut hands, |k, hand| {
                        hand.run(&p, sh.xs[k].data(), &sh.zeros[k], &sh.ys[k])
                    });
                    let parts: Vec<_> = hands.iter().map(|h| h.grads().params()).collect();
                    sum_into(&mut sum, &parts);
                    black_box((losses, sum[0].data()[0]));
                })
            });
            continue;
        }
        bench_tape_serial(&mut group, "tape", &c, &model, &x, &targets);
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
        let model = TapeModel::lstm(&p);
        let checkpointed =
            (c.name != "S").then(|| TapeModel::lstm(&p).with_checkpoint(Checkpointing::Auto));
        if let Some(sh) = Shards::new(&c, &x, &targets) {
            bench_tape_sharded(&mut group, "tape", &c, &model, &sh);
            if let Some(ck) = &checkpointed {
                bench_tape_sharded(&mut group, "checkpointed", &c, ck, &sh);
            }
            let mut hands: Vec<_> = (sh.ranges.iter())
                .map(|r| LstmBptt::new(r.len(), c.i, c.h, c.o, c.t, false))
                .collect();
            let mut sum = zeros_like(&hands[0].grads().params());
            group.bench_function(BenchmarkId::new("hand", c.name), |bench| {
                bench.iter(|| {
                    let losses = run_workers(&mut hands, |k, hand| {
                        let z = &sh.zeros[k];
                        hand.run(&p, sh.xs[k].data(), z, z, &sh.ys[k])
                    });
                    let parts: Vec<_> = hands.iter().map(|h| h.grads().params()).collect();
                    sum_into(&mut sum, &parts);
                    black_box((losses, sum[0].data()[0]));
                })
            });
            continue;
        }
        bench_tape_serial(&mut group, "tape", &c, &model, &x, &targets);
        if let Some(ck) = &checkpointed {
            bench_tape_serial(&mut group, "checkpointed", &c, ck, &x, &targets);
        }
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
