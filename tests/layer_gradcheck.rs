//! Finite-difference checks of whole recurrent layers, f64.
//!
//! For each layer kind — `Rnn` (tanh), `Rnn` (relu), `Lstm`, `Gru`, and the
//! LSTM variants `ProjLstm` (P = 2), `LayerNormLstm`, `PeepholeLstm` — and
//! each shape — one layer, two stacked layers, bidirectional, stacked and
//! bidirectional, the last also with variable lengths — the scalar
//!
//! ```text
//! L = Σ_t Σ outputs(t) ⊙ R(t) + Σ_k h_n[k] ⊙ S[k] (+ Σ_k c_n[k] ⊙ Q[k])
//! ```
//!
//! (R, S, Q fixed random weights, so every output element and every final
//! state entry matters) is differentiated by the tape and by central
//! differences:
//!
//! - w.r.t. **every parameter**: [`fd_check_params`] perturbs the entries
//!   of the `ParamStore` in place (`store.get_mut(key)`) and compares with
//!   `grads.param(key)`;
//! - w.r.t. **x, h(0) and c(0)** (plain vars): `tapegrad::gradcheck::gradcheck`.
//!
//! Both use ε = 1e-6 (gradcheck's default; 1e-5 for `LayerNormLstm`, see
//! [`Kind::fd_step`]) and the relative error
//! |analytic − numeric| / max(|analytic|, |numeric|, 1e-3) (gradcheck's
//! floor); the bound is **1e-6**. Sizes: B = 2, T = 4, I = 3, H = 3.
//!
//! ReLU kinks: for the relu RNN the inputs are redrawn (deterministically,
//! next seed) until every pre-activation a = x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh
//! of every layer, direction and step is at least 1e-3 away from 0, as
//! computed by an independent plain-loop forward pass in this file (which
//! must also reproduce the tape's outputs to 1e-12); ε moves a by ~1e-5 at
//! most, so no finite difference straddles a kink.
//!
//! The worst errors are printed (`--nocapture`).

use tapegrad::gradcheck::{gradcheck_with, GradcheckOptions};
use tapegrad::layers::{
    Gru, LayerNormLstm, Lstm, PeepholeLstm, ProjLstm, ProjLstmCell, RecurrentConfig, Rnn,
    RunOptions, SeqOutput, State,
};
use tapegrad::{Nonlinearity, ParamKey, ParamStore, Tape, Tensor, Var};

/// Finite-difference step (gradcheck's default).
const EPS: f64 = 1e-6;
/// Denominator floor of the relative error (gradcheck's default).
const FLOOR: f64 = 1e-3;
/// Maximum relative error allowed.
const TOL: f64 = 1e-6;
/// Minimum distance of every relu pre-activation from the kink.
const KINK_MARGIN: f64 = 1e-3;

const B: usize = 2;
const T: usize = 4;
const I: usize = 3;
const H: usize = 3;
/// The width of h of the projected LSTM.
const P: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rnn(Nonlinearity),
    Lstm,
    Gru,
    Proj,
    LnLstm,
    Peephole,
}

impl Kind {
    /// Whether the cell has a state c besides h.
    fn has_c(self) -> bool {
        !matches!(self, Kind::Rnn(_) | Kind::Gru)
    }

    /// The finite-difference step. 1e-6 (gradcheck's default) but for the
    /// layer-norm LSTM, whose ∂L/∂γ_hh entries near the 1e-3 floor met the
    /// rounding noise of central differences at 1e-6, u·|L|/ε ≈ 1e-9
    /// absolute: 1.03e-6 relative on `ln_gain_hh_l0` (abs 1.1e-9), stacked,
    /// bidirectional with lengths. At 1e-5 the noise is ten times smaller
    /// and the truncation, ε²·|L‴|/6, stays far below it.
    fn fd_step(self) -> f64 {
        if self == Kind::LnLstm {
            1e-5
        } else {
            EPS
        }
    }

    /// The width of h.
    fn width(self) -> usize {
        if self == Kind::Proj {
            P
        } else {
            H
        }
    }
}

enum Layer {
    Rnn(Rnn),
    Lstm(Lstm),
    Gru(Gru),
    Proj(ProjLstm),
    LnLstm(LayerNormLstm),
    Peephole(PeepholeLstm),
}

