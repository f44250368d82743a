//! Forward mode and second-order products (`tapegrad::forward`,
//! `tapegrad::second_order`), f64 unless a test says otherwise.
//!
//! What is checked, and against what:
//!
//! - **JVP** against central differences of the forward pass along the same
//!   direction (the fourth-order stencil, ε = 1e-4, see [`central`]), relative error
//!   ≤ 1e-7 (denominator max(|a|, |n|, 1e-3), gradcheck's floor): random
//!   programs of tape primitives (proptest) and every recurrent layer —
//!   RNN (tanh, relu), LSTM, GRU, each one layer, two stacked,
//!   bidirectional, stacked and bidirectional — with tangents on every
//!   parameter, on x and on h(0). A linear map's JVP is exact (bitwise).
//!   The values (and in the HVP tests the gradients) of a dual pass are
//!   bitwise those of the f64 pass.
//! - **HVP** against central differences of the tape's gradient along v,
//!   relative ≤ 1e-6, on the same layers and programs; exact (≤ 1e-12
//!   relative) on a quadratic; symmetric, wᵀ(Hv) = vᵀ(Hw) to 1e-10
//!   (relative to max(1, |wᵀHv|)); linear in v. Proptest: 256 random
//!   programs for symmetry, linearity and the finite-difference check.
//! - The **built-in LSTM and the same LSTM written from primitives** give
//!   the same HVP and GNVP (≤ 1e-12 relative); a user LSTM cell through the
//!   public `Cell` interface, stacked and bidirectional, gives bitwise the
//!   built-in one's.
//! - **GNVP**: positive semi-definite (vᵀGv ≥ −1e-12) for random v;
//!   equal to `Jᵀ·(H_L·(J·v))` assembled from independent pieces (finite
//!   differences for J·v, the closed-form H_L, an f64 reverse sweep for
//!   Jᵀ); equal to the HVP for a linear model with squared error.
//! - **f32** HVP against the f64 one, ≤ 1e-5 relative to the largest entry.
//!
//! The worst errors are printed (`--nocapture`).

#[path = "common/user_lstm.rs"]
mod user_lstm;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tapegrad::forward::{dual_tensor, jvp, jvp_params, Dual};
use tapegrad::layers::{Gru, Linear, Lstm, RecurrentConfig, Rnn, SeqOutput, State};
use tapegrad::second_order::{gnvp, hvp, hvp_with_inputs, Readout};
use tapegrad::{Nonlinearity, ParamStore, ParamVec, Real, Reduction, Tape, Tensor, Var};

/// Finite-difference step along the direction (of the fourth-order
/// central stencil [`central`]).
const EPS: f64 = 1e-4;
/// Denominator floor of the relative errors.
const FLOOR: f64 = 1e-3;
const JVP_TOL: f64 = 1e-7;
const HVP_TOL: f64 = 1e-6;

const B: usize = 2;
const T: usize = 5;
const I: usize = 3;
const H: usize = 4;
const C: usize = 3;

/// max over elements of |a − n| / max(|a|, |n|, FLOOR).
fn rel_err(a: &[f64], n: &[f64]) -> f64 {
    assert_eq!(a.len(), n.len());
    a.iter()
        .zip(n)
        .map(|(&a, &n)| (a - n).abs() / a.abs().max(n.abs()).max(FLOOR))
        .fold(0.0, |m, e| {
            if e.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(e)
            }
        })
}

/// The fourth-order central difference of `f` at 0 along its argument,
/// `(8(f(ε) − f(−ε)) − (f(2ε) − f(−2ε)))/12ε`, elementwise: truncation
/// O(ε⁴) ≈ 1e-16 at ε = 1e-4, rounding ≈ 1e-16·|f|/ε ≈ 1e-12·|f|.
fn central(f: impl Fn(f64) -> Vec<f64>) -> Vec<f64> {
    let (p1, m1, p2, m2) = (f(EPS), f(-EPS), f(2.0 * EPS), f(-2.0 * EPS));
    (0..p1.len())
        .map(|i| (8.0 * (p1[i] - m1[i]) - (p2[i] - m2[i])) / (12.0 * EPS))
        .collect()
}

fn flat(v: &ParamVec<f64>) -> Vec<f64> {
    v.to_flat()
}

fn shifted(store: &ParamStore<f64>, v: &ParamVec<f64>, alpha: f64) -> ParamStore<f64> {
    let mut s = store.clone();
    v.add_to(&mut s, alpha);
    s
}

fn axpy(x: &Tensor<f64>, a: f64, d: &Tensor<f64>) -> Tensor<f64> {
    Tensor::from_fn(x.shape(), |i| x.data()[i] + a * d.data()[i])
}

// ----- recurrent models ------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rnn(Nonlinearity),
    Lstm,
    Gru,
}

enum Layer {
    Rnn(Rnn),
    Lstm(Lstm),
    Gru(Gru),
}

/// A recurrent layer of some kind and shape with a linear readout to C
/// classes, its data and targets.
struct Model {
    kind: Kind,
    layer: Layer,
    head: Linear,
    entries: usize,
    x: Tensor<f64>,
    h0: Vec<Tensor<f64>>,
    targets: Vec<usize>,
}

