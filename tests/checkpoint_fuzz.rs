//! Checkpoint loading under random byte mutations (property tests).
//!
//! A small valid checkpoint (three f32 parameters and an Adam state) is
//! mutated by 1–8 random edits — bit flips, byte overwrites, insertions,
//! deletions and truncations at random positions — and loaded into a fresh
//! store of the right shapes (with and without an optimizer). For every
//! mutated file:
//!
//! - the load never panics (caught with `catch_unwind` and counted; the
//!   assertion is that the count is 0);
//! - `Err` is of kind `Format` (or `Io`), and the store and the optimizer
//!   are bit for bit as before;
//! - `Ok` only for a file that is still a valid safetensors container, and
//!   then every parameter holds exactly the bits the file encodes for it.
//!
//! The number of cases per property is `PROPTEST_CASES` if set, else
//! `DEFAULT_CASES` = 100,000 per property, 200,000 in all (measured at
//! about 45,000 cases/s per property on a 2-core machine, so about 2–5 s
//! in the test profile; the soak run sets `PROPTEST_CASES` higher). The f32-into-f64
//! error and the bit-exact round trips of special values are covered in
//! `tests/checkpoint.rs` and not repeated here.

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use safetensors::tensor::SafeTensors;
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;
use tapegrad::checkpoint;
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{ErrorKind, ParamStore, Tape, Tensor};

/// Cases per property when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 100_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The valid file every case mutates: three parameters, an Adam state
/// after one step, step 3 and one metadata entry.
fn original() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let mut store = ParamStore::<f32>::new();
        let w = store.insert("lstm.weight_ih_l0", Tensor::randn(&[4, 2], 1));
        let b = store.insert("lstm.bias_ih_l0", Tensor::randn(&[4], 2));
        let v = store.insert(
            "decoder.weight",
            Tensor::from_vec(vec![-0.0, f32::from_bits(1), f32::INFINITY], &[3, 1]).unwrap(),
        );
        let mut opt = Adam::new(0.01);
        let tape = Tape::new();
        let g = (tape.param(&store, w).sum()
            + tape.param(&store, b).powf(2.0).sum()
            + tape.param(&store, v).sum())
        .backward();
        opt.step(&mut store, &g);
        let meta = BTreeMap::from([("note".to_string(), "fuzz".to_string())]);
        checkpoint::to_bytes(&store, Some(&opt), 3, &meta).unwrap()
    })
}

/// A fresh target of the right shapes, valued differently from the file,
/// and an Adam with a different state.
fn target() -> (ParamStore<f32>, Adam<f32>) {
    let mut store = ParamStore::new();
    store.insert("lstm.weight_ih_l0", Tensor::full(&[4, 2], 7.0));
    store.insert("lstm.bias_ih_l0", Tensor::full(&[4], -7.0));
    store.insert("decoder.weight", Tensor::full(&[3, 1], 0.5));
    (store, Adam::new(0.5))
}

/// Everything a failed load must leave alone, as bits.
fn snapshot(store: &ParamStore<f32>, opt: &Adam<f32>) -> Vec<(String, Vec<usize>, Vec<u32>)> {
    let bits = |t: &Tensor<f32>| t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut s: Vec<_> = store
        .iter()
        .map(|(_, p)| (p.name.clone(), p.value.shape().to_vec(), bits(&p.value)))
        .collect();
    let st = opt.state(store);
    s.push((
        format!("kind={} scalars={:?}", st.kind, st.scalars),
        vec![],
        vec![],
    ));
    for (n, t) in &st.tensors {
        s.push((format!("optim.{n}"), t.shape().to_vec(), bits(t)));
    }
    s
}

#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Overwrite(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(p, b)| Edit::Flip(p, b)),
        3 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Overwrite(p, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Insert(p, b)),
        1 => any::<usize>().prop_map(Edit::Delete),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Applies the edits in order; positions are taken modulo the current