impl Layer {
    fn new(kind: Kind, store: &mut ParamStore<f64>, cfg: RecurrentConfig) -> Self {
        match kind {
            Kind::Rnn(phi) => Layer::Rnn(Rnn::new(store, "rnn", cfg.nonlinearity(phi), 3)),
            Kind::Lstm => Layer::Lstm(Lstm::new(store, "lstm", cfg, 3)),
            Kind::Gru => Layer::Gru(Gru::new(store, "gru", cfg, 3)),
            Kind::Proj => Layer::Proj(ProjLstm::with_cell(
                ProjLstmCell::new(P),
                store,
                "proj",
                cfg,
                3,
            )),
            Kind::LnLstm => {
                let layer = LayerNormLstm::new(store, "ln", cfg, 3);
                // Gains and biases away from their 1 and 0 start.
                for (i, k) in store.keys().collect::<Vec<_>>().into_iter().enumerate() {
                    if store.name(k).contains(".ln_") {
                        let shift =
                            Tensor::uniform(store.get(k).shape(), -0.3, 0.3, i as u64).unwrap();
                        for (v, d) in store.get_mut(k).data_mut().iter_mut().zip(shift.data()) {
                            *v += d;
                        }
                    }
                }
                Layer::LnLstm(layer)
            }
            Kind::Peephole => Layer::Peephole(PeepholeLstm::new(store, "peep", cfg, 3)),
        }
    }

    fn forward<'t>(
        &self,
        tape: &'t Tape<f64>,
        store: &ParamStore<f64>,
        x: Var<'t, f64>,
        init: &State<'t, f64>,
        lengths: Option<&[usize]>,
    ) -> SeqOutput<'t, f64> {
        let opts = RunOptions {
            lengths,
            dropout_seed: None,
        };
        match self {
            Layer::Rnn(l) => l.forward_with(tape, store, x, Some(init), opts),
            Layer::Lstm(l) => l.forward_with(tape, store, x, Some(init), opts),
            Layer::Gru(l) => l.forward_with(tape, store, x, Some(init), opts),
            Layer::Proj(l) => l.forward_with(tape, store, x, Some(init), opts),
            Layer::LnLstm(l) => l.forward_with(tape, store, x, Some(init), opts),
            Layer::Peephole(l) => l.forward_with(tape, store, x, Some(init), opts),
        }
    }
}

/// The worst errors of one check.
#[derive(Debug, Default, Clone, Copy)]
struct Worst {
    rel: f64,
    abs: f64,
}

impl Worst {
    fn add(&mut self, analytic: f64, numeric: f64) {
        let abs = (analytic - numeric).abs();
        self.abs = nan_max(self.abs, abs);
        self.rel = nan_max(self.rel, abs / analytic.abs().max(numeric.abs()).max(FLOOR));
    }

    fn merge(&mut self, o: Worst) {
        self.rel = nan_max(self.rel, o.rel);
        self.abs = nan_max(self.abs, o.abs);
    }
}

/// `f64::max` that keeps a NaN (a NaN gradient must fail the check, not
/// vanish from it).
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Central differences of `loss` with respect to every entry of every
/// parameter of `store`, against the tape's `grads.param(key)`. Fails on
/// the first parameter whose relative error exceeds [`TOL`]; returns the
/// worst errors.
fn fd_check_params<L>(store: &mut ParamStore<f64>, what: &str, eps: f64, loss: L) -> Worst
where
    L: for<'t> Fn(&'t Tape<f64>, &ParamStore<f64>) -> Var<'t, f64>,
{
    let mut tape = Tape::<f64>::new();
    let keys: Vec<ParamKey> = store.keys().collect();
    let analytic: Vec<Tensor<f64>> = {
        let grads = loss(&tape, store).backward();
        keys.iter()
            .map(|&k| {
                grads
                    .param(k)
                    .unwrap_or_else(|| panic!("{what}: no gradient for {}", store.name(k)))
                    .clone()
            })
            .collect()
    };
    tape.reset();
    let mut worst = Worst::default();
    for (&key, a) in keys.iter().zip(&analytic) {
        let mut here = Worst::default();
        for i in 0..a.numel() {
            let x0 = store.get(key).data()[i];
            store.get_mut(key).data_mut()[i] = x0 + eps;
            let up = loss(&tape, store).item();
            tape.reset();
            store.get_mut(key).data_mut()[i] = x0 - eps;
            let down = loss(&tape, store).item();
            tape.reset();
            store.get_mut(key).data_mut()[i] = x0;
            here.add(a.data()[i], (up - down) / (2.0 * eps));
        }
        assert!(
            here.rel <= TOL,
            "{what}: parameter {} relative error {:e} (abs {:e}) > {TOL:e}",
            store.name(key),
            here.rel,
            here.abs
        );
        worst.merge(here);
    }
    worst
}

