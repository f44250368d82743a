//! Checkpoints: bit-exact round trips (f32 and f64, −0.0, subnormals, ±∞,
//! NaN), identical outputs and identical continued training after a
//! save/load, PyTorch names and dtypes in the header, and every kind of bad
//! file — truncated at every length, corrupt header, header length past the
//! end, wrong dtype, missing / unexpected / mis-shaped tensors, mismatching
//! optimizer state — each rejected with `ErrorKind::Format` (or `Io`), a
//! message naming the tensor and what was expected and found, and the store
//! and optimizer left exactly as they were.

use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use tapegrad::checkpoint::{self, OPTIM_PREFIX};
use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Sampling, Vocab};
use tapegrad::optim::{Adam, Optimizer, Sgd};
use tapegrad::{ErrorKind, ParamStore, Real, Tape, Tensor};

/// A unique path in the temp directory (removed by the caller).
fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "tapegrad-test-{}-{name}.safetensors",
        std::process::id()
    ))
}

/// (name, shape, bit patterns) of every parameter, in store order.
fn snapshot<F: Real>(
    store: &ParamStore<F>,
    bits: fn(F) -> u64,
) -> Vec<(String, Vec<usize>, Vec<u64>)> {
    store
        .iter()
        .map(|(_, p)| {
            (
                p.name.clone(),
                p.value.shape().to_vec(),
                p.value.data().iter().map(|&x| bits(x)).collect(),
            )
        })
        .collect()
}

fn bits32(x: f32) -> u64 {
    x.to_bits() as u64
}

fn bits64(x: f64) -> u64 {
    x.to_bits()
}

/// Saves `values` (plus a second tensor) and loads them into a zeroed store:
/// every bit pattern comes back.
fn special_values_round_trip<F: Real>(values: Vec<F>, bits: fn(F) -> u64, dtype: &str) {
    let mut store = ParamStore::<F>::new();
    let n = values.len();
    store.insert("lstm.weight_ih_l0", Tensor::from_vec(values, &[n]).unwrap());
    store.insert(
        "decoder.bias",
        Tensor::from_fn(&[2, 3], |i| F::of(i as f64 / 3.0)),
    );
    let bytes = checkpoint::to_bytes(&store, None, 3, &BTreeMap::new()).unwrap();

    let mut back = ParamStore::<F>::new();
    back.insert("lstm.weight_ih_l0", Tensor::zeros(&[n]));
    back.insert("decoder.bias", Tensor::zeros(&[2, 3]));
    let info = checkpoint::from_bytes(&bytes, &mut back, None).unwrap();
    assert_eq!((info.step, info.num_params, info.optimizer), (3, 2, None));
    assert_eq!(snapshot(&back, bits), snapshot(&store, bits));
    let header = header_json(&bytes);
    assert_eq!(header["lstm.weight_ih_l0"]["dtype"], dtype);
    assert_eq!(header["__metadata__"]["tapegrad.dtype"], F::NAME);
}

#[test]
fn special_values_round_trip_bit_exact_f32() {
    special_values_round_trip(
        vec![
            -0.0f32,
            0.0,
            f32::from_bits(1),            // smallest subnormal
            f32::MIN_POSITIVE / 2.0,      // a subnormal
            -f32::from_bits(0x007f_ffff), // largest subnormal, negative
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7fc0_1234), // NaN with a payload
            1.0 / 3.0,
        ],
        bits32,
        "F32",
    );
}

#[test]
fn special_values_round_trip_bit_exact_f64() {
    special_values_round_trip(
        vec![
            -0.0f64,
            0.0,
            f64::from_bits(1),
            f64::MIN_POSITIVE / 2.0,
            -f64::from_bits(0x000f_ffff_ffff_ffff),
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::from_bits(0x7ff8_0000_dead_beef),
            1.0 / 3.0,
        ],
        bits64,
        "F64",
    );
}

