//! What a newcomer and a researcher tripped over (issue 17), one test per
//! finding, through the public API:
//!
//! - `retain_grad()` on a constant gives the real gradient or refuses —
//!   never zeros;
//! - panics point at the caller's line and say what the caller did;
//! - `Tbptt::train` equals a hand-written truncated-BPTT loop bit for bit,
//!   for a built-in layer and for a cell written from primitives;
//! - `gradcheck_params` / `gradcheck_store` check a model's own weights;
//! - the listing and DOT name parameters by their store names;
//! - the initialisers are public and are the layers' own; `scale` and
//!   `shift` take `f64` constants in code generic over `F`;
//! - `chunk(parts, axis)` matches `concat(&parts, axis)`; checkpoints
//!   report dtype and shape per tensor and convert f32 ↔ f64 on request;
//! - `CharModel::try_new` refuses an empty corpus with an error;
//! - the README still starts with the two set-up commands and says how to
//!   depend on tapegrad, how slow debug builds are and how to optimise it.
//!
//! Gradient comparisons are exact (`==`) where the computation is the same
//! sequence of floating-point operations; the gradient checks use
//! gradcheck's ε = 1e-6 and a relative-error bound of 1e-6.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use tapegrad::checkpoint::{self, LoadOptions};
use tapegrad::gradcheck::{gradcheck, gradcheck_params, gradcheck_store, try_gradcheck_params};
use tapegrad::layers::tbptt::{Tbptt, Window, WindowOutput};
use tapegrad::layers::{Linear, Lstm, RecurrentConfig, StateTensors};
use tapegrad::models::{CharModel, CharModelConfig, Vocab};
use tapegrad::optim::{Adam, Optimizer, Sgd};
use tapegrad::{init, ErrorKind, ParamKey, ParamStore, Real, Reduction, Tape, Tensor, Var};

// ----- catching panics with their location ----------------------------------------

thread_local! {
    static LAST_PANIC: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
}

/// The message and the source file of the panic `f` raises (a panic hook
/// records the location per thread, and prints it).
fn panic_of<R>(f: impl FnOnce() -> R) -> (String, String) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let file = info
                .location()
                .map(|l| l.file().to_string())
                .unwrap_or_default();
            eprintln!(
                "panicked at {}: {msg}",
                info.location().map_or(String::new(), |l| l.to_string())
            );
            LAST_PANIC.with(|p| *p.borrow_mut() = Some((msg, file)));
        }));
    });
    assert!(
        catch_unwind(AssertUnwindSafe(f)).is_err(),
        "expected a panic"
    );
    LAST_PANIC
        .with(|p| p.borrow_mut().take())
        .expect("the hook saw the panic")
}

#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "{message:?} does not mention {p:?}");
    }
}

// ----- 6. retain_grad on a constant -------------------------------------------------

/// L = Σ tanh(h0·W + x) for a [1×3] h0: ∂L/∂h0 = (1 − y²)·Wᵀ.
fn h0_loss<'t>(tape: &'t Tape<f64>, h0: Var<'t, f64>) -> Var<'t, f64> {
    let w = tape.constant(Tensor::from_fn(&[3, 3], |i| (i as f64 - 4.0) * 0.3));
    let x = tape.constant(Tensor::from_fn(&[1, 3], |i| i as f64 * 0.2));
    (h0.matmul(w) + x).tanh().sum()
}

#[test]
fn retain_grad_on_an_unused_constant_makes_it_receive_its_gradient() {
    let h0_value = Tensor::from_fn(&[1, 3], |i| 0.1 * i as f64 - 0.1);
    let want = {
        let tape = Tape::new();
        let h0 = tape.var(h0_value.clone());
        h0_loss(&tape, h0).backward().wrt(h0).clone()
    };
    assert!(want.data().iter().all(|g| *g != 0.0));
    // a constant, a zeros leaf and a detached value all become leaves
    let tape = Tape::new();
    let h0 = tape.constant(h0_value.clone()).retain_grad();
    assert!(h0.requires_grad());
    assert_eq!(h0_loss(&tape, h0).backward().wrt(h0), &want);

    let z = tape.zeros(&[1, 3]).retain_grad();
    let g = h0_loss(&tape, z).backward();
    assert!(g.wrt(z).data().iter().all(|v| *v != 0.0), "{:?}", g.wrt(z));

    let d = tape.var(h0_value).detach().retain_grad();
    assert_eq!(h0_loss(&tape, d).backward().wrt(d), &want);
}