/// One configuration to check.
#[derive(Debug, Clone, Copy)]
struct Case {
    kind: Kind,
    layers: usize,
    bidirectional: bool,
    lengths: Option<[usize; B]>,
}

impl Case {
    fn entries(&self) -> usize {
        self.layers * if self.bidirectional { 2 } else { 1 }
    }
}

/// L(x, h0, c0; params) as documented at the top.
fn loss<'t>(
    case: &Case,
    layer: &Layer,
    tape: &'t Tape<f64>,
    store: &ParamStore<f64>,
    x: Var<'t, f64>,
    h0: &[Var<'t, f64>],
    c0: Option<&[Var<'t, f64>]>,
) -> Var<'t, f64> {
    let init = State {
        h: h0.to_vec(),
        c: c0.map(<[_]>::to_vec),
        extra: Vec::new(),
    };
    let lengths = case.lengths;
    let out = layer.forward(tape, store, x, &init, lengths.as_ref().map(|l| &l[..]));
    let width = out.outputs[0].shape()[1];
    let r = tape.constant(Tensor::uniform(&[T * B, width], -1.0, 1.0, 500).unwrap());
    let mut l = (out.stacked_rows() * r).sum();
    for (k, h) in out.state.h.iter().enumerate() {
        let w = case.kind.width();
        let s = tape.constant(Tensor::uniform(&[B, w], -1.0, 1.0, 600 + k as u64).unwrap());
        l = l + (*h * s).sum();
    }
    for (k, c) in out.state.c.iter().flatten().enumerate() {
        let q = tape.constant(Tensor::uniform(&[B, H], -1.0, 1.0, 700 + k as u64).unwrap());
        l = l + (*c * q).sum();
    }
    l
}

/// The relu RNN forward pass in plain loops: the top layer's outputs
/// (T × B × D·H) and the smallest |pre-activation| seen anywhere.
fn relu_rnn_by_hand(
    store: &ParamStore<f64>,
    case: &Case,
    x: &Tensor<f64>,
    h0: &[Tensor<f64>],
) -> (Vec<f64>, f64) {
    let dirs = if case.bidirectional { 2 } else { 1 };
    let get = |name: String| store.get(store.key(&name).unwrap()).data().to_vec();
    let mut input = x.data().to_vec(); // [T × B × in]
    let mut in_size = I;
    let mut margin = f64::INFINITY;
    for l in 0..case.layers {
        let mut out = vec![0.0; T * B * dirs * H];
        for d in 0..dirs {
            let sfx = if d == 1 { "_reverse" } else { "" };
            let w_ih = get(format!("rnn.weight_ih_l{l}{sfx}"));
            let w_hh = get(format!("rnn.weight_hh_l{l}{sfx}"));
            let b_ih = get(format!("rnn.bias_ih_l{l}{sfx}"));
            let b_hh = get(format!("rnn.bias_hh_l{l}{sfx}"));
            for b in 0..B {
                let len = case.lengths.map_or(T, |ls| ls[b]);
                let mut h = h0[l * dirs + d].data()[b * H..(b + 1) * H].to_vec();
                let steps: Vec<usize> = if d == 0 {
                    (0..len).collect()
                } else {
                    (0..len).rev().collect()
                };
                for t in steps {
                    let xt = &input[(t * B + b) * in_size..(t * B + b + 1) * in_size];
                    let new: Vec<f64> = (0..H)
                        .map(|j| {
                            let mut a = b_ih[j] + b_hh[j];
                            for k in 0..in_size {
                                a += w_ih[j * in_size + k] * xt[k];
                            }
                            for k in 0..H {
                                a += w_hh[j * H + k] * h[k];
                            }
                            margin = margin.min(a.abs());
                            a.max(0.0)
                        })
                        .collect();
                    h = new;
                    let o = (t * B + b) * dirs * H + d * H;
                    out[o..o + H].copy_from_slice(&h);
                }
            }
        }
        input = out;
        in_size = dirs * H;
    }
    (input, margin)
}

