//! PyTorch parity: numbers copied from a PyTorch model's `state_dict` give
//! the same outputs and gradients in tapegrad.
//!
//! The fixtures in `tests/fixtures/torch_{rnn,lstm,gru}.json` were made once
//! by `scripts/torch_fixtures.py`, which runs nn.RNN / nn.LSTM / nn.GRU in
//! float64 (single, stacked, bidirectional, stacked bidirectional, B = 1 and
//! T = 1 cases) and records weights, inputs, initial states, outputs, final
//! states and the gradients of `Σ output⊙R + Σ h_n⊙S (+ Σ c_n⊙Sc)`. CI does
//! not need torch. Tolerance: 1e-9 absolute-or-relative at f64 (the worst
//! difference seen is printed).

use serde_json::Value;
use std::sync::Mutex;
use tapegrad::layers::{Gru, Lstm, RecurrentConfig, Rnn, SeqOutput, State};
use tapegrad::{Nonlinearity, ParamStore, Tape, Tensor, Var};

const TOL: f64 = 1e-9;
static WORST: Mutex<f64> = Mutex::new(0.0);

fn tensor(v: &Value) -> Tensor<f64> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f64> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_f64().unwrap())
        .collect();
    Tensor::from_vec(data, &shape).unwrap()
}

/// Entry `i` of a [L·D, B, H] tensor, as [B, H].
fn entry(t: &Tensor<f64>, i: usize) -> Tensor<f64> {
    let (b, h) = (t.shape()[1], t.shape()[2]);
    Tensor::from_slice(&t.data()[i * b * h..(i + 1) * b * h], &[b, h]).unwrap()
}

fn assert_close(what: &str, case: &str, got: &Tensor<f64>, want: &Tensor<f64>) {
    assert_eq!(got.shape(), want.shape(), "{case}: {what} shape");
    let mut worst = 0.0f64;
    for (i, (&a, &b)) in got.data().iter().zip(want.data()).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        assert!(
            err <= TOL,
            "{case}: {what}[{i}] = {a}, PyTorch {b} (err {err:e})"
        );
        worst = worst.max(err);
    }
    let mut w = WORST.lock().unwrap();
    *w = w.max(worst);
}

enum Layer {
    Rnn(Rnn),
    Lstm(Lstm),
    Gru(Gru),
}

impl Layer {
    fn forward<'t>(
        &self,
        tape: &'t Tape<f64>,
        store: &ParamStore<f64>,
        x: Var<'t, f64>,
        init: &State<'t, f64>,
    ) -> SeqOutput<'t, f64> {
        match self {
            Layer::Rnn(l) => l.forward(tape, store, x, Some(init)),
            Layer::Lstm(l) => l.forward(tape, store, x, Some(init)),
            Layer::Gru(l) => l.forward(tape, store, x, Some(init)),
        }
    }
}

fn run_file(file: &str) -> usize {
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture file");
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mode = case["mode"].as_str().unwrap();
        let n = |k: &str| case[k].as_u64().unwrap() as usize;
        let cfg = RecurrentConfig::new(n("input_size"), n("hidden_size"))
            .layers(n("num_layers"))
            .bidirectional(case["bidirectional"].as_bool().unwrap())
            .nonlinearity(if mode == "RNN_RELU" {
                Nonlinearity::Relu
            } else {
                Nonlinearity::Tanh
            });
        let mut store = ParamStore::<f64>::new();
        let layer = match mode {
            "RNN_TANH" | "RNN_RELU" => Layer::Rnn(Rnn::new(&mut store, "", cfg, 0)),
            "LSTM" => Layer::Lstm(Lstm::new(&mut store, "", cfg, 0)),
            "GRU" => Layer::Gru(Gru::new(&mut store, "", cfg, 0)),
            other => panic!("unknown mode {other}"),
        };
        // Copy the state_dict in by name; every PyTorch name must exist here
        // with the same shape, and nothing else may.
        let params = case["params"].as_object().unwrap();
        assert_eq!(params.len(), store.len(), "{name}: parameter count");
        for (pname, value) in params {
            let key = store
                .key(pname)
                .unwrap_or_else(|| panic!("{name}: no parameter named {pname}"));
            let t = tensor(value);
            assert_eq!(store.get(key).shape(), t.shape(), "{name}: {pname} shape");
            *store.get_mut(key) = t;
        }

        let tape = Tape::<f64>::new();
        let x = tape.var(tensor(&case["x"]));
        let h0 = tensor(&case["h0"]);
        let c0 = case.get("c0").filter(|v| !v.is_null()).map(tensor);
        let entries = h0.shape()[0];
        let init = State {
            h: (0..entries).map(|i| tape.var(entry(&h0, i))).collect(),
            c: c0
                .as_ref()
                .map(|c| (0..entries).map(|i| tape.var(entry(c, i))).collect()),
            extra: Vec::new(),
        };
        let out = layer.forward(&tape, &store, x, &init);
        let output = out.stacked();
        assert_close(
            "output",
            name,
            &output.to_tensor(),
            &tensor(&case["output"]),
        );

        let lw = &case["loss_weights"];
        let h_n = tensor(&case["h_n"]);
        let s = tensor(&lw["h_n"]);
        let mut loss = (output * tape.constant(tensor(&lw["output"]))).sum();
        for i in 0..entries {
            assert_close("h_n", name, &out.state.h[i].to_tensor(), &entry(&h_n, i));
            loss = loss + (out.state.h[i] * tape.constant(entry(&s, i))).sum();
        }
        if let Some(cs) = &out.state.c {
            let c_n = tensor(&case["c_n"]);
            let sc = tensor(&lw["c_n"]);
            for (i, c) in cs.iter().enumerate() {
                assert_close("c_n", name, &c.to_tensor(), &entry(&c_n, i));
                loss = loss + (*c * tape.constant(entry(&sc, i))).sum();
            }
        }
        let want_loss = case["loss"].as_f64().unwrap();
        assert!(
            (loss.item() - want_loss).abs() <= TOL * want_loss.abs().max(1.0),
            "{name}: loss {} vs PyTorch {want_loss}",
            loss.item()
        );

        let grads = loss.backward();
        let g = case["grads"].as_object().unwrap();
        for (pname, want) in g {
            let want = tensor(want);
            match pname.as_str() {
                "x" => assert_close("dx", name, grads.wrt(x), &want),
                "h0" => {
                    for (i, h) in init.h.iter().enumerate() {
                        assert_close("dh0", name, grads.wrt(*h), &entry(&want, i));
                    }
                }
                "c0" => {
                    for (i, c) in init.c.as_ref().unwrap().iter().enumerate() {
                        assert_close("dc0", name, grads.wrt(*c), &entry(&want, i));
                    }
                }
                p => {
                    let key = store.key(p).unwrap();
                    assert_close(p, name, grads.param(key).unwrap(), &want);
                }
            }
        }
    }
    eprintln!(
        "{file}: {} cases match PyTorch; worst relative difference so far {:e}",
        cases.len(),
        *WORST.lock().unwrap()
    );
    cases.len()
}

#[test]
fn rnn_matches_pytorch() {
    assert!(run_file("torch_rnn.json") >= 6);
}

#[test]
fn lstm_matches_pytorch() {
    assert!(run_file("torch_lstm.json") >= 5);
}

#[test]
fn gru_matches_pytorch() {
    assert!(run_file("torch_gru.json") >= 5);
}
