//! Threads: which types cross threads (checked at compile time), and
//! data-parallel training — one tape per thread over batch shards, gradients
//! summed — gives the serial gradients: by hand with scoped threads, and
//! through `tapegrad::parallel::DataParallel` (1–3 workers, buffer reuse,
//! panics, the GEMM thread limit inside workers, the shard helpers, and the
//! data-parallel step `benches/bptt.rs` times on both of its sides).

use tapegrad::layers::{Linear, Lstm, RecurrentConfig};
use tapegrad::{Error, Grads, ParamKey, ParamStore, Reduction, Tape, Tensor};

const fn send<T: Send>() {}
const fn sync<T: Sync>() {}

// Values, parameters, gradients and errors can be shared or moved freely; a
// tape can be moved to another thread but not shared (it records through a
// RefCell: one tape per thread).
const _: () = {
    send::<Tensor<f32>>();
    sync::<Tensor<f32>>();
    send::<ParamStore<f64>>();
    sync::<ParamStore<f64>>();
    send::<ParamKey>();
    sync::<ParamKey>();
    send::<Grads<f32>>();
    sync::<Grads<f32>>();
    send::<Error>();
    sync::<Error>();
    send::<Tape<f64>>();
    send::<tapegrad::DataParallel<f64>>();
    send::<Lstm>();
    sync::<Lstm>();
};

