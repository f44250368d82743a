//! Checkpointed BPTT (`RecurrentConfig::checkpoint`) against the plain run,
//! f64, for every built-in cell, an LSTM and a minimal gated unit written
//! outside the crate, stacked, bidirectional, with lengths, at a batch that
//! reorders the weights (B = 70) and one that does not:
//!
//! - outputs, final states, ∂L/∂x, ∂L/∂(initial state) and the biases'
//!   gradients are **bitwise** equal to the plain run whose input projection
//!   is chunked as the segments are (`projection_steps(k)`: the same GEMM
//!   shapes — the GEMM kernels round a row differently with the row count,
//!   so another chunking differs in the last bits anyway). The checkpoint's
//!   rule hands the outer gradient sums to the re-run, which continues them
//!   in the plain sweep's order;
//! - the gradients of the weights whose per-step products the sweep defers
//!   and sums as one GEMM over stacked rows (W_hh, W_ih when the projection
//!   chunk has ≤ 512 rows, an MGU's weight_hn) are the same sums grouped by
//!   segment instead of by the plain run's blocks: they agree up to that
//!   regrouping's rounding, |ckpt − plain| ≤ 1e-13 · max(1, max|plain|)
//!   (measured largest: printed by each test; 2e-15 at most);
//! - truncated BPTT windows with checkpointing inside each window give the
//!   same losses and gradients as without (same tolerance);
//! - `Tape::checkpoint` on a user function (a segment that includes a
//!   readout and a loss) gives the full-BPTT gradient (same tolerance);
//! - a var passed twice to `Tape::checkpoint`, or an output returned
//!   twice, is one input or output (gradients bitwise the plain ones);
//! - the same with AWD-LSTM's weight drop and locked dropout on (the
//!   masks are drawn outside the segments), and for the cell variants:
//!   minGRU / minLSTM (each segment one scan node), layer-norm and peephole
//!   LSTMs;
//! - a parameter missing from a checkpoint's inputs is refused by name, and
//!   `Checkpointing::Every(0)` is refused.
//!
//! Memory against T: `tests/checkpoint_memory.rs` (fitted exponent at small
//! T) and `examples/bptt_memory.rs sweep` (T up to 100,000).

use tapegrad::layers::{
    Cell, Checkpointing, GruCell, LayerNormLstmCell, LstmCell, MinGruCell, MinLstmCell,
    PeepholeLstmCell, Recurrent, RecurrentConfig, RnnCell, RunOptions,
};
use tapegrad::{ParamStore, Tape, Tensor, Var};

#[path = "../examples/custom_cell.rs"]
#[allow(dead_code)]
mod example;
use example::Mgu;

#[path = "common/user_lstm.rs"]
mod user_lstm;
use user_lstm::UserLstm;

/// What one run produces: values and data gradients (compared bitwise) and
/// parameter gradients (compared to a tolerance).
struct Run {
    /// Outputs and final states.
    values: Vec<(String, Tensor<f64>)>,
    /// ∂L/∂x and ∂L/∂(initial state).
    data: Vec<(String, Tensor<f64>)>,
    params: Vec<(String, Tensor<f64>)>,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    layers: usize,
    bi: bool,
    lengths: bool,
    batch: usize,
    steps: usize,
    /// AWD-LSTM's regularisers on (weight drop 0.3, locked dropout 0.1 /
    /// 0.2 / 0.3, a dropout seed): the same masks with and without
    /// checkpointing.
    awd: bool,
}