/// length (bytes 0..8, the header length, are hit often enough because
/// the file is short).
fn mutate(bytes: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for e in edits {
        let n = b.len();
        match *e {
            Edit::Flip(p, bit) if n > 0 => b[p % n] ^= 1 << bit,
            Edit::Overwrite(p, v) if n > 0 => b[p % n] = v,
            Edit::Insert(p, v) => b.insert(p % (n + 1), v),
            Edit::Delete(p) if n > 0 => {
                b.remove(p % n);
            }
            Edit::Truncate(p) => b.truncate(p % (n + 1)),
            _ => {}
        }
    }
    b
}

/// One case: load `bad` into a fresh target (with or without the
/// optimizer) and check the outcome; `Ok(true)` if it loaded.
fn check(bad: &[u8], with_optimizer: bool) -> Result<bool, TestCaseError> {
    let (mut store, mut opt) = target();
    let before = snapshot(&store, &opt);
    let r = catch_unwind(AssertUnwindSafe(|| {
        if with_optimizer {
            checkpoint::from_bytes(bad, &mut store, Some(&mut opt as &mut dyn Optimizer<f32>))
        } else {
            checkpoint::from_bytes(bad, &mut store, None)
        }
    }));
    let r = match r {
        Ok(r) => r,
        Err(_) => {
            return Err(TestCaseError::fail("the load panicked"));
        }
    };
    match r {
        Err(e) => {
            prop_assert!(
                matches!(e.kind(), ErrorKind::Format | ErrorKind::Io),
                "kind {:?}: {e}",
                e.kind()
            );
            prop_assert!(
                snapshot(&store, &opt) == before,
                "a failed load ({e}) changed the store or the optimizer"
            );
            Ok(false)
        }
        Ok(_) => {
            // only a valid container loads, and the store holds its bits
            let file = SafeTensors::deserialize(bad);
            prop_assert!(file.is_ok(), "loaded a file safetensors rejects");
            let file = file.unwrap();
            for (_, p) in store.iter() {
                let view = file.tensor(&p.name);
                prop_assert!(view.is_ok(), "`{}` loaded but is not in the file", p.name);
                let view = view.unwrap();
                prop_assert_eq!(view.shape(), p.value.shape());
                let want: Vec<u32> = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let got: Vec<u32> = p.value.data().iter().map(|x| x.to_bits()).collect();
                prop_assert_eq!(got, want, "`{}`", &p.name);
            }
            Ok(true)
        }
    }
}

/// Runs `cases()` mutated files through [`check`] with proptest's runner
/// (shrinking on failure) and prints the count and the rate.
fn run_property(name: &str, with_optimizer: bool) {
    let config = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases())
    };
    let mut runner = TestRunner::new(config);
    let ran = AtomicUsize::new(0);
    let ok = AtomicUsize::new(0);
    let panics = AtomicUsize::new(0);
    let t0 = Instant::now();
    let result = runner.run(&prop::collection::vec(edit(), 1..=8), |edits| {
        ran.fetch_add(1, Ordering::Relaxed);
        let outcome = check(&mutate(original(), &edits), with_optimizer);
        match &outcome {
            Ok(true) => {
                ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.to_string().contains("panicked") => {
                panics.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        outcome.map(|_| ())
    });
    let secs = t0.elapsed().as_secs_f64();
    let ran = ran.load(Ordering::Relaxed);
    println!(
        "{name}: {ran} cases ({} loaded Ok, {} panics) in {secs:.2} s = {:.0} cases/s",
        ok.load(Ordering::Relaxed),
        panics.load(Ordering::Relaxed),
        ran as f64 / secs
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    assert_eq!(
        panics.load(Ordering::Relaxed),
        0,
        "{name}: the load panicked"
    );
}

/// Mutated files into a store only (optimizer tensors ignored).
#[test]
fn mutated_file_into_store() {
    run_property("store only", false);
}

/// Mutated files into a store and an Adam optimizer.
#[test]
fn mutated_file_into_store_and_optimizer() {
    run_property("store + Adam", true);
}

/// The unmutated file loads (the fuzzing starts from a valid file).
#[test]
fn original_loads() {
    let (mut store, mut opt) = target();
    let info = checkpoint::from_bytes(original(), &mut store, Some(&mut opt)).unwrap();
    assert_eq!((info.step, info.num_params), (3, 3));
    assert!(check(original(), true).unwrap());
}
