//! minGRU and minLSTM (Feng et al. 2024): the parallel mode (the whole
//! sequence as one `linear_scan` node through `Cell::sequence`) against the
//! sequential mode (one `Cell::step` per time step), and both against
//! central differences.
//!
//! - **parallel = sequential**, f64, outputs, final states and every
//!   parameter's and the input's and h(0)'s gradient, to **1e-12** absolute
//!   (both modes do the same multiply-adds in the same order, so in practice
//!   they agree to the bit), on random sizes: I, H 1..=5, B 1..=3,
//!   T 1..=16, 1–2 layers, uni- or bidirectional, with and without
//!   per-sequence lengths and an initial state (proptest, 64 cases per
//!   cell; `PROPTEST_CASES` overrides). One case at **T = 10,000**
//!   (B = 2, H = 3), forward and gradients.
//! - **gradients vs central differences**, f64, both modes: every
//!   parameter (`gradcheck_store`, ε = 1e-6) and x, h(0)
//!   (`gradcheck`), relative error ≤ **1e-6** (floor 1e-3), on a stacked
//!   bidirectional layer with lengths.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tapegrad::gradcheck::{gradcheck, gradcheck_store};
use tapegrad::layers::{
    Cell, MinGruCell, MinLstmCell, Recurrent, RecurrentConfig, RunOptions, State,
};
use tapegrad::{ParamStore, Tape, Tensor, Var};

/// Parallel vs sequential, absolute.
const SAME: f64 = 1e-12;
/// Against central differences, relative (floor 1e-3).
const TOL: f64 = 1e-6;

#[derive(Debug, Clone)]
struct Case {
    input: usize,
    hidden: usize,
    batch: usize,
    steps: usize,
    layers: usize,
    bidirectional: bool,
    lengths: Option<Vec<usize>>,
    with_init: bool,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=5,
        1usize..=5,
        1usize..=3,
        1usize..=16,
        1usize..=2,
        any::<bool>(),
        any::<bool>(),
        0u64..1 << 20,
    )
        .prop_flat_map(|(i, h, b, t, l, bi, with_init, seed)| {
            let lengths = prop::collection::vec(0..=t, b);
            (
                Just((i, h, b, t, l, bi, with_init, seed)),
                prop::option::of(lengths),
            )
        })
        .prop_map(
            |((input, hidden, batch, steps, layers, bidirectional, with_init, seed), lengths)| {
                Case {
                    input,
                    hidden,
                    batch,
                    steps,
                    layers,
                    bidirectional,
                    lengths,
                    with_init,
                    seed,
                }
            },
        )
}

/// Everything a run produces, as plain numbers: the outputs, the final h,
/// and the gradients of L = Σ outputs ⊙ R + Σ h_n ⊙ S w.r.t. every
/// parameter (store order), x and h(0).
fn run<C: Cell>(cell: C, c: &Case) -> Vec<Vec<f64>> {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(c.input, c.hidden)
        .layers(c.layers)
        .bidirectional(c.bidirectional);
    let layer = Recurrent::with_cell(cell, &mut store, "m", cfg, c.seed);
    let dirs = cfg.directions();
    let tape = Tape::new();
    let x = tape.var(Tensor::randn(&[c.steps, c.batch, c.input], c.seed + 1));
    let h0: Vec<Var<'_, f64>> = (0..c.layers * dirs)
        .map(|k| tape.var(Tensor::randn(&[c.batch, c.hidden], c.seed + 2 + k as u64)))
        .collect();
    let init = State::new(h0.clone(), None);
    let opts = RunOptions {
        lengths: c.lengths.as_deref(),
        dropout_seed: None,
    };
    let out = layer.forward_with(&tape, &store, x, c.with_init.then_some(&init), opts);
    let ys = out.stacked_rows(); // one var in parallel mode, a concat of steps when stepping
    let hn = Var::stack(&out.state.h, 0);
    let r = tape.constant(Tensor::randn(&ys.shape(), c.seed + 100));
    let s = tape.constant(Tensor::randn(&hn.shape(), c.seed + 101));
    let loss = (ys * r).sum() + (hn * s).sum();
    let mut found = vec![ys.value().data().to_vec(), hn.value().data().to_vec()];
    let g = loss.backward();
    for k in store.keys() {
        found.push(
            g.param(k)
                .expect("every parameter has a gradient")
                .data()
                .to_vec(),
        );
    }
    found.push(g.wrt(x).data().to_vec());
    if c.with_init {
        for h in &h0 {
            found.push(g.wrt(*h).data().to_vec());
        }
    }
    found
}

fn worst(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(p, q)| {
            assert_eq!(p.len(), q.len());
            p.iter().zip(q).map(|(x, y)| (x - y).abs())
        })
        .fold(0.0, f64::max)
}

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(64),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mingru_parallel_equals_sequential(c in case()) {
        let d = worst(&run(MinGruCell::parallel(), &c), &run(MinGruCell::sequential(), &c));
        prop_assert!(d <= SAME, "{c:?}: {d:e}");
    }

    #[test]
    fn minlstm_parallel_equals_sequential(c in case()) {
        let d = worst(&run(MinLstmCell::parallel(), &c), &run(MinLstmCell::sequential(), &c));
        prop_assert!(d <= SAME, "{c:?}: {d:e}");
    }
}