impl Model {
    fn new(store: &mut ParamStore<f64>, kind: Kind, layers: usize, bidirectional: bool) -> Self {
        let cfg = RecurrentConfig::new(I, H)
            .layers(layers)
            .bidirectional(bidirectional);
        let layer = match kind {
            Kind::Rnn(phi) => Layer::Rnn(Rnn::new(store, "rnn", cfg.nonlinearity(phi), 3)),
            Kind::Lstm => Layer::Lstm(Lstm::new(store, "lstm", cfg, 3)),
            Kind::Gru => Layer::Gru(Gru::new(store, "gru", cfg, 3)),
        };
        let dirs = if bidirectional { 2 } else { 1 };
        let head = Linear::new(store, "head", dirs * H, C, true, 4);
        let entries = layers * dirs;
        Model {
            kind,
            layer,
            head,
            entries,
            x: Tensor::randn(&[T, B, I], 11),
            h0: (0..entries)
                .map(|k| Tensor::uniform(&[B, H], -0.5, 0.5, 20 + k as u64).unwrap())
                .collect(),
            targets: (0..T * B).map(|i| (i * 7 + 1) % C).collect(),
        }
    }

    fn run<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        h0: &[Var<'t, F>],
    ) -> SeqOutput<'t, F> {
        let c = (self.kind == Kind::Lstm).then(|| {
            (0..self.entries)
                .map(|k| {
                    tape.constant(
                        Tensor::<f64>::uniform(&[B, H], -0.5, 0.5, 40 + k as u64)
                            .unwrap()
                            .cast(),
                    )
                })
                .collect()
        });
        let init = State {
            h: h0.to_vec(),
            c,
            extra: Vec::new(),
        };
        match &self.layer {
            Layer::Rnn(l) => l.forward(tape, store, x, Some(&init)),
            Layer::Lstm(l) => l.forward(tape, store, x, Some(&init)),
            Layer::Gru(l) => l.forward(tape, store, x, Some(&init)),
        }
    }

    /// Logits [T·B × C] and the final hidden states, flattened into one
    /// output vector.
    fn outputs<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        h0: &[Var<'t, F>],
    ) -> Var<'t, F> {
        let out = self.run(tape, store, x, h0);
        let logits = self.head.forward(tape, store, out.stacked_rows());
        let mut parts = vec![logits.reshape(&[T * B * C])];
        parts.extend(out.state.h.iter().map(|h| h.reshape(&[B * H])));
        Var::concat(&parts, 0)
    }

    fn logits<'t, F: Real>(&self, tape: &'t Tape<F>, store: &ParamStore<F>) -> Var<'t, F> {
        let x = tape.constant(self.x.cast());
        let h0: Vec<_> = self.h0.iter().map(|h| tape.constant(h.cast())).collect();
        let out = self.run(tape, store, x, &h0);
        self.head.forward(tape, store, out.stacked_rows())
    }

    fn loss<'t, F: Real>(&self, tape: &'t Tape<F>, store: &ParamStore<F>) -> Var<'t, F> {
        self.logits(tape, store)
            .cross_entropy(&self.targets, Reduction::Mean)
    }

    fn grad(&self, store: &ParamStore<f64>) -> ParamVec<f64> {
        let tape = Tape::new();
        ParamVec::from_grads(store, &self.loss(&tape, store).backward())
    }
}

const KINDS: [Kind; 4] = [
    Kind::Rnn(Nonlinearity::Tanh),
    Kind::Rnn(Nonlinearity::Relu),
    Kind::Lstm,
    Kind::Gru,
];
const SHAPES: [(usize, bool); 4] = [(1, false), (2, false), (1, true), (2, true)];

/// Runs `check` (which returns a relative error) on every layer kind and
/// shape, asserts each error is ≤ `tol`, and prints the worst.
fn on_every_layer(what: &str, tol: f64, check: impl Fn(&ParamStore<f64>, &Model) -> f64) {
    let mut worst = 0.0f64;
    for kind in KINDS {
        for (layers, bidir) in SHAPES {
            let mut store = ParamStore::new();
            let m = Model::new(&mut store, kind, layers, bidir);
            let e = check(&store, &m);
            assert!(
                e <= tol,
                "{what}, {kind:?} layers={layers} bidir={bidir}: {e:e}"
            );
            worst = worst.max(e);
        }
    }
    println!("{what}, every layer: worst relative error {worst:.2e}");
}

#[test]
fn jvp_of_every_layer_matches_central_differences() {
    on_every_layer("JVP", JVP_TOL, |store, m| {
        let v = ParamVec::randn_like(store, 5);
        let dx = Tensor::randn(m.x.shape(), 6);
        let dh: Vec<Tensor<f64>> = (0..m.entries)
            .map(|k| Tensor::randn(&[B, H], 60 + k as u64))
            .collect();
        let got = jvp_params(store, &v, |tape, s| {
            let x = tape.constant(dual_tensor(&m.x, &dx));
            let h0: Vec<_> =
                m.h0.iter()
                    .zip(&dh)
                    .map(|(h, d)| tape.constant(dual_tensor(h, d)))
                    .collect();
            m.outputs(tape, s, x, &h0)
        });
        let at = |a: f64| {
            let s = shifted(store, &v, a);
            let tape = Tape::new();
            let x = tape.constant(axpy(&m.x, a, &dx));
            let h0: Vec<_> =
                m.h0.iter()
                    .zip(&dh)
                    .map(|(h, d)| tape.constant(axpy(h, a, d)))
                    .collect();
            m.outputs(&tape, &s, x, &h0).to_tensor().into_vec()
        };
        // the values of a dual pass are bitwise those of the f64 pass
        assert_eq!(got.value.data(), &at(0.0)[..], "{:?}: values", m.kind);
        rel_err(got.tangent.data(), &central(at))
    });
}