#[test]
fn retain_grad_refuses_a_constant_that_cannot_receive_a_gradient() {
    let tape = Tape::<f64>::new();
    let h0 = tape.zeros(&[1, 3]);
    let _loss = h0_loss(&tape, h0); // recorded without a gradient path
    let (msg, file) = panic_of(|| h0.retain_grad());
    assert_mentions(
        &msg,
        &["retain_grad", "%0", "[1, 3]", "already read", "before"],
    );
    assert!(file.ends_with("newcomer.rs"), "{file}");
    assert_eq!(
        h0.try_retain_grad().unwrap_err().kind(),
        ErrorKind::NoGradient
    );
    assert!(!h0.requires_grad(), "a refused call changes nothing");

    let derived = tape.constant(Tensor::ones(&[2])).exp();
    let err = derived.try_retain_grad().unwrap_err();
    assert_mentions(&err.to_string(), &["computed from constants only"]);
}

#[test]
fn retain_grad_of_a_zero_initial_state_through_an_lstm() {
    // ∂L/∂h(0) of the zeros the layer starts from: equal to binding the
    // same zeros with bind_var (leaves that require gradients).
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(2, 3), 5);
    let x = Tensor::<f64>::randn(&[4, 1, 2], 6);
    let grads_of = |as_var: bool| {
        let zeros = lstm.zero_state(&Tape::<f64>::new(), 1).to_tensors();
        let tape = Tape::new();
        let s0 = if as_var {
            zeros.bind_var(&tape)
        } else {
            let s = lstm.zero_state(&tape, 1);
            s.h[0].retain_grad();
            s
        };
        let out = lstm.forward(&tape, &store, tape.constant(x.clone()), Some(&s0));
        let g = out.state.last_h().sum().backward();
        g.wrt(s0.h[0]).clone()
    };
    let retained = grads_of(false);
    assert!(retained.data().iter().any(|v| *v != 0.0));
    assert_eq!(retained, grads_of(true));
}

// ----- 7. panics point at the caller ----------------------------------------------

/// An op to run and its name.
type Check<'a> = (&'static str, Box<dyn Fn() + 'a>);

#[test]
fn anomaly_mode_panics_at_the_callers_line_naming_the_op() {
    let tape = Tape::<f64>::new();
    tape.set_anomaly_detection(true);
    let x = tape.var(Tensor::from_vec(vec![1.0, 0.0], &[2]).unwrap());
    let (msg, file) = panic_of(|| x.log());
    assert!(file.ends_with("newcomer.rs"), "points into {file}: {msg}");
    assert_mentions(
        &msg,
        &["log", "-inf", "flat index 1", "there, operand 0 is 0"],
    );
    // the other unary ops, reductions and scalar operators too
    let big = tape.var(Tensor::scalar(1e300));
    let checks: [Check<'_>; 4] = [
        (
            "exp",
            Box::new(|| {
                let _ = big.exp();
            }),
        ),
        (
            "powf",
            Box::new(|| {
                let _ = big.powf(2.0);
            }),
        ),
        (
            "mul_scalar",
            Box::new(|| {
                let _ = big * 1e300;
            }),
        ),
        (
            "sum",
            Box::new(|| {
                let _ = (big * 1e10).sum();
            }),
        ),
    ];
    for (what, f) in checks {
        let (msg, file) = panic_of(f);
        assert!(
            file.ends_with("newcomer.rs"),
            "{what} points into {file}: {msg}"
        );
    }
}

#[test]
fn gradcheck_of_a_non_scalar_function_says_so() {
    let x = Tensor::from_vec(vec![0.5, 1.5], &[2]).unwrap();
    let (msg, file) = panic_of(|| gradcheck(&[x], |_, v| v[0].tanh()));
    assert!(file.ends_with("newcomer.rs"), "points into {file}: {msg}");
    assert_mentions(
        &msg,
        &["gradcheck", "returned a var of shape [2]", ".sum()"],
    );
    assert!(!msg.contains("backward_with"), "inapplicable advice: {msg}");
}

