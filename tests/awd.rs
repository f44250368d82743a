//! The regularisers of AWD-LSTM (Merity et al. 2017): variational
//! ("locked") dropout on the input, between layers and on the outputs,
//! DropConnect on W_hh (weight drop), embedding dropout.
//!
//! - the locked mask is the same at every step, and a weight-dropped W_hh
//!   is the same at every step (a run equals the one with W_hh ⊙ M stored);
//! - the expectation is kept: masks average 1 (|mean − 1| within 5 standard
//!   deviations of the mean of n draws, σ = √(p/((1 − p)·n)));
//! - with a fixed mask (a fixed `dropout_seed`) the gradients of every
//!   parameter, of x and of h(0) match central differences, f64, relative
//!   error ≤ 1e-6 (floor 1e-3, ε = 1e-5: at ε = 1e-6 the judge's own
//!   rounding noise, u·|L|/ε, reached 2.4e-6 at B = 8 on the plain GRU
//!   with every regulariser off), for an LSTM and a GRU, stacked
//!   and bidirectional, at B = 2 (W_hh as stored) and B = 8 (W_hh reordered
//!   and its gradient deferred);
//! - evaluation (`dropout_seed: None`) is the identity: the outputs equal
//!   those of the same layer without the regularisers, bit for bit.

use tapegrad::gradcheck::{
    gradcheck, gradcheck_store, gradcheck_with, try_gradcheck_params, GradcheckOptions,
};
use tapegrad::layers::{Embedding, Gru, Lstm, RecurrentConfig, RunOptions, State};
use tapegrad::{dropout_mask, ParamStore, Tape, Tensor, Var};

const TOL: f64 = 1e-6;

fn train(seed: u64) -> RunOptions<'static> {
    RunOptions {
        lengths: None,
        dropout_seed: Some(seed),
    }
}

/// |mean − 1| of a mask within 5 σ of its mean.
fn assert_mean_one(data: &[f64], p: f64) {
    let n = data.len() as f64;
    let mean = data.iter().sum::<f64>() / n;
    let sigma = (p / ((1.0 - p) * n)).sqrt();
    assert!((mean - 1.0).abs() <= 5.0 * sigma, "mean {mean}, σ {sigma}");
}

#[test]
fn masks_keep_the_expectation() {
    for p in [0.1, 0.3, 0.5, 0.8] {
        let m = dropout_mask::<f64>(&[200, 500], p, 11);
        assert!(m
            .data()
            .iter()
            .all(|&v| v == 0.0 || (v - 1.0 / (1.0 - p)).abs() < 1e-15));
        assert_mean_one(m.data(), p);
        let tape = Tape::<f64>::new();
        let x = tape.constant(Tensor::ones(&[3, 200, 500]));
        let y = x.locked_dropout(p, 12);
        assert_mean_one(&y.value().data()[..100_000], p);
    }
}

#[test]
fn the_locked_mask_is_the_same_at_every_step_of_a_layer() {
    // Output locked dropout on a layer: every step's zeros sit in the same
    // (sequence, feature) places, and the kept entries are h(t)/(1 − p).
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(3, 16)
        .layers(2)
        .locked_dropout(0.0, 0.0, 0.5);
    let plain_cfg = RecurrentConfig::new(3, 16).layers(2);
    let lstm = Lstm::new(&mut store, "a", cfg, 1);
    let mut plain_store = ParamStore::<f64>::new();
    let plain = Lstm::new(&mut plain_store, "a", plain_cfg, 1);
    let tape = Tape::new();
    let x = tape.constant(Tensor::randn(&[6, 4, 3], 2));
    let out = lstm.forward_with(&tape, &store, x, None, train(5));
    let reference = plain.forward(&tape, &plain_store, x, None);
    let mut masks = Vec::new();
    for t in 0..6 {
        let (y, h) = (out.outputs[t].value(), reference.outputs[t].value());
        let m: Vec<f64> = y.data().iter().zip(h.data()).map(|(a, b)| a / b).collect();
        assert!(m
            .iter()
            .all(|&v| v.abs() < 1e-12 || (v - 2.0).abs() < 1e-12));
        masks.push(m.iter().map(|&v| v > 1.0).collect::<Vec<bool>>());
    }
    assert!(masks.iter().all(|m| m == &masks[0]));
    assert!(masks[0].iter().any(|&k| k) && masks[0].iter().any(|&k| !k));
    // the state is not dropped
    let (a, b) = (out.state.last_h(), reference.state.last_h());
    assert_eq!(a.value().data(), b.value().data());
}