#[test]
fn hvp_of_every_layer_matches_central_differences_of_the_gradient() {
    on_every_layer("HVP", HVP_TOL, |store, m| {
        let v = ParamVec::randn_like(store, 7);
        let out = hvp(store, &v, |tape, s| m.loss(tape, s));
        assert!(
            flat(&out.grad) == flat(&m.grad(store)),
            "{:?}: the gradient of a dual sweep is bitwise the f64 one",
            m.kind
        );
        let fd = central(|a| flat(&m.grad(&shifted(store, &v, a))));
        rel_err(&flat(&out.hv), &fd)
    });
}

#[test]
fn hvp_is_symmetric_and_linear_through_an_lstm() {
    let mut store = ParamStore::new();
    let m = Model::new(&mut store, Kind::Lstm, 2, true);
    let (v, w) = (
        ParamVec::randn_like(&store, 1),
        ParamVec::randn_like(&store, 2),
    );
    let hv = hvp(&store, &v, |t, s| m.loss(t, s)).hv;
    let hw = hvp(&store, &w, |t, s| m.loss(t, s)).hv;
    let (a, b) = (w.dot(&hv), v.dot(&hw));
    let sym = (a - b).abs() / a.abs().max(b.abs()).max(1.0);
    assert!(sym <= 1e-10, "wᵀHv = {a}, vᵀHw = {b}");
    let mut comb = v.clone();
    comb.scale(2.5);
    comb.axpy(-0.75, &w);
    let hc = hvp(&store, &comb, |t, s| m.loss(t, s)).hv;
    let mut want = hv.clone();
    want.scale(2.5);
    want.axpy(-0.75, &hw);
    let lin = rel_err(&flat(&hc), &flat(&want));
    assert!(lin <= 1e-10, "linearity: {lin:e}");
    println!("LSTM 2×bidirectional: symmetry {sym:.1e}, linearity {lin:.1e}");
}

#[test]
fn hvp_with_respect_to_inputs_matches_central_differences() {
    let mut store = ParamStore::new();
    let m = Model::new(&mut store, Kind::Gru, 1, false);
    let v = ParamVec::randn_like(&store, 3);
    let dx = Tensor::randn(m.x.shape(), 4);
    let out = hvp_with_inputs(
        &store,
        &v,
        std::slice::from_ref(&m.x),
        std::slice::from_ref(&dx),
        |tape, s, xs| {
            let h0: Vec<_> = m.h0.iter().map(|h| tape.constant(h.cast())).collect();
            let out = m.run(tape, s, xs[0], &h0);
            m.head
                .forward(tape, s, out.stacked_rows())
                .cross_entropy(&m.targets, Reduction::Sum)
        },
    );
    let grad_x = |a: f64| {
        let s = shifted(&store, &v, a);
        let tape = Tape::new();
        let x = tape.var(axpy(&m.x, a, &dx));
        let h0: Vec<_> = m.h0.iter().map(|h| tape.constant(h.clone())).collect();
        let out = m.run(&tape, &s, x, &h0);
        let l = m
            .head
            .forward(&tape, &s, out.stacked_rows())
            .cross_entropy(&m.targets, Reduction::Sum);
        let g = l.backward();
        (g.wrt(x).clone(), ParamVec::from_grads(&s, &g))
    };
    let fd_x = central(|a| grad_x(a).0.into_vec());
    let fd_p = central(|a| flat(&grad_x(a).1));
    let (ex, ep) = (
        rel_err(out.input_hv[0].data(), &fd_x),
        rel_err(&flat(&out.hv), &fd_p),
    );
    assert!(
        ex <= HVP_TOL && ep <= HVP_TOL,
        "inputs {ex:e}, params {ep:e}"
    );
    assert_eq!(out.input_grad[0].data(), grad_x(0.0).0.data(), "bitwise");
}

// ----- exact cases -----------------------------------------------------------

#[test]
fn jvp_of_a_linear_map_is_exact() {
    // y = Σ_cols((x·Aᵀ)·B) − 3x·Aᵀ + c: linear in x, so J·ẋ is the same
    // map of ẋ without c, computed by the same kernels on the tangent part
    // (sizes large enough for the dual GEMM's three-product path).
    let a = Tensor::randn(&[32, 32], 1);
    let b = Tensor::randn(&[32, 8], 2);
    let c = Tensor::randn(&[16, 32], 3);
    let x = Tensor::randn(&[16, 32], 4);
    let dx = Tensor::randn(&[16, 32], 5);
    fn map<'t, F: Real>(
        tape: &'t Tape<F>,
        x: Var<'t, F>,
        a: &Tensor<f64>,
        b: &Tensor<f64>,
    ) -> Var<'t, F> {
        let xa = x.matmul_t(tape.constant(a.cast()));
        let rows = xa.matmul(tape.constant(b.cast())).sum_axis(1);
        rows.reshape(&[16, 1]) + xa.mul_scalar(F::of(-3.0))
    }
    let out = jvp(
        std::slice::from_ref(&x),
        std::slice::from_ref(&dx),
        |tape, v| map(tape, v[0], &a, &b) + tape.constant(c.cast()),
    );
    let tape = Tape::<f64>::new();
    let want = map(&tape, tape.constant(dx), &a, &b).to_tensor();
    assert_eq!(out.tangent.data(), want.data());
    let value = map(&tape, tape.constant(x), &a, &b) + tape.constant(c);
    assert_eq!(out.value.data(), value.value().data());
}

