//! PyTorch parity: numbers copied from a PyTorch model's `state_dict` give
//! the same outputs and gradients in tapegrad.
//!
//! The fixtures in `tests/fixtures/torch_{rnn,lstm,gru}.json` were made once
//! by `scripts/torch_fixtures.py`, which runs nn.RNN / nn.LSTM / nn.GRU in
//! float64 (single, stacked, bidirectional, stacked bidirectional, B = 1 and
//! T = 1 cases) and records weights, inputs, initial states, outputs, final
//! states and the gradients of `Σ output⊙R + Σ h_n⊙S (+ Σ c_n⊙Sc)`. The LSTM
//! variants have their own files, made by the same script:
//! `torch_proj_lstm.json` (nn.LSTM(proj_size = P) itself),
//! `torch_ln_lstm.json` and `torch_peephole_lstm.json` (independent float64
//! torch implementations of the equations, differentiated by autograd; the
//! equations are written out in the script). CI does not need torch.
//! Tolerance: 1e-9 absolute-or-relative at f64 on outputs, h_n, c_n, the
//! loss and every gradient (params, x, h0, c0); the worst absolute and
//! relative differences of each file are printed (`--nocapture`).

use serde_json::Value;
use std::cell::Cell;
use tapegrad::layers::{
    Gru, LayerNormLstm, Lstm, PeepholeLstm, ProjLstm, ProjLstmCell, RecurrentConfig, Rnn,
    SeqOutput, State,
};
use tapegrad::{Nonlinearity, ParamStore, Tape, Tensor, Var};

const TOL: f64 = 1e-9;

thread_local! {
    /// The worst (absolute, relative) difference of the file being run.
    static WORST: Cell<(f64, f64)> = const { Cell::new((0.0, 0.0)) };
}

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
    let (mut abs, mut rel) = WORST.get();
    for (i, (&a, &b)) in got.data().iter().zip(want.data()).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        assert!(
            err <= TOL,
            "{case}: {what}[{i}] = {a}, PyTorch {b} (err {err:e})"
        );
        abs = abs.max((a - b).abs());
        rel = rel.max(err);
    }
    WORST.set((abs, rel));
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
            Layer::Proj(l) => l.forward(tape, store, x, Some(init)),
            Layer::LnLstm(l) => l.forward(tape, store, x, Some(init)),
            Layer::Peephole(l) => l.forward(tape, store, x, Some(init)),
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
            "LSTM_PROJ" => {
                let cell = ProjLstmCell::new(n("proj_size"));
                Layer::Proj(ProjLstm::with_cell(cell, &mut store, "", cfg, 0))
            }
            "LN_LSTM" => Layer::LnLstm(LayerNormLstm::new(&mut store, "", cfg, 0)),
            "PEEPHOLE_LSTM" => Layer::Peephole(PeepholeLstm::new(&mut store, "", cfg, 0)),
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
    let (abs, rel) = WORST.replace((0.0, 0.0));
    eprintln!(
        "{file}: {} cases match PyTorch; worst difference {abs:.1e} absolute, {rel:.1e} relative",
        cases.len()
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

#[test]
fn projected_lstm_matches_pytorch() {
    assert!(run_file("torch_proj_lstm.json") >= 4);
}

#[test]
fn layer_norm_lstm_matches_its_torch_reference() {
    assert!(run_file("torch_ln_lstm.json") >= 3);
}

#[test]
fn peephole_lstm_matches_its_torch_reference() {
    assert!(run_file("torch_peephole_lstm.json") >= 3);
}

/// The parameters of a stacked bidirectional `nn.LSTM(3, 5, num_layers=2,
/// bidirectional=True, proj_size=2)` in its `state_dict` order and shapes,
/// as PyTorch 2.15 lists them (`[(n, p.shape) for n, p in
/// m.named_parameters()]`): the store holds the same names in the same
/// order.
#[test]
fn projected_lstm_parameters_follow_the_state_dict_order() {
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(3, 5).layers(2).bidirectional(true);
    let _ = ProjLstm::with_cell(ProjLstmCell::new(2), &mut store, "", cfg, 0);
    let mut want = Vec::new();
    for l in 0..2 {
        for sfx in ["", "_reverse"] {
            let i = if l == 0 { 3 } else { 4 };
            want.push((format!("weight_ih_l{l}{sfx}"), vec![20, i]));
            want.push((format!("weight_hh_l{l}{sfx}"), vec![20, 2]));
            want.push((format!("bias_ih_l{l}{sfx}"), vec![20]));
            want.push((format!("bias_hh_l{l}{sfx}"), vec![20]));
            want.push((format!("weight_hr_l{l}{sfx}"), vec![2, 5]));
        }
    }
    let got: Vec<(String, Vec<usize>)> = store
        .iter()
        .map(|(k, _)| (store.name(k).to_string(), store.get(k).shape().to_vec()))
        .collect();
    assert_eq!(got, want);
    // PyTorch initialises weight_hr like every LSTM weight: U(−1/√H, 1/√H).
    let bound = 1.0 / 5f64.sqrt();
    let w_hr = store.get(store.key("weight_hr_l1").unwrap());
    assert!(w_hr.data().iter().all(|v| v.abs() <= bound));
    assert!(w_hr.data().iter().any(|v| v.abs() > bound / 2.0));
}