#[test]
fn data_parallel_gradients_equal_serial_gradients() {
    let (t, b, i, h, o) = (6, 8, 3, 5, 4);
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(i, h).layers(2), 3);
    let head = Linear::new(&mut store, "decoder", h, o, true, 4);
    let x = Tensor::<f64>::randn(&[t, b, i], 5);
    let targets: Vec<usize> = (0..t * b).map(|k| (k * 5 + 1) % o).collect();

    // The summed loss over a shard of the batch (columns lo..hi of x).
    let shard_grads = |lo: usize, hi: usize| -> Vec<(ParamKey, Tensor<f64>)> {
        let n = hi - lo;
        let mut xs = Vec::with_capacity(t * n * i);
        let mut ys = Vec::with_capacity(t * n);
        for step in 0..t {
            xs.extend_from_slice(&x.data()[(step * b + lo) * i..(step * b + hi) * i]);
            ys.extend_from_slice(&targets[step * b + lo..step * b + hi]);
        }
        let tape = Tape::new();
        let xv = tape.constant(Tensor::from_vec(xs, &[t, n, i]).unwrap());
        let out = lstm.forward(&tape, &store, xv, None);
        let logits = head.forward(&tape, &store, out.stacked_rows());
        let grads = logits.cross_entropy(&ys, Reduction::Sum).backward();
        grads.params().map(|(k, g)| (k, g.clone())).collect()
    };

    let serial = shard_grads(0, b);
    let parallel: Vec<Vec<(ParamKey, Tensor<f64>)>> = std::thread::scope(|s| {
        let shards = [(0, 3), (3, 8)];
        let handles: Vec<_> = shards
            .iter()
            .map(|&(lo, hi)| s.spawn(move || shard_grads(lo, hi)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(serial.len(), store.len());
    for (key, want) in &serial {
        let mut sum = Tensor::zeros(want.shape());
        for shard in &parallel {
            let (_, g) = shard
                .iter()
                .find(|(k, _)| k == key)
                .expect("every shard has every gradient");
            for (s, v) in sum.data_mut().iter_mut().zip(g.data()) {
                *s += v;
            }
        }
        let err = sum.max_abs_diff(want);
        assert!(
            err <= 1e-12,
            "{}: shards differ from the serial gradient by {err:e}",
            store.name(*key)
        );
    }
}

// ----- DataParallel ----------------------------------------------------------

use proptest::prelude::*;
use std::ops::Range;
use tapegrad::parallel::{mean_weight, shard_columns, shard_ranges, shard_targets, DataParallel};
use tapegrad::ErrorKind;

/// An LSTM (2 layers) + linear readout with a loss over time-major data.
struct Task {
    store: ParamStore<f64>,
    lstm: Lstm,
    head: Linear,
    x: Tensor<f64>,
    targets: Vec<usize>,
    batch: usize,
}

impl Task {
    fn new(t: usize, b: usize) -> Self {
        let (i, h, o) = (3, 5, 4);
        let mut store = ParamStore::<f64>::new();
        let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(i, h).layers(2), 3);
        let head = Linear::new(&mut store, "decoder", h, o, true, 4);
        let x = Tensor::<f64>::randn(&[t, b, i], 5);
        let targets = (0..t * b).map(|k| (k * 5 + 1) % o).collect();
        Task {
            store,
            lstm,
            head,
            x,
            targets,
            batch: b,
        }
    }

    /// The loss over batch columns `cols`, recorded on `tape`; returns
    /// (loss value, gradients).
    fn shard_loss(
        &self,
        tape: &Tape<f64>,
        cols: Range<usize>,
        reduction: Reduction,
    ) -> (f64, Grads<f64>) {
        let xs = shard_columns(&self.x, cols.clone());
        let ys = shard_targets(&self.targets, self.batch, cols.clone());
        let xv = tape.constant_from_slice(xs.data(), xs.shape());
        let out = self.lstm.forward(tape, &self.store, xv, None);
        let logits = self.head.forward(tape, &self.store, out.stacked_rows());
        let mut loss = logits.cross_entropy(&ys, reduction);
        if reduction == Reduction::Mean {
            loss = loss * mean_weight::<f64>(&cols, self.batch);
        }
        (loss.item(), loss.backward())
    }

    /// The serial full-batch loss and parameter gradients.
    fn serial(&self, reduction: Reduction) -> (f64, Vec<(ParamKey, Tensor<f64>)>) {
        let tape = Tape::new();
        let (loss, grads) = self.shard_loss(&tape, 0..self.batch, reduction);
        (loss, grads.params().map(|(k, g)| (k, g.clone())).collect())
    }

    /// Max over parameters of ‖got − want‖_∞ / max(1, ‖want‖_∞).
    fn rel_err(&self, got: &Grads<f64>, want: &[(ParamKey, Tensor<f64>)]) -> f64 {
        assert_eq!(got.params().count(), want.len());
        want.iter()
            .map(|(key, w)| {
                let g = got
                    .param(*key)
                    .unwrap_or_else(|| panic!("no gradient for {}", self.store.name(*key)));
                let scale = w.data().iter().fold(1.0f64, |m, v| m.max(v.abs()));
                g.max_abs_diff(w) / scale
            })
            .fold(0.0, f64::max)
    }
}

/// Tolerance for shard sums vs the serial gradient: the same f64 products
/// summed in a different order, relative to max(1, ‖serial‖_∞).
const TOL: f64 = 1e-12;

#[test]
fn data_parallel_step_equals_serial_gradient_for_1_2_3_workers() {
    let task = Task::new(6, 8);
    let (want_loss, want) = task.serial(Reduction::Sum);
    assert_eq!(want.len(), task.store.len());
    for workers in [1, 2, 3] {
        let shards = shard_ranges(task.batch, workers);
        assert_eq!(shards.len(), workers);
        let mut dp = DataParallel::new(workers);
        for step in 0..2 {
            let (losses, grads) =
                dp.step(|k, tape| task.shard_loss(tape, shards[k].clone(), Reduction::Sum));
            assert_eq!(losses.len(), workers);
            let loss: f64 = losses.iter().sum();
            assert!(
                (loss - want_loss).abs() <= TOL * want_loss.abs().max(1.0),
                "{workers} workers, step {step}: loss {loss} vs serial {want_loss}"
            );
            let err = task.rel_err(&grads, &want);
            assert!(
                err <= TOL,
                "{workers} workers, step {step}: gradients differ from serial by {err:e} (relative)"
            );
            dp.reset_with(grads);
        }
    }
}

#[test]
fn mean_loss_shards_weighted_by_mean_weight_add_up_to_the_batch_mean() {
    let task = Task::new(5, 7);
    let (want_loss, want) = task.serial(Reduction::Mean);
    let shards = shard_ranges(task.batch, 2); // 4 + 3 columns: unequal shards
    let mut dp = DataParallel::new(2);
    let (losses, grads) =
        dp.step(|k, tape| task.shard_loss(tape, shards[k].clone(), Reduction::Mean));
    let loss: f64 = losses.iter().sum();
    assert!((loss - want_loss).abs() <= TOL * want_loss.abs().max(1.0));
    let err = task.rel_err(&grads, &want);
    assert!(
        err <= TOL,
        "weighted means differ from the batch mean's gradient by {err:e}"
    );
}

#[test]
fn data_parallel_reuses_tape_buffers_across_steps() {
    let task = Task::new(4, 6);
    let shards = shard_ranges(task.batch, 3);
    let mut dp = DataParallel::new(3);
    let mut held = Vec::new();
    let mut first: Option<Vec<(ParamKey, Tensor<f64>)>> = None;
    for _ in 0..5 {
        let (_, grads) =
            dp.step(|k, tape| task.shard_loss(tape, shards[k].clone(), Reduction::Sum));
        let now: Vec<_> = grads.params().map(|(k, g)| (k, g.clone())).collect();
        match &first {
            // Same inputs, same order of operations: the same bits.
            Some(f) => assert_eq!(
                task.rel_err(&grads, f),
                0.0,
                "a repeated step changed the gradients"
            ),
            None => first = Some(now),
        }
        dp.reset_with(grads);
        assert!(dp.tapes().iter().all(|t| t.is_empty()));
        held.push(
            dp.tapes()
                .iter()
                .map(|t| t.held_elements())
                .collect::<Vec<_>>(),
        );
    }
    // Every tape keeps its buffers after the first step, and no step adds any.
    assert!(held[0].iter().all(|&h| h > 0), "{held:?}");
    for h in &held[1..] {
        assert_eq!(
            h, &held[0],
            "the pools grew or shrank across steps: {held:?}"
        );
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_worker_panic_propagates_with_its_message() {
    let task = Task::new(3, 4);
    let shards = shard_ranges(task.batch, 3);
    let mut dp = DataParallel::new(3);
    for bad in [2, 0] {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dp.step(|k, tape| {
                let out = task.shard_loss(tape, shards[k].clone(), Reduction::Sum);
                if k == bad {
                    panic!("worker {k} failed on purpose");
                }
                out
            })
        }));
        let msg = panic_message(r.expect_err("the step should panic"));
        assert_eq!(msg, format!("worker {bad} failed on purpose"));
    }
    // The tapes are still usable: the next step resets them and is correct.
    let (_, want) = task.serial(Reduction::Sum);
    let (_, grads) = dp.step(|k, tape| task.shard_loss(tape, shards[k].clone(), Reduction::Sum));
    assert!(task.rel_err(&grads, &want) <= TOL);
}

#[test]
fn zero_workers_is_refused() {
    let err = DataParallel::<f64>::try_new(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(err.op(), "DataParallel::new");
    assert!(err.to_string().contains("0 workers"), "{err}");
}

#[test]
#[should_panic(expected = "DataParallel::new: 0 workers")]
fn zero_workers_panics_in_new() {
    let _ = DataParallel::<f32>::new(0);
}

#[test]
fn workers_gemms_are_single_threaded_and_the_caller_limit_is_restored() {
    let before = tapegrad::num_threads();
    let mut dp = DataParallel::<f32>::new(2);
    let (seen, g) = dp.step(|_, tape| {
        (
            tapegrad::num_threads(),
            tape.var(Tensor::ones(&[2])).sum().backward(),
        )
    });
    assert_eq!(seen, vec![1, 1]);
    assert_eq!(tapegrad::num_threads(), before);
    dp.reset_with(g);
    // One worker is the serial step: the GEMM threads are left alone.
    let mut one = DataParallel::<f32>::new(1);
    let (seen, _) = one.step(|_, tape| {
        (
            tapegrad::num_threads(),
            tape.var(Tensor::ones(&[2])).sum().backward(),
        )
    });
    assert_eq!(seen, vec![before]);
}

#[test]
fn shard_columns_and_targets_match_the_rows_of_the_shard() {
    let (t, b, i) = (3, 5, 2);
    let x = Tensor::<f64>::from_fn(&[t, b, i], |k| k as f64);
    let rows: Vec<usize> = (0..t * b).collect();
    for cols in shard_ranges(b, 2) {
        let xs = shard_columns(&x, cols.clone());
        let ys = shard_targets(&rows, b, cols.clone());
        assert_eq!(xs.shape(), &[t, cols.len(), i]);
        for (r, &row) in ys.iter().enumerate() {
            // row r of the shard is (t, b) = (row / B, row % B) of the batch
            let (step, col) = (row / b, row % b);
            assert_eq!((r / cols.len(), cols.start + r % cols.len()), (step, col));
            for f in 0..i {
                assert_eq!(xs.data()[r * i + f], x.at(&[step, col, f]));
            }
        }
    }
}

proptest! {
    #[test]
    fn shard_ranges_cover_the_batch_once_balanced(batch in 0usize..300, workers in 1usize..20) {
        let shards = shard_ranges(batch, workers);
        prop_assert_eq!(shards.len(), workers.min(batch));
        let mut next = 0;
        for r in &shards {
            prop_assert_eq!(r.start, next);
            prop_assert!(!r.is_empty());
            next = r.end;
        }
        prop_assert_eq!(next, batch);
        if let (Some(max), Some(min)) = (shards.iter().map(|r| r.len()).max(), shards.iter().map(|r| r.len()).min()) {
            prop_assert!(max - min <= 1);
        }
    }
}

// ----- the benchmark's data-parallel step (benches/bptt.rs) -----------------

#[path = "common/bptt_task.rs"]
mod bptt_task;

use tapegrad::reference::{LstmBptt, LstmParams, RnnBptt, RnnParams};
use tapegrad::Nonlinearity;

/// ‖a − b‖∞ / max(1, ‖b‖∞).
fn rel(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    let scale = b.data().iter().fold(1.0f64, |m, v| m.max(v.abs()));
    a.max_abs_diff(b) / scale
}

/// What `benches/bptt.rs` times at W ≥ 2 threads for B ≥ 2: the tape side
/// through `DataParallel` with `TapeModel::step`, the hand side as one
/// reference instance per shard with their gradients summed. Both must be
/// the serial full-batch gradients: shard sums vs the serial run of the same
/// side ≤ 1e-12, tape vs reference ≤ 1e-9 (the tolerance of
/// tests/reference_vs_tape.rs), all relative to max(1, ‖serial‖∞), f64.
#[test]
fn bench_data_parallel_step_equals_the_serial_step_on_both_sides() {
    let (t, b, i, h, o) = (7, 6, 4, 5, 3);
    let x = Tensor::<f64>::randn(&[t, b, i], 21);
    let targets: Vec<usize> = (0..t * b).map(|k| (k * 7 + 3) % o).collect();
    for lstm in [false, true] {
        let (rp, lp) = (
            RnnParams::random(i, h, o, 8),
            LstmParams::random(i, h, o, 9),
        );
        let model = if lstm {
            bptt_task::TapeModel::lstm(&lp)
        } else {
            bptt_task::TapeModel::rnn(&rp, Nonlinearity::Tanh)
        };
        let keys = model.keys();
        // One reference run on `n` columns; its six parameter gradients.
        let hand = |xs: &[f64], ys: &[usize], n: usize| -> Vec<Tensor<f64>> {
            let z = vec![0.0; n * h];
            if lstm {
                let mut r = LstmBptt::new(n, i, h, o, t, false);
                r.run(&lp, xs, &z, &z, ys);
                r.grads().params().map(Tensor::clone).to_vec()
            } else {
                let mut r = RnnBptt::new(n, i, h, o, t, Nonlinearity::Tanh, false);
                r.run(&rp, xs, &z, ys);
                r.grads().params().map(Tensor::clone).to_vec()
            }
        };
        let serial_hand = hand(x.data(), &targets, b);
        let serial_tape: Vec<Tensor<f64>> = {
            let tape = Tape::new();
            let (_, g) = model.step(&tape, x.data(), [t, b, i], &targets);
            keys.iter().map(|&k| g.param(k).unwrap().clone()).collect()
        };
        for (p, (a, w)) in serial_tape.iter().zip(&serial_hand).enumerate() {
            assert!(
                rel(a, w) <= 1e-9,
                "lstm={lstm}: serial tape vs reference, parameter {p}"
            );
        }
        for workers in [2, 3] {
            let shards = shard_ranges(b, workers);
            let xs: Vec<_> = shards
                .iter()
                .map(|r| shard_columns(&x, r.clone()))
                .collect();
            let ys: Vec<_> = shards
                .iter()
                .map(|r| shard_targets(&targets, b, r.clone()))
                .collect();
            let mut dp = DataParallel::new(workers);
            let (_, g) =
                dp.step(|k, tape| model.step(tape, xs[k].data(), [t, shards[k].len(), i], &ys[k]));
            let mut hand_sum: Vec<Tensor<f64>> = serial_hand
                .iter()
                .map(|w| Tensor::zeros(w.shape()))
                .collect();
            for k in 0..workers {
                for (acc, part) in
                    hand_sum
                        .iter_mut()
                        .zip(hand(xs[k].data(), &ys[k], shards[k].len()))
                {
                    acc.data_mut()
                        .iter_mut()
                        .zip(part.data())
                        .for_each(|(a, v)| *a += v);
                }
            }
            for p in 0..6 {
                let tape_dp = g.param(keys[p]).unwrap();
                let what = format!("lstm={lstm}, {workers} workers, parameter {p}");
                assert!(
                    rel(tape_dp, &serial_tape[p]) <= 1e-12,
                    "{what}: tape shards vs serial tape"
                );
                assert!(
                    rel(&hand_sum[p], &serial_hand[p]) <= 1e-12,
                    "{what}: reference shards vs serial reference"
                );
                assert!(
                    rel(tape_dp, &serial_hand[p]) <= 1e-9,
                    "{what}: tape shards vs serial reference"
                );
            }
            dp.reset_with(g);
        }
    }
}