#[test]
fn hvp_of_a_quadratic_is_exact() {
    // L(W, u) = ½ Σ (W·A) ⊙ W + Σ (u·Wᵀ) ⊙ u / 2 with A = MᵀM + I symmetric:
    // ∇²L is known in closed form; check H·v for v over both parameters.
    let n = 6;
    let m = Tensor::<f64>::randn(&[n, n], 1);
    let a = Tensor::from_fn(&[n, n], |k| {
        let (i, j) = (k / n, k % n);
        (0..n).map(|r| m.at(&[r, i]) * m.at(&[r, j])).sum::<f64>() + if i == j { 1.0 } else { 0.0 }
    });
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("w", Tensor::randn(&[3, n], 2));
    let v = ParamVec::randn_like(&store, 3);
    let out = hvp(&store, &v, |tape, s| {
        let wv = tape.param(s, w);
        (wv.matmul(tape.constant(a.cast())) * wv)
            .sum()
            .mul_scalar(Dual::constant(0.5))
    });
    // ∇L = W·A (A symmetric), H·V = V·A
    let vw = v.get(w).unwrap();
    let want = Tensor::from_fn(&[3, n], |k| {
        let (i, j) = (k / n, k % n);
        (0..n).map(|r| vw.at(&[i, r]) * a.at(&[r, j])).sum::<f64>()
    });
    let e = rel_err(out.hv.get(w).unwrap().data(), want.data());
    assert!(e <= 1e-12, "{e:e}");
    println!("quadratic: HVP relative error {e:.1e}");
}

// ----- LSTM from primitives ----------------------------------------------------

/// The single-layer LSTM of `lstm.*` written out from primitives (PyTorch's
/// gate order i, f, g, o), zero initial state, the same readout.
fn lstm_by_hand<'t, F: Real>(tape: &'t Tape<F>, s: &ParamStore<F>, x: &Tensor<f64>) -> Var<'t, F> {
    let p = |name: &str| tape.param(s, s.key(name).unwrap());
    let (w_ih, w_hh) = (p("lstm.weight_ih_l0"), p("lstm.weight_hh_l0"));
    let (b_ih, b_hh) = (p("lstm.bias_ih_l0"), p("lstm.bias_hh_l0"));
    let x = tape.constant(x.cast());
    let mut h = tape.zeros(&[B, H]);
    let mut c = tape.zeros(&[B, H]);
    let mut outs = Vec::new();
    for t in 0..T {
        let xt = x.slice(0, t, 1).reshape(&[B, I]);
        let z = xt.matmul_t(w_ih) + b_ih + h.matmul_t(w_hh) + b_hh;
        let gate = |k: usize| z.slice(1, k * H, H);
        let (i, f, g, o) = (
            gate(0).sigmoid(),
            gate(1).sigmoid(),
            gate(2).tanh(),
            gate(3).sigmoid(),
        );
        c = f * c + i * g;
        h = o * c.tanh();
        outs.push(h);
    }
    let rows = Var::concat(&outs, 0);
    rows.matmul_t(p("head.weight")) + p("head.bias")
}

/// The same through the built-in `Lstm` and `Linear`.
fn builtin_lstm<'t, F: Real>(
    lstm: &Lstm,
    head: &Linear,
    x: &Tensor<f64>,
    tape: &'t Tape<F>,
    s: &ParamStore<F>,
) -> Var<'t, F> {
    let out = lstm.forward(tape, s, tape.constant(x.cast()), None);
    head.forward(tape, s, out.stacked_rows())
}

#[test]
fn builtin_lstm_and_lstm_from_primitives_have_the_same_hvp_and_gnvp() {
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(I, H), 3);
    let head = Linear::new(&mut store, "head", H, C, true, 4);
    let x = Tensor::randn(&[T, B, I], 11);
    let targets: Vec<usize> = (0..T * B).map(|i| i % C).collect();
    let readout = Readout::SoftmaxCrossEntropy {
        targets: &targets,
        reduction: Reduction::Mean,
    };
    let v = ParamVec::randn_like(&store, 9);
    let h1 = hvp(&store, &v, |t, s| {
        readout.loss(builtin_lstm(&lstm, &head, &x, t, s))
    });
    let h2 = hvp(&store, &v, |t, s| readout.loss(lstm_by_hand(t, s, &x)));
    let g1 = gnvp(&store, &v, &readout, |t, s| {
        builtin_lstm(&lstm, &head, &x, t, s)
    });
    let g2 = gnvp(&store, &v, &readout, |t, s| lstm_by_hand(t, s, &x));
    let (eh, eg) = (
        rel_err(&flat(&h1.hv), &flat(&h2.hv)),
        rel_err(&flat(&g1.gv), &flat(&g2.gv)),
    );
    assert!(eh <= 1e-12 && eg <= 1e-12, "HVP {eh:e}, GNVP {eg:e}");
    assert!((h1.loss - h2.loss).abs() <= 1e-14 && (g1.loss - h1.loss).abs() <= 1e-14);
    println!("built-in vs primitives: HVP {eh:.1e}, GNVP {eg:.1e}");
}