/// The JSON header of checkpoint bytes.
fn header_json(bytes: &[u8]) -> serde_json::Value {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

const TEXT: &str = "In the beginning God created the heaven and the earth. \
                    And the earth was without form, and void.";

/// Trains a tiny CharModel, checkpoints it to a file, loads it back, and
/// checks identical logits, identical samples and identical continued
/// training (losses and every parameter bit) for three more steps.
fn char_model_round_trip<F: Real>(bits: fn(F) -> u64, tag: &str) {
    let vocab = Vocab::from_text(TEXT);
    let cfg = CharModelConfig::default()
        .embed_size(5)
        .hidden_size(8)
        .layers(2)
        .dropout(0.1);
    let mut model = CharModel::<F>::new(vocab.clone(), cfg, 3);
    let streams = CharStreams::new(&vocab.encode(TEXT).unwrap(), 3).unwrap();
    let mut opt = Adam::new(0.01);
    let mut tape = Tape::new();
    let mut state = model.zero_state(3);
    for step in 0..4 {
        let b = streams.batch(step, 6);
        model
            .train_step(&mut tape, &mut opt, &b, &mut state, Some(1.0), step as u64)
            .unwrap();
    }
    let path = temp_path(tag);
    let extra = BTreeMap::from([("run".to_string(), "test".to_string())]);
    model.save(&path, Some(&opt), 4, &extra).unwrap();
    let mut opt2 = Adam::new(0.5);
    let (mut loaded, info) = CharModel::<F>::load(&path, Some(&mut opt2)).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(info.step, 4);
    assert_eq!(info.optimizer.as_deref(), Some("adam"));
    assert_eq!(info.metadata["run"], "test");
    assert_eq!(info.metadata["char_model.vocab"], vocab.as_string());
    assert_eq!(
        (loaded.config(), loaded.vocab()),
        (model.config(), model.vocab())
    );
    assert_eq!(
        snapshot(loaded.store(), bits),
        snapshot(model.store(), bits)
    );
    assert_eq!(opt2.state(loaded.store()), opt.state(model.store()));

    // identical outputs
    let b = streams.batch(4, 6);
    let (t1, t2) = (Tape::new(), Tape::new());
    let z1 = model.forward(&t1, &b.inputs, 3, &state, None).0.to_tensor();
    let z2 = loaded
        .forward(&t2, &b.inputs, 3, &state, None)
        .0
        .to_tensor();
    assert!(z1
        .data()
        .iter()
        .zip(z2.data())
        .all(|(&a, &b)| bits(a) == bits(b)));
    let s = Sampling {
        temperature: 1.0,
        top_k: 5,
        seed: 9,
    };
    assert_eq!(
        model.sample("the ", 30, &s).unwrap(),
        loaded.sample("the ", 30, &s).unwrap()
    );

    // identical continued training (dropout on, same seeds)
    let mut state2 = state.clone();
    let mut tape2 = Tape::new();
    for step in 4..7 {
        let b = streams.batch(step, 6);
        let a = model
            .train_step(&mut tape, &mut opt, &b, &mut state, Some(1.0), step as u64)
            .unwrap();
        let c = loaded
            .train_step(
                &mut tape2,
                &mut opt2,
                &b,
                &mut state2,
                Some(1.0),
                step as u64,
            )
            .unwrap();
        assert_eq!(a.loss.to_bits(), c.loss.to_bits(), "step {step}");
    }
    assert_eq!(
        snapshot(loaded.store(), bits),
        snapshot(model.store(), bits)
    );
    assert_eq!(opt2.state(loaded.store()), opt.state(model.store()));
}

#[test]
fn char_model_round_trip_identical_outputs_and_training_f32() {
    char_model_round_trip::<f32>(bits32, "rt32");
}

#[test]
fn char_model_round_trip_identical_outputs_and_training_f64() {
    char_model_round_trip::<f64>(bits64, "rt64");
}

#[test]
fn header_has_pytorch_names_dtypes_and_metadata() {
    let vocab = Vocab::from_text("abc");
    let cfg = CharModelConfig::default()
        .embed_size(3)
        .hidden_size(4)
        .layers(2);
    let model = CharModel::<f32>::new(vocab, cfg, 0);
    let mut opt = Adam::new(0.01);
    let g = {
        let tape = Tape::new();
        let (z, _) = model.forward(&tape, &[0, 1], 1, &model.zero_state(1), None);
        z.sum().backward()
    };
    let mut store = model.store().clone();
    opt.step(&mut store, &g);
    let bytes = checkpoint::to_bytes(&store, Some(&opt), 1, &model.metadata()).unwrap();
    let h = header_json(&bytes);
    // PyTorch's nn.Embedding / nn.LSTM / nn.Linear names and [out × in] shapes
    for (name, shape) in [
        ("encoder.weight", vec![3, 3]),
        ("lstm.weight_ih_l0", vec![16, 3]),
        ("lstm.weight_hh_l0", vec![16, 4]),
        ("lstm.bias_ih_l0", vec![16]),
        ("lstm.bias_hh_l0", vec![16]),
        ("lstm.weight_ih_l1", vec![16, 4]),
        ("lstm.weight_hh_l1", vec![16, 4]),
        ("lstm.bias_ih_l1", vec![16]),
        ("lstm.bias_hh_l1", vec![16]),
        ("decoder.weight", vec![3, 4]),
        ("decoder.bias", vec![3]),
        ("optim.exp_avg.lstm.weight_ih_l0", vec![16, 3]),
        ("optim.exp_avg_sq.decoder.bias", vec![3]),
    ] {
        assert_eq!(h[name]["dtype"], "F32", "{name}");
        assert_eq!(h[name]["shape"], serde_json::json!(shape), "{name}");
    }
    let m = &h["__metadata__"];
    assert_eq!(m["format"], "pt");
    assert_eq!(m["tapegrad.step"], "1");
    assert_eq!(m["tapegrad.optimizer"], "adam");
    assert_eq!(m["tapegrad.optim.lr"], "0.01");
    assert_eq!(m["tapegrad.optim.step"], "1.0");
    assert_eq!(m["char_model.vocab"], "abc");
    assert_eq!(m["char_model.num_layers"], "2");
}

// ----- bad files -----------------------------------------------------------

/// A small store (two parameters) and an Adam that has taken one step.
fn small() -> (ParamStore<f32>, Adam<f32>) {
    let mut store = ParamStore::new();
    let w = store.insert("decoder.weight", Tensor::randn(&[3, 2], 1));
    let b = store.insert("decoder.bias", Tensor::randn(&[3], 2));
    let mut opt = Adam::new(0.01);
    let tape = Tape::new();
    let g = (tape.param(&store, w).sum() + tape.param(&store, b).powf(2.0).sum()).backward();
    opt.step(&mut store, &g);
    (store, opt)
}

/// A differently valued store of the same layout, and its optimizer: what
/// a failed load must leave untouched.
fn target() -> (ParamStore<f32>, Adam<f32>) {
    let mut store = ParamStore::new();
    let w = store.insert("decoder.weight", Tensor::full(&[3, 2], 7.0));
    let b = store.insert("decoder.bias", Tensor::full(&[3], -7.0));
    let mut opt = Adam::new(0.5);
    for _ in 0..2 {
        let tape = Tape::new();
        let g = (tape.param(&store, w).sum() + tape.param(&store, b).sum()).backward();
        opt.step(&mut store, &g);
    }
    (store, opt)
}

/// Loads `bytes` into the target store and optimizer, expects an error of
/// `kind` whose message holds every needle, and checks that nothing changed.
#[track_caller]
fn assert_load_fails(bytes: &[u8], with_optimizer: bool, kind: ErrorKind, needles: &[&str]) {
    let (mut store, mut opt) = target();
    let before = (snapshot(&store, bits32), opt.state(&store));
    let e = if with_optimizer {
        checkpoint::from_bytes(bytes, &mut store, Some(&mut opt as &mut dyn Optimizer<f32>))
    } else {
        checkpoint::from_bytes(bytes, &mut store, None)
    }
    .unwrap_err();
    assert_eq!(e.kind(), kind, "{e}");
    for n in needles {
        assert!(e.to_string().contains(n), "`{e}` lacks `{n}`");
    }
    assert_eq!(
        (snapshot(&store, bits32), opt.state(&store)),
        before,
        "a failed load changed the store or the optimizer"
    );
}

/// Serialises raw named tensors (f32 data unless bytes are given) with
/// metadata, bypassing tapegrad's writer.
fn raw_file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::tensor::serialize(views, Some(meta)).unwrap()
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect()
}