/// Runs both checks for one case; returns (worst over parameters, worst
/// over x/h0/c0).
fn check(case: Case) -> (Worst, Worst) {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(I, H)
        .layers(case.layers)
        .bidirectional(case.bidirectional);
    let layer = Layer::new(case.kind, &mut store, cfg);
    let cell = case.kind.has_c();
    let e = case.entries();

    // inputs: x [T×B×I], h0 entries [B×width of h] and c0 entries [B×H]
    let draw = |seed: u64| -> Vec<Tensor<f64>> {
        let mut v = vec![Tensor::randn(&[T, B, I], seed)];
        for k in 0..e {
            let w = case.kind.width();
            v.push(scaled(Tensor::randn(&[B, w], seed + 1 + k as u64), 0.5));
        }
        if cell {
            for k in 0..e {
                v.push(scaled(Tensor::randn(&[B, H], seed + 50 + k as u64), 0.5));
            }
        }
        v
    };
    let mut seed = 1000;
    let mut inputs = draw(seed);
    if case.kind == Kind::Rnn(Nonlinearity::Relu) {
        let mut tries = 0;
        loop {
            let (by_hand, margin) = relu_rnn_by_hand(&store, &case, &inputs[0], &inputs[1..]);
            if margin >= KINK_MARGIN {
                // the hand-written forward pass is the tape's
                let tape = Tape::<f64>::new();
                let x = tape.constant(inputs[0].clone());
                let init = State {
                    h: inputs[1..]
                        .iter()
                        .map(|t| tape.constant(t.clone()))
                        .collect(),
                    c: None,
                    extra: Vec::new(),
                };
                let out = layer.forward(
                    &tape,
                    &store,
                    x,
                    &init,
                    case.lengths.as_ref().map(|l| &l[..]),
                );
                let got = out.stacked_rows().to_tensor();
                for (a, b) in got.data().iter().zip(&by_hand) {
                    assert!((a - b).abs() <= 1e-12, "{case:?}: relu forward {a} vs {b}");
                }
                let active = by_hand.iter().filter(|&&v| v > 0.0).count();
                assert!(
                    active > 0 && active < by_hand.len(),
                    "{case:?}: degenerate relu pattern"
                );
                break;
            }
            tries += 1;
            assert!(
                tries < 200,
                "{case:?}: no input without a near-kink pre-activation"
            );
            seed += 100;
            inputs = draw(seed);
        }
    }

    let what = format!("{case:?}");
    // x, h0, c0: gradcheck
    let opts = GradcheckOptions {
        eps: case.kind.fd_step(),
        floor: FLOOR,
    };
    let report = gradcheck_with(&inputs, opts, |tape, v| {
        let c0 = cell.then(|| &v[1 + e..1 + 2 * e]);
        loss(&case, &layer, tape, &store, v[0], &v[1..1 + e], c0)
    });
    for r in &report.inputs {
        assert!(
            r.max_rel_error <= TOL,
            "{what}: input {} (0 = x, then h0, c0 entries) relative error {:e} at {}",
            r.input,
            r.max_rel_error,
            r.worst_index
        );
        assert!(
            r.analytic.norm() > 1e-3,
            "{what}: input {} has a vanishing gradient",
            r.input
        );
    }
    let inputs_worst = Worst {
        rel: report.max_rel_error(),
        abs: report.max_abs_error(),
    };

    // every parameter: central differences on the store
    let params_worst = fd_check_params(&mut store, &what, case.kind.fd_step(), |tape, store| {
        let x = tape.constant(inputs[0].clone());
        let h0: Vec<Var<'_, f64>> = inputs[1..1 + e]
            .iter()
            .map(|t| tape.constant(t.clone()))
            .collect();
        let c0: Option<Vec<Var<'_, f64>>> = cell.then(|| {
            inputs[1 + e..]
                .iter()
                .map(|t| tape.constant(t.clone()))
                .collect()
        });
        loss(&case, &layer, tape, store, x, &h0, c0.as_deref())
    });
    (params_worst, inputs_worst)
}

/// `t` times `s`.
fn scaled(mut t: Tensor<f64>, s: f64) -> Tensor<f64> {
    t.data_mut().iter_mut().for_each(|v| *v *= s);
    t
}

