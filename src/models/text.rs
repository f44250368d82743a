//! Batches for truncated BPTT over a long text: PyTorch's `batchify`.

use crate::error::{Error, ErrorKind, Result};

/// One truncated-BPTT chunk: `steps` × `batch` input ids and the ids that
/// follow them, both time-major (row t holds step t of every stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Input ids, `inputs[t·batch + b]` = stream b at step t.
    pub inputs: Vec<usize>,
    /// The next id after each input (same layout).
    pub targets: Vec<usize>,
    /// Steps T of the chunk.
    pub steps: usize,
    /// Streams B.
    pub batch: usize,
}

/// A text cut into `batch` contiguous streams read side by side, as
/// PyTorch's word-language-model example does (`batchify`): stream b is
/// `ids[b·L .. (b+1)·L]` with L = ⌊len / batch⌋ (the tail is dropped), and
/// chunk k holds steps `k·T .. k·T + T` of every stream (the last chunk of
/// an epoch may be shorter). Consecutive chunks continue each other, so the
/// recurrent state at the end of chunk k is the right start for chunk k + 1.
///
/// ```
/// use tapegrad::models::CharStreams;
/// let ids: Vec<usize> = (0..10).collect();
/// let s = CharStreams::new(&ids, 2).unwrap(); // streams 0..5 and 5..10
/// assert_eq!(s.chunks(3), 2);                  // 4 predictions per stream
/// let b = s.batch(0, 3);
/// assert_eq!(b.inputs, vec![0, 5, 1, 6, 2, 7]);
/// assert_eq!(b.targets, vec![1, 6, 2, 7, 3, 8]);
/// assert_eq!(s.batch(1, 3).inputs, vec![3, 8]); // the short last chunk
/// ```
#[derive(Debug, Clone)]
pub struct CharStreams {
    ids: Vec<usize>,
    batch: usize,
    len: usize,
}

impl CharStreams {
    /// Cuts `ids` into `batch` streams.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if `batch` is 0 or the streams would
    /// be shorter than 2 (nothing to predict).
    pub fn new(ids: &[usize], batch: usize) -> Result<Self> {
        let len = ids.len().checked_div(batch).unwrap_or(0);
        if len < 2 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "CharStreams::new",
                format!(
                    "{} ids cannot make {batch} streams of at least 2 ids",
                    ids.len()
                ),
            ));
        }
        Ok(CharStreams {
            ids: ids[..len * batch].to_vec(),
            batch,
            len,
        })
    }

    /// The number of streams B.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// The length L of each stream.
    pub fn stream_len(&self) -> usize {
        self.len
    }

    /// Predictions per epoch: B·(L − 1).
    pub fn predictions(&self) -> usize {
        self.batch * (self.len - 1)
    }

    /// Chunks of `seq_len` steps per epoch: ⌈(L − 1)/T⌉.
    ///
    /// # Panics
    /// If `seq_len` is 0.
    pub fn chunks(&self, seq_len: usize) -> usize {
        assert!(seq_len > 0, "tapegrad: CharStreams: seq_len must be > 0");
        (self.len - 1).div_ceil(seq_len)
    }

    /// Chunk `k` (taken modulo [`CharStreams::chunks`], so a step counter
    /// can be passed directly) of `seq_len` steps.
    ///
    /// # Panics
    /// If `seq_len` is 0.
    pub fn batch(&self, k: usize, seq_len: usize) -> Batch {
        let k = k % self.chunks(seq_len);
        let start = k * seq_len;
        let steps = seq_len.min(self.len - 1 - start);
        let mut inputs = Vec::with_capacity(steps * self.batch);
        let mut targets = Vec::with_capacity(steps * self.batch);
        for t in start..start + steps {
            for b in 0..self.batch {
                inputs.push(self.ids[b * self.len + t]);
                targets.push(self.ids[b * self.len + t + 1]);
            }
        }
        Batch {
            inputs,
            targets,
            steps,
            batch: self.batch,
        }
    }
}