#[test]
fn every_truncation_is_rejected_without_panic_or_change() {
    let (store, opt) = small();
    let bytes = checkpoint::to_bytes(&store, Some(&opt), 1, &BTreeMap::new()).unwrap();
    assert!(bytes.len() > 300);
    // the full file loads
    let (mut s, mut o) = target();
    checkpoint::from_bytes(&bytes, &mut s, Some(&mut o)).unwrap();
    assert_eq!(snapshot(&s, bits32), snapshot(&store, bits32));
    for len in 0..bytes.len() {
        assert_load_fails(
            &bytes[..len],
            true,
            ErrorKind::Format,
            &["not a valid safetensors file"],
        );
    }
    // so does a file with bytes appended
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 4]);
    assert_load_fails(&long, false, ErrorKind::Format, &["file not fully covered"]);
}

#[test]
fn every_single_byte_corruption_errs_cleanly_or_loads() {
    // Flip each byte in turn: the load must never panic; when it fails, it
    // changes nothing. (A flip inside the data region just changes a value.)
    let (store, opt) = small();
    let bytes = checkpoint::to_bytes(&store, Some(&opt), 1, &BTreeMap::new()).unwrap();
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0xA5;
        let (mut s, mut o) = target();
        let before = (snapshot(&s, bits32), o.state(&s));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            checkpoint::from_bytes(&bad, &mut s, Some(&mut o as &mut dyn Optimizer<f32>))
        }));
        match r {
            Err(_) => panic!("byte {i}: the load panicked"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                assert_eq!(e.kind(), ErrorKind::Format, "byte {i}: {e}");
                assert_eq!((snapshot(&s, bits32), o.state(&s)), before, "byte {i}");
            }
        }
    }
}