/// The same through the public `Cell` interface: a user-written LSTM cell
/// (`tests/common/user_lstm.rs`) in the crate's engine, stacked and
/// bidirectional, against the built-in `Lstm` — bitwise the same HVP and
/// GNVP, as its values and gradients are.
#[test]
fn builtin_lstm_and_a_user_cell_have_the_same_hvp_and_gnvp() {
    use tapegrad::layers::Recurrent;
    let cfg = RecurrentConfig::new(I, H).layers(2).bidirectional(true);
    let (mut s1, mut s2) = (ParamStore::<f64>::new(), ParamStore::<f64>::new());
    let builtin = Lstm::new(&mut s1, "lstm", cfg, 3);
    let user = Recurrent::<user_lstm::UserLstm>::new(&mut s2, "lstm", cfg, 3);
    let (h1, h2) = (
        Linear::new(&mut s1, "head", 2 * H, C, true, 4),
        Linear::new(&mut s2, "head", 2 * H, C, true, 4),
    );
    assert_eq!(
        ParamVec::from_store(&s1).to_flat(),
        ParamVec::from_store(&s2).to_flat()
    );
    let x = Tensor::<f64>::randn(&[T, B, I], 11);
    let targets: Vec<usize> = (0..T * B).map(|i| i % C).collect();
    let readout = Readout::SoftmaxCrossEntropy {
        targets: &targets,
        reduction: Reduction::Sum,
    };
    let (v1, v2) = (ParamVec::randn_like(&s1, 9), ParamVec::randn_like(&s2, 9));
    let a = hvp(&s1, &v1, |t, s| {
        let out = builtin.forward(t, s, t.constant(x.cast()), None);
        readout.loss(h1.forward(t, s, out.stacked_rows()))
    });
    let b = hvp(&s2, &v2, |t, s| {
        let out = user.forward(t, s, t.constant(x.cast()), None);
        readout.loss(h2.forward(t, s, out.stacked_rows()))
    });
    assert_eq!(a.hv.to_flat(), b.hv.to_flat());
    assert_eq!(a.grad.to_flat(), b.grad.to_flat());
    let ga = gnvp(&s1, &v1, &readout, |t, s| {
        let out = builtin.forward(t, s, t.constant(x.cast()), None);
        h1.forward(t, s, out.stacked_rows())
    });
    let gb = gnvp(&s2, &v2, &readout, |t, s| {
        let out = user.forward(t, s, t.constant(x.cast()), None);
        h2.forward(t, s, out.stacked_rows())
    });
    assert_eq!(ga.gv.to_flat(), gb.gv.to_flat());
}

// ----- Gauss–Newton ------------------------------------------------------------

#[test]
fn gnvp_is_positive_semidefinite_and_differs_from_the_hessian() {
    let mut worst = f64::INFINITY;
    for kind in [Kind::Lstm, Kind::Gru, Kind::Rnn(Nonlinearity::Tanh)] {
        let mut store = ParamStore::new();
        let m = Model::new(&mut store, kind, 2, true);
        let y = Tensor::randn(&[T * B, C], 5);
        let readouts = [
            Readout::SoftmaxCrossEntropy {
                targets: &m.targets,
                reduction: Reduction::Sum,
            },
            Readout::SquaredError {
                target: &y,
                reduction: Reduction::Mean,
            },
        ];
        for r in &readouts {
            let mut some_negative_curvature = false;
            for seed in 0..8 {
                let v = ParamVec::randn_like(&store, 100 + seed);
                let g = gnvp(&store, &v, r, |t, s| m.logits(t, s));
                let q = v.dot(&g.gv);
                assert!(q >= -1e-12, "{kind:?}: vᵀGv = {q}");
                // vᵀGv = (Jv)ᵀ H_L (Jv) with the J·v it reports
                let hjv = r.hessian_times(&m.logits(&Tape::new(), &store).to_tensor(), &g.jv);
                let q2: f64 = g.jv.data().iter().zip(hjv.data()).map(|(a, b)| a * b).sum();
                assert!((q - q2).abs() <= 1e-10 * q.abs().max(1.0), "{q} vs {q2}");
                worst = worst.min(q);
                let h = hvp(&store, &v, |t, s| r.loss(m.logits(t, s)));
                some_negative_curvature |= v.dot(&h.hv) < 0.0;
            }
            println!(
                "{kind:?}: min vᵀGv so far {worst:.3e}; some vᵀHv < 0 for this readout: {some_negative_curvature}"
            );
        }
    }
}

