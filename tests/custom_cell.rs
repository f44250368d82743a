//! Cells written outside the crate through the public `Cell` interface:
//!
//! - the minimal gated unit of `examples/custom_cell.rs` (two input gate
//!   blocks, one recurrent block, a further parameter), stacked and
//!   bidirectional with per-sequence
//!   lengths: every parameter's gradient, and d/dx and d/dh(0), against
//!   central differences (f64, ε = 1e-6: |analytic − numeric| ≤ 1e-8 +
//!   1e-6·|numeric|), 256 proptest cases;
//! - an LSTM written through the interface equals `Lstm` bit for bit
//!   (outputs, final state, every gradient), reordered weights or not;
//! - a cell with several further states runs with lengths and carries
//!   them in `State::extra`;
//! - a step that returns the wrong number of state tensors, or a wrong
//!   shape, is refused with a message naming the cell, the layer, the
//!   direction and the step.

use proptest::prelude::*;
use tapegrad::gradcheck::gradcheck;
use tapegrad::layers::{
    Cell, CellSpec, Init, Lstm, Recurrent, RecurrentConfig, RunOptions, SeqOutput, State, Step,
};
use tapegrad::{ParamStore, Real, Tape, Tensor, Var};

/// The example's cell: Zhou et al.'s minimal gated unit.
#[path = "../examples/custom_cell.rs"]
#[allow(dead_code)]
mod example;
use example::Mgu;

#[path = "common/user_lstm.rs"]
mod user_lstm;
use user_lstm::UserLstm;

/// A cell with two further states (a running sum and a running maximum of
/// its candidate), reading x(t) itself (no hoisted projection).
#[derive(Debug, Clone, Copy, Default)]
struct Accumulator;

impl Cell for Accumulator {
    fn name(&self) -> &str {
        "accumulator"
    }

    fn spec(&self, input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 0)
            .recurrent_gates(1)
            .state("sum", hidden)
            .state("peak", hidden)
            .param("weight_x", &[hidden, input], Init::Uniform)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let n = (s.x().matmul_t(s.param("weight_x")) + s.recurrent(state[0])).tanh();
        let sum = state[1] + n;
        let peak = Var::select(&greater(&n, &state[2]), n, state[2]);
        vec![n, sum, peak]
    }
}

fn greater<F: Real>(a: &Var<'_, F>, b: &Var<'_, F>) -> Vec<bool> {
    let (a, b) = (a.to_tensor(), b.to_tensor());
    a.data().iter().zip(b.data()).map(|(x, y)| x > y).collect()
}

/// Sizes of one case.
#[derive(Debug, Clone)]
struct Case {
    input: usize,
    hidden: usize,
    layers: usize,
    bidirectional: bool,
    lengths: Vec<usize>,
    steps: usize,
    seed: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1usize..=3,
        1usize..=3,
        1usize..=2,
        any::<bool>(),
        1usize..=4,
        1usize..=3,
        any::<u64>(),
    )
        .prop_flat_map(
            |(input, hidden, layers, bidirectional, steps, batch, seed)| {
                (proptest::collection::vec(0..=steps, batch)).prop_map(move |lengths| Case {
                    input,
                    hidden,
                    layers,
                    bidirectional,
                    lengths,
                    steps,
                    seed,
                })
            },
        )
}

/// Σ weights ⊙ outputs + Σ final h, for the layer in `store`.
fn loss<'t>(
    layer: &Recurrent<Mgu>,
    tape: &'t Tape<f64>,
    store: &ParamStore<f64>,
    x: Var<'t, f64>,
    h0: Option<Var<'t, f64>>,
    case: &Case,
    weights: &Tensor<f64>,
) -> Var<'t, f64> {
    let (b, h) = (case.lengths.len(), case.hidden);
    let entries = case.layers * if case.bidirectional { 2 } else { 1 };
    let init = h0.map(|h0| {
        State::new(
            (0..entries)
                .map(|i| h0.slice(0, i, 1).reshape(&[b, h]))
                .collect(),
            None,
        )
    });
    let opts = RunOptions {
        lengths: Some(&case.lengths),
        dropout_seed: None,
    };
    let out = layer.forward_with(tape, store, x, init.as_ref(), opts);
    let mut total = (out.stacked_rows() * tape.constant(weights.clone())).sum();
    for h in &out.state.h {
        total = total + h.sum();
    }
    total
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_user_cell_gets_exact_gradients_stacked_bidirectional_with_lengths(case in cases()) {
        let mut store = ParamStore::<f64>::new();
        let cfg = RecurrentConfig::new(case.input, case.hidden)
            .layers(case.layers)
            .bidirectional(case.bidirectional);
        let layer = Recurrent::<Mgu>::new(&mut store, "mgu", cfg, case.seed);
        let (t, b, h) = (case.steps, case.lengths.len(), case.hidden);
        let dirs = if case.bidirectional { 2 } else { 1 };
        let x = Tensor::randn(&[t, b, case.input], case.seed ^ 1);
        let h0 = Tensor::randn(&[case.layers * dirs, b, h], case.seed ^ 2);
        let weights = Tensor::randn(&[t * b, dirs * h], case.seed ^ 3);

        // Inputs and initial state through gradcheck.
        let report = gradcheck(&[x.clone(), h0], |tape, v| {
            loss(&layer, tape, &store, v[0], Some(v[1]), &case, &weights)
        });
        prop_assert!(report.passes(1e-8, 1e-6), "{:?}", report);

        // Every parameter element against central differences.
        let analytic = {
            let tape = Tape::new();
            let xv = tape.constant(x.clone());
            let g = loss(&layer, &tape, &store, xv, None, &case, &weights).backward();
            store
                .keys()
                .map(|k| g.param(k).cloned().unwrap_or_else(|| Tensor::zeros(store.get(k).shape())))
                .collect::<Vec<_>>()
        };
        let keys: Vec<_> = store.keys().collect();
        let eps = 1e-6;
        for (k, key) in keys.iter().enumerate() {
            for i in 0..store.get(*key).numel() {
                let mut at = |delta: f64| {
                    let old = store.get(*key).data()[i];
                    store.get_mut(*key).data_mut()[i] = old + delta;
                    let tape = Tape::new();
                    let xv = tape.constant(x.clone());
                    let v = loss(&layer, &tape, &store, xv, None, &case, &weights).item();
                    store.get_mut(*key).data_mut()[i] = old;
                    v
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                let a = analytic[k].data()[i];
                prop_assert!(
                    (a - numeric).abs() <= 1e-8 + 1e-6 * numeric.abs(),
                    "{}[{i}]: tape {a}, central differences {numeric}",
                    store.name(*key)
                );
            }
        }
    }
}