// ----- 8. the truncated-BPTT loop ----------------------------------------------------

const LEN: usize = 13;
const B: usize = 2;
const I: usize = 3;
const H: usize = 4;
const C: usize = 3;

fn rows(x: &Tensor<f64>, from: usize, to: usize) -> (Vec<f64>, [usize; 3]) {
    (
        x.data()[from * B * I..to * B * I].to_vec(),
        [to - from, B, I],
    )
}

/// One window of an LSTM + linear head: runs start..carry_at, copies the
/// state out, runs on to end, returns the summed loss of loss_from..end.
fn lstm_window<'t>(
    (lstm, head): (&Lstm, &Linear),
    (x, y): (&Tensor<f64>, &[usize]),
    tape: &'t Tape<f64>,
    store: &ParamStore<f64>,
    (start, loss_from, carry_at, end): (usize, usize, usize, usize),
    carried: &StateTensors<f64>,
) -> (Var<'t, f64>, StateTensors<f64>) {
    let mut state = carried.bind(tape);
    let mut outs = Vec::new();
    let mut run = |state: &mut tapegrad::layers::State<'t, f64>, a: usize, b: usize| {
        if b > a {
            let (data, shape) = rows(x, a, b);
            let xs = tape.constant_from_slice(&data, &shape);
            let o = lstm.forward(tape, store, xs, Some(&*state));
            outs.extend(o.outputs.iter().copied());
            *state = o.state;
        }
    };
    run(&mut state, start, carry_at);
    let carry = state.to_tensors();
    run(&mut state, carry_at, end);
    let counted = Var::concat(&outs[loss_from - start..], 0);
    let loss = head
        .forward(tape, store, counted)
        .cross_entropy(&y[loss_from * B..end * B], Reduction::Sum);
    (loss, carry)
}

fn task(seed: u64) -> (ParamStore<f64>, Lstm, Linear, Tensor<f64>, Vec<usize>) {
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(I, H), seed);
    let head = Linear::new(&mut store, "head", H, C, true, seed + 1);
    let x = Tensor::<f64>::randn(&[LEN, B, I], seed + 2);
    let y = (0..LEN * B).map(|k| (k * 7 + seed as usize) % C).collect();
    (store, lstm, head, x, y)
}

#[test]
fn tbptt_train_equals_a_hand_written_loop_bit_for_bit() {
    for (k1, k2) in [(3, 3), (2, 5), (4, 4), (3, 7)] {
        let (mut store_a, lstm, head, x, y) = task(11);
        let mut store_b = store_a.clone();
        let zeros = lstm.zero_state(&Tape::<f64>::new(), B).to_tensors();
        let plan = Tbptt::new(k1, k2).unwrap();

        // the library loop
        let (mut tape, mut opt) = (Tape::new(), Adam::new(0.01));
        let run = plan
            .train(
                LEN,
                &mut tape,
                &mut store_a,
                &mut opt,
                zeros.clone(),
                Some(0.5),
                |tape, store, w, carried| {
                    let (loss, carry) = lstm_window(
                        (&lstm, &head),
                        (&x, &y),
                        tape,
                        store,
                        (w.start, w.loss_from, w.carry_at, w.end),
                        carried,
                    );
                    WindowOutput { loss, carry }
                },
            )
            .unwrap();

        // the same by hand
        let (mut tape, mut opt) = (Tape::<f64>::new(), Adam::new(0.01));
        let mut carried = zeros.clone();
        let mut losses = Vec::new();
        for w in plan.windows(LEN) {
            let (value, next, mut grads) = {
                let (loss, next) = lstm_window(
                    (&lstm, &head),
                    (&x, &y),
                    &tape,
                    &store_b,
                    (w.start, w.loss_from, w.carry_at, w.end),
                    &carried,
                );
                (loss.item(), next, loss.backward())
            };
            tapegrad::optim::clip_grad_norm(&mut grads, 0.5, true).unwrap();
            opt.step(&mut store_b, &grads);
            tape.reset_with(grads);
            losses.push(value);
            carried = next;
        }

        assert_eq!(run.losses, losses, "k1 = {k1}, k2 = {k2}");
        assert_eq!(run.losses.len(), LEN.div_ceil(k1));
        assert_eq!(run.state, carried);
        for key in store_a.keys() {
            let name = store_a.name(key);
            let other = store_b.get(store_b.key(name).unwrap());
            assert_eq!(store_a.get(key), other, "{name}, k1 = {k1}, k2 = {k2}");
        }
    }
}