fn run<C: Cell + Default>(case: Case, how: Checkpointing, projection: usize) -> Run {
    let (i, h) = (5, 8);
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(i, h)
        .layers(case.layers)
        .bidirectional(case.bi)
        .projection_steps(projection)
        .checkpoint(how);
    let cfg = if case.awd {
        cfg.weight_drop(0.3).locked_dropout(0.1, 0.2, 0.3)
    } else {
        cfg
    };
    let layer = Recurrent::<C>::new(&mut store, "rec", cfg, 3);
    let tape = Tape::new();
    let x = tape.var(Tensor::randn(&[case.steps, case.batch, i], 4));
    let init = layer.zero_state(&tape, case.batch).to_tensors();
    let init = init.bind_var(&tape);
    let lengths: Vec<usize> = (0..case.batch)
        .map(|b| case.steps - (b % 3).min(case.steps - 1))
        .collect();
    let opts = RunOptions {
        lengths: case.lengths.then_some(&lengths[..]),
        dropout_seed: case.awd.then_some(7),
    };
    let out = layer.forward_with(&tape, &store, x, Some(&init), opts);
    let s = out.stacked();
    let w = tape.constant(Tensor::randn(&s.shape(), 9));
    let mut loss = (s * w).sum();
    let finals: Vec<Var<'_, f64>> = out
        .state
        .h
        .iter()
        .chain(out.state.c.iter().flatten())
        .copied()
        .collect();
    for (k, v) in finals.iter().enumerate() {
        let r = tape.constant(Tensor::randn(&v.shape(), 20 + k as u64));
        loss = loss + (*v * r).sum();
    }
    let g = loss.backward();
    let mut values = vec![("outputs".to_string(), s.to_tensor())];
    for (k, v) in finals.iter().enumerate() {
        values.push((format!("final state {k}"), v.to_tensor()));
    }
    let mut data = vec![("dx".to_string(), g.wrt(x).clone())];
    for (k, v) in init.h.iter().chain(init.c.iter().flatten()).enumerate() {
        data.push((format!("d initial state {k}"), g.wrt(*v).clone()));
    }
    let params = store
        .keys()
        .map(|k| {
            (
                store.name(k).to_string(),
                g.param(k).expect("bound").clone(),
            )
        })
        .collect();
    Run {
        values,
        data,
        params,
    }
}

/// Largest |a − b| / max(1, max|a|).
fn rel_diff(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    let scale = a.data().iter().fold(1f64, |m, v| m.max(v.abs()));
    a.max_abs_diff(b) / scale
}

/// Asserts `a` and `b` are bitwise equal, naming `what` and the first
/// differing elements.
fn assert_bitwise(a: &Tensor<f64>, b: &Tensor<f64>, what: &str) {
    let diff: Vec<(usize, f64, f64)> = a
        .data()
        .iter()
        .zip(b.data())
        .enumerate()
        .filter(|(_, (x, y))| x.to_bits() != y.to_bits())
        .map(|(i, (x, y))| (i, *x, *y))
        .take(4)
        .collect();
    assert!(diff.is_empty(), "{what} differs: {diff:?}");
}

/// Compares a checkpointed run with the plain one whose input projection
/// is chunked as the segments are (`projection_steps(k)`: the same GEMM
/// shapes, so the same rounding): values, data gradients and biases
/// bitwise, weights within 1e-13 relative. Returns the largest relative
/// weight-gradient difference.
fn compare<C: Cell + Default>(case: Case, how: Checkpointing) -> f64 {
    let k = how.segment_steps(case.steps).expect("checkpointed");
    let name = C::default().name().to_string();
    let plain = run::<C>(case, Checkpointing::Off, k);
    let ckpt = run::<C>(case, how, k);
    let exact = plain.values.iter().zip(&ckpt.values);
    for ((what, a), (_, b)) in exact.chain(plain.data.iter().zip(&ckpt.data)) {
        assert_bitwise(a, b, &format!("{name} {case:?} {how:?}: {what}"));
    }
    let mut worst = 0f64;
    for ((what, a), (_, b)) in plain.params.iter().zip(&ckpt.params) {
        if what.contains("bias") {
            assert_bitwise(a, b, &format!("{name} {case:?} {how:?}: ∂L/∂{what}"));
        }
        let rel = rel_diff(a, b);
        assert!(
            rel <= 1e-13,
            "{name} {case:?} {how:?}: ∂L/∂{what} differs by {rel:e} (relative)"
        );
        worst = worst.max(rel);
    }
    // Against the plain run with its default projection chunks (another
    // GEMM shape, so values agree up to rounding too).
    let default = run::<C>(case, Checkpointing::Off, 0);
    for ((what, a), (_, b)) in default.params.iter().zip(&ckpt.params) {
        let rel = rel_diff(a, b);
        assert!(
            rel <= 1e-13,
            "{name} {case:?} {how:?}: ∂L/∂{what} differs from the default plain run by {rel:e}"
        );
    }
    worst
}

