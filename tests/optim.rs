//! Optimizers, clipping and schedules against steps computed by hand (the
//! arithmetic is in the comments), and the export/import of optimizer
//! state.
//!
//! Every hand test feeds a chosen gradient sequence: the loss
//! L = Σᵢ gᵢ·wᵢ has ∂L/∂w = g whatever w is, so the numbers below are the
//! optimizer's alone. f64 throughout; "≈" means within 1e-15 relative,
//! the rounding of a few decimal operations.

use tapegrad::optim::{
    clip_grad_norm, clip_grad_value, Adagrad, Adam, LrSchedule, Optimizer, OptimizerState, RmsProp,
    Sgd,
};
use tapegrad::{ErrorKind, Grads, ParamKey, ParamStore, Tape, Tensor};

/// Gradients g (for the parameters `keys`, in order) of L = Σ gᵢ·wᵢ.
fn grads(store: &ParamStore<f64>, keys: &[ParamKey], g: &[&[f64]]) -> Grads<f64> {
    let tape = Tape::new();
    let mut loss = tape.scalar(0.0);
    for (&k, g) in keys.iter().zip(g) {
        let w = tape.param(store, k);
        let c = tape.constant(Tensor::from_slice(g, store.get(k).shape()).unwrap());
        loss = loss + (w * c).sum();
    }
    loss.backward()
}

/// A store with one parameter `w` holding `w0`.
fn store_with(w0: &[f64]) -> (ParamStore<f64>, ParamKey) {
    let mut store = ParamStore::new();
    let k = store.insert("w", Tensor::from_slice(w0, &[w0.len()]).unwrap());
    (store, k)
}

/// Runs `opt` over the gradient sequence and returns w after each step.
fn run(opt: &mut dyn Optimizer<f64>, w0: &[f64], gs: &[&[f64]]) -> Vec<Vec<f64>> {
    let (mut store, k) = store_with(w0);
    gs.iter()
        .map(|g| {
            let gr = grads(&store, &[k], &[g]);
            opt.step(&mut store, &gr);
            store.get(k).data().to_vec()
        })
        .collect()
}

#[track_caller]
fn assert_close(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-15 * w.abs().max(1.0),
            "got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn sgd_plain_step() {
    // η = 0.5, w = [1, 1], g = [2, −4]:  w − η·g = [1 − 1, 1 + 2] = [0, 3]
    let w = run(&mut Sgd::new(0.5), &[1.0, 1.0], &[&[2.0, -4.0]]);
    assert_close(&w[0], &[0.0, 3.0]);
}

#[test]
fn sgd_momentum_and_weight_decay_two_steps() {
    // η = 0.1, μ = 0.9, λ = 0.1, w₀ = 1, g = 1 at both steps.
    // step 1: g' = g + λw = 1 + 0.1 = 1.1;   v = g' = 1.1 (first step)
    //         w = 1 − 0.1·1.1 = 0.89
    // step 2: g' = 1 + 0.1·0.89 = 1.089;     v = 0.9·1.1 + 1.089 = 2.079
    //         w = 0.89 − 0.1·2.079 = 0.6821
    let mut opt = Sgd::new(0.1).momentum(0.9).weight_decay(0.1);
    let w = run(&mut opt, &[1.0], &[&[1.0], &[1.0]]);
    assert_close(&w[0], &[0.89]);
    assert_close(&w[1], &[0.6821]);
}

#[test]
fn sgd_nesterov_two_steps() {
    // η = 0.1, μ = 0.9, w₀ = 1, g = 1 then −1.
    // step 1: v = 1;                  d = g + μv = 1 + 0.9 = 1.9
    //         w = 1 − 0.19 = 0.81
    // step 2: v = 0.9·1 − 1 = −0.1;   d = −1 + 0.9·(−0.1) = −1.09
    //         w = 0.81 + 0.109 = 0.919
    let w = run(&mut Sgd::new(0.1).nesterov(0.9), &[1.0], &[&[1.0], &[-1.0]]);
    assert_close(&w[0], &[0.81]);
    assert_close(&w[1], &[0.919]);
}

#[test]
fn adagrad_two_steps() {
    // η = 0.1, ε = 1e-10, w₀ = 1, g = 3 then 4.
    // step 1: s = 9;        w = 1 − 0.1·3/(√9 + ε)  = 1 − 0.3/(3 + 1e-10)
    // step 2: s = 9 + 16;   w = w₁ − 0.1·4/(√25 + ε) = w₁ − 0.4/(5 + 1e-10)
    let w = run(&mut Adagrad::new(0.1), &[1.0], &[&[3.0], &[4.0]]);
    let w1 = 1.0 - 0.3 / (3.0 + 1e-10);
    assert_close(&w[0], &[w1]);
    assert_close(&w[1], &[w1 - 0.4 / (5.0 + 1e-10)]);
}