/// h(t) = tanh(x(t)·Uᵀ + h(t−1)·Wᵀ) over the window from the carried h;
/// loss = Σ_t Σ h(t)² (k1 = k2: every step counted, carried out at the end).
fn rnn_window<'t>(
    tape: &'t Tape<f64>,
    store: &ParamStore<f64>,
    (u, w): (ParamKey, ParamKey),
    x: &Tensor<f64>,
    win: Window,
    h: &Tensor<f64>,
) -> (Var<'t, f64>, Tensor<f64>) {
    let (uu, ww) = (tape.param(store, u), tape.param(store, w));
    let mut h = tape.constant(h.clone());
    let mut loss = tape.scalar(0.0);
    for t in win.start..win.end {
        let (data, _) = rows(x, t, t + 1);
        let xt = tape.constant_from_slice(&data, &[B, I]);
        h = (xt.matmul_t(uu) + h.matmul_t(ww)).tanh();
        loss = loss + (h * h).sum();
    }
    (loss, h.to_tensor())
}

#[test]
fn tbptt_train_drives_a_cell_written_from_primitives() {
    // h(t) = tanh(x(t)·Uᵀ + h(t−1)·Wᵀ), loss = Σ_t Σ h(t)²; k1 = k2 = 4.
    let mut store = ParamStore::<f64>::new();
    let u = store.insert("cell.u", init::xavier_uniform(&[H, I], 1.0, 1));
    let w = store.insert("cell.w", init::orthogonal(&[H, H], 0.9, 2));
    let x = Tensor::<f64>::randn(&[LEN, B, I], 3);
    let (mut store_b, mut tape) = (store.clone(), Tape::new());
    let mut opt = Sgd::new(0.05);
    let plan = Tbptt::new(4, 4).unwrap();
    let run = plan
        .train(
            LEN,
            &mut tape,
            &mut store,
            &mut opt,
            Tensor::zeros(&[B, H]),
            None,
            |t, s, w_, h| {
                let (loss, carry) = rnn_window(t, s, (u, w), &x, w_, h);
                WindowOutput { loss, carry }
            },
        )
        .unwrap();
    let mut opt = Sgd::new(0.05);
    let mut h = Tensor::zeros(&[B, H]);
    for w_ in plan.windows(LEN) {
        let (value, next, grads) = {
            let (loss, next) = rnn_window(&tape, &store_b, (u, w), &x, w_, &h);
            (loss.item(), next, loss.backward())
        };
        opt.step(&mut store_b, &grads);
        tape.reset_with(grads);
        assert_eq!(value, run.losses[w_.loss_from / 4]);
        h = next;
    }
    assert_eq!(run.state, h);
    assert_eq!(store.get(u), store_b.get(store_b.key("cell.u").unwrap()));
    assert_eq!(store.get(w), store_b.get(store_b.key("cell.w").unwrap()));
}

