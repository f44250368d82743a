//! The GradBench "lstm" eval (diagonal LSTM, b = 14, from ADBench): the
//! plain `f64` primal, the same objective recorded on a tape, and the tape's
//! gradient, in one run so the ratios gradient / primal and tape primal /
//! primal are read off one report (`docs/performance.md` has them beside
//! the published ratios of other AD tools).
//!
//! Criterion ids: `gradbench_lstm/{primal,tape_primal,gradient}/{l2_c1024,
//! l4_c1024,l2_c4096,l4_c4096}`. One thread, f64:
//!
//! ```text
//! cargo bench --bench gradbench_lstm
//! ```
//!
//! Each tape iteration records on one tape that is reset at its end (its
//! buffers kept), as a training loop runs: `tape_primal` records the
//! objective and reads the loss; `gradient` also runs the reverse sweep and
//! reads both parameter gradients.

#[path = "../tests/common/gradbench_lstm.rs"]
mod gradbench_lstm;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use gradbench_lstm::{gradient, primal, size_name, tape_objective, Input, Model, SIZES};
use std::hint::black_box;
use std::time::Duration;
use tapegrad::Tape;

fn bench(cr: &mut Criterion) {
    tapegrad::set_num_threads(1);
    let mut group = cr.benchmark_group("gradbench_lstm");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    for (l, c) in SIZES {
        let name = size_name(l, c);
        let inp = Input::generate(l, c, 1);
        let model = Model::new(&inp);
        group.bench_function(BenchmarkId::new("primal", &name), |bench| {
            bench.iter(|| black_box(primal(black_box(&inp))))
        });
        let mut tape = Tape::<f64>::new();
        group.bench_function(BenchmarkId::new("tape_primal", &name), |bench| {
            bench.iter(|| {
                black_box(tape_objective(&tape, &model, &inp).item());
                tape.reset();
            })
        });
        group.bench_function(BenchmarkId::new("gradient", &name), |bench| {
            bench.iter(|| black_box(gradient(&mut tape, &model, &inp)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