#[test]
fn corrupt_header_is_rejected() {
    let (store, _) = small();
    let mut bytes = checkpoint::to_bytes(&store, None, 0, &BTreeMap::new()).unwrap();
    assert_eq!(bytes[8], b'{');
    bytes[8] = b'x';
    assert_load_fails(
        &bytes,
        false,
        ErrorKind::Format,
        &["not a valid safetensors file", "invalid JSON in header"],
    );
    // a header that is not UTF-8
    bytes[8] = 0xff;
    assert_load_fails(
        &bytes,
        false,
        ErrorKind::Format,
        &["invalid UTF-8 in header"],
    );
    // an empty or tiny file
    assert_load_fails(b"", false, ErrorKind::Format, &["header too small"]);
    assert_load_fails(b"garbage", false, ErrorKind::Format, &["header too small"]);
}

#[test]
fn header_length_past_the_end_is_rejected() {
    let (store, _) = small();
    let mut bytes = checkpoint::to_bytes(&store, None, 0, &BTreeMap::new()).unwrap();
    let len = bytes.len() as u64;
    bytes[..8].copy_from_slice(&(len + 100).to_le_bytes());
    assert_load_fails(&bytes, false, ErrorKind::Format, &["invalid header length"]);
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_load_fails(&bytes, false, ErrorKind::Format, &["header too large"]);
}