/// The four shapes of one kind, plus stacked+bidirectional with lengths.
fn check_kind(kind: Kind) {
    let mut checked = 0;
    let mut params = Worst::default();
    let mut inputs = Worst::default();
    for (layers, bidirectional, lengths) in [
        (1, false, None),
        (2, false, None),
        (1, true, None),
        (2, true, None),
        (2, true, Some([T, 2])),
    ] {
        let case = Case {
            kind,
            layers,
            bidirectional,
            lengths,
        };
        let (p, i) = check(case);
        println!(
            "{kind:?} layers={layers} bidirectional={bidirectional} lengths={lengths:?}: \
             params rel {:.2e} (abs {:.2e}), x/h0/c0 rel {:.2e} (abs {:.2e})",
            p.rel, p.abs, i.rel, i.abs
        );
        params.merge(p);
        inputs.merge(i);
        checked += 1;
    }
    println!(
        "{kind:?}: {} configurations, worst relative error: parameters {:.2e}, x/h0/c0 {:.2e} (bound {TOL:e})",
        checked,
        params.rel,
        inputs.rel
    );
}

#[test]
fn rnn_tanh_gradcheck() {
    check_kind(Kind::Rnn(Nonlinearity::Tanh));
}

#[test]
fn rnn_relu_gradcheck() {
    check_kind(Kind::Rnn(Nonlinearity::Relu));
}

#[test]
fn lstm_gradcheck() {
    check_kind(Kind::Lstm);
}

#[test]
fn gru_gradcheck() {
    check_kind(Kind::Gru);
}

#[test]
fn projected_lstm_gradcheck() {
    check_kind(Kind::Proj);
}

#[test]
fn layer_norm_lstm_gradcheck() {
    check_kind(Kind::LnLstm);
}

#[test]
fn peephole_lstm_gradcheck() {
    check_kind(Kind::Peephole);
}

/// The LSTM variants run in f32: the same layer (parameters rounded to
/// f32, the same inputs) as in f64, stacked and bidirectional with
/// lengths, gives the loss and every parameter gradient within 1e-4
/// relative (floor 1e-2) of the f64 run.
#[test]
fn lstm_variants_run_in_f32() {
    fn loss_and_grads<F: tapegrad::Real>(
        layer: &Layer32,
        store: &ParamStore<F>,
        x: &Tensor<f64>,
    ) -> (f64, Vec<Vec<f64>>) {
        let tape = Tape::<F>::new();
        let x = tape.constant(x.cast());
        let lengths = [T, 2];
        let opts = RunOptions {
            lengths: Some(&lengths),
            dropout_seed: None,
        };
        let out = match layer {
            Layer32::Proj(l) => l.forward_with(&tape, store, x, None, opts),
            Layer32::LnLstm(l) => l.forward_with(&tape, store, x, None, opts),
            Layer32::Peephole(l) => l.forward_with(&tape, store, x, None, opts),
        };
        let mut loss = out.stacked().tanh().sum();
        for c in out.state.c.iter().flatten() {
            loss = loss + c.sum();
        }
        let g = loss.backward();
        let grads = store
            .keys()
            .map(|k| g.param(k).unwrap().cast::<f64>().into_vec())
            .collect();
        (loss.to_tensor().cast::<f64>().item(), grads)
    }
    enum Layer32 {
        Proj(ProjLstm),
        LnLstm(LayerNormLstm),
        Peephole(PeepholeLstm),
    }
    let cfg = RecurrentConfig::new(I, H).layers(2).bidirectional(true);
    let x = Tensor::randn(&[T, B, I], 42);
    for which in 0..3 {
        let mut store = ParamStore::<f64>::new();
        let layer = match which {
            0 => Layer32::Proj(ProjLstm::with_cell(
                ProjLstmCell::new(P),
                &mut store,
                "p",
                cfg,
                1,
            )),
            1 => Layer32::LnLstm(LayerNormLstm::new(&mut store, "p", cfg, 1)),
            _ => Layer32::Peephole(PeepholeLstm::new(&mut store, "p", cfg, 1)),
        };
        let store32: ParamStore<f32> = store.map(|_, p| p.value.cast());
        let store64: ParamStore<f64> = store32.map(|_, p| p.value.cast());
        let (l32, g32) = loss_and_grads(&layer, &store32, &x);
        let (l64, g64) = loss_and_grads(&layer, &store64, &x);
        let mut worst = (l32 - l64).abs() / l64.abs().max(1e-2);
        for (a, b) in g32.iter().flatten().zip(g64.iter().flatten()) {
            worst = worst.max((a - b).abs() / b.abs().max(1e-2));
        }
        assert!(
            worst <= 1e-4,
            "variant {which}: f32 vs f64 relative {worst:e}"
        );
        println!(
            "variant {which} (0 proj, 1 ln, 2 peephole): f32 vs f64 worst relative {worst:.1e}"
        );
    }
}
