//! Checkpointed BPTT (`RecurrentConfig::checkpoint`) against the plain run,
//! f64, for every built-in cell, an LSTM and a minimal gated unit written
//! outside the crate, stacked, bidirectional, with lengths, at a batch that
//! reorders the weights (B = 70) and one that does not:
//!
//! - outputs and final states are **bitwise** equal to the plain run whose
//!   input projection is chunked as the segments are (`projection_steps(k)`:
//!   the same GEMM shapes; the GEMM kernels round a row differently with the
//!   row count, so another chunking differs in the last bits anyway);
//! - ∂L/∂x and ∂L/∂(initial state) are bitwise equal too for cells that read
//!   each state tensor once per step (RNN, LSTM, the user LSTM). A cell that
//!   reads h twice in a step (GRU, MGU: the recurrent product and the
//!   update z⊙h) sums the two inside the segment and then adds the outputs'
//!   share, where the plain run adds them one by one: one rounding of
//!   association at each segment boundary;
//! - every parameter's gradient is the same sum grouped by segment (each
//!   segment's contributions summed, then the segments'), so it agrees up to
//!   the rounding of that regrouping.
//!
//! Tolerance where not bitwise: |ckpt − plain| ≤ 1e-13 · max(1, max|plain|)
//! per tensor (measured largest: printed by each test, and in
//! docs/reliability.md).
//! - truncated BPTT windows with checkpointing inside each window give the
//!   same losses and carried state as without (same tolerance);
//! - `Tape::checkpoint` on a user function (a segment that includes a
//!   readout and a loss) gives the full-BPTT gradient;
//! - peak memory grows like √T: the fitted exponent of the peak heap of a
//!   checkpointed LSTM LM step over T = 64 … 1024 (B = 1, H = 32) lies in
//!   [0.4, 0.6] (the big-T sweep is in `examples/bptt_memory.rs`).

use tapegrad::layers::{
    Cell, Checkpointing, GruCell, LstmCell, Recurrent, RecurrentConfig, RnnCell, RunOptions,
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

fn bits(t: &Tensor<f64>) -> Vec<u64> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

#[derive(Clone, Copy, Debug)]
struct Case {
    layers: usize,
    bi: bool,
    lengths: bool,
    batch: usize,
    steps: usize,
}

fn run<C: Cell + Default>(case: Case, how: Checkpointing, projection: usize) -> Run {
    let (i, h) = (5, 8);
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(i, h)
        .layers(case.layers)
        .bidirectional(case.bi)
        .projection_steps(projection)
        .checkpoint(how);
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
        dropout_seed: None,
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

/// Compares a checkpointed run with the plain one whose input projection
/// is chunked as the segments are (`projection_steps(k)`: the same GEMM
/// shapes, so the same rounding); returns the largest parameter-gradient
/// difference relative to max(1, max|plain|).
fn compare<C: Cell + Default>(case: Case, how: Checkpointing, data_bitwise: bool) -> f64 {
    let k = how.segment_steps(case.steps).expect("checkpointed");
    let name = C::default().name().to_string();
    let plain = run::<C>(case, Checkpointing::Off, k);
    let ckpt = run::<C>(case, how, k);
    let mut worst = 0f64;
    let exact = plain.values.iter().zip(&ckpt.values);
    let data = plain.data.iter().zip(&ckpt.data);
    let (exact, close): (Vec<_>, Vec<_>) = if data_bitwise {
        (exact.chain(data).collect(), Vec::new())
    } else {
        (exact.collect(), data.collect())
    };
    for ((what, a), (_, b)) in exact {
        let (a, b) = (bits(a), bits(b));
        let diff: Vec<(usize, f64, f64)> = a
            .iter()
            .zip(&b)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| (i, f64::from_bits(*x), f64::from_bits(*y)))
            .take(4)
            .collect();
        assert!(a == b, "{name} {case:?} {how:?}: {what} differs: {diff:?}");
    }
    for ((what, a), (_, b)) in close
        .into_iter()
        .chain(plain.params.iter().zip(&ckpt.params))
    {
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

/// Every case for cell `C`; `data_bitwise` when each state tensor is read
/// once per step (see the module doc).
fn every_case<C: Cell + Default>(data_bitwise: bool) -> f64 {
    let cases = [
        (
            Case {
                layers: 1,
                bi: false,
                lengths: false,
                batch: 2,
                steps: 9,
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
            },
            Checkpointing::Auto,
        ),
    ];
    cases
        .into_iter()
        .map(|(case, how)| compare::<C>(case, how, data_bitwise))
        .fold(0.0, f64::max)
}

#[test]
fn a_checkpointed_rnn_matches_the_plain_run() {
    let worst = every_case::<RnnCell>(true);
    eprintln!("rnn: largest relative parameter-gradient difference {worst:e}");
}

#[test]
fn a_checkpointed_lstm_matches_the_plain_run() {
    let worst = every_case::<LstmCell>(true);
    eprintln!("lstm: largest relative parameter-gradient difference {worst:e}");
}

#[test]
fn a_checkpointed_gru_matches_the_plain_run() {
    let worst = every_case::<GruCell>(false);
    eprintln!("gru: largest relative parameter-gradient difference {worst:e}");
}

#[test]
fn checkpointed_user_cells_match_the_plain_run() {
    let a = every_case::<UserLstm>(true);
    let b = every_case::<Mgu>(false);
    eprintln!("user lstm {a:e}, mgu {b:e}");
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