#[test]
fn wrong_dtype_is_rejected() {
    // an f32 checkpoint into an f64 store
    let (store, _) = small();
    let bytes = checkpoint::to_bytes(&store, None, 0, &BTreeMap::new()).unwrap();
    let mut s64 = ParamStore::<f64>::new();
    s64.insert("decoder.weight", Tensor::zeros(&[3, 2]));
    s64.insert("decoder.bias", Tensor::zeros(&[3]));
    let e = checkpoint::from_bytes(&bytes, &mut s64, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(
        e.to_string()
            .contains("tensor `decoder.bias`: dtype F32 in the file, the store holds f64 (F64)"),
        "{e}"
    );
    assert!(s64
        .iter()
        .all(|(_, p)| p.value.data().iter().all(|&x| x == 0.0)));
    // a non-float tensor
    let bytes = raw_file(
        &[
            ("decoder.weight", Dtype::F32, vec![3, 2], f32_bytes(6)),
            ("decoder.bias", Dtype::I32, vec![3], vec![0; 12]),
        ],
        &[],
    );
    assert_load_fails(
        &bytes,
        false,
        ErrorKind::Format,
        &["tensor `decoder.bias`: dtype I32 in the file"],
    );
}

#[test]
fn missing_tensor_is_rejected() {
    let bytes = raw_file(
        &[("decoder.weight", Dtype::F32, vec![3, 2], f32_bytes(6))],
        &[],
    );
    assert_load_fails(
        &bytes,
        false,
        ErrorKind::Format,
        &["missing tensor in the file: `decoder.bias` [3]"],
    );
}

#[test]
fn unexpected_tensor_is_rejected() {
    // decided: an extra tensor is an error (PyTorch's strict loading)
    let bytes = raw_file(
        &[
            ("decoder.weight", Dtype::F32, vec![3, 2], f32_bytes(6)),
            ("decoder.bias", Dtype::F32, vec![3], f32_bytes(3)),
            ("encoder.weight", Dtype::F32, vec![5, 2], f32_bytes(10)),
        ],
        &[],
    );
    assert_load_fails(
        &bytes,
        false,
        ErrorKind::Format,
        &["unexpected tensor `encoder.weight` (dtype F32, shape [5, 2]) in the file"],
    );
}

#[test]
fn shape_mismatch_is_rejected() {
    let bytes = raw_file(
        &[
            ("decoder.weight", Dtype::F32, vec![2, 3], f32_bytes(6)),
            ("decoder.bias", Dtype::F32, vec![3], f32_bytes(3)),
        ],
        &[],
    );
    assert_load_fails(
        &bytes,
        false,
        ErrorKind::Format,
        &["tensor `decoder.weight`: shape [2, 3] in the file, the store expects [3, 2]"],
    );
}

#[test]
fn optimizer_state_mismatches_are_rejected() {
    let (store, opt) = small();
    // Adam state into an SGD: the parameters are fine, the optimizer is not,
    // so nothing at all is loaded.
    let bytes = checkpoint::to_bytes(&store, Some(&opt), 1, &BTreeMap::new()).unwrap();
    let (mut s, _) = target();
    let before = snapshot(&s, bits32);
    let mut sgd = Sgd::new(0.1);
    let e = checkpoint::from_bytes(&bytes, &mut s, Some(&mut sgd)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(
        e.to_string()
            .contains("written by a `adam` optimizer, this one is `sgd`"),
        "{e}"
    );
    assert_eq!(snapshot(&s, bits32), before);

    // no optimizer state in the file, but one was asked for
    let bytes = checkpoint::to_bytes(&store, None, 1, &BTreeMap::new()).unwrap();
    assert_load_fails(
        &bytes,
        true,
        ErrorKind::Format,
        &["the file holds no optimizer state"],
    );

    // an optimizer buffer of the wrong shape
    let params = [
        ("decoder.weight", Dtype::F32, vec![3, 2], f32_bytes(6)),
        ("decoder.bias", Dtype::F32, vec![3], f32_bytes(3)),
    ];
    let adam_meta = [
        ("tapegrad.optimizer", "adam"),
        ("tapegrad.optim.lr", "0.01"),
        ("tapegrad.optim.beta1", "0.9"),
        ("tapegrad.optim.beta2", "0.999"),
        ("tapegrad.optim.eps", "1e-8"),
        ("tapegrad.optim.weight_decay", "0"),
        ("tapegrad.optim.step", "1"),
    ];
    let mut tensors = params.to_vec();
    tensors.push((
        "optim.exp_avg.decoder.bias",
        Dtype::F32,
        vec![4],
        f32_bytes(4),
    ));
    tensors.push((
        "optim.exp_avg_sq.decoder.bias",
        Dtype::F32,
        vec![4],
        f32_bytes(4),
    ));
    let bytes = raw_file(&tensors, &adam_meta);
    assert_load_fails(
        &bytes,
        true,
        ErrorKind::Format,
        &["buffer `exp_avg.decoder.bias` has shape [4], its parameter `decoder.bias` has shape [3]"],
    );
    // ... but without an optimizer the weights load (optim.* is ignored)
    let (mut s, _) = target();
    checkpoint::from_bytes(&bytes, &mut s, None).unwrap();

    // a buffer for a parameter the store lacks, and a missing scalar
    let mut tensors = params.to_vec();
    tensors.push((
        "optim.exp_avg.encoder.weight",
        Dtype::F32,
        vec![2],
        f32_bytes(2),
    ));
    assert_load_fails(
        &raw_file(&tensors, &adam_meta),
        true,
        ErrorKind::Format,
        &["buffer `exp_avg.encoder.weight` belongs to a parameter `encoder.weight` that the store does not hold"],
    );
    assert_load_fails(
        &raw_file(&params, &adam_meta[..6]),
        true,
        ErrorKind::Format,
        &["scalar `step` is missing"],
    );
    let mut bad_num = adam_meta.to_vec();
    bad_num[1] = ("tapegrad.optim.lr", "fast");
    assert_load_fails(
        &raw_file(&params, &bad_num),
        true,
        ErrorKind::Format,
        &["metadata `tapegrad.optim.lr` is `fast`, not a number"],
    );
    // optimizer buffers of the wrong dtype
    let mut tensors = params.to_vec();
    tensors.push((
        "optim.exp_avg.decoder.bias",
        Dtype::F64,
        vec![3],
        vec![0; 24],
    ));
    assert_load_fails(
        &raw_file(&tensors, &adam_meta),
        true,
        ErrorKind::Format,
        &["tensor `optim.exp_avg.decoder.bias`: dtype F64 in the file, the optimizer holds f32"],
    );
}

#[test]
fn bad_step_metadata_is_rejected() {
    let params = [
        ("decoder.weight", Dtype::F32, vec![3, 2], f32_bytes(6)),
        ("decoder.bias", Dtype::F32, vec![3], f32_bytes(3)),
    ];
    assert_load_fails(
        &raw_file(&params, &[("tapegrad.step", "-3")]),
        false,
        ErrorKind::Format,
        &["metadata `tapegrad.step` is `-3`"],
    );
    // a file without tapegrad metadata (as PyTorch writes it) loads at step 0
    let (mut s, _) = target();
    let info = checkpoint::from_bytes(&raw_file(&params, &[]), &mut s, None).unwrap();
    assert_eq!(info.step, 0);
    assert_eq!(
        s.get(s.key("decoder.bias").unwrap()).data(),
        &[0.0, 1.0, 2.0]
    );
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let path = temp_path("does-not-exist");
    let (mut s, mut o) = target();
    let e = checkpoint::load(&path, &mut s, Some(&mut o)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    let e = CharModel::<f32>::load(&path, None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io);
}

#[test]
fn file_errors_name_the_path() {
    let path = temp_path("truncated");
    let (store, _) = small();
    let bytes = checkpoint::to_bytes(&store, None, 0, &BTreeMap::new()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let (mut s, _) = target();
    let e = checkpoint::load(&path, &mut s, None).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn save_rejects_reserved_names() {
    let (store, _) = small();
    for key in ["format", "tapegrad.step"] {
        let meta = BTreeMap::from([(key.to_string(), "x".to_string())]);
        let e = checkpoint::to_bytes(&store, None, 0, &meta).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("is reserved"), "{e}");
    }
    let mut s = ParamStore::<f32>::new();
    s.insert(format!("{OPTIM_PREFIX}w"), Tensor::zeros(&[1]));
    let e = checkpoint::to_bytes(&s, None, 0, &BTreeMap::new()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    // CharModel reserves its own keys
    let model = CharModel::<f32>::new(
        Vocab::from_text("ab"),
        CharModelConfig::default().hidden_size(2),
        0,
    );
    let meta = BTreeMap::from([("char_model.vocab".to_string(), "x".to_string())]);
    assert_eq!(
        model.to_bytes(None, 0, &meta).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn char_model_rejects_bad_metadata_before_allocating() {
    let model = CharModel::<f32>::new(
        Vocab::from_text("ab"),
        CharModelConfig::default().hidden_size(4),
        0,
    );
    let good = model.to_bytes(None, 0, &BTreeMap::new()).unwrap();
    assert!(CharModel::<f32>::from_bytes(&good, None).is_ok());
    // rewrite the metadata: a huge hidden size must not be allocated
    let mut meta = model.metadata();
    meta.insert("char_model.hidden_size".into(), "1000000000000".into());
    let named: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = model
        .store()
        .iter()
        .map(|(_, p)| {
            (
                p.name.as_str(),
                Dtype::F32,
                p.value.shape().to_vec(),
                f32_bytes(p.value.numel()),
            )
        })
        .collect();
    let meta: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let e = CharModel::<f32>::from_bytes(&raw_file(&named, &meta), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Format);
    assert!(e.to_string().contains("more parameters than"), "{e}");
    // a plain store checkpoint is not a CharModel checkpoint
    let (store, _) = small();
    let bytes = checkpoint::to_bytes(&store, None, 0, &BTreeMap::new()).unwrap();
    let e = CharModel::<f32>::from_bytes(&bytes, None).unwrap_err();
    assert!(e.to_string().contains("not a CharModel checkpoint"), "{e}");
}

/// The same model, optimizer state, step and metadata saved twice (and
/// through a file twice) give identical bytes: the header's metadata is
/// written in sorted key order, not a hash map's random order. Metadata
/// with JSON's special characters survives the writer's own escaping.
#[test]
fn saving_is_byte_deterministic() {
    let (store, opt) = small();
    let meta: BTreeMap<String, String> = [
        ("zeta", "last"),
        ("alpha", "first"),
        ("quote\"back\\slash", "line\nbreak\ttab\u{1}ctrl é ✓"),
        ("mid", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let a = checkpoint::to_bytes(&store, Some(&opt), 9, &meta).unwrap();
    for _ in 0..8 {
        assert_eq!(
            checkpoint::to_bytes(&store, Some(&opt), 9, &meta).unwrap(),
            a
        );
    }
    let path = temp_path("deterministic");
    checkpoint::save(&path, &store, Some(&opt), 9, &meta).unwrap();
    let first = std::fs::read(&path).unwrap();
    checkpoint::save(&path, &store, Some(&opt), 9, &meta).unwrap();
    let second = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!((&first, &second), (&a, &a));

    // The header is valid JSON whose metadata keys come in sorted order,
    // padded to 8 bytes, and everything loads back.
    let n = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    let text = std::str::from_utf8(&a[8..8 + n]).unwrap();
    let keys: Vec<usize> = [
        "\"alpha\"",
        "\"format\"",
        "\"mid\"",
        "\"quote",
        "\"tapegrad.dtype\"",
        "\"zeta\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} not in {text}")))
    .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
    let header = header_json(&a);
    assert_eq!(
        header["__metadata__"]["quote\"back\\slash"],
        "line\nbreak\ttab\u{1}ctrl é ✓"
    );
    let (mut back, mut opt2) = target();
    let info = checkpoint::from_bytes(&a, &mut back, Some(&mut opt2)).unwrap();
    assert_eq!(info.metadata, meta);
    assert_eq!(snapshot(&back, bits32), snapshot(&store, bits32));
    assert_eq!(opt2.state(&back), opt.state(&store));

    // A whole CharModel checkpoint too.
    let vocab = Vocab::from_text("abc ");
    let model = CharModel::<f64>::new(vocab, CharModelConfig::default().hidden_size(8), 3);
    let adam = Adam::new(0.01);
    let x = model.to_bytes(Some(&adam), 5, &meta).unwrap();
    assert_eq!(model.to_bytes(Some(&adam), 5, &meta).unwrap(), x);
}

/// Adam state written with a valid step and the given scalars overridden
/// (lr = −1, β₁ = 1.5, …), loaded into an Adam: refused with a format error
/// naming the value, the optimizer and the store untouched.
#[test]
fn optimizer_hyper_parameters_from_a_file_are_validated() {
    let (store, opt) = small();
    let good = opt.state(&store);
    let with = |name: &str, v: f64| {
        let mut s = good.clone();
        for (n, x) in &mut s.scalars {
            if n == name {
                *x = v;
            }
        }
        let mut a = Adam::new(0.3);
        a.load_state(&store, &good).unwrap();
        // Write the bad value through the public fields, then save.
        match name {
            "lr" => a.lr = v,
            "beta1" => a.betas.0 = v,
            "beta2" => a.betas.1 = v,
            "eps" => a.eps = v,
            "weight_decay" => a.weight_decay = v,
            _ => unreachable!(),
        }
        assert_eq!(a.state(&store), s);
        checkpoint::to_bytes(&store, Some(&a), 1, &BTreeMap::new()).unwrap()
    };
    for (name, v, needle) in [
        ("lr", -1.0, "lr = -1 is not finite and ≥ 0"),
        ("beta1", 1.5, "beta1 = 1.5 is not in [0, 1)"),
        ("beta2", 2.0, "beta2 = 2 is not in [0, 1)"),
        ("beta1", -0.1, "beta1 = -0.1 is not in [0, 1)"),
        ("eps", -1.0, "eps = -1 is not finite and ≥ 0"),
        ("weight_decay", -0.5, "weight_decay = -0.5"),
    ] {
        assert_load_fails(
            &with(name, v),
            true,
            ErrorKind::Format,
            &["adam state", needle],
        );
        // The constructor's check is the same one.
        let mut a = Adam::<f32>::new(0.1);
        match name {
            "lr" => a.lr = v,
            "beta1" => a.betas.0 = v,
            "beta2" => a.betas.1 = v,
            "eps" => a.eps = v,
            _ => a.weight_decay = v,
        }
        assert!(a.validate().unwrap_err().message().contains(needle));
    }
    assert!(Adam::<f32>::try_new(-1.0).is_err());
    assert!(std::panic::catch_unwind(|| Adam::<f32>::adamw(0.1, -0.01)).is_err());

    // The other optimizers, through raw files.
    let params = [
        ("decoder.weight", Dtype::F32, vec![3, 2], f32_bytes(6)),
        ("decoder.bias", Dtype::F32, vec![3], f32_bytes(3)),
    ];
    // (optimizer kind, its scalars in the file, what the error must say)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case<'_>; 3] = [
        (
            "sgd",
            vec![
                ("lr", "0.1"),
                ("momentum", "0"),
                ("nesterov", "1"),
                ("weight_decay", "0"),
            ],
            "Nesterov momentum needs momentum > 0",
        ),
        (
            "adagrad",
            vec![
                ("lr", "0.1"),
                ("lr_decay", "-1"),
                ("weight_decay", "0"),
                ("initial_accumulator_value", "0"),
                ("eps", "1e-10"),
                ("step", "1"),
            ],
            "lr_decay = -1",
        ),
        (
            "rmsprop",
            vec![
                ("lr", "0.01"),
                ("alpha", "-0.99"),
                ("eps", "1e-8"),
                ("weight_decay", "0"),
                ("momentum", "0"),
                ("centered", "0"),
            ],
            "alpha = -0.99",
        ),
    ];
    for (kind, scalars, needle) in cases {
        let keys: Vec<String> = scalars
            .iter()
            .map(|(k, _)| format!("tapegrad.optim.{k}"))
            .collect();
        let mut meta: Vec<(&str, &str)> = vec![("tapegrad.optimizer", kind)];
        meta.extend(
            keys.iter()
                .zip(&scalars)
                .map(|(k, (_, v))| (k.as_str(), *v)),
        );
        let bytes = raw_file(&params, &meta);
        let mut s = target().0;
        let before = snapshot(&s, bits32);
        let mut opt: Box<dyn Optimizer<f32>> = match kind {
            "sgd" => Box::new(Sgd::new(0.5).momentum(0.9)),
            "adagrad" => Box::new(tapegrad::optim::Adagrad::new(0.5)),
            _ => Box::new(tapegrad::optim::RmsProp::new(0.5)),
        };
        let opt_before = opt.state(&s);
        let e = checkpoint::from_bytes(&bytes, &mut s, Some(opt.as_mut())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Format, "{e}");
        assert!(
            e.to_string().contains(needle),
            "{kind}: `{e}` lacks `{needle}`"
        );
        assert_eq!((snapshot(&s, bits32), opt.state(&s)), (before, opt_before));
    }
}

/// Adam's step counter is kept in 64 bits: a state at step 3·10⁹ (past
/// `i32::MAX`) loads, saves and loads again as 3·10⁹, and the next update
/// is fully bias-corrected (β^t ≈ 0), moving a weight by lr·ĝ/(√v̂ + ε) as
/// a plain Adam step with m = v = 0 before it would: here
/// 0.1·(0.1·g)/(√(0.001·g²) + ε) ≈ 0.1·3.162. Before the fix the counter
/// was narrowed with `as i32` (3·10⁹ wraps to −1294967296) and the weight
/// barely moved. A counter beyond 2⁵³ (not exact in the file's f64) is
/// refused.
#[test]
fn adam_step_counter_stays_64_bit() {
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("w", Tensor::scalar(1.0));
    let mut opt = Adam::new(0.1);
    let g = Tape::new().param(&store, w).backward(); // g = 1
    opt.step(&mut store, &g);
    let mut state = opt.state(&store);
    for (n, x) in &mut state.scalars {
        if n == "step" {
            *x = 3e9;
        }
    }
    // m = v = 0 at step 3·10⁹
    for (_, t) in &mut state.tensors {
        *t = Tensor::zeros(&[]);
    }
    let mut big = Adam::new(0.5);
    big.load_state(&store, &state).unwrap();
    assert_eq!(big.steps(), 3_000_000_000);
    let bytes = checkpoint::to_bytes(&store, Some(&big), 7, &BTreeMap::new()).unwrap();
    let mut again = Adam::new(0.5);
    let mut s2 = store.clone();
    checkpoint::from_bytes(&bytes, &mut s2, Some(&mut again)).unwrap();
    assert_eq!(again.steps(), 3_000_000_000);

    let before = s2.get(w).item();
    let g = Tape::new().param(&s2, w).backward();
    again.step(&mut s2, &g);
    assert_eq!(again.steps(), 3_000_000_001);
    let moved = before - s2.get(w).item();
    let expected = 0.1 * 0.1 / (0.001f64.sqrt() + 1e-8);
    assert!(
        (moved - expected).abs() < 1e-12,
        "moved {moved}, a bias-corrected step moves {expected}"
    );

    // Past 2⁵³ the file's f64 cannot hold the counter exactly: refused.
    let mut huge = state.clone();
    for (n, x) in &mut huge.scalars {
        if n == "step" {
            *x = 2f64.powi(60);
        }
    }
    let e = Adam::<f64>::new(0.1).load_state(&store, &huge).unwrap_err();
    assert!(e.message().contains("counter `step`"), "{e}");
}
