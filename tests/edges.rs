//! Edges of sequences: T = 0, B = 0 and a zero-size hidden layer each get a
//! documented result or a named error, never an opaque failure.

use tapegrad::layers::{Gru, Lstm, RecurrentConfig, Rnn};
use tapegrad::{ParamStore, Reduction, Tape, Tensor};

fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("should panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn zero_steps_return_the_initial_state_and_no_outputs() {
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(3, 4).layers(2), 0);
    let tape = Tape::new();
    let init = lstm.zero_state(&tape, 2);
    let x = tape.constant(Tensor::zeros(&[0, 2, 3]));
    let out = lstm.forward(&tape, &store, x, Some(&init));
    assert!(out.outputs.is_empty());
    assert_eq!(out.state.h.len(), 2);
    for (a, b) in out.state.h.iter().zip(&init.h) {
        assert_eq!(
            a.id(),
            b.id(),
            "the final state is the initial state itself"
        );
    }
}

#[test]
fn empty_batches_give_empty_outputs_and_zero_gradients() {
    let mut store = ParamStore::<f64>::new();
    let rnn = Rnn::new(&mut store, "rnn", RecurrentConfig::new(3, 4), 0);
    let lstm = Lstm::new(
        &mut store,
        "lstm",
        RecurrentConfig::new(3, 4).bidirectional(true),
        1,
    );
    let gru = Gru::new(&mut store, "gru", RecurrentConfig::new(3, 4).layers(2), 2);
    let tape = Tape::new();
    let x = tape.constant(Tensor::zeros(&[5, 0, 3]));
    let outs = [
        rnn.forward(&tape, &store, x, None),
        lstm.forward(&tape, &store, x, None),
        gru.forward(&tape, &store, x, None),
    ];
    let mut loss = tape.scalar(0.0);
    for out in &outs {
        assert_eq!(out.outputs.len(), 5);
        assert_eq!(out.outputs[0].shape()[0], 0);
        loss = loss + out.stacked().sum();
        loss = loss + out.stacked_rows().cross_entropy(&[], Reduction::Sum);
    }
    assert_eq!(loss.item(), 0.0);
    let grads = loss.backward();
    assert_eq!(grads.params().count(), store.len());
    for (key, g) in grads.params() {
        assert!(
            g.data().iter().all(|&v| v == 0.0),
            "{} has a non-zero gradient",
            store.name(key)
        );
    }
}

#[test]
fn a_zero_size_hidden_layer_is_refused_by_name() {
    let mut store = ParamStore::<f32>::new();
    let msg = panic_message(|| {
        Lstm::new(&mut store, "lstm", RecurrentConfig::new(3, 0), 0);
    });
    assert!(
        msg.contains("lstm") && msg.contains("hidden_size = 0"),
        "{msg}"
    );
    let msg = panic_message(|| {
        Rnn::new(&mut store, "rnn", RecurrentConfig::new(3, 2).layers(0), 0);
    });
    assert!(msg.contains("num_layers = 0"), "{msg}");
}

#[test]
fn mean_over_no_rows_is_nan_like_pytorch() {
    let tape = Tape::<f64>::new();
    let logits = tape.var(Tensor::zeros(&[0, 3]));
    assert!(logits.cross_entropy(&[], Reduction::Mean).item().is_nan());
    assert_eq!(logits.cross_entropy(&[], Reduction::Sum).item(), 0.0);
}