#[test]
fn adagrad_lr_decay_initial_accumulator_weight_decay() {
    // η = 0.1, δ = 0.5, s₀ = 7, λ = 1, ε = 0, w₀ = 1, g = 1 then 1.
    // step 1: η₁ = 0.1/(1 + 0·0.5) = 0.1;   g' = 1 + 1·1 = 2;  s = 7 + 4 = 11
    //         w = 1 − 0.1·2/√11
    // step 2: η₂ = 0.1/(1 + 1·0.5) = 0.1/1.5;  g' = 1 + w₁;  s = 11 + g'²
    //         w = w₁ − η₂·g'/√s
    let mut opt = Adagrad::new(0.1);
    opt.lr_decay = 0.5;
    opt.initial_accumulator_value = 7.0;
    opt.weight_decay = 1.0;
    opt.eps = 0.0;
    let w = run(&mut opt, &[1.0], &[&[1.0], &[1.0]]);
    let w1 = 1.0 - 0.2 / 11f64.sqrt();
    let g2 = 1.0 + w1;
    assert_close(&w[0], &[w1]);
    assert_close(&w[1], &[w1 - (0.1 / 1.5) * g2 / (11.0 + g2 * g2).sqrt()]);
    assert_eq!(opt.steps(), 2);
}

#[test]
fn rmsprop_plain_centered_and_momentum() {
    // η = 0.01, α = 0.99, ε = 0, w₀ = 1, g = 2 at both steps.
    // plain, step 1: v = 0.01·4 = 0.04;  w = 1 − 0.01·2/√0.04 = 1 − 0.1 = 0.9
    //        step 2: v = 0.99·0.04 + 0.01·4 = 0.0796;  w = 0.9 − 0.02/√0.0796
    let mut plain = RmsProp::new(0.01);
    plain.eps = 0.0;
    let w = run(&mut plain, &[1.0], &[&[2.0], &[2.0]]);
    assert_close(&w[0], &[0.9]);
    assert_close(&w[1], &[0.9 - 0.02 / 0.0796f64.sqrt()]);

    // centered, step 1: v = 0.04, ḡ = 0.01·2 = 0.02, ṽ = 0.04 − 0.0004 = 0.0396
    //                   w = 1 − 0.02/√0.0396
    let mut centered = RmsProp::new(0.01).centered(true);
    centered.eps = 0.0;
    let w = run(&mut centered, &[1.0], &[&[2.0]]);
    assert_close(&w[0], &[1.0 - 0.02 / 0.0396f64.sqrt()]);

    // momentum μ = 0.9, step 1: b = 2/√0.04 = 10;  w = 1 − 0.01·10 = 0.9
    //                   step 2: b = 0.9·10 + 2/√0.0796;  w = 0.9 − 0.01·b
    let mut mom = RmsProp::new(0.01).momentum(0.9);
    mom.eps = 0.0;
    let w = run(&mut mom, &[1.0], &[&[2.0], &[2.0]]);
    assert_close(&w[0], &[0.9]);
    assert_close(&w[1], &[0.9 - 0.01 * (9.0 + 2.0 / 0.0796f64.sqrt())]);
}

#[test]
fn rmsprop_weight_decay_step() {
    // η = 0.01, α = 0.99, ε = 0, λ = 1, w₀ = 1, g = 1: g' = 2, as the plain
    // first step above: w = 0.9
    let mut opt = RmsProp::new(0.01).weight_decay(1.0);
    opt.eps = 0.0;
    assert_close(&run(&mut opt, &[1.0], &[&[1.0]])[0], &[0.9]);
}

#[test]
fn adam_bias_correction_two_steps() {
    // η = 0.1, β = (0.9, 0.999), ε = 0, w₀ = [1, 5], g = [1, 2] then [−1, −2].
    // element 0, step 1: m = 0.1·1 = 0.1,  v = 0.001·1 = 0.001
    //                    m̂ = 0.1/(1 − 0.9) = 1,  v̂ = 0.001/(1 − 0.999) = 1
    //                    w = 1 − 0.1·1/1 = 0.9
    //            step 2: m = 0.9·0.1 − 0.1 = −0.01,  v = 0.999·0.001 + 0.001 = 0.001999
    //                    m̂ = −0.01/(1 − 0.81) = −1/19,  v̂ = 0.001999/(1 − 0.998001) = 1
    //                    w = 0.9 + 0.1/19
    // element 1 (g doubled): m̂ doubles, √v̂ doubles: the same steps, 5 → 4.9 → 4.9 + 0.1/19.
    let mut opt = Adam::new(0.1);
    opt.eps = 0.0;
    let w = run(&mut opt, &[1.0, 5.0], &[&[1.0, 2.0], &[-1.0, -2.0]]);
    assert_close(&w[0], &[0.9, 4.9]);
    assert_close(&w[1], &[0.9 + 0.1 / 19.0, 4.9 + 0.1 / 19.0]);
    assert_eq!(opt.steps(), 2);
}

