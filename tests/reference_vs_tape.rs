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
use tapegrad::{Grads, Nonlinearity, Real, Tape, Tensor};

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
    /// Steps per hoisted input projection (`None`: the layer's default,
    /// the whole sequence at these sizes).
    chunk: Option<usize>,
    seed: u64,
}

fn sizes() -> impl Strategy<Value = Sizes> {
    (
        1usize..=4,
        1usize..=6,
        1usize..=8,
        2usize..=5,
        1usize..=8,
        proptest::option::of(1usize..=8),
        any::<u64>(),
    )
        .prop_map(|(b, i, h, o, t, chunk, seed)| Sizes {
            b,
            i,
            h,
            o,
            t,
            chunk,
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

    let model = TapeModel::rnn_chunked(&p, phi, s.chunk);
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
    check_params(&tg, &model, g.params())?;
    check("dx", tg.wrt(xv), g.x.as_ref().expect("input gradient"))?;
    check("dh0", tg.wrt(hv), &g.h0)?;
    Ok(())
}

/// The six parameter gradients of the tape against the reference's, in
/// the order of `RnnGrads::params` / `LstmGrads::params`.
fn check_params<F: Real>(
    tg: &Grads<F>,
    model: &TapeModel<F>,
    want: [&Tensor<F>; 6],
) -> Result<(), TestCaseError> {
    const NAMES: [&str; 6] = ["dW_ih", "dW_hh", "db_ih", "db_hh", "dW_out", "db_out"];
    for ((name, key), want) in NAMES.iter().zip(model.keys()).zip(want) {
        check(name, tg.param(key).expect("bound parameter"), want)?;
    }
    Ok(())
}

fn lstm_property<F: Real>(s: &Sizes) -> Result<(), TestCaseError> {
    lstm_model_property::<F>(s, |p| TapeModel::lstm_chunked(p, s.chunk))
}

/// `lstm_property` for any tape twin of the reference LSTM (the built-in
/// `Lstm`, or a cell written outside the crate).
fn lstm_model_property<F: Real>(
    s: &Sizes,
    make: impl Fn(&LstmParams<F>) -> TapeModel<F>,
) -> Result<(), TestCaseError> {
    let p = LstmParams::<F>::random(s.i, s.h, s.o, s.seed);
    let (x, h0, c0, targets) = data::<F>(s);
    let mut reference = LstmBptt::new(s.b, s.i, s.h, s.o, s.t, true);
    let ref_loss = reference.run(&p, x.data(), h0.data(), c0.data(), &targets);
    let g = reference.grads();

    let model = make(&p);
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
    check_params(&tg, &model, g.params())?;
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

    #[test]
    fn user_lstm_cell_equals_reference_f64(s in sizes()) {
        lstm_model_property::<f64>(&s, TapeModel::user_lstm)?;
    }
}

/// Longer sequences, T 20..=200 (B 1..=3, small widths), with the input
/// projection hoisted 1..=40 steps at a time, so most runs have several
/// chunks, a short last one, and chunk values released as the steps move
/// on. Same tolerances; 32 cases per property.
fn long_sizes() -> impl Strategy<Value = Sizes> {
    (
        1usize..=3,
        1usize..=3,
        1usize..=4,
        2usize..=3,
        20usize..=200,
        1usize..=40,
        any::<u64>(),
    )
        .prop_map(|(b, i, h, o, t, chunk, seed)| Sizes {
            b,
            i,
            h,
            o,
            t,
            chunk: Some(chunk),
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn long_rnn_with_chunked_projection_equals_reference(s in long_sizes()) {
        rnn_property::<f64>(&s, Nonlinearity::Tanh)?;
    }

    #[test]
    fn long_lstm_with_chunked_projection_equals_reference(s in long_sizes()) {
        lstm_property::<f64>(&s)?;
    }
}

/// A batch and width at which the backward sweep flushes the deferred
/// W_hh gradient early, many times within the sequence (blocks of twice
/// W_hh's size, 2¹⁹ elements here: LSTM B·4H = 16·1024 per step, every 32
/// steps of 280; RNN B·H = 64·512, every 16 steps of 140): the same
/// gradients as the reference (f64, ≤ 1e-9).
/// The default projection chunks apply (2¹⁸ projected elements, at least
/// 512 rows: 32 and 8 steps here).
#[test]
fn early_flush_of_deferred_weight_gradients_equals_reference() {
    let s = Sizes {
        b: 16,
        i: 8,
        h: 256,
        o: 4,
        t: 280,
        chunk: None,
        seed: 7,
    };
    lstm_property::<f64>(&s).unwrap();
    rnn_property::<f64>(
        &Sizes {
            b: 64,
            h: 512,
            t: 140,
            ..s
        },
        Nonlinearity::Tanh,
    )
    .unwrap();
}

/// f32 tape gradients against f64 tape gradients at the same point (every
/// weight and input representable in f32), for an LSTM over up to 20 steps:
/// what single precision costs. Norm-wise relative error ≤ 1e-3.
fn lstm_f32_vs_f64(s: &Sizes) -> Result<(), TestCaseError> {
    let p64 = LstmParams::<f64>::random(s.i, s.h, s.o, s.seed);
    let p32 = LstmParams::<f32> {
        w_ih: p64.w_ih.cast(),
        w_hh: p64.w_hh.cast(),
        b_ih: p64.b_ih.cast(),
        b_hh: p64.b_hh.cast(),
        w_out: p64.w_out.cast(),
        b_out: p64.b_out.cast(),
    };
    // Round the f64 point to f32 so both precisions differentiate the same function.
    let p64 = LstmParams::<f64> {
        w_ih: p32.w_ih.cast(),
        w_hh: p32.w_hh.cast(),
        b_ih: p32.b_ih.cast(),
        b_hh: p32.b_hh.cast(),
        w_out: p32.w_out.cast(),
        b_out: p32.b_out.cast(),
    };
    let (x32, h32, c32, targets) = data::<f32>(s);
    let grads = |m: &TapeModel<f64>, x: Tensor<f64>, h: Tensor<f64>, c: Tensor<f64>| {
        let tape = Tape::new();
        let (xv, hv, cv) = (tape.var(x), tape.var(h), tape.var(c));
        let g = m.loss(&tape, xv, hv, Some(cv), &targets).backward();
        let mut out: Vec<Tensor<f64>> = [m.w_ih, m.w_hh, m.b_ih, m.w_out()]
            .iter()
            .map(|&k| g.param(k).unwrap().clone())
            .collect();
        out.extend([g.wrt(xv).clone(), g.wrt(hv).clone(), g.wrt(cv).clone()]);
        out
    };
    let want = grads(&TapeModel::lstm(&p64), x32.cast(), h32.cast(), c32.cast());
    let m32 = TapeModel::lstm(&p32);
    let tape = Tape::new();
    let (xv, hv, cv) = (tape.var(x32), tape.var(h32), tape.var(c32));
    let g = m32.loss(&tape, xv, hv, Some(cv), &targets).backward();
    let mut got: Vec<Tensor<f32>> = [m32.w_ih, m32.w_hh, m32.b_ih, m32.w_out()]
        .iter()
        .map(|&k| g.param(k).unwrap().clone())
        .collect();
    got.extend([g.wrt(xv).clone(), g.wrt(hv).clone(), g.wrt(cv).clone()]);
    for (name, (a, b)) in ["dW_ih", "dW_hh", "db", "dW_out", "dx", "dh0", "dc0"]
        .iter()
        .zip(got.iter().zip(&want))
    {
        let e = rel_err(&a.cast::<f64>(), b);
        let mut w = WORST_F32_VS_F64.lock().unwrap();
        *w = w.max(e);
        prop_assert!(e <= 1e-3, "{}: f32 vs f64 relative error {:e}", name, e);
    }
    Ok(())
}

static WORST_F32_VS_F64: Mutex<f64> = Mutex::new(0.0);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases() / 4))]

    #[test]
    fn lstm_f32_gradients_match_f64_up_to_t20(
        s in (1usize..=4, 1usize..=6, 1usize..=8, 2usize..=5, 1usize..=20, any::<u64>())
            .prop_map(|(b, i, h, o, t, seed)| Sizes {
                b,
                i,
                h,
                o,
                t,
                chunk: None,
                seed,
            })
    ) {
        lstm_f32_vs_f64(&s)?;
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
    eprintln!(
        "worst f32-vs-f64 LSTM (T ≤ 20) relative error so far: {:e}",
        *WORST_F32_VS_F64.lock().unwrap()
    );
}

/// The reverse direction of a bidirectional layer over a sequence of
/// several projection chunks (T = 601, 64 steps each: the reverse pass
/// starts in the short last one) equals a unidirectional
/// layer with the reverse weights run on the time-reversed input, and the
/// forward direction equals one with the forward weights: outputs and the
/// gradients of all eight weights of each direction (f64, ≤ 1e-12 relative).
#[test]
fn long_bidirectional_lstm_equals_two_unidirectional_runs() {
    use tapegrad::layers::{Lstm, RecurrentConfig};
    use tapegrad::{ParamStore, Var};
    let (t, b, i, h) = (601, 1, 3, 4);
    let mut bi_store = ParamStore::<f64>::new();
    let bi = Lstm::new(
        &mut bi_store,
        "bi",
        RecurrentConfig::new(i, h).bidirectional(true),
        3,
    );
    let x = Tensor::<f64>::randn(&[t, b, i], 5);
    let r = Tensor::<f64>::randn(&[t, b, 2 * h], 6);
    let names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"];

    let tape = Tape::new();
    let out = bi.forward(&tape, &bi_store, tape.constant(x.clone()), None);
    let loss = (out.stacked() * tape.constant(r.clone())).sum();
    let g = loss.backward();
    let outs: Vec<Tensor<f64>> = out.outputs.iter().map(Var::to_tensor).collect();

    for (dir, sfx) in [(0usize, ""), (1, "_reverse")] {
        let mut store = ParamStore::<f64>::new();
        let uni = Lstm::new(&mut store, "uni", RecurrentConfig::new(i, h), 9);
        assert_eq!(uni.config().projection_chunk, None, "one GEMM on this side");
        for n in names {
            let from = bi_store.key(&format!("bi.{n}{sfx}")).unwrap();
            let to = store.key(&format!("uni.{n}")).unwrap();
            *store.get_mut(to) = bi_store.get(from).clone();
        }
        // Time order of this direction's run, and its half of r.
        let at = |s: usize| if dir == 0 { s } else { t - 1 - s };
        let mut xs = Vec::new();
        let mut rs = Vec::new();
        for s in 0..t {
            xs.extend_from_slice(&x.data()[at(s) * b * i..(at(s) + 1) * b * i]);
            let row = &r.data()[at(s) * b * 2 * h..(at(s) + 1) * b * 2 * h];
            rs.extend_from_slice(&row[dir * h..(dir + 1) * h]);
        }
        let tape = Tape::new();
        let xv = tape.constant(Tensor::from_vec(xs, &[t, b, i]).unwrap());
        let u = uni.forward(&tape, &store, xv, None);
        let rv = tape.constant(Tensor::from_vec(rs, &[t, b, h]).unwrap());
        let ug = (u.stacked() * rv).sum().backward();
        let mut worst = 0.0f64;
        for s in 0..t {
            let want = u.outputs[s].to_tensor();
            let got = &outs[at(s)].data()[dir * h..(dir + 1) * h];
            for (a, w) in got.iter().zip(want.data()) {
                worst = worst.max((a - w).abs());
            }
        }
        assert!(
            worst <= 1e-12,
            "direction {dir}: outputs differ by {worst:e}"
        );
        for n in names {
            let gb = g
                .param(bi_store.key(&format!("bi.{n}{sfx}")).unwrap())
                .unwrap();
            let gu = ug.param(store.key(&format!("uni.{n}")).unwrap()).unwrap();
            let e = rel_err(gb, gu);
            assert!(e <= 1e-12, "direction {dir}, {n}: relative error {e:e}");
        }
    }
}
