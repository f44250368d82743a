//! A pool of `Vec<F>` buffers keyed by length, so a tape that is reset and
//! replayed with the same shapes (every training step) allocates nothing
//! after the first step.
//!
//! Buffers come out with arbitrary (stale but valid) contents: every caller
//! of [`Pool::take`] overwrites all of it, and [`Pool::zeroed`] exists for the
//! callers that accumulate.

use crate::error::Result;
use crate::tensor::try_alloc;
use std::collections::HashMap;

/// Free buffers, by exact length.
#[derive(Debug)]
pub(crate) struct Pool<F> {
    free: HashMap<usize, Vec<Vec<F>>>,
    /// Elements currently held in free buffers.
    held: usize,
}

impl<F> Default for Pool<F> {
    fn default() -> Self {
        Pool {
            free: HashMap::new(),
            held: 0,
        }
    }
}

impl<F: Copy + num_traits::Zero> Pool<F> {
    /// A buffer of exactly `n` elements with unspecified contents.
    pub(crate) fn take(&mut self, n: usize, op: &str) -> Result<Vec<F>> {
        if let Some(v) = self.free.get_mut(&n).and_then(Vec::pop) {
            self.held -= n;
            return Ok(v);
        }
        try_alloc(n, F::zero(), op)
    }

    /// A buffer of `n` zeros.
    pub(crate) fn zeroed(&mut self, n: usize, op: &str) -> Result<Vec<F>> {
        let mut v = self.take(n, op)?;
        v.fill(F::zero());
        Ok(v)
    }

    /// Returns a buffer for reuse.
    pub(crate) fn give(&mut self, v: Vec<F>) {
        if v.is_empty() {
            return;
        }
        self.held += v.len();
        self.free.entry(v.len()).or_default().push(v);
    }

    /// Elements held by free buffers (for memory accounting).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Frees every pooled buffer.
    pub(crate) fn clear(&mut self) {
        self.free.clear();
        self.held = 0;
    }
}