#[test]
fn adam_coupled_weight_decay() {
    // η = 0.1, λ = 0.5, ε = 0, w₀ = 1, g = 1 at both steps (L2 added to g).
    // step 1: g' = 1 + 0.5·1 = 1.5;  m = 0.15, v = 0.00225;  m̂ = 1.5, v̂ = 2.25
    //         w = 1 − 0.1·1.5/1.5 = 0.9
    // step 2: g' = 1 + 0.5·0.9 = 1.45
    //         m = 0.9·0.15 + 0.1·1.45 = 0.28,  m̂ = 0.28/0.19
    //         v = 0.999·0.00225 + 0.001·1.45² = 0.00224775 + 0.0021025 = 0.00435025
    //         v̂ = 0.00435025/0.001999;  w = 0.9 − 0.1·m̂/√v̂
    let mut opt = Adam::new(0.1);
    opt.eps = 0.0;
    opt.weight_decay = 0.5;
    let w = run(&mut opt, &[1.0], &[&[1.0], &[1.0]]);
    assert_close(&w[0], &[0.9]);
    let want = 0.9 - 0.1 * (0.28 / 0.19) / (0.00435025f64 / 0.001999).sqrt();
    assert!((w[1][0] - want).abs() < 1e-14, "{} vs {want}", w[1][0]);
}

#[test]
fn adamw_decoupled_weight_decay() {
    // η = 0.1, λ = 0.5, ε = 0, w₀ = 1, g = 1 at both steps.
    // step 1: w ← w − ηλw = 1 − 0.05 = 0.95;  m̂ = 1, v̂ = 1:  w = 0.95 − 0.1 = 0.85
    // step 2: w ← 0.85 − 0.05·0.85 = 0.8075;  m = 0.19, m̂ = 1;  v = 0.001999, v̂ = 1
    //         w = 0.8075 − 0.1 = 0.7075
    let mut opt = Adam::adamw(0.1, 0.5);
    opt.eps = 0.0;
    let w = run(&mut opt, &[1.0], &[&[1.0], &[1.0]]);
    assert_close(&w[0], &[0.85]);
    assert_close(&w[1], &[0.7075]);
}

#[test]
fn clip_by_global_norm_and_by_value() {
    // two parameters with g = [3] and [4]: ‖g‖ = 5; max 1 scales by 1/(5 + 1e-6)
    let mut store = ParamStore::<f64>::new();
    let a = store.insert("a", Tensor::zeros(&[1]));
    let b = store.insert("b", Tensor::zeros(&[1]));
    let mut g = grads(&store, &[a, b], &[&[3.0], &[4.0]]);
    assert_eq!(clip_grad_norm(&mut g, 1.0, true).unwrap(), 5.0);
    let s = 1.0 / (5.0 + 1e-6);
    assert_eq!(g.param(a).unwrap().data(), &[3.0 * s]);
    assert_eq!(g.param(b).unwrap().data(), &[4.0 * s]);
    // below the limit: untouched
    let mut g = grads(&store, &[a, b], &[&[0.3], &[0.4]]);
    clip_grad_norm(&mut g, 1.0, true).unwrap();
    assert_eq!(g.param(b).unwrap().data(), &[0.4]);
    // by value: clamp into [−1, 1]
    let mut g = grads(&store, &[a, b], &[&[-3.0], &[0.5]]);
    clip_grad_value(&mut g, 1.0);
    assert_eq!(g.param(a).unwrap().data(), &[-1.0]);
    assert_eq!(g.param(b).unwrap().data(), &[0.5]);
    // a non-finite norm is an error and changes nothing
    let mut g = grads(&store, &[a, b], &[&[f64::INFINITY], &[1.0]]);
    let e = clip_grad_norm(&mut g, 1.0, true).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert_eq!(g.param(b).unwrap().data(), &[1.0]);
}