/// Outputs, final state and every parameter gradient of one run.
fn run<C: Cell + Default>(batch: usize, layers: usize, bidirectional: bool) -> Vec<Vec<u64>> {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(5, 8)
        .layers(layers)
        .bidirectional(bidirectional);
    let layer = Recurrent::<C>::new(&mut store, "lstm", cfg, 3);
    let tape = Tape::new();
    let x = tape.var(Tensor::randn(&[6, batch, 5], 4));
    let lengths: Vec<usize> = (0..batch).map(|b| 6 - b % 3).collect();
    let opts = RunOptions {
        lengths: Some(&lengths),
        dropout_seed: None,
    };
    let out: SeqOutput<'_, f64> = layer.forward_with(&tape, &store, x, None, opts);
    let s = out.stacked();
    let w = tape.constant(Tensor::randn(&s.shape(), 9));
    let g = (s * w).sum().backward();
    let bits = |t: &Tensor<f64>| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut all = vec![bits(&s.to_tensor()), bits(g.wrt(x))];
    for v in out.state.h.iter().chain(out.state.c.iter().flatten()) {
        all.push(bits(&v.to_tensor()));
    }
    for k in store.keys() {
        all.push(bits(g.param(k).expect("every parameter has a gradient")));
    }
    all
}

#[test]
fn an_lstm_through_the_interface_is_bitwise_the_builtin_one() {
    // B = 3: W in PyTorch's layout; B = 70: reordered Wᵀ, deferred ∂W.
    for (batch, layers, bi) in [(3, 2, true), (70, 1, false), (70, 2, true)] {
        assert!(
            run::<UserLstm>(batch, layers, bi)
                == run::<tapegrad::layers::LstmCell>(batch, layers, bi),
            "B = {batch}, {layers} layers, bidirectional {bi}"
        );
        let _: Option<Lstm> = None;
    }
}

#[test]
fn a_cell_with_several_states_carries_them_all() {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(1, 2).layers(2);
    let layer = Recurrent::<Accumulator>::new(&mut store, "acc", cfg, 1);
    assert!(
        store.key("acc.weight_ih_l0").is_none(),
        "the cell reads x(t) itself"
    );
    let tape = Tape::new();
    let x = tape.var(Tensor::randn(&[4, 3, 1], 2));
    let lengths = [4, 2, 0];
    let opts = RunOptions {
        lengths: Some(&lengths),
        dropout_seed: None,
    };
    let out = layer.forward_with(&tape, &store, x, None, opts);
    assert_eq!(out.state.count(), 3);
    assert_eq!(out.state.extra.len(), 1);
    // The running sum is the sum of the outputs over each valid step.
    let sums = out.state.c.as_ref().unwrap()[1].to_tensor();
    let mut want = [0.0; 6];
    for (t, o) in out.outputs.iter().enumerate() {
        for (k, v) in o.to_tensor().data().iter().enumerate() {
            if t < lengths[k / 2] {
                want[k] += v;
            }
        }
    }
    for (a, b) in sums.data().iter().zip(want) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    // The third sequence has no valid step: its state stays zero.
    assert!(out.state.extra[0][1].to_tensor().data()[4..]
        .iter()
        .all(|&v| v == 0.0));
    let g = out.state.extra[0][1].sum().backward();
    assert!(g.wrt(x).data().iter().any(|&v| v != 0.0));
    // The state goes to tensors and back with all three parts.
    let carried = out.state.to_tensors();
    assert_eq!(carried.extra.len(), 1);
    let again = carried.bind(&tape);
    let _ = layer.forward(&tape, &store, x, Some(&again));
}

