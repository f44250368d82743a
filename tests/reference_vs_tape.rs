//! The tape against the hand-derived BPTT reference (`tapegrad::reference`),
//! a differential test in the manner of slotmap's SlotMap-vs-HashMap test:
//! the same random sizes, weights, inputs, initial states and targets go to
//! both, and every gradient must agree — of each parameter, of every input
//! x(t) and of h(0) (and c(0)).
//!
//! Error measure: ‖tape − reference‖∞ / ‖reference‖∞ per tensor (a
//! norm-wise relative error, so entries near zero are judged against the
//! scale of the whole gradient). Tolerances: f64 ≤ 1e-9, f32 ≤ 1e-3. Sizes:
//! B 1..=4, I 1..=6, H 1..=8, O 2..=5, T 1..=8 (T = 1 and B = 1 included).
//! Cases: 512 per property (PROPTEST_CASES overrides). The worst errors seen
//! are printed by `worst_errors_report`.

#[path = "common/bptt_task.rs"]
mod bptt_task;

use bptt_task::TapeModel;
use proptest::prelude::*;
use std::sync::Mutex;
use tapegrad::reference::{LstmBptt, LstmParams, RnnBptt, RnnParams};
use tapegrad::{Nonlinearity, Real, Tape, Tensor};

static WORST: Mutex<[f64; 2]> = Mutex::new([0.0; 2]); // [f32, f64]

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512)
}

fn tol<F: Real>() -> f64 {
    if F::NAME == "f32" {
        1e-3
    } else {
        1e-9
    }
}