#[test]
fn gnvp_equals_jt_hl_j_assembled_from_independent_pieces() {
    let mut store = ParamStore::new();
    let m = Model::new(&mut store, Kind::Lstm, 1, true);
    let readout = Readout::SoftmaxCrossEntropy {
        targets: &m.targets,
        reduction: Reduction::Mean,
    };
    let v = ParamVec::randn_like(&store, 3);
    let g = gnvp(&store, &v, &readout, |t, s| m.logits(t, s));
    // J·v by central differences of the f64 logits
    let z = |a: f64| m.logits(&Tape::new(), &shifted(&store, &v, a)).to_tensor();
    let jv = Tensor::from_vec(central(|a| z(a).into_vec()), &[T * B, C]).unwrap();
    assert!(rel_err(g.jv.data(), jv.data()) <= JVP_TOL);
    // H_L in closed form, Jᵀ by an f64 reverse sweep
    let u = readout.hessian_times(&z(0.0), &jv);
    let tape = Tape::new();
    let want = ParamVec::from_grads(&store, &m.logits(&tape, &store).backward_with(u));
    let e = rel_err(&flat(&g.gv), &flat(&want));
    assert!(e <= HVP_TOL, "{e:e}");
    println!("GNVP vs Jᵀ·H_L·J from pieces: {e:.1e}");
}

#[test]
fn gauss_newton_is_the_hessian_for_a_linear_model_with_squared_error() {
    let mut store = ParamStore::<f64>::new();
    let head = Linear::new(&mut store, "head", 5, 3, true, 1);
    let x = Tensor::<f64>::randn(&[7, 5], 2);
    let y = Tensor::randn(&[7, 3], 3);
    let readout = Readout::SquaredError {
        target: &y,
        reduction: Reduction::Sum,
    };
    let v = ParamVec::randn_like(&store, 4);
    let g = gnvp(&store, &v, &readout, |t, s| {
        head.forward(t, s, t.constant(x.cast()))
    });
    let h = hvp(&store, &v, |t, s| {
        readout.loss(head.forward(t, s, t.constant(x.cast())))
    });
    let e = rel_err(&flat(&g.gv), &flat(&h.hv));
    assert!(e <= 1e-13, "{e:e}");
    assert_eq!(g.loss, h.loss);
}

#[test]
#[should_panic(expected = "gnvp")]
fn gnvp_refuses_an_unreduced_readout() {
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("w", Tensor::ones(&[1, 2]));
    let r = Readout::SoftmaxCrossEntropy {
        targets: &[0],
        reduction: Reduction::None,
    };
    gnvp(&store, &ParamVec::zeros_like(&store), &r, |t, s| {
        t.param(s, w)
    });
}

// ----- f32 -----------------------------------------------------------------------

/// f32 HVP of an LSTM against the f64 one: rounding in f32 (unit roundoff
/// 6e-8) over T = 5 steps and two layers stays within 1e-5 of the largest
/// entry (measured: 1.0e-7).
#[test]
fn f32_hvp_agrees_with_f64() {
    let mut store = ParamStore::<f64>::new();
    let m = Model::new(&mut store, Kind::Lstm, 2, false);
    let v = ParamVec::randn_like(&store, 8);
    let want = hvp(&store, &v, |t, s| m.loss(t, s)).hv.to_flat();
    let store32: ParamStore<f32> = store.map(|_, p| p.value.cast());
    let v32 = v.map(|_, t| t.cast::<f32>());
    let got = hvp(&store32, &v32, |t, s| m.loss(t, s)).hv.to_flat();
    let scale = want.iter().fold(0.0f64, |a, b| a.max(b.abs()));
    let err = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max)
        / scale;
    assert!(err <= 1e-5, "{err:e}");
    println!("f32 HVP vs f64: {err:.1e} of the largest entry ({scale:.2e})");
}

// ----- random programs (proptest) ------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// One smooth step over [R×N] values (operands index the values so far).
#[derive(Debug, Clone)]
enum Step {
    Tanh(usize),
    Sigmoid(usize),
    Exp(usize),
    Mul(usize, usize),
    Sub(usize, usize),
    /// v·W + b.
    Linear(usize),
    /// v·Wᵀ.
    LinearT(usize),
    Softmax(usize),
    LogSoftmax(usize),
    Dropout(usize, u64),
    Select(usize, usize, u64),
    /// tanh(v·(vᵀv)/4)
    Gram(usize),
    /// v^2 via powf, then √(· + 1)
    PowSqrt(usize),
    /// Layer norm of v's rows with b as gain and bias (ε = 0.1, so the
    /// normalisation's curvature stays O(1) for the finite differences).
    LayerNorm(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let i = || any::<usize>();
    prop_oneof![
        i().prop_map(Step::Tanh),
        i().prop_map(Step::Sigmoid),
        i().prop_map(Step::Exp),
        (i(), i()).prop_map(|(a, b)| Step::Mul(a, b)),
        (i(), i()).prop_map(|(a, b)| Step::Sub(a, b)),
        i().prop_map(Step::Linear),
        i().prop_map(Step::LinearT),
        i().prop_map(Step::Softmax),
        i().prop_map(Step::LogSoftmax),
        (i(), any::<u64>()).prop_map(|(a, s)| Step::Dropout(a, s)),
        (i(), i(), any::<u64>()).prop_map(|(a, b, s)| Step::Select(a, b, s)),
        i().prop_map(Step::Gram),
        i().prop_map(Step::PowSqrt),
        i().prop_map(Step::LayerNorm),
    ]
}

#[derive(Debug, Clone)]
struct Program {
    rows: usize,
    n: usize,
    steps: Vec<Step>,
    seed: u64,
    targets: Vec<usize>,
}

fn program() -> impl Strategy<Value = Program> {
    (1usize..=3, 1usize..=4, vec(step(), 1..=8), any::<u64>()).prop_flat_map(
        |(rows, n, steps, seed)| {
            vec(0..n, rows).prop_map(move |targets| Program {
                rows,
                n,
                steps: steps.clone(),
                seed,
                targets,
            })
        },
    )
}

impl Program {
    fn store(&self) -> ParamStore<f64> {
        let mut s = ParamStore::new();
        let (r, n, seed) = (self.rows, self.n, self.seed);
        s.insert("x", Tensor::uniform(&[r, n], -1.0, 1.0, seed).unwrap());
        let w = Tensor::<f64>::uniform(&[n, n], -1.0, 1.0, seed ^ 1).unwrap();
        s.insert(
            "w",
            Tensor::from_fn(&[n, n], |i| w.data()[i] / (n as f64).sqrt()),
        );
        s.insert("b", Tensor::uniform(&[n], -1.0, 1.0, seed ^ 2).unwrap());
        s
    }