#[test]
fn tbptt_train_stops_on_a_non_finite_gradient_and_refuses_a_non_scalar_loss() {
    let mut store = ParamStore::<f64>::new();
    let p = store.insert("p", Tensor::from_vec(vec![1.0], &[1]).unwrap());
    let (mut tape, mut opt) = (Tape::new(), Sgd::new(0.1));
    let plan = Tbptt::new(2, 2).unwrap();
    let err = plan
        .train(
            6,
            &mut tape,
            &mut store,
            &mut opt,
            (),
            None,
            |t, s, w, _| {
                let v = t.param(s, p);
                // the second window's loss is √(p − 1) at p = 1: ∞ slope
                let loss = if w.start == 0 {
                    v.sum()
                } else {
                    (v - 1.1).sqrt().sum()
                };
                WindowOutput { loss, carry: () }
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NonFinite);
    assert_mentions(&err.to_string(), &["Tbptt::train", "steps 2..4"]);
    assert_eq!(
        store.get(p).data(),
        &[0.9],
        "the first window's update stays"
    );

    let v = store.insert("v", Tensor::zeros(&[2]));
    let (msg, _) = panic_of(|| {
        plan.train(
            4,
            &mut tape,
            &mut store,
            &mut opt,
            (),
            None,
            |t, s, _, _| WindowOutput {
                loss: t.param(s, v).exp(),
                carry: (),
            },
        )
    });
    assert_mentions(&msg, &["Tbptt::train", "shape [2]", "steps 0..2", ".sum()"]);
}

// ----- 9. gradcheck of parameters ------------------------------------------------

#[test]
fn gradcheck_store_checks_every_weight_of_a_model_and_restores_it() {
    let (mut store, lstm, head, x, y) = task(21);
    let before = store.clone();
    let report = gradcheck_store(&mut store, |tape, store| {
        let out = lstm.forward(tape, store, tape.constant(x.clone()), None);
        head.forward(tape, store, out.stacked_rows())
            .cross_entropy(&y, Reduction::Mean)
    });
    let names: Vec<&str> = report.inputs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "lstm.weight_ih_l0",
            "lstm.weight_hh_l0",
            "lstm.bias_ih_l0",
            "lstm.bias_hh_l0",
            "head.weight",
            "head.bias"
        ]
    );
    assert!(report.max_rel_error() < 1e-6, "{report:?}");
    for r in &report.inputs {
        assert!(r.numeric.data().iter().any(|g| *g != 0.0), "{}", r.name);
    }
    for key in store.keys() {
        assert_eq!(store.get(key), before.get(key), "the store is restored");
    }
}

#[test]
fn gradcheck_params_finds_a_gradient_the_tape_does_not_see() {
    // A value read from the store outside the tape (as a constant) has no
    // tape gradient: the check must report the finite-difference slope.
    let mut store = ParamStore::<f64>::new();
    let a = store.insert("a", Tensor::from_vec(vec![0.5, -0.25], &[2]).unwrap());
    let b = store.insert("b", Tensor::from_vec(vec![2.0], &[1]).unwrap());
    let report = gradcheck_params(&mut store, &[a, b], |tape, store| {
        let hidden = tape.constant(store.get(b).clone()); // bypasses the tape
        (tape.param(store, a) * hidden).sum()
    });
    assert!(report.inputs[0].max_rel_error < 1e-8, "{report:?}");
    assert_eq!(report.inputs[1].name, "b");
    assert_eq!(report.inputs[1].analytic.data(), &[0.0]);
    assert!((report.inputs[1].numeric.data()[0] - 0.25).abs() < 1e-8);
    assert!(!report.passes(1e-6, 1e-6));

    let mut other = ParamStore::<f64>::new();
    let stale: ParamKey = other.insert("x", Tensor::zeros(&[1]));
    let err = try_gradcheck_params(&mut store, &[stale], Default::default(), |t, s| {
        t.param(s, a).sum()
    })
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StaleKey);
}

// ----- 10. parameter names in the graph --------------------------------------------

#[test]
fn listing_and_dot_show_parameter_names() {
    let (store, lstm, head, x, _) = task(31);
    let mut tape = Tape::new();
    for _ in 0..2 {
        {
            let out = lstm.forward(&tape, &store, tape.constant(x.clone()), None);
            let _ = head.forward(&tape, &store, out.stacked_rows());
            let listing = tape.listing();
            let dot = tape.to_dot();
            for name in [
                "lstm.weight_hh_l0",
                "lstm.bias_ih_l0",
                "head.weight",
                "head.bias",
            ] {
                assert!(
                    listing.contains(&format!("param {name}")),
                    "{name}:\n{listing}"
                );
                assert!(dot.contains(&format!("param {name}")), "{name}");
            }
            let named =
                listing.matches("param lstm.").count() + listing.matches("param head.").count();
            assert_eq!(
                listing.matches("param").count(),
                named,
                "an unnamed param:\n{listing}"
            );
            assert_eq!(named, 6);
        }
        tape.reset(); // names survive a reset (bound again next step)
    }
}