#[test]
fn weight_drop_uses_one_mask_for_every_step() {
    // One mask M on W_hh for the whole sequence: the run equals a plain
    // run whose stored W_hh is W_hh ⊙ M. M is read off the gradient of W_hh,
    // M ⊙ (the gradient at W_hh ⊙ M): exactly zero where m = 0.
    let p = 0.5;
    let cfg = RecurrentConfig::new(2, 3).weight_drop(p);
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "a", cfg, 1);
    let tape = Tape::new();
    let x = tape.constant(Tensor::randn(&[12, 2, 2], 3));
    let dropped = lstm.forward_with(&tape, &store, x, None, train(9));
    let g = dropped.stacked().sum().backward();
    let key = store.key("a.weight_hh_l0").unwrap();
    let gw = g.param(key).unwrap().data().to_vec();
    let zero: Vec<bool> = gw.iter().map(|&v| v == 0.0).collect();
    assert!(
        zero.iter().any(|&z| z) && zero.iter().any(|&z| !z),
        "{gw:?}"
    );
    let mut masked = ParamStore::<f64>::new();
    let plain = Lstm::new(&mut masked, "a", RecurrentConfig::new(2, 3), 1);
    let w = masked.get_mut(masked.key("a.weight_hh_l0").unwrap());
    for (v, &z) in w.data_mut().iter_mut().zip(&zero) {
        *v = if z { 0.0 } else { *v / (1.0 - p) };
    }
    let tape2 = Tape::new();
    let x2 = tape2.constant(Tensor::randn(&[12, 2, 2], 3));
    let reference = plain.forward(&tape2, &masked, x2, None);
    for t in 0..12 {
        let (a, b) = (dropped.outputs[t].value(), reference.outputs[t].value());
        for (u, v) in a.data().iter().zip(b.data()) {
            assert!((u - v).abs() <= 1e-12, "step {t}: {u} vs {v}");
        }
    }
}

#[test]
fn evaluation_is_the_identity() {
    let regular = RecurrentConfig::new(3, 5)
        .layers(2)
        .bidirectional(true)
        .locked_dropout(0.3, 0.4, 0.5)
        .weight_drop(0.5);
    let plain = RecurrentConfig::new(3, 5).layers(2).bidirectional(true);
    let (mut s1, mut s2) = (ParamStore::<f64>::new(), ParamStore::<f64>::new());
    let (a, b) = (
        Gru::new(&mut s1, "g", regular, 4),
        Gru::new(&mut s2, "g", plain, 4),
    );
    let tape = Tape::new();
    let x = tape.constant(Tensor::randn(&[5, 3, 3], 1));
    let (ya, yb) = (
        a.forward(&tape, &s1, x, None).stacked(),
        b.forward(&tape, &s2, x, None).stacked(),
    );
    assert_eq!(ya.value().data(), yb.value().data());
    // embedding dropout with p = 0 is the lookup itself
    let mut store = ParamStore::<f64>::new();
    let emb = Embedding::new(&mut store, "e", 5, 3, 1);
    let (e0, e1) = (
        emb.forward(&tape, &store, &[1, 4]),
        emb.forward_dropout(&tape, &store, &[1, 4], 0.0, 3),
    );
    assert_eq!(e0.value().data(), e1.value().data());
}

#[test]
#[should_panic(expected = "weight_drop = 1")]
fn a_probability_of_one_is_refused_at_construction() {
    let mut store = ParamStore::<f64>::new();
    let _ = Lstm::new(
        &mut store,
        "a",
        RecurrentConfig::new(2, 3).weight_drop(1.0),
        0,
    );
}

enum Layer {
    Lstm(Lstm),
    Gru(Gru),
}

/// Σ outputs ⊙ r + Σ last h, every regulariser on with a fixed mask (seed 77).
#[allow(clippy::too_many_arguments)]
fn run<'t>(
    layer: &Layer,
    batch: usize,
    r: &Tensor<f64>,
    tape: &'t Tape<f64>,
    store: &ParamStore<f64>,
    x: Var<'t, f64>,
    h0: Option<Var<'t, f64>>,
) -> Var<'t, f64> {
    let gru = matches!(layer, Layer::Gru(_));
    let init = h0.map(|h| {
        let hs: Vec<_> = (0..4)
            .map(|k| h.slice(0, k, 1).reshape(&[batch, 4]))
            .collect();
        let cs = (!gru).then(|| hs.iter().map(|h| h.mul_scalar(0.5)).collect());
        State::new(hs, cs)
    });
    let out = match layer {
        Layer::Lstm(l) => l.forward_with(tape, store, x, init.as_ref(), train(77)),
        Layer::Gru(l) => l.forward_with(tape, store, x, init.as_ref(), train(77)),
    };
    (out.stacked() * tape.constant(r.clone())).sum() + out.state.last_h().sum()
}

