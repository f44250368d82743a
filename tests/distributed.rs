//! Data-parallel training across ranks (`tapegrad::distributed`), with the
//! ranks as threads of this process (`ThreadGroup`), so it runs without
//! an MPI installation; `tests/mpi.rs` runs the same checks across real
//! MPI processes.
//!
//! - 2 ranks × 1 worker give every parameter of single-process
//!   `train_step_parallel` with 2 workers after k steps (to 1e-12 in f64,
//!   1e-5 in f32; seen: bit-identical) and of 1 rank on the full batch
//!   (another summation order: seen ≤ 1e-16 / 1e-7);
//! - ranks with a different parameter shape or vocabulary all get the same
//!   error naming the rank and the entry that differs;
//! - a checkpoint written by rank 0 of a 2-rank run loads in one process,
//!   which continues exactly as the 2-rank run does.

#[path = "common/char_ranks.rs"]
mod char_ranks;

use char_ranks::{config, max_diff, max_loss_diff, params, streams, train_ranks, train_single};
use char_ranks::{SEQ, TEXT};
use tapegrad::distributed::{Collective, Solo, ThreadGroup, WorldDescription};
use tapegrad::models::{CharModel, Vocab};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{ErrorKind, Real};

/// Runs `f(rank_handle)` on `size` threads and returns the results in rank
/// order.
fn on_ranks<R: Send>(size: usize, f: impl Fn(ThreadGroup) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ThreadGroup::new(size)
            .into_iter()
            .map(|g| s.spawn(move || f(g)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn two_ranks_equal_single_process<F: Real>(tol: f64) {
    const K: usize = 6;
    let vocab = Vocab::from_text(TEXT);
    let init = CharModel::<F>::new(vocab, config().dropout(0.1), 5);
    let ranks = on_ranks(2, |g| {
        let mut m = init.clone();
        m.join_world(&g, WorldDescription::new()).unwrap();
        let mut opt = Adam::new(3e-3);
        let losses = train_ranks(&g, &mut m, &mut opt, 0..K);
        (params(&m), losses)
    });
    // the ranks agree bit for bit
    assert_eq!(ranks[0].0, ranks[1].0);
    assert_eq!(ranks[0].1, ranks[1].1);

    let mut two_workers = init.clone();
    let losses = train_single(&mut two_workers, &mut Adam::new(3e-3), 2, 0..K);
    let d_workers = max_diff(&ranks[0].0, &params(&two_workers));
    let d_loss = max_loss_diff(&losses, &ranks[0].1);

    // 1 rank on the full batch: the same job without dropout (one shard
    // draws other masks than two), against 2 ranks without dropout.
    let plain = CharModel::<F>::new(Vocab::from_text(TEXT), config(), 5);
    let two = on_ranks(2, |g| {
        let mut m = plain.clone();
        train_ranks(&g, &mut m, &mut Adam::new(3e-3), 0..K);
        params(&m)
    });
    let mut one = plain.clone();
    train_ranks(&Solo, &mut one, &mut Adam::new(3e-3), 0..K);
    let d_one = max_diff(&two[0], &params(&one));
    println!(
        "{}: 2 ranks vs 2 workers: max |Δθ| = {d_workers:e}, |Δloss| = {d_loss:e}; vs 1 rank on the full batch: {d_one:e}",
        F::NAME
    );
    assert!(d_workers <= tol, "{d_workers}");
    assert!(d_loss <= tol, "{d_loss}");
    assert!(d_one <= tol, "{d_one}");
    // and the training moved the parameters well beyond the tolerance
    assert!(max_diff(&params(&init), &ranks[0].0) > 1e3 * tol);
}

#[test]
fn two_ranks_equal_two_workers_and_one_rank_f64() {
    two_ranks_equal_single_process::<f64>(1e-12);
}

#[test]
fn two_ranks_equal_two_workers_and_one_rank_f32() {
    two_ranks_equal_single_process::<f32>(1e-5);
}

#[test]
fn a_rank_with_another_shape_or_vocabulary_stops_every_rank() {
    let vocab = Vocab::from_text(TEXT);
    let errors = on_ranks(3, |g| {
        let cfg = if g.rank() == 2 {
            config().hidden_size(12)
        } else {
            config()
        };
        let mut m = CharModel::<f32>::new(vocab.clone(), cfg, 1);
        m.join_world(&g, WorldDescription::new().entry("corpus", "x"))
            .unwrap_err()
    });
    for e in &errors {
        assert_eq!(e, &errors[0], "every rank reports the same error");
    }
    let msg = errors[0].to_string();
    assert_eq!(errors[0].kind(), ErrorKind::InvalidArgument);
    assert!(msg.contains("rank 2 differs from rank 0"), "{msg}");
    assert!(!msg.contains("rank 1 differs"), "{msg}");
    assert!(
        msg.contains(
            "parameter `lstm.weight_hh_l0`: f32 [64, 16] on rank 0, f32 [48, 12] on rank 2"
        ),
        "{msg}"
    );

    let errors = on_ranks(2, |g| {
        let v = if g.rank() == 1 {
            Vocab::from_text(&format!("{TEXT}Z"))
        } else {
            vocab.clone()
        };
        let mut m = CharModel::<f32>::new(v, config(), 1);
        m.join_world(&g, WorldDescription::new()).unwrap_err()
    });
    assert_eq!(errors[0], errors[1]);
    let msg = errors[0].to_string();
    assert!(msg.contains("rank 1 differs from rank 0"), "{msg}");
    assert!(msg.contains("vocabulary:"), "{msg}");
    assert!(msg.contains("parameter `encoder.weight`"), "{msg}");
}

/// A 2-rank run writes a checkpoint at step 4 (rank 0), goes on to step 8;
/// one process loads the checkpoint and trains steps 4..8 with 2 workers:
/// the same parameters (to 1e-12, f64) and losses.
#[test]
fn a_two_rank_checkpoint_continues_identically_in_one_process() {
    let vocab = Vocab::from_text(TEXT);
    let init = CharModel::<f64>::new(vocab, config(), 9);
    let out = on_ranks(2, |g| {
        let mut m = init.clone();
        m.join_world(&g, WorldDescription::new()).unwrap();
        let mut opt = Adam::new(3e-3);
        train_ranks(&g, &mut m, &mut opt, 0..4);
        let bytes =
            (g.rank() == 0).then(|| m.to_bytes(Some(&opt), 4, &Default::default()).unwrap());
        let losses = train_ranks(&g, &mut m, &mut opt, 4..8);
        (bytes, params(&m), losses)
    });
    let bytes = out[0].0.as_ref().unwrap();
    let mut opt = Adam::new(0.9);
    let (mut single, info) = CharModel::<f64>::from_bytes(bytes, Some(&mut opt)).unwrap();
    assert_eq!((info.step, opt.steps(), opt.lr()), (4, 4, 3e-3));
    let losses = train_single(&mut single, &mut opt, 2, 4..8);
    let d = max_diff(&out[0].1, &params(&single));
    println!("2-rank run vs 1 process resumed from its checkpoint: max |Δθ| = {d:e}");
    assert!(d <= 1e-12, "{d}");
    assert!(max_loss_diff(&losses, &out[0].2) <= 1e-12);
}

/// Validation across ranks equals one process's `evaluate`.
#[test]
fn distributed_evaluation_equals_evaluate() {
    let vocab = Vocab::from_text(TEXT);
    let m = CharModel::<f64>::new(vocab.clone(), config(), 2);
    let s = streams(&vocab);
    let serial = m.evaluate(&s, SEQ);
    for size in [2, 3, 5] {
        let all = on_ranks(size, |g| m.evaluate_distributed(&g, &s, SEQ));
        for v in &all {
            assert!((v - serial).abs() < 1e-12, "{size} ranks: {v} vs {serial}");
        }
    }
}