#[test]
fn ten_thousand_steps_parallel_equals_sequential() {
    let c = Case {
        input: 2,
        hidden: 3,
        batch: 2,
        steps: 10_000,
        layers: 1,
        bidirectional: false,
        lengths: Some(vec![10_000, 7_001]),
        with_init: true,
        seed: 5,
    };
    let d = worst(
        &run(MinGruCell::parallel(), &c),
        &run(MinGruCell::sequential(), &c),
    );
    assert!(d <= SAME, "minGRU, T = 10,000: {d:e}");
    let d = worst(
        &run(MinLstmCell::parallel(), &c),
        &run(MinLstmCell::sequential(), &c),
    );
    assert!(d <= SAME, "minLSTM, T = 10,000: {d:e}");
    println!("T = 10,000: parallel vs sequential worst difference {d:e}");
}

/// Padded steps keep h and output zeros, in parallel mode as stepping does.
#[test]
fn padded_steps_carry_the_state_and_output_zeros() {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(2, 3).bidirectional(true);
    let layer = Recurrent::with_cell(MinGruCell::parallel(), &mut store, "m", cfg, 1);
    let tape = Tape::new();
    let x = tape.constant(Tensor::randn(&[5, 2, 2], 2));
    let lengths = [5, 2];
    let opts = RunOptions {
        lengths: Some(&lengths),
        dropout_seed: None,
    };
    let out = layer.forward_with(&tape, &store, x, None, opts);
    for t in 2..5 {
        assert!(out.outputs[t].value().data()[6..].iter().all(|&v| v == 0.0));
    }
    // The forward direction's final h of sequence 1 is its output at t = 1.
    let h1 = out.outputs[1].value().data()[6..9].to_vec();
    assert_eq!(&out.state.h[0].value().data()[3..], h1.as_slice());
}

fn check_against_differences<C: Cell + Copy>(cell: C) {
    let cfg = RecurrentConfig::new(3, 3).layers(2).bidirectional(true);
    let mut store = ParamStore::<f64>::new();
    let layer = Recurrent::with_cell(cell, &mut store, "m", cfg, 7);
    let x = Tensor::randn(&[4, 2, 3], 8);
    let r = Tensor::randn(&[4, 2, 6], 9);
    let lengths = [4, 3];
    let opts = RunOptions {
        lengths: Some(&lengths),
        dropout_seed: None,
    };
    let report = gradcheck_store(&mut store, |tape, store| {
        let out = layer.forward_with(tape, store, tape.constant(x.clone()), None, opts);
        (out.stacked() * tape.constant(r.clone())).sum() + out.state.last_h().sum()
    });
    assert_eq!(
        report.inputs.len(),
        8,
        "weight_ih and bias_ih per layer and direction"
    );
    assert!(
        report.max_rel_error() <= TOL,
        "{}: parameters {}",
        cell.name(),
        report.max_rel_error()
    );
    let h0 = Tensor::randn(&[4, 2, 3], 10);
    let inputs = [x.clone(), h0];
    let report = gradcheck(&inputs, |tape, v| {
        let h: Vec<Var<'_, f64>> = (0..4)
            .map(|k| v[1].slice(0, k, 1).reshape(&[2, 3]))
            .collect();
        let init = State::new(h, None);
        let out = layer.forward_with(tape, &store, v[0], Some(&init), opts);
        (out.stacked() * tape.constant(r.clone())).sum() + out.state.last_h().sum()
    });
    assert!(
        report.max_rel_error() <= TOL,
        "{}: x, h0 {}",
        cell.name(),
        report.max_rel_error()
    );
}

#[test]
fn mingru_gradients_match_central_differences_in_both_modes() {
    check_against_differences(MinGruCell::parallel());
    check_against_differences(MinGruCell::sequential());
}

#[test]
fn minlstm_gradients_match_central_differences_in_both_modes() {
    check_against_differences(MinLstmCell::parallel());
    check_against_differences(MinLstmCell::sequential());
}

/// The per-step API (decoders) steps a parallel-mode cell, with the same
/// numbers as the whole-sequence run.
#[test]
fn the_step_api_agrees_with_the_parallel_run() {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(2, 4).layers(2);
    let layer = Recurrent::with_cell(MinLstmCell::parallel(), &mut store, "m", cfg, 3);
    let tape = Tape::new();
    let x = tape.constant(Tensor::randn(&[3, 1, 2], 4));
    let whole = layer.forward(&tape, &store, x, None);
    let mut state = layer.zero_state(&tape, 1);
    for t in 0..3 {
        let xt = x.slice(0, t, 1).reshape(&[1, 2]);
        state = layer.step(&tape, &store, xt, &state);
        let (a, b) = (state.last_h(), whole.outputs[t]);
        let (a, b) = (a.value(), b.value());
        for (p, q) in a.data().iter().zip(b.data()) {
            assert!((p - q).abs() <= SAME);
        }
    }
}