/// Every regulariser on, a fixed mask: parameters, x and h(0) against
/// central differences.
fn gradcheck_layer(gru: bool, batch: usize) {
    let cfg = RecurrentConfig::new(3, 4)
        .layers(2)
        .bidirectional(true)
        .locked_dropout(0.3, 0.3, 0.3)
        .weight_drop(0.4);
    let mut store = ParamStore::<f64>::new();
    let layer = if gru {
        Layer::Gru(Gru::new(&mut store, "r", cfg, 2))
    } else {
        Layer::Lstm(Lstm::new(&mut store, "r", cfg, 2))
    };
    let x = Tensor::randn(&[4, batch, 3], 3);
    let r = Tensor::randn(&[4, batch, 8], 4);
    let opts = GradcheckOptions {
        eps: 1e-5,
        floor: 1e-3,
    };
    let keys: Vec<_> = store.keys().collect();
    let report = try_gradcheck_params(&mut store, &keys, opts, |tape, store| {
        run(
            &layer,
            batch,
            &r,
            tape,
            store,
            tape.constant(x.clone()),
            None,
        )
    })
    .unwrap();
    assert!(
        report.max_rel_error() <= TOL,
        "gru {gru}, B = {batch}: parameters {}",
        report.max_rel_error()
    );
    println!(
        "gru {gru}, B = {batch}: parameters {:e}",
        report.max_rel_error()
    );
    let h0 = Tensor::randn(&[4, batch, 4], 5);
    let report = gradcheck_with(&[x.clone(), h0], opts, |tape, v| {
        run(&layer, batch, &r, tape, &store, v[0], Some(v[1]))
    });
    assert!(
        report.max_rel_error() <= TOL,
        "gru {gru}, B = {batch}: x, h0 {}",
        report.max_rel_error()
    );
    println!("gru {gru}, B = {batch}: x, h0 {:e}", report.max_rel_error());
}

#[test]
fn lstm_gradients_with_fixed_masks_match_central_differences() {
    gradcheck_layer(false, 2);
    gradcheck_layer(false, 8);
}

#[test]
fn gru_gradients_with_fixed_masks_match_central_differences() {
    gradcheck_layer(true, 2);
    gradcheck_layer(true, 8);
}

#[test]
fn embedding_dropout_gradients_match_central_differences() {
    let idx = [0, 3, 3, 1, 4, 0, 2];
    let e = Tensor::randn(&[5, 3], 1);
    let r = Tensor::randn(&[7, 3], 2);
    let report = gradcheck(&[e], |tape, v| {
        // the embedding's own rule, through a store-free table: gather + row mask
        let m = dropout_mask::<f64>(&[5], 0.4, 9);
        let per = Tensor::from_fn(&[7, 1], |i| m.data()[idx[i]]);
        (v[0].gather(&idx) * tape.constant(per) * tape.constant(r.clone())).sum()
    });
    assert!(report.max_rel_error() <= TOL);
    let mut store = ParamStore::<f64>::new();
    let emb = Embedding::new(&mut store, "e", 5, 3, 1);
    let report = gradcheck_store(&mut store, |tape, store| {
        (emb.forward_dropout(tape, store, &idx, 0.4, 9) * tape.constant(r.clone())).sum()
    });
    assert!(report.max_rel_error() <= TOL, "{}", report.max_rel_error());
    // rows dropped whole: a dropped row's gradient is exactly zero
    let tape = Tape::new();
    let y = emb.forward_dropout(&tape, &store, &idx, 0.4, 9);
    let g = (y * tape.constant(r.clone())).sum().backward();
    let ge = g.param(emb.weight).unwrap();
    let m = dropout_mask::<f64>(&[5], 0.4, 9);
    for row in 0..5 {
        let zero = ge.data()[row * 3..row * 3 + 3].iter().all(|&v| v == 0.0);
        assert_eq!(
            zero,
            m.data()[row] == 0.0 || !idx.contains(&row),
            "row {row}"
        );
    }
}