    /// The last value of the program, [R×N].
    fn output<'t, F: Real>(&self, tape: &'t Tape<F>, s: &ParamStore<F>) -> Var<'t, F> {
        let p = |name: &str| tape.param(s, s.key(name).unwrap());
        let (x, w, b) = (p("x"), p("w"), p("b"));
        let (r, n) = (self.rows, self.n);
        let c = Tensor::<f64>::uniform(&[r, n], -1.0, 1.0, self.seed ^ 3).unwrap();
        let mut vals = vec![x, tape.constant(c.cast())];
        for st in &self.steps {
            let k = vals.len();
            let v = |i: usize| vals[i % k];
            let next = match *st {
                Step::Tanh(a) => v(a).tanh(),
                Step::Sigmoid(a) => v(a).sigmoid(),
                Step::Exp(a) => v(a).tanh().exp(),
                Step::Mul(a, b) => v(a) * v(b),
                Step::Sub(a, b) => v(a) - v(b),
                Step::Linear(a) => v(a).matmul(w) + b,
                Step::LinearT(a) => v(a).matmul_t(w),
                Step::Softmax(a) => v(a).softmax(),
                Step::LogSoftmax(a) => v(a).log_softmax(),
                Step::Dropout(a, seed) => v(a).dropout(0.3, seed),
                Step::Select(a, b, seed) => {
                    let cond: Vec<bool> = Tensor::<f64>::uniform(&[r * n], -1.0, 1.0, seed)
                        .unwrap()
                        .data()
                        .iter()
                        .map(|&u| u > 0.0)
                        .collect();
                    Var::select(&cond, v(a), v(b))
                }
                Step::Gram(a) => v(a)
                    .matmul(v(a).t_matmul(v(a)))
                    .mul_scalar(F::of(0.25))
                    .tanh(),
                Step::PowSqrt(a) => v(a).powf(F::of(2.0)).add_scalar(F::one()).sqrt(),
                Step::LayerNorm(a) => v(a).layer_norm_affine(b, b, 0.1),
            };
            vals.push(next);
        }
        *vals.last().unwrap()
    }

    /// A scalar loss using every value of the output: weights and a
    /// cross-entropy, so both linear and curved readouts are exercised.
    fn loss<'t, F: Real>(&self, tape: &'t Tape<F>, s: &ParamStore<F>) -> Var<'t, F> {
        let y = self.output(tape, s);
        let r = Tensor::<f64>::uniform(&[self.rows, self.n], -1.0, 1.0, self.seed ^ 4).unwrap();
        (y * tape.constant(r.cast())).sum() + y.cross_entropy(&self.targets, Reduction::Mean)
    }

    fn grad(&self, s: &ParamStore<f64>) -> Vec<f64> {
        let tape = Tape::new();
        ParamVec::from_grads(s, &self.loss(&tape, s).backward()).to_flat()
    }
}

