//! The small character model, text and training loops that
//! tests/distributed.rs (ranks as threads) and tests/mpi.rs (ranks as MPI
//! processes) run on every rank and compare against one process.

use std::ops::Range;
use tapegrad::distributed::{rank_streams, Collective};
use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Vocab};
use tapegrad::optim::Adam;
use tapegrad::parallel::DataParallel;
use tapegrad::Real;

pub const TEXT: &str = "In the beginning God created the heaven and the earth. \
And the earth was without form, and void; and darkness was upon the face of the deep. \
And the Spirit of God moved upon the face of the waters. ";

/// Streams per step and characters per stream and step.
pub const BATCH: usize = 4;
pub const SEQ: usize = 8;

/// Embedding 8 → 2 LSTM layers of 16.
pub fn config() -> CharModelConfig {
    CharModelConfig::default()
        .embed_size(8)
        .hidden_size(16)
        .layers(2)
}

pub fn streams(vocab: &Vocab) -> CharStreams {
    CharStreams::new(&vocab.encode(TEXT).unwrap(), BATCH).unwrap()
}

/// Every parameter's name and values as f64, in store order.
pub fn params<F: Real>(m: &CharModel<F>) -> Vec<(String, Vec<f64>)> {
    m.store()
        .iter()
        .map(|(_, p)| {
            let v = p.value.data().iter().map(|x| x.to_f64().unwrap()).collect();
            (p.name.clone(), v)
        })
        .collect()
}

/// The largest |a − b| over every value; the names must match.
pub fn max_diff(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for ((na, va), (nb, vb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        for (x, y) in va.iter().zip(vb) {
            worst = worst.max((x - y).abs());
        }
    }
    worst
}

/// The largest |a − b| of two loss curves.
pub fn max_loss_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Steps `steps` (chunk k for step k) on this rank of `comm` with one
/// worker, clipping at 1, the state from zeros. Returns the losses.
pub fn train_ranks<F: Real, C: Collective>(
    comm: &C,
    model: &mut CharModel<F>,
    opt: &mut Adam<F>,
    steps: Range<usize>,
) -> Vec<f64> {
    let s = streams(model.vocab());
    let mine = rank_streams(BATCH, comm.rank(), comm.size());
    let mut dp = DataParallel::new(1);
    let mut state = model.zero_state(mine.len());
    steps
        .map(|k| {
            let b = s.batch(k, SEQ);
            model
                .train_step_distributed(comm, &mut dp, opt, &b, &mut state, Some(1.0), k as u64)
                .unwrap()
                .loss
        })
        .collect()
}

/// The same steps in one process: `train_step_parallel` with `workers`.
pub fn train_single<F: Real>(
    model: &mut CharModel<F>,
    opt: &mut Adam<F>,
    workers: usize,
    steps: Range<usize>,
) -> Vec<f64> {
    let s = streams(model.vocab());
    let mut dp = DataParallel::new(workers);
    let mut state = model.zero_state(BATCH);
    steps
        .map(|k| {
            let b = s.batch(k, SEQ);
            model
                .train_step_parallel(&mut dp, opt, &b, &mut state, Some(1.0), k as u64)
                .unwrap()
                .loss
        })
        .collect()
}