// ----- 11. initialisers and generic scalar arithmetic -----------------------------

#[test]
fn the_public_initialisers_are_the_layers_own() {
    let mut store = ParamStore::<f32>::new();
    Lstm::new(&mut store, "lstm", RecurrentConfig::new(5, 16), 3);
    let bound = init::uniform_bound(16) as f32;
    assert_eq!(bound, 0.25);
    let w = store.get(store.key("lstm.weight_hh_l0").unwrap());
    let max = w.data().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(max <= bound && max > 0.9 * bound, "{max}");
    let own = init::uniform_fan::<f32>(&[64, 16], 16, 9);
    assert!(own.data().iter().all(|v| v.abs() <= bound));
}

/// Code generic over the element type, with plain `f64` constants.
fn generic_formula<F: Real>(tape: &Tape<F>, v: F) -> (F, F) {
    let x = tape.var(Tensor::scalar(v));
    // (3x + 1)/2 − 0.5 + 2x − (1 − x) + (4 + x)/4 = 4.75x
    let y = x.scale(3.0).shift(1.0).scale(0.5).shift(-0.5) + x.scale(2.0)
        - x.scale(-1.0).shift(1.0)
        + x.shift(4.0).scale(0.25);
    (y.item(), y.backward().wrt(x).item())
}

#[test]
fn scalar_arithmetic_reads_naturally_in_generic_code() {
    let (y, dy) = generic_formula(&Tape::<f64>::new(), 2.0);
    assert_eq!((y, dy), (9.5, 4.75));
    let (y, dy) = generic_formula(&Tape::<f32>::new(), 2.0);
    assert_eq!((y, dy), (9.5, 4.75));
    // scale/shift are the operators' ops: same bits as `*` and `+`
    let tape = Tape::<f32>::new();
    let x = tape.var(Tensor::scalar(0.1f32));
    assert_eq!(x.scale(0.3).item(), (x * 0.3).item());
    assert_eq!(x.shift(0.7).item(), (x + 0.7).sum().item());
    assert_eq!((0.3f32 - x).item(), 0.3f32 - 0.1f32);
}

// ----- 12. one argument order; checkpoints: dtype, shape, conversion ---------------

#[test]
fn chunk_takes_the_axis_last_like_concat() {
    let tape = Tape::<f64>::new();
    let z = tape.var(Tensor::from_fn(&[2, 6], |i| i as f64));
    let parts = z.chunk(3, 1);
    let old = z.split(1, 3);
    for (a, b) in parts.iter().zip(&old) {
        assert_eq!(a.to_tensor(), b.to_tensor());
    }
    assert_eq!(Var::concat(&parts, 1).to_tensor(), z.to_tensor());
    let report = gradcheck(&[Tensor::randn(&[2, 6], 4)], |_, v| {
        let p = v[0].chunk(2, 1);
        (p[0] * p[1].tanh()).sum()
    });
    assert!(report.max_rel_error() < 1e-6, "{report:?}");
    let (msg, file) = panic_of(|| z.chunk(4, 1));
    assert_mentions(&msg, &["chunk", "axis 1", "[2, 6]", "4 equal parts"]);
    assert!(file.ends_with("newcomer.rs"), "{file}");
}

#[test]
fn inspect_reports_dtype_and_shape_per_tensor() {
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("decoder.weight", Tensor::randn(&[3, 2], 1));
    store.insert("decoder.bias", Tensor::zeros(&[3]));
    let mut opt = Adam::new(0.01);
    let g = Tape::new().param(&store, w).sum().backward();
    opt.step(&mut store, &g);
    let bytes = checkpoint::to_bytes(&store, Some(&opt), 1, &Default::default()).unwrap();
    let info = checkpoint::inspect(&bytes).unwrap();
    let seen: Vec<(&str, &str, &[usize])> = info
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype.as_str(), t.shape.as_slice()))
        .collect();
    assert!(
        seen.contains(&("decoder.weight", "F64", &[3, 2][..])),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("decoder.bias", "F64", &[3][..])),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("optim.exp_avg.decoder.weight", "F64", &[3, 2][..])),
        "{seen:?}"
    );
    assert_eq!(info.num_params, 2);
}