proptest! {
    #![proptest_config(config(64))]

    /// JVP of a random program's output against central differences.
    #[test]
    fn jvp_of_random_programs_matches_central_differences(p in program(), vseed in any::<u64>()) {
        let store = p.store();
        let v = ParamVec::randn_like(&store, vseed);
        let got = jvp_params(&store, &v, |t, s| p.output(t, s));
        let fd = central(|a| p.output(&Tape::new(), &shifted(&store, &v, a)).to_tensor().into_vec());
        prop_assert_eq!(got.value.into_vec(), p.output(&Tape::new(), &store).to_tensor().into_vec());
        let e = rel_err(got.tangent.data(), &fd);
        prop_assert!(e <= JVP_TOL, "{e:e}");
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The HVP properties on random programs: central differences of the
    /// gradient, symmetry wᵀ(Hv) = vᵀ(Hw), linearity in v.
    #[test]
    fn hvp_properties_on_random_programs(p in program(), vseed in any::<u64>(), alpha in -2.0f64..2.0) {
        let store = p.store();
        let v = ParamVec::randn_like(&store, vseed);
        let w = ParamVec::randn_like(&store, vseed ^ 0xabcd);
        let h = |d: &ParamVec<f64>| hvp(&store, d, |t, s| p.loss(t, s));
        let (hv, hw) = (h(&v), h(&w));
        // finite differences of the gradient
        let fd = central(|a| p.grad(&shifted(&store, &v, a)));
        let e = rel_err(&hv.hv.to_flat(), &fd);
        prop_assert!(e <= HVP_TOL, "finite differences: {e:e}");
        prop_assert_eq!(hv.grad.to_flat(), p.grad(&store), "gradient not bitwise the f64 one");
        // symmetry
        let (a, b) = (w.dot(&hv.hv), v.dot(&hw.hv));
        prop_assert!((a - b).abs() <= 1e-10 * a.abs().max(b.abs()).max(1.0), "wᵀHv = {a}, vᵀHw = {b}");
        // linearity
        let mut comb = v.clone();
        comb.scale(alpha);
        comb.axpy(1.0, &w);
        let mut want = hv.hv.clone();
        want.scale(alpha);
        want.axpy(1.0, &hw.hv);
        let got = h(&comb).hv;
        let scale = want.to_flat().iter().fold(1.0f64, |m, x| m.max(x.abs()));
        let lin = got.to_flat().iter().zip(want.to_flat()).fold(0.0f64, |m, (g, w)| m.max((g - w).abs())) / scale;
        prop_assert!(lin <= 1e-10, "linearity: {lin:e}");
    }
}

/// relu at a kink: the JVP is the one-sided directional derivative
/// (lexicographic comparisons), max(ẋ, 0) at x = 0.
#[test]
fn jvp_of_relu_at_its_kink_is_the_directional_derivative() {
    let x = Tensor::from_vec(vec![0.0, 0.0, 1.0, -1.0], &[4]).unwrap();
    let dx = Tensor::from_vec(vec![2.0, -3.0, 5.0, 7.0], &[4]).unwrap();
    let out = jvp(&[x], &[dx], |_, v| v[0].relu());
    assert_eq!(out.tangent.data(), &[2.0, 0.0, 5.0, 0.0]);
}

// ----- conjugate gradients ---------------------------------------------------------

/// CG solves a random 12×12 SPD system to 1e-10 within 12 products
/// (exact arithmetic needs n); with the progress test off.
#[test]
fn conjugate_gradient_solves_a_spd_system() {
    use tapegrad::second_order::{conjugate_gradient, CgOptions};
    let n = 12;
    let m = Tensor::<f64>::randn(&[n, n], 3);
    // A = MᵀM + I
    let a = Tensor::from_fn(&[n, n], |k| {
        let (i, j) = (k / n, k % n);
        (0..n).map(|r| m.at(&[r, i]) * m.at(&[r, j])).sum::<f64>() + if i == j { 1.0 } else { 0.0 }
    });
    let mut store = ParamStore::<f64>::new();
    store.insert("a", Tensor::zeros(&[4]));
    store.insert("b", Tensor::zeros(&[2, 4]));
    let times = |x: &[f64]| -> Vec<f64> {
        (0..n)
            .map(|i| (0..n).map(|j| a.at(&[i, j]) * x[j]).sum())
            .collect()
    };
    let b = ParamVec::randn_like(&store, 5);
    let opts = CgOptions {
        max_iters: 40,
        residual_tol: 1e-12,
        progress_tol: 0.0,
        ..CgOptions::default()
    };
    let sol = conjugate_gradient(
        &b,
        ParamVec::zeros_like(&store),
        |p| ParamVec::try_from_flat(&store, &times(&p.to_flat())).unwrap(),
        &opts,
    );
    let ax = times(&sol.x.to_flat());
    let err = rel_err(&ax, &b.to_flat());
    assert!(err <= 1e-10, "{err:e} after {} products", sol.iterations);
    assert!(sol.iterations <= n + 2, "{} products", sol.iterations);
    assert!(rel_err(&sol.ax.to_flat(), &ax) <= 1e-10, "tracked A·x");
    // φ(x) = ½xᵀAx − bᵀx = −½bᵀx at the solution
    let phi = -0.5 * b.dot(&sol.x);
    assert!((sol.objective - phi).abs() <= 1e-10 * phi.abs());
}

/// CG on the damped Gauss–Newton system of an LSTM (the Hessian-free inner
/// loop): the quadratic model decreases and the residual shrinks.
#[test]
fn conjugate_gradient_on_damped_gauss_newton_decreases_the_model() {
    use tapegrad::second_order::{conjugate_gradient, CgOptions};
    let mut store = ParamStore::new();
    let m = Model::new(&mut store, Kind::Lstm, 1, false);
    let readout = Readout::SoftmaxCrossEntropy {
        targets: &m.targets,
        reduction: Reduction::Mean,
    };
    let mut b = m.grad(&store);
    b.scale(-1.0);
    let lambda = 1e-2;
    let sol = conjugate_gradient(
        &b,
        ParamVec::zeros_like(&store),
        |p| {
            let mut gp = gnvp(&store, p, &readout, |t, s| m.logits(t, s)).gv;
            gp.axpy(lambda, p);
            gp
        },
        &CgOptions {
            max_iters: 30,
            ..CgOptions::default()
        },
    );
    assert!(sol.objective < 0.0, "φ = {}", sol.objective);
    assert!(sol.relative_residual < 0.5, "{}", sol.relative_residual);
    // the model predicts a decrease, and the loss does go down along it
    let before = m.loss(&Tape::new(), &store).item();
    let after = m.loss(&Tape::new(), &shifted(&store, &sol.x, 1.0)).item();
    assert!(after < before, "{after} ≥ {before}");
    println!(
        "CG on (G + λI): {} products, φ = {:.3e}, residual {:.2e}, loss {before:.4} → {after:.4}",
        sol.iterations, sol.objective, sol.relative_residual
    );
}