/// Every case for cell `C`.
fn every_case<C: Cell + Default>() -> f64 {
    let cases = [
        (
            Case {
                layers: 1,
                bi: false,
                lengths: false,
                batch: 2,
                steps: 9,
                awd: false,
            },
            Checkpointing::Auto,
        ),
        (
            Case {
                layers: 2,
                bi: true,
                lengths: true,
                batch: 3,
                steps: 10,
                awd: false,
            },
            Checkpointing::Every(3),
        ),
        (
            Case {
                layers: 1,
                bi: false,
                lengths: false,
                batch: 2,
                steps: 7,
                awd: false,
            },
            Checkpointing::Every(1),
        ),
        (
            Case {
                layers: 1,
                bi: true,
                lengths: false,
                batch: 2,
                steps: 5,
                awd: false,
            },
            Checkpointing::Every(50),
        ),
        (
            Case {
                layers: 2,
                bi: true,
                lengths: true,
                batch: 70,
                steps: 8,
                awd: false,
            },
            Checkpointing::Auto,
        ),
    ];
    cases
        .into_iter()
        .map(|(case, how)| compare::<C>(case, how))
        .fold(0.0, f64::max)
}

#[test]
fn a_checkpointed_rnn_matches_the_plain_run() {
    let worst = every_case::<RnnCell>();
    eprintln!("rnn: largest relative parameter-gradient difference {worst:e}");
}

#[test]
fn a_checkpointed_lstm_matches_the_plain_run() {
    let worst = every_case::<LstmCell>();
    eprintln!("lstm: largest relative parameter-gradient difference {worst:e}");
}

#[test]
fn a_checkpointed_gru_matches_the_plain_run() {
    let worst = every_case::<GruCell>();
    eprintln!("gru: largest relative parameter-gradient difference {worst:e}");
}

#[test]
fn checkpointed_user_cells_match_the_plain_run() {
    let a = every_case::<UserLstm>();
    let b = every_case::<Mgu>();
    eprintln!("user lstm {a:e}, mgu {b:e}");
}

#[test]
fn checkpointed_cell_variants_match_the_plain_run() {
    // minGRU and minLSTM run each segment as one scan node
    // (`Cell::sequence`); the layer-norm and peephole LSTMs step.
    let worst = [
        every_case::<MinGruCell>(),
        every_case::<MinLstmCell>(),
        every_case::<LayerNormLstmCell>(),
        every_case::<PeepholeLstmCell>(),
    ];
    eprintln!("mingru, minlstm, ln_lstm, peephole_lstm: {worst:?}");
}

#[test]
fn checkpointing_keeps_the_awd_regularisers_masks() {
    // Weight drop is drawn once per forward on the outer tape, before the
    // segments; locked dropout acts on the layer's input and outputs.
    for how in [Checkpointing::Auto, Checkpointing::Every(3)] {
        let case = Case {
            layers: 2,
            bi: true,
            lengths: true,
            batch: 3,
            steps: 10,
            awd: true,
        };
        compare::<LstmCell>(case, how);
        compare::<GruCell>(Case { batch: 70, ..case }, how);
    }
}

#[path = "common/long_lm.rs"]
mod long_lm;
use long_lm::{LongLm, Mode};

/// Largest relative difference over a list of gradients.
fn worst_of(a: &[Tensor<f64>], b: &[Tensor<f64>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(a, b)| rel_diff(a, b))
        .fold(0.0, f64::max)
}

