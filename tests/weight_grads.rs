//! The products' weight-gradient machinery (the Wᵀ reorder and the
//! deferred, batched gradients of shared weights, `ops/linalg/`), seen
//! through the public API: anomaly mode takes the same path as training, so
//! both give bitwise the same gradients, and a non-finite gradient that
//! first appears when deferred uses are summed is still named.
//!
//! The recurrent layers take both tricks at B ≥ 8 rows
//! (`tapegrad::tensor::gemm::REORDER_MIN_ROWS`: W_hh is reordered once per
//! sequence) with ≤ 512 rows per step (each step's `h·W_hhᵀ` defers its
//! weight gradient); B = 64 and T = 80 at H = 32 fill a deferral block
//! (2¹⁸ elements, 32 steps of [64 × 4H]) twice, so blocks flush when full
//! and again when the sweep reaches the weight.

use tapegrad::layers::{Lstm, RecurrentConfig, Rnn};
use tapegrad::tensor::gemm::REORDER_MIN_ROWS;
use tapegrad::{ErrorKind, ParamKey, ParamStore, Real, Tape, Tensor, Var};

const B: usize = 64;
const T: usize = 80;
const I: usize = 16;
const H: usize = 32;

// The shapes take both tricks: the reorder, and more G_t than one deferral
// block (2¹⁸ elements) holds.
const _: () = assert!(B >= REORDER_MIN_ROWS);
const _: () = assert!(T * B * 4 * H > 1 << 18);

/// Runs `loss(tape)` and backward twice, with anomaly mode off and on (from
/// the first recorded op), and asserts that the `params` parameter
/// gradients are finite and bitwise the same.
fn same_gradients_in_both_modes<F: Real>(
    params: usize,
    loss: impl for<'t> Fn(&'t Tape<F>) -> Var<'t, F>,
) {
    let run = |anomaly: bool| {
        let tape = Tape::<F>::new();
        tape.set_anomaly_detection(anomaly);
        let grads = loss(&tape).backward();
        // f64 holds every f32 exactly: equal f64 bits ⇔ equal bits.
        grads
            .params()
            .map(|(k, g)| {
                let bits = g.data().iter().map(|x| x.to_f64_lossy().to_bits());
                (k, bits.collect::<Vec<_>>())
            })
            .collect::<Vec<(ParamKey, Vec<u64>)>>()
    };
    let (normal, anomaly) = (run(false), run(true));
    assert_eq!(normal.len(), params);
    assert_eq!(normal.len(), anomaly.len());
    for ((k, a), (k2, b)) in normal.iter().zip(&anomaly) {
        assert_eq!(k, k2);
        assert!(a.iter().all(|&x| f64::from_bits(x).is_finite()));
        assert!(a == b, "parameter {k:?}: anomaly mode changed the gradient");
    }
}

/// Σ of the outputs weighted by a fixed random tensor, so that every output
/// element gets its own gradient.
fn weighted_sum<'t, F: Real>(tape: &'t Tape<F>, outputs: &[Var<'t, F>], seed: u64) -> Var<'t, F> {
    let y = Var::concat(outputs, 0);
    let c = tape.constant(Tensor::randn(y.shape().as_slice(), seed));
    (y * c).sum()
}

fn rnn_loss<'t>(tape: &'t Tape<f64>, store: &ParamStore<f64>, rnn: &Rnn) -> Var<'t, f64> {
    let x = tape.constant(Tensor::randn(&[T, B, I], 8));
    let out = rnn.forward(tape, store, x, None);
    weighted_sum(tape, &out.outputs, 9)
}

fn lstm_loss<'t, F: Real>(tape: &'t Tape<F>, store: &ParamStore<F>, lstm: &Lstm) -> Var<'t, F> {
    let x = tape.constant(Tensor::randn(&[T, B, I], 5));
    let out = lstm.forward(tape, store, x, None);
    weighted_sum(tape, &out.outputs, 6)
}

#[test]
fn anomaly_mode_gives_bitwise_the_gradients_of_training_lstm_f64() {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(I, H).layers(2).bidirectional(true);
    let lstm = Lstm::new(&mut store, "lstm", cfg, 3);
    // 2 layers × 2 directions × (W_ih, W_hh, b_ih, b_hh)
    same_gradients_in_both_modes(16, |t| lstm_loss(t, &store, &lstm));
}

#[test]
fn anomaly_mode_gives_bitwise_the_gradients_of_training_lstm_f32() {
    let mut store = ParamStore::<f32>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(I, H), 4);
    same_gradients_in_both_modes(4, |t| lstm_loss(t, &store, &lstm));
}

#[test]
fn anomaly_mode_gives_bitwise_the_gradients_of_training_rnn() {
    let mut store = ParamStore::<f64>::new();
    let rnn = Rnn::new(&mut store, "rnn", RecurrentConfig::new(I, H), 7);
    same_gradients_in_both_modes(4, |t| rnn_loss(t, &store, &rnn));
}

#[test]
fn a_non_finite_sum_of_deferred_uses_is_named() {
    // Σ_t G_tᵀ·x_t over 50 steps of 4 rows of 10³⁰⁷: every use alone is
    // finite (4·10³⁰⁷), their sum (200·10³⁰⁷) is not. The uses are deferred
    // and summed in one GEMM when the block is full, at the last use the
    // sweep meets (step 0), which the error names.
    let steps = 50;
    let run = |anomaly: bool| {
        let tape = Tape::<f64>::new();
        tape.set_anomaly_detection(anomaly);
        let w = tape.var(Tensor::full(&[4, 3], 1e-307));
        let mut loss: Option<Var<'_, f64>> = None;
        for t in 0..steps {
            let _s = tape.scope_at("t", t);
            let x = tape.constant(Tensor::full(&[4, 3], 1e307));
            let y = x.matmul_t(w).sum();
            loss = Some(loss.map_or(y, |l| l + y));
        }
        let loss = loss.expect("steps > 0");
        assert!(loss.item().is_finite());
        loss.try_backward().map(|g| g.wrt(w).data().to_vec())
    };
    // Off: the gradient is +∞, as IEEE says.
    assert!(run(false)
        .expect("no check")
        .iter()
        .all(|&g| g == f64::INFINITY));
    let e = run(true).expect_err("anomaly mode finds the overflow");
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert_eq!(e.op(), "matmul_t");
    assert_eq!(e.label(), Some("t=0"));
    assert!(e.message().contains("backward produced inf"), "{e}");
    assert!(e.message().contains("[4, 3] gradient"), "{e}");
}
