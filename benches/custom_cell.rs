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

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use tapegrad::layers::{Linear, LstmCell};
use tapegrad::{Grads, ParamStore, Tape, Var};

#[path = "../tests/common/user_lstm.rs"]
mod user_lstm;
use user_lstm::UserLstm;

#[path = "common/sizes.rs"]
mod sizes;

#[path = "common/lm_step.rs"]
mod lm_step;

use lm_step::{bench_cell, bench_step, readout_step, CellModel, Task};
use sizes::{Config, CONFIGS};

/// The naive LSTM: per-step primitives, no engine (the parameters of
/// `Lstm::new(…, "lstm", …, 5)` and the readout of `CellModel`, so the
/// same numbers as the other two rows).
fn naive_step(
    store: &ParamStore<f32>,
    head: &Linear,
    tape: &Tape<f32>,
    task: &Task,
    c: &Config,
) -> (f32, Grads<f32>) {
    let x = tape.constant_from_slice(task.x.data(), task.x.shape());
    let p = |n: &str| tape.param(store, store.key(n).expect("created"));
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
    readout_step(tape, store, head, Var::concat(&hs, 0), &task.targets)
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
        // The same seed and parameter order: the same numbers every way.
        bench_cell(&mut group, "builtin", LstmCell, &c);
        bench_cell(&mut group, "user", UserLstm, &c);
        let task = Task::new(&c);
        let model = CellModel::new(LstmCell, &c);
        bench_step(&mut group, "naive", &c, |tape| {
            naive_step(&model.store, &model.head, tape, &task, &c)
        });
    }
    group.finish();
}

criterion_group!(benches, custom_cell);
criterion_main!(benches);