#[test]
fn user_code_checkpointing_readout_and_loss_gives_the_full_bptt_gradient() {
    // B = 2, I = 3, H = 8, 5 classes, T = 23: segments of 5 (the last 3).
    let lm = LongLm::<f64>::new(2, 3, 8, 5, 23);
    let (loss, full) = lm.gradient(Mode::Full);
    for mode in [
        Mode::Segments(5),
        Mode::Segments(1),
        Mode::Segments(23),
        Mode::Layer(Checkpointing::Auto),
        Mode::Layer(Checkpointing::Every(4)),
    ] {
        let (l, g) = lm.gradient(mode);
        assert!(
            (l - loss).abs() <= 1e-13 * loss.abs(),
            "{mode:?}: loss {l} vs {loss}"
        );
        let worst = worst_of(&full, &g);
        assert!(worst <= 1e-13, "{mode:?}: gradients differ by {worst:e}");
        eprintln!("{mode:?}: largest relative gradient difference {worst:e}");
    }
}

#[test]
fn truncated_windows_compose_with_checkpointing() {
    // Windows of 6 steps over T = 20, each window's steps checkpointed in
    // segments of 4 (and √6 → 3): the same losses and gradients as the
    // truncated run without checkpointing.
    let plain = LongLm::<f64>::new(3, 4, 6, 5, 20);
    let (loss, g) = plain.gradient(Mode::Truncated(6));
    for how in [Checkpointing::Every(4), Checkpointing::Auto] {
        let mut ckpt = LongLm::<f64>::new(3, 4, 6, 5, 20);
        ckpt.lstm.set_checkpoint(how);
        let (l, gc) = ckpt.gradient(Mode::Truncated(6));
        assert!(
            (l - loss).abs() <= 1e-13 * loss.abs(),
            "{how:?}: loss {l} vs {loss}"
        );
        let worst = worst_of(&g, &gc);
        assert!(worst <= 1e-13, "{how:?}: gradients differ by {worst:e}");
    }
}

#[test]
fn a_parameter_missing_from_a_checkpoints_inputs_is_refused_by_name() {
    let lm = LongLm::<f64>::new(1, 2, 3, 4, 3);
    let tape = Tape::new();
    let h = tape.zeros(&[1, 3]);
    let lstm = lm.lstm.clone();
    let x = Tensor::<f64>::randn(&[3, 1, 2], 1);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tape.checkpoint(&[h], move |t, v| {
            let xs = t.constant(x.clone());
            let init = tapegrad::layers::State::new(vec![v[0]], Some(vec![v[0]]));
            vec![lstm.forward(t, &ParamStore::new(), xs, Some(&init)).state.h[0]]
        })
    }));
    let msg = r
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        msg.contains("checkpointed function") && msg.contains("not among its inputs"),
        "got: {msg}"
    );
}

#[test]
fn a_var_passed_or_returned_twice_is_one_input_or_output() {
    // f(a, b, a) = (tanh(a·b), tanh(a·b), a): x passed twice, one output
    // returned twice; the gradients are bitwise the plain ones.
    let x0 = Tensor::<f64>::randn(&[2, 3], 5);
    let w0 = Tensor::<f64>::randn(&[2, 3], 6);
    let plain = {
        let tape = Tape::new();
        let (x, w) = (tape.var(x0.clone()), tape.var(w0.clone()));
        let p = (x * w).tanh();
        let g = ((p + p) * x).sum().backward();
        (g.wrt(x).clone(), g.wrt(w).clone())
    };
    let tape = Tape::new();
    let (x, w) = (tape.var(x0), tape.var(w0));
    let out = tape.checkpoint(&[x, w, x], |_, v| {
        let p = (v[0] * v[1]).tanh();
        vec![p, p, v[2]]
    });
    let g = ((out[0] + out[1]) * out[2]).sum().backward();
    assert_bitwise(g.wrt(x), &plain.0, "dx");
    assert_bitwise(g.wrt(w), &plain.1, "dw");
}

#[test]
fn a_segment_of_zero_steps_is_refused() {
    let r = std::panic::catch_unwind(|| Checkpointing::Every(0).segment_steps(5));
    let msg = r
        .err()
        .and_then(|e| e.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("Every(0)"), "got: {msg}");
}