/// A cell that returns `count` state tensors of `width` columns.
#[derive(Debug, Clone, Copy)]
struct Broken {
    count: usize,
    width: usize,
}

impl Default for Broken {
    fn default() -> Self {
        Broken { count: 1, width: 2 }
    }
}

impl Cell for Broken {
    fn name(&self) -> &str {
        "broken"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 1)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, _: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let z = s.gates(s.tape().zeros(&[s.batch(), s.hidden()]));
        let wide = s.tape().zeros(&[s.batch(), self.width]);
        let mut out = vec![if self.width == s.hidden() { z } else { wide }];
        out.resize(self.count, z);
        out
    }
}

fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("must panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_step_returning_the_wrong_state_is_named_by_cell_layer_direction_and_step() {
    let run = |cell: Broken| {
        panic_message(move || {
            let mut store = ParamStore::<f64>::new();
            let cfg = RecurrentConfig::new(2, 3).layers(2).bidirectional(true);
            let layer = Recurrent::with_cell(cell, &mut store, "b", cfg, 0);
            let tape = Tape::new();
            let x = tape.constant(Tensor::ones(&[4, 2, 2]));
            let _ = layer.forward(&tape, &store, x, None);
        })
    };
    let count = run(Broken { count: 2, width: 3 });
    assert!(count.contains("broken::step"), "{count}");
    assert!(
        count.contains("2 state tensors returned, the cell declared 1"),
        "{count}"
    );
    assert!(
        count.contains("layer 0, forward direction, step t = 0"),
        "{count}"
    );
    let shape = run(Broken { count: 1, width: 5 });
    assert!(shape.contains("broken::step"), "{shape}");
    assert!(
        shape.contains("state tensor 0 (h) has shape [2, 5], expected [2, 3]"),
        "{shape}"
    );
    assert!(
        shape.contains("layer 0, forward direction, step t = 0"),
        "{shape}"
    );
}

#[test]
fn a_step_asking_for_what_its_cell_did_not_declare_is_named() {
    #[derive(Debug, Default)]
    struct Asks;
    impl Cell for Asks {
        fn name(&self) -> &str {
            "asks"
        }
        fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
            CellSpec::new(hidden, 1)
        }
        fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, st: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
            let _ = s.param("weight_ci");
            vec![st[0]]
        }
    }
    let msg = panic_message(|| {
        let mut store = ParamStore::<f32>::new();
        let cfg = RecurrentConfig::new(2, 3).bidirectional(true);
        let layer = Recurrent::<Asks>::new(&mut store, "a", cfg, 0);
        let tape = Tape::new();
        let x = tape.constant(Tensor::ones(&[2, 1, 2]));
        let _ = layer.forward(&tape, &store, x, None);
    });
    assert!(msg.contains("asks::step"), "{msg}");
    assert!(msg.contains("no parameter 'weight_ci'"), "{msg}");
    assert!(
        msg.contains("layer 0, forward direction, step t = 0"),
        "{msg}"
    );
}

/// The layer-normalised LSTM normalises what `Step::input()` and
/// `Step::recurrent(h)` hand it, so it keeps the LSTM's fast path: at
/// B ≥ 8 the tape holds one transpose of W_ih and one of W_hh per
/// sequence (none per step), one input projection GEMM for all steps, and
/// each step's recurrent product is a row-major `matmul` by that Wᵀ —
/// no `matmul_t` with W in PyTorch's layout anywhere.
#[test]
fn layer_norm_lstm_keeps_the_fast_path() {
    use tapegrad::layers::LayerNormLstm;
    let mut store = ParamStore::<f32>::new();
    let layer = LayerNormLstm::new(&mut store, "ln", RecurrentConfig::new(3, 4), 0);
    let tape = Tape::new();
    let steps = 5;
    let x = tape.constant(Tensor::randn(&[steps, 8, 3], 0));
    let _ = layer
        .forward(&tape, &store, x, None)
        .stacked()
        .sum()
        .backward();
    let listing = tape.listing();
    let op_lines = |op: &str| -> Vec<&str> {
        listing
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w == op))
            .collect()
    };
    let transposes = op_lines("transpose");
    assert_eq!(transposes.len(), 2, "{listing}");
    let w_hh_t = transposes
        .iter()
        .find(|l| l.contains("[4, 16]"))
        .and_then(|l| l.split_whitespace().next())
        .expect("W_hhᵀ is [H × 4H]");
    let products = op_lines("matmul");
    assert_eq!(products.len(), steps, "{listing}");
    assert!(products
        .iter()
        .all(|l| l.ends_with(&format!(", {w_hh_t})"))));
    assert!(op_lines("matmul_t").is_empty() && op_lines("addmm").len() == 1);
}