#[test]
fn schedules_by_hand() {
    // StepLR: 0.1 · 0.5^⌊t/3⌋
    let s = LrSchedule::Step {
        lr: 0.1,
        step_size: 3,
        gamma: 0.5,
    };
    let lrs: Vec<f64> = (0..7).map(|t| s.lr_at(t)).collect();
    assert_eq!(lrs, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]);
    // cosine from 1 to 0 over T = 4: (1 + cos(πt/4))/2 = 1, 0.8536, 0.5, 0.1464, 0, then 0
    let c = LrSchedule::Cosine {
        lr: 1.0,
        min_lr: 0.0,
        total_steps: 4,
    };
    let want = [
        1.0,
        0.5 + 0.5 * std::f64::consts::FRAC_1_SQRT_2,
        0.5,
        0.5 - 0.5 * std::f64::consts::FRAC_1_SQRT_2,
        0.0,
        0.0,
    ];
    for (t, w) in want.iter().enumerate() {
        assert!((c.lr_at(t as u64) - w).abs() < 1e-15, "t = {t}");
    }
    // warm-up over 4 steps to a constant 2: 2·(t + 1)/4 = 0.5, 1, 1.5, 2, then 2
    let w = LrSchedule::Warmup {
        steps: 4,
        then: Box::new(LrSchedule::Constant { lr: 2.0 }),
    };
    let lrs: Vec<f64> = (0..6).map(|t| w.lr_at(t)).collect();
    assert_eq!(lrs, [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]);
    // a warm-up delays the schedule behind it
    let wc = LrSchedule::Warmup {
        steps: 2,
        then: Box::new(c.clone()),
    };
    assert_eq!(wc.lr_at(4), c.lr_at(2));
    // apply sets the optimizer's rate
    let mut opt = Adam::<f64>::new(1.0);
    assert_eq!(s.apply(&mut opt, 3), 0.05);
    assert_eq!(Optimizer::<f64>::lr(&opt), 0.05);
}

/// Every optimizer, configured with all its options.
fn all_optimizers() -> Vec<Box<dyn Optimizer<f64>>> {
    let mut adagrad = Adagrad::new(0.1);
    adagrad.lr_decay = 0.01;
    adagrad.initial_accumulator_value = 0.1;
    adagrad.weight_decay = 0.01;
    let mut adam = Adam::new(0.01);
    adam.weight_decay = 0.1;
    vec![
        Box::new(Sgd::new(0.1).momentum(0.9).weight_decay(0.01)),
        Box::new(Sgd::new(0.1).nesterov(0.5)),
        Box::new(adagrad),
        Box::new(
            RmsProp::new(0.01)
                .momentum(0.5)
                .centered(true)
                .weight_decay(0.1),
        ),
        Box::new(RmsProp::new(0.01)),
        Box::new(adam),
        Box::new(Adam::adamw(0.01, 0.1)),
    ]
}

/// A fresh optimizer of the same kind with other hyper-parameters.
fn fresh(kind: &str) -> Box<dyn Optimizer<f64>> {
    match kind {
        "sgd" => Box::new(Sgd::new(1.0)),
        "adagrad" => Box::new(Adagrad::new(1.0)),
        "rmsprop" => Box::new(RmsProp::new(1.0)),
        "adam" => Box::new(Adam::new(1.0)),
        "adamw" => Box::new(Adam::adamw(1.0, 0.5)),
        k => panic!("unknown kind {k}"),
    }
}

fn two_param_store() -> (ParamStore<f64>, [ParamKey; 2]) {
    let mut store = ParamStore::new();
    let a = store.insert("lstm.weight_ih_l0", Tensor::randn(&[3, 2], 1));
    let b = store.insert("decoder.bias", Tensor::randn(&[3], 2));
    (store, [a, b])
}

fn step_n(
    opt: &mut dyn Optimizer<f64>,
    store: &mut ParamStore<f64>,
    keys: &[ParamKey],
    seed: u64,
    n: u64,
) {
    for i in 0..n {
        let ga = Tensor::<f64>::randn(&[6], seed + 2 * i);
        let gb = Tensor::<f64>::randn(&[3], seed + 2 * i + 1);
        let g = grads(store, keys, &[ga.data(), gb.data()]);
        opt.step(store, &g);
    }
}

#[test]
fn state_round_trip_continues_bitwise() {
    for mut opt in all_optimizers() {
        let (mut store, keys) = two_param_store();
        step_n(opt.as_mut(), &mut store, &keys, 10, 3);
        let state = opt.state(&store);
        assert_eq!(state.kind, opt.kind());
        for (name, _) in &state.tensors {
            let param = name.split_once('.').unwrap().1;
            assert!(store.key(param).is_some(), "{name}");
        }
        // restore into a fresh optimizer of the same kind, on a copy of the store
        let mut other = fresh(opt.kind());
        other.load_state(&store, &state).unwrap();
        assert_eq!(other.state(&store), state, "{}", opt.kind());
        let mut store2 = store.clone();
        step_n(opt.as_mut(), &mut store, &keys, 100, 3);
        step_n(other.as_mut(), &mut store2, &keys, 100, 3);
        for k in keys {
            let (x, y) = (store.get(k).data(), store2.get(k).data());
            assert!(
                x.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}: {x:?} vs {y:?}",
                opt.kind()
            );
        }
    }
}

