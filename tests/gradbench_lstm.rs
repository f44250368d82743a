//! The GradBench "lstm" eval (`tests/common/gradbench_lstm.rs`, the code
//! `benches/gradbench_lstm.rs` times): the tape's objective against the plain
//! `f64` primal, and the tape's gradient against central differences of
//! that primal.

#[path = "common/gradbench_lstm.rs"]
mod gradbench_lstm;

use gradbench_lstm::{gradient, primal, tape_objective, Input, Model};
use tapegrad::Tape;

/// Relative difference.
fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

/// The tape records the same objective as the plain loop: equal to
/// 1e-12 relative (f64; only the order of the final sums differs) at both
/// layer counts of the benchmark, c = 1024.
#[test]
fn tape_objective_matches_the_plain_primal() {
    for l in [2, 4] {
        let inp = Input::generate(l, 1024, 7);
        let model = Model::new(&inp);
        let tape = Tape::<f64>::new();
        let on_tape = tape_objective(&tape, &model, &inp).item();
        let plain = primal(&inp);
        assert!(
            rel(on_tape, plain) <= 1e-12,
            "l = {l}: tape {on_tape} vs plain {plain} ({:e} relative)",
            rel(on_tape, plain)
        );
        // A sane loss: the bits' mean negative log-likelihood-like value.
        assert!(plain.is_finite() && plain > 0.0);
    }
}

/// Central differences of the plain primal, step `h`.
fn central(inp: &Input, k: usize, h: f64) -> f64 {
    let (mut up, mut down) = (inp.clone(), inp.clone());
    *up.param_mut(k) += h;
    *down.param_mut(k) -= h;
    (primal(&up) - primal(&down)) / (2.0 * h)
}

/// Every component of the tape's gradient (l = 2 and 3, c = 24: 266 and
/// 378 parameters) against central differences with h = 1e-5: the
/// truncation error is O(h²·f''') ≈ 1e-10 and the rounding error
/// ≈ 1e-16/h ≈ 1e-11, so the bound is |g − fd| ≤ 1e-8·max(1, |g|)
/// (reached: 3.0e-11 and 3.7e-11). The tape is reused across the two sizes and a
/// second identical call, which must give bitwise the same result.
#[test]
fn gradient_matches_central_differences() {
    let mut tape = Tape::<f64>::new();
    for l in [2, 3] {
        let inp = Input::generate(l, 24, 11 + l as u64);
        let model = Model::new(&inp);
        let (loss, g) = gradient(&mut tape, &model, &inp);
        assert!(rel(loss, primal(&inp)) <= 1e-12);
        assert_eq!(g.len(), inp.n_params());
        let mut worst: f64 = 0.0;
        for (k, &gk) in g.iter().enumerate() {
            let fd = central(&inp, k, 1e-5);
            let err = (gk - fd).abs() / gk.abs().max(1.0);
            worst = worst.max(err);
            assert!(
                err <= 1e-8,
                "l = {l}, parameter {k}: tape {gk} vs central {fd}"
            );
        }
        eprintln!("l = {l}: worst relative gradient error {worst:.2e}");
        let (loss2, g2) = gradient(&mut tape, &model, &inp);
        assert_eq!(
            (loss2, &g2),
            (loss, &g),
            "a reused tape gives the same gradient"
        );
    }
}

/// At a benchmark size (l = 4, c = 1024) a sample of components (every
/// 13th parameter, 43 of them) against central differences, same bound.
#[test]
fn gradient_at_benchmark_size_matches_central_differences() {
    let inp = Input::generate(4, 1024, 5);
    let model = Model::new(&inp);
    let mut tape = Tape::<f64>::new();
    let (loss, g) = gradient(&mut tape, &model, &inp);
    assert!(rel(loss, primal(&inp)) <= 1e-12);
    for k in (0..inp.n_params()).step_by(13) {
        let fd = central(&inp, k, 1e-5);
        assert!(
            (g[k] - fd).abs() <= 1e-8 * g[k].abs().max(1.0),
            "parameter {k}: tape {} vs central {fd}",
            g[k]
        );
    }
}
