//! Ready-made models built from the layers, with training and inference:
//!
//! - [`CharModel`]: a character-level LSTM language model (Embedding →
//!   stacked LSTM → Linear) with truncated-BPTT training over
//!   [`CharStreams`], evaluation, checkpoints that carry its [`Vocab`], and
//!   sampling from a prompt with a temperature and a top-k cut
//!   ([`Sampling`]). `examples/char_lstm.rs` trains one on the bundled
//!   corpus.
//! - [`Seq2Seq`]: an LSTM encoder–decoder, trained with teacher forcing and
//!   decoded greedily.
//!
//! Everything here goes through the public API of the layers, the tape and
//! the optimizers; nothing has a hand-written gradient.

mod char_model;
mod seq2seq;
mod text;
mod vocab;

pub use char_model::{CharModel, CharModelConfig, StepStats};
pub use seq2seq::Seq2Seq;
pub use text::{Batch, CharStreams};
pub use vocab::Vocab;

use crate::tensor::SeededRng;
use rand::Rng;

/// How to pick the next token from the model's logits z.
///
/// ```text
/// temperature τ > 0:  p(i) ∝ exp(z(i)/τ) over the k largest z (all if top_k = 0)
/// temperature τ = 0:  argmax z (greedy decoding; the lowest id wins ties)
/// ```
///
/// Lower τ sharpens the distribution towards the likeliest tokens, higher τ
/// flattens it; top-k never samples outside the k likeliest. The seed makes
/// a sample reproducible.
///
/// ```
/// use tapegrad::models::Sampling;
/// let s = Sampling::default();
/// assert_eq!((s.temperature, s.top_k), (0.8, 10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// τ ≥ 0 (0 = greedy).
    pub temperature: f64,
    /// Sample among the k likeliest tokens only (0 = all).
    pub top_k: usize,
    /// Seed of the sampling generator.
    pub seed: u64,
}

impl Default for Sampling {
    /// τ = 0.8, top-k = 10, seed 0.
    fn default() -> Self {
        Sampling {
            temperature: 0.8,
            top_k: 10,
            seed: 0,
        }
    }
}

/// Draws an index from `logits` as [`Sampling`] describes, with `rng`
/// (`sampling.seed` is not used here; seed `rng` with it). NaN logits are
/// never chosen unless all are NaN.
///
/// # Panics
/// If `logits` is empty.
///
/// ```
/// use tapegrad::models::{sample_index, Sampling};
/// let mut rng = tapegrad::tensor::rng(1);
/// let z = [0.0, 5.0, 1.0, -2.0];
/// let greedy = Sampling { temperature: 0.0, top_k: 0, seed: 0 };
/// assert_eq!(sample_index(&z, &greedy, &mut rng), 1);
/// let top2 = Sampling { temperature: 100.0, top_k: 2, seed: 0 };
/// for _ in 0..100 {
///     assert!(matches!(sample_index(&z, &top2, &mut rng), 1 | 2));
/// }
/// ```
#[track_caller]
pub fn sample_index(logits: &[f64], sampling: &Sampling, rng: &mut SeededRng) -> usize {
    assert!(
        !logits.is_empty(),
        "tapegrad: sample_index: no logits to sample from"
    );
    // Indices by decreasing logit (NaN last), ties by increasing index.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (logits[a], logits[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => y.total_cmp(&x).then(a.cmp(&b)),
        }
    });
    if sampling.temperature <= 0.0 || logits[order[0]].is_nan() {
        return order[0];
    }
    let k = match sampling.top_k {
        0 => logits.len(),
        k => k.min(logits.len()),
    };
    let kept: Vec<usize> = order[..k]
        .iter()
        .copied()
        .filter(|&i| !logits[i].is_nan())
        .collect();
    let top = logits[kept[0]];
    if top == f64::INFINITY {
        return kept[0];
    }
    let weights: Vec<f64> = kept
        .iter()
        .map(|&i| ((logits[i] - top) / sampling.temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (&i, &w) in kept.iter().zip(&weights) {
        if u < w {
            return i;
        }
        u -= w;
    }
    kept[kept.len() - 1]
}