#[test]
fn state_round_trip_across_stores_by_name() {
    // The state names parameters, so it loads into another store that has
    // the same names (inserted in another order).
    let (mut store, keys) = two_param_store();
    let mut opt = Adam::new(0.01);
    step_n(&mut opt, &mut store, &keys, 1, 2);
    let state = opt.state(&store);
    let mut other_store = ParamStore::<f64>::new();
    other_store.insert("decoder.bias", store.get(keys[1]).clone());
    other_store.insert("lstm.weight_ih_l0", store.get(keys[0]).clone());
    let mut other = Adam::new(0.5);
    other.load_state(&other_store, &state).unwrap();
    let back = other.state(&other_store);
    for (name, t) in &state.tensors {
        assert_eq!(back.tensor(name), Some(t), "{name}");
    }
}

#[track_caller]
fn assert_rejected(
    opt: &mut dyn Optimizer<f64>,
    store: &ParamStore<f64>,
    bad: &OptimizerState<f64>,
    needle: &str,
) {
    let before = opt.state(store);
    let e = opt.load_state(store, bad).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format, "{e}");
    assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`");
    assert_eq!(
        opt.state(store),
        before,
        "a failed load changed the optimizer"
    );
}

#[test]
fn bad_state_is_rejected_and_changes_nothing() {
    let (mut store, keys) = two_param_store();
    let mut src = Adam::new(0.01);
    step_n(&mut src, &mut store, &keys, 1, 1);
    let good = src.state(&store);
    let mut opt = Adam::new(0.3);
    step_n(&mut opt, &mut store, &keys, 7, 2);

    let mut wrong_kind = good.clone();
    wrong_kind.kind = "sgd".into();
    assert_rejected(
        &mut opt,
        &store,
        &wrong_kind,
        "written by a `sgd` optimizer, this one is `adam`",
    );
    assert_rejected(
        &mut Adam::adamw(0.1, 0.1),
        &store,
        &good,
        "this one is `adamw`",
    );

    let mut missing_scalar = good.clone();
    missing_scalar.scalars.retain(|(n, _)| n != "beta2");
    assert_rejected(
        &mut opt,
        &store,
        &missing_scalar,
        "scalar `beta2` is missing",
    );

    let mut nan_scalar = good.clone();
    nan_scalar.scalars.push(("eps".into(), f64::NAN));
    nan_scalar.scalars.retain(|(n, v)| n != "eps" || v.is_nan());
    assert_rejected(&mut opt, &store, &nan_scalar, "scalar `eps` is NaN");

    let mut bad_step = good.clone();
    for (n, v) in &mut bad_step.scalars {
        if n == "step" {
            *v = 1.5;
        }
    }
    assert_rejected(&mut opt, &store, &bad_step, "counter `step` is 1.5");

    let mut unknown_param = good.clone();
    unknown_param
        .tensors
        .push(("exp_avg.encoder.weight".into(), Tensor::zeros(&[3])));
    assert_rejected(
        &mut opt,
        &store,
        &unknown_param,
        "parameter `encoder.weight` that the store does not hold",
    );

    let mut unknown_buffer = good.clone();
    unknown_buffer
        .tensors
        .push(("momentum_buffer.decoder.bias".into(), Tensor::zeros(&[3])));
    assert_rejected(
        &mut opt,
        &store,
        &unknown_buffer,
        "buffer `momentum_buffer.decoder.bias` is not one of adam's buffers",
    );

    let mut wrong_shape = good.clone();
    wrong_shape.tensors[0].1 = Tensor::zeros(&[2, 3]);
    assert_rejected(
        &mut opt,
        &store,
        &wrong_shape,
        "has shape [2, 3], its parameter `lstm.weight_ih_l0` has shape [3, 2]",
    );

    let mut half = good.clone();
    half.tensors.retain(|(n, _)| n != "exp_avg_sq.decoder.bias");
    assert_rejected(
        &mut opt,
        &store,
        &half,
        "parameter `decoder.bias` has a `exp_avg` buffer but no `exp_avg_sq` buffer",
    );

    // and the good state still loads
    opt.load_state(&store, &good).unwrap();
    assert_eq!(opt.steps(), 1);
}
