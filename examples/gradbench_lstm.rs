//! The GradBench "lstm" eval (a diagonal LSTM from ADBench, b = 14, f64)
//! at its four benchmark sizes: the objective on the tape against the plain
//! `f64` primal, and the cost of each side — the plain primal, the tape's
//! primal (recording), the reverse sweep alone and the whole gradient —
//! with the ratios GradBench publishes (gradient / primal) and the cost per
//! recorded node. The eval itself lives in `tests/common/gradbench_lstm.rs`,
//! shared with the test and the criterion bench
//! (`cargo bench --bench gradbench_lstm`, the numbers the docs quote).
//!
//! Run: `cargo run --release --example gradbench_lstm [repeats] [size]`
//! (default 20 repeats per measurement, the minimum reported; one thread;
//! `size`, e.g. `l2_c1024`, runs that size alone — for profiling).

#[path = "../tests/common/gradbench_lstm.rs"]
mod gradbench_lstm;

use gradbench_lstm::{primal, size_name, tape_objective, Input, Model, SIZES};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tapegrad::Tape;

/// The least time of `n` calls of `f`.
fn best(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("n ≥ 1")
}

fn main() {
    let repeats: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("repeats: a positive integer"))
        .unwrap_or(20)
        .max(1);
    let only = std::env::args().nth(2);
    tapegrad::set_num_threads(1);
    println!(
        "{:<9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7} {:>7} {:>8} {:>8}",
        "size",
        "nodes",
        "primal",
        "tape fwd",
        "backward",
        "gradient",
        "fwd/p",
        "grad/p",
        "ns/rec",
        "ns/sweep"
    );
    for (l, c) in SIZES {
        if only.as_ref().is_some_and(|s| *s != size_name(l, c)) {
            continue;
        }
        let inp = Input::generate(l, c, 1);
        let model = Model::new(&inp);
        let mut tape = Tape::<f64>::new();
        let plain = primal(&inp);
        let (on_tape, nodes) = {
            let loss = tape_objective(&tape, &model, &inp);
            (loss.item(), tape.len())
        };
        tape.reset();
        let rel = (on_tape - plain).abs() / plain.abs();
        assert!(rel <= 1e-12, "tape {on_tape} vs plain {plain}");

        let p = best(repeats * 4, || {
            black_box(primal(black_box(&inp)));
        });
        let fwd = best(repeats, || {
            black_box(tape_objective(&tape, &model, &inp).item());
            tape.reset();
        });
        // The sweep alone: record untimed, time backward, reset untimed.
        let mut sweep = Duration::MAX;
        let mut grad = Duration::MAX;
        for _ in 0..repeats {
            let t0 = Instant::now();
            let loss = tape_objective(&tape, &model, &inp);
            let t1 = Instant::now();
            let g = loss.backward();
            let t2 = Instant::now();
            black_box(g.param(model.main));
            tape.reset_with(g);
            let t3 = Instant::now();
            sweep = sweep.min(t2 - t1);
            grad = grad.min(t3 - t0);
        }
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        let ns = |d: Duration| d.as_secs_f64() * 1e9 / nodes as f64;
        println!(
            "{:<9} {:>7} {:>10} {:>10} {:>10} {:>10} {:>7.2} {:>7.2} {:>8.0} {:>8.0}",
            size_name(l, c),
            nodes,
            ms(p),
            ms(fwd),
            ms(sweep),
            ms(grad),
            fwd.as_secs_f64() / p.as_secs_f64(),
            grad.as_secs_f64() / p.as_secs_f64(),
            ns(fwd),
            ns(sweep),
        );
    }
    println!(
        "(best of {repeats} runs each, primal best of {}; objective on the tape = plain primal to ≤ 1e-12)",
        repeats * 4
    );
}
