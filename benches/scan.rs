//! What the cells without recurrent weight cost (minGRU, minLSTM; Feng et
//! al. 2024), and what their one-node parallel mode buys. One thread
//! (`cargo bench --bench scan`), f32.
//!
//! - `scan/{stepwise,parallel}/{T=1k,T=10k}`: a minGRU layer (B = 8,
//!   I = 32, H = 64) over T steps, forward, `Σ h(t)`, backward to every
//!   parameter; `…/T=10k,B=1,H=16` the same, narrow — stepwise (`MinGruCell::sequential()`: one cell step of
//!   four elementwise nodes per time step) vs parallel
//!   (`MinGruCell::parallel()`: all gates for all steps at once, then one
//!   `linear_scan` node).
//! - `scan_op/{loop,node}/T=10k`: the primitive alone, `Σ h(t)` backward
//!   to a and b [T × 8 × 64]: T tape steps `h = a(t)⊙h + b(t)` (two nodes
//!   and two row slices each) vs one `Var::linear_scan` node.
//! - `min_bptt/{lstm,gru,mingru,minlstm}/M`: the training step of
//!   `lstm_bptt/tape/M` (`benches/bptt.rs`, `custom_cell`): the layer over
//!   T steps, readout over all T·B rows, summed cross-entropy, backward to
//!   every parameter, at size M, for each cell (min cells in parallel
//!   mode).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::time::Duration;
use tapegrad::layers::{GruCell, LstmCell, MinGruCell, MinLstmCell, Recurrent, RecurrentConfig};
use tapegrad::{ParamStore, Tape, Tensor, Var};

#[path = "common/sizes.rs"]
mod sizes;

#[path = "common/lm_step.rs"]
mod lm_step;

use lm_step::bench_cell;
use sizes::CONFIGS;

/// `Σ h(t)` backward through a minGRU layer in either mode.
fn scan(cr: &mut Criterion) {
    tapegrad::set_num_threads(1);
    let mut group = cr.benchmark_group("scan");
    let i = 32;
    for (label, t, b, h) in [
        ("T=1k", 1_000, 8, 64),
        ("T=10k", 10_000, 8, 64),
        ("T=10k,B=1,H=16", 10_000, 1, 16),
    ] {
        if t == 10_000 {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(20));
        } else {
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(6));
        }
        let x = Tensor::<f32>::randn(&[t, b, i], 11);
        for (mode, cell) in [
            ("stepwise", MinGruCell::sequential()),
            ("parallel", MinGruCell::parallel()),
        ] {
            let mut store = ParamStore::<f32>::new();
            let layer =
                Recurrent::with_cell(cell, &mut store, "mingru", RecurrentConfig::new(i, h), 5);
            let mut tape = Tape::new();
            group.bench_function(BenchmarkId::new(mode, label), |bench| {
                bench.iter(|| {
                    let xv = tape.constant_from_slice(x.data(), x.shape());
                    let out = layer.forward(&tape, &store, xv, None);
                    let loss = out.stacked_rows().sum();
                    black_box(loss.item());
                    let grads = loss.backward();
                    tape.reset_with(grads);
                })
            });
        }
    }
    group.finish();
}

/// The primitive alone: a loop of tape steps vs one scan node.
fn scan_op(cr: &mut Criterion) {
    tapegrad::set_num_threads(1);
    let mut group = cr.benchmark_group("scan_op");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    let (t, n) = (10_000, 8 * 64);
    let a = Tensor::<f32>::from_fn(&[t, n], |i| 0.5 + 0.5 * ((i * 7919 % 1000) as f32 / 1000.0));
    let b = Tensor::<f32>::randn(&[t, n], 2);
    for mode in ["loop", "node"] {
        let mut tape = Tape::new();
        group.bench_function(BenchmarkId::new(mode, "T=10k"), |bench| {
            bench.iter(|| {
                let av = tape.var(a.clone());
                let bv = tape.var(b.clone());
                let loss = if mode == "node" {
                    Var::linear_scan(av, bv, None).sum()
                } else {
                    let mut h = tape.zeros(&[1, n]);
                    let mut hs = Vec::with_capacity(t);
                    for s in 0..t {
                        h = av.slice(0, s, 1) * h + bv.slice(0, s, 1);
                        hs.push(h);
                    }
                    Var::concat(&hs, 0).sum()
                };
                black_box(loss.item());
                let grads = loss.backward();
                tape.reset_with(grads);
            })
        });
    }
    group.finish();
}

fn min_bptt(cr: &mut Criterion) {
    tapegrad::set_num_threads(1);
    let mut group = cr.benchmark_group("min_bptt");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(6));
    let c = CONFIGS.iter().find(|c| c.name == "M").expect("size M");
    bench_cell(&mut group, "lstm", LstmCell, c);
    bench_cell(&mut group, "gru", GruCell, c);
    bench_cell(&mut group, "mingru", MinGruCell::parallel(), c);
    bench_cell(&mut group, "minlstm", MinLstmCell::parallel(), c);
    group.finish();
}

criterion_group!(benches, scan, scan_op, min_bptt);
criterion_main!(benches);