/// ‖a − b‖∞ / ‖b‖∞ (0 when both are zero).
fn rel_err<F: Real>(a: &Tensor<F>, b: &Tensor<F>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    let scale = b
        .data()
        .iter()
        .map(|v| v.to_f64_lossy().abs())
        .fold(0.0, f64::max);
    let diff = a.max_abs_diff(b);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

fn check<F: Real>(what: &str, a: &Tensor<F>, b: &Tensor<F>) -> Result<(), TestCaseError> {
    let e = rel_err(a, b);
    let mut w = WORST.lock().unwrap();
    let slot = if F::NAME == "f32" { 0 } else { 1 };
    w[slot] = w[slot].max(e);
    prop_assert!(
        e <= tol::<F>(),
        "{what}: relative error {e:e} > {:e} ({})",
        tol::<F>(),
        F::NAME
    );
    Ok(())
}

#[derive(Debug, Clone)]
struct Sizes {
    b: usize,
    i: usize,
    h: usize,
    o: usize,
    t: usize,
    seed: u64,
}

fn sizes() -> impl Strategy<Value = Sizes> {
    (
        1usize..=4,
        1usize..=6,
        1usize..=8,
        2usize..=5,
        1usize..=8,
        any::<u64>(),
    )
        .prop_map(|(b, i, h, o, t, seed)| Sizes {
            b,
            i,
            h,
            o,
            t,
            seed,
        })
}

fn data<F: Real>(s: &Sizes) -> (Tensor<F>, Tensor<F>, Tensor<F>, Vec<usize>) {
    let x = Tensor::randn(&[s.t, s.b, s.i], s.seed ^ 1);
    let h0 = Tensor::randn(&[s.b, s.h], s.seed ^ 2);
    let c0 = Tensor::randn(&[s.b, s.h], s.seed ^ 3);
    let mut r = tapegrad::tensor::rng(s.seed ^ 4);
    let targets = (0..s.t * s.b).map(|_| rand_index(&mut r, s.o)).collect();
    (x, h0, c0, targets)
}

fn rand_index(r: &mut tapegrad::tensor::SeededRng, n: usize) -> usize {
    use rand::Rng;
    r.random_range(0..n)
}

fn rnn_property<F: Real>(s: &Sizes, phi: Nonlinearity) -> Result<(), TestCaseError> {
    let p = RnnParams::<F>::random(s.i, s.h, s.o, s.seed);
    let (x, h0, _, targets) = data::<F>(s);
    let mut reference = RnnBptt::new(s.b, s.i, s.h, s.o, s.t, phi, true);
    let ref_loss = reference.run(&p, x.data(), h0.data(), &targets);
    let g = reference.grads();

    let model = TapeModel::rnn(&p, phi);
    let tape = Tape::new();
    let xv = tape.var(x.clone());
    let hv = tape.var(h0.clone());
    let loss = model.loss(&tape, xv, hv, None, &targets);
    check(
        "loss",
        &Tensor::scalar(loss.item()),
        &Tensor::scalar(ref_loss),
    )?;
    let tg = loss.backward();
    let param = |k| tg.param(k).expect("bound parameter");
    check("dW_ih", param(model.w_ih), &g.w_ih)?;
    check("dW_hh", param(model.w_hh), &g.w_hh)?;
    check("db_ih", param(model.b_ih), &g.b_ih)?;
    check("db_hh", param(model.b_hh), &g.b_hh)?;
    check("dW_out", param(model.w_out()), &g.w_out)?;
    check("db_out", param(model.b_out()), &g.b_out)?;
    check("dx", tg.wrt(xv), g.x.as_ref().expect("input gradient"))?;
    check("dh0", tg.wrt(hv), &g.h0)?;
    Ok(())
}

fn lstm_property<F: Real>(s: &Sizes) -> Result<(), TestCaseError> {
    let p = LstmParams::<F>::random(s.i, s.h, s.o, s.seed);
    let (x, h0, c0, targets) = data::<F>(s);
    let mut reference = LstmBptt::new(s.b, s.i, s.h, s.o, s.t, true);
    let ref_loss = reference.run(&p, x.data(), h0.data(), c0.data(), &targets);
    let g = reference.grads();

    let model = TapeModel::lstm(&p);
    let tape = Tape::new();
    let xv = tape.var(x.clone());
    let hv = tape.var(h0.clone());
    let cv = tape.var(c0.clone());
    let loss = model.loss(&tape, xv, hv, Some(cv), &targets);
    check(
        "loss",
        &Tensor::scalar(loss.item()),
        &Tensor::scalar(ref_loss),
    )?;
    let tg = loss.backward();
    let param = |k| tg.param(k).expect("bound parameter");
    check("dW_ih", param(model.w_ih), &g.w_ih)?;
    check("dW_hh", param(model.w_hh), &g.w_hh)?;
    check("db_ih", param(model.b_ih), &g.b_ih)?;
    check("db_hh", param(model.b_hh), &g.b_hh)?;
    check("dW_out", param(model.w_out()), &g.w_out)?;
    check("db_out", param(model.b_out()), &g.b_out)?;
    check("dx", tg.wrt(xv), g.x.as_ref().expect("input gradient"))?;
    check("dh0", tg.wrt(hv), &g.h0)?;
    check("dc0", tg.wrt(cv), &g.c0)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn rnn_tanh_tape_equals_reference_f64(s in sizes()) {
        rnn_property::<f64>(&s, Nonlinearity::Tanh)?;
    }

    #[test]
    fn rnn_tanh_tape_equals_reference_f32(s in sizes()) {
        rnn_property::<f32>(&s, Nonlinearity::Tanh)?;
    }

    #[test]
    fn rnn_relu_tape_equals_reference_f64(s in sizes()) {
        rnn_property::<f64>(&s, Nonlinearity::Relu)?;
    }

    #[test]
    fn lstm_tape_equals_reference_f64(s in sizes()) {
        lstm_property::<f64>(&s)?;
    }

    #[test]
    fn lstm_tape_equals_reference_f32(s in sizes()) {
        lstm_property::<f32>(&s)?;
    }
}

/// Runs after the properties in the same binary when tests run on one
/// thread; with several threads it reports what has been seen so far.
#[test]
fn worst_errors_report() {
    let w = WORST.lock().unwrap();
    eprintln!(
        "worst relative error so far: f32 {:e}, f64 {:e}",
        w[0], w[1]
    );
}