#[test]
fn f32_and_f64_checkpoints_convert_when_asked() {
    let mut s32 = ParamStore::<f32>::new();
    let w32 = s32.insert(
        "w",
        Tensor::from_vec(vec![0.1f32, -3.5, 1e-30], &[3]).unwrap(),
    );
    let mut opt32 = Adam::new(0.01);
    let g = Tape::new().param(&s32, w32).powf(2.0).sum().backward();
    opt32.step(&mut s32, &g);
    let bytes32 = checkpoint::to_bytes(&s32, Some(&opt32), 4, &Default::default()).unwrap();

    // f32 file → f64 store and optimizer: refused unless asked, then exact
    let mut s64 = ParamStore::<f64>::new();
    let w64 = s64.insert("w", Tensor::zeros(&[3]));
    let mut opt64 = Adam::new(0.5);
    let err = checkpoint::from_bytes(&bytes32, &mut s64, Some(&mut opt64)).unwrap_err();
    assert_mentions(&err.to_string(), &["dtype F32", "convert_dtype"]);
    assert_eq!(s64.get(w64).data(), &[0.0; 3]);
    let asked = LoadOptions {
        convert_dtype: true,
    };
    let info = checkpoint::from_bytes_with(&bytes32, &mut s64, Some(&mut opt64), asked).unwrap();
    assert_eq!(info.step, 4);
    let want: Vec<f64> = s32.get(w32).data().iter().map(|&v| v as f64).collect();
    assert_eq!(s64.get(w64).data(), want.as_slice());
    assert_eq!((opt64.lr, opt64.steps()), (0.01, 1));

    // and back: f64 → f32 rounds to nearest, which gives the f32 values again
    let bytes64 = checkpoint::to_bytes(&s64, Some(&opt64), 4, &Default::default()).unwrap();
    let mut back = ParamStore::<f32>::new();
    let wb = back.insert("w", Tensor::zeros(&[3]));
    assert!(checkpoint::from_bytes(&bytes64, &mut back, None).is_err());
    checkpoint::from_bytes_with(&bytes64, &mut back, None, asked).unwrap();
    assert_eq!(back.get(wb), s32.get(w32));
}

// ----- 3. data-facing constructors return errors -----------------------------------

#[test]
fn an_empty_corpus_is_an_error_not_a_panic() {
    let err =
        CharModel::<f32>::try_new(Vocab::from_text(""), CharModelConfig::default(), 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_mentions(
        &err.to_string(),
        &["CharModel::new", "vocabulary is empty", "corpus"],
    );
    let bad = CharModelConfig::default().dropout(1.5);
    let err = CharModel::<f32>::try_new(Vocab::from_text("ab"), bad, 1).unwrap_err();
    assert_mentions(&err.to_string(), &["dropout", "1.5"]);
    let v = Vocab::from_text("the raven");
    assert_eq!(v.missing("Quoth the raven"), vec!['Q', 'o', 'u']);
}

// ----- 13. the README for a project that depends on tapegrad ----------------------

#[test]
fn the_readme_starts_with_two_commands_and_explains_using_the_crate() {
    let readme = include_str!("../README.md");
    let mut lines = readme.lines();
    assert_eq!(lines.next(), Some("# tapegrad"));
    assert_eq!(lines.next(), Some(""));
    assert_eq!(lines.next(), Some("```sh"));
    let main_job = lines.next().unwrap();
    assert!(main_job.starts_with("cargo run --release --example char_lstm"));
    assert!(main_job.contains("~3 min") && main_job.contains("compiling the first time"));
    assert!(lines
        .next()
        .unwrap()
        .starts_with("cargo test --features ndarray"));
    assert_eq!(lines.next(), Some("```"));
    assert_mentions(
        readme,
        &[
            "[dependencies]\ntapegrad = ",
            "9× slower",
            "[profile.dev.package.tapegrad]\nopt-level = 3",
            "2 min 31 s",
            "Tbptt::train",
            "gradcheck_store",
            "init::orthogonal",
            "convert_dtype",
        ],
    );
}
