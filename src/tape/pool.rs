//! A pool of `Vec<F>` buffers keyed by length, so a tape that is reset and
//! replayed with the same shapes (every training step) allocates nothing
//! after the first step.
//!
//! Buffers come out with arbitrary (stale but valid) contents: every caller
//! of [`Pool::take`] overwrites all of it, and [`Pool::zeroed`] exists for the
//! callers that accumulate.
//!
//! Invariant: the pool only keeps buffers it issued. Each length has a count
//! of buffers out on loan; a buffer given back while none of its length is
//! on loan (a tensor the caller handed to `Tape::constant`, a backward seed)
//! is dropped, so a loop that feeds fresh tensors every step cannot grow the
//! pool without bound. The pool never holds more buffers of a length than
//! were on loan at once.

use crate::error::Result;
use crate::tensor::{try_alloc, Shape, Tensor};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for buffer lengths: one multiply instead of SipHash, since the
/// pool is looked up twice per recorded op (take in forward, give on reset)
/// and keys are plain lengths, not attacker-controlled.
#[derive(Default)]
pub(crate) struct LenHasher(u64);

impl Hasher for LenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_usize(&mut self, n: usize) {
        // Multiply, then fold the well-mixed high bits into the low ones
        // (hashbrown indexes buckets with the low bits).
        let h = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

#[derive(Debug)]
struct Bucket<F> {
    free: Vec<Vec<F>>,
    on_loan: usize,
}

impl<F> Default for Bucket<F> {
    fn default() -> Self {
        Bucket {
            free: Vec::new(),
            on_loan: 0,
        }
    }
}

/// Lengths below this have their bucket in a plain array, indexed by the
/// length: the small rows of a step (`[1, b]` gates, scalars) skip the hash
/// lookup, which was most of the cost of taking and giving them.
const SMALL: usize = 256;

/// Free buffers, by exact length.
#[derive(Debug)]
pub(crate) struct Pool<F> {
    /// Buckets of lengths `0..SMALL` (grown on demand), by length.
    small: Vec<Bucket<F>>,
    /// Buckets of lengths `SMALL..`.
    buckets: HashMap<usize, Bucket<F>, BuildHasherDefault<LenHasher>>,
    /// Elements currently held in free buffers.
    held: usize,
}

impl<F> Default for Pool<F> {
    fn default() -> Self {
        Pool {
            small: Vec::new(),
            buckets: HashMap::default(),
            held: 0,
        }
    }
}

impl<F> Pool<F> {
    /// The bucket of length `n`, created if missing.
    #[inline]
    fn bucket(&mut self, n: usize) -> &mut Bucket<F> {
        if n < SMALL {
            if n >= self.small.len() {
                self.small.resize_with(n + 1, Bucket::default);
            }
            &mut self.small[n]
        } else {
            self.buckets.entry(n).or_default()
        }
    }

    /// The bucket of length `n`, if it exists.
    #[inline]
    fn bucket_if_any(&mut self, n: usize) -> Option<&mut Bucket<F>> {
        if n < SMALL {
            self.small.get_mut(n)
        } else {
            self.buckets.get_mut(&n)
        }
    }
}

impl<F: Copy + num_traits::Zero> Pool<F> {
    /// A buffer of exactly `n` elements with unspecified contents.
    ///
    /// The hit on a small length is inlined into the ops (it is taken once
    /// per recorded node and once per gradient); a miss or a large length
    /// goes through [`Pool::take_slow`].
    #[inline]
    pub(crate) fn take(&mut self, n: usize, op: &str) -> Result<Vec<F>> {
        if let Some(bucket) = self.small.get_mut(n) {
            if let Some(v) = bucket.free.pop() {
                bucket.on_loan += 1;
                self.held -= n;
                return Ok(v);
            }
        }
        self.take_slow(n, op)
    }

    /// [`Pool::take`] through the bucket map, allocating on a miss.
    #[inline(never)]
    fn take_slow(&mut self, n: usize, op: &str) -> Result<Vec<F>> {
        let bucket = self.bucket(n);
        let v = match bucket.free.pop() {
            Some(v) => {
                bucket.on_loan += 1;
                self.held -= n;
                v
            }
            None => {
                let v = try_alloc(n, F::zero(), op)?;
                self.bucket(n).on_loan += 1;
                v
            }
        };
        Ok(v)
    }

    /// A buffer of `n` zeros.
    pub(crate) fn zeroed(&mut self, n: usize, op: &str) -> Result<Vec<F>> {
        let mut v = self.take(n, op)?;
        v.fill(F::zero());
        Ok(v)
    }

    /// A pooled copy of `data`.
    pub(crate) fn copy_of(&mut self, data: &[F], op: &str) -> Result<Vec<F>> {
        let mut v = self.take(data.len(), op)?;
        v.copy_from_slice(data);
        Ok(v)
    }

    /// Returns a buffer for reuse (dropped if the pool did not issue one of
    /// this length that is still out).
    #[inline]
    pub(crate) fn give(&mut self, v: Vec<F>) {
        if v.is_empty() {
            return;
        }
        let n = v.len();
        match self.bucket_if_any(n) {
            Some(bucket) if bucket.on_loan > 0 => {
                bucket.on_loan -= 1;
                bucket.free.push(v);
                self.held += n;
            }
            _ => {}
        }
    }

    /// Forgets a buffer of `n` elements this pool issued that will not come
    /// back (its owner freed it), so the count of buffers out stays exact.
    pub(crate) fn forget(&mut self, n: usize) {
        if let Some(bucket) = self.bucket_if_any(n) {
            bucket.on_loan = bucket.on_loan.saturating_sub(1);
        }
    }

    /// Elements held by free buffers (for memory accounting).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Frees every pooled buffer.
    pub(crate) fn clear(&mut self) {
        for b in self.small.iter_mut().chain(self.buckets.values_mut()) {
            b.free.clear();
        }
        self.held = 0;
    }
}

impl<F: crate::Real> Pool<F> {
    /// Elements `at..at + numel(shape)` of `x` under `shape`: a view of
    /// `x`'s buffer when it is shareable (no copy), else a pooled copy —
    /// how a slice, a reshape, a bound parameter or a checkpoint's scratch
    /// leaf takes its value.
    pub(crate) fn window(
        &mut self,
        x: &Tensor<F>,
        at: usize,
        shape: &[usize],
        op: &str,
    ) -> Result<Tensor<F>> {
        if let Some(view) = x.view(at, shape) {
            return Ok(view);
        }
        let n = crate::tensor::numel(shape)?;
        let buf = self.copy_of(&x.data()[at..at + n], op)?;
        Ok(Tensor::from_parts(Shape::from_slice(shape), buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_its_own_buffers_and_drops_foreign_ones() {
        let mut p = Pool::<f32>::default();
        let a = p.take(8, "t").unwrap();
        let ptr = a.as_ptr();
        p.give(a);
        assert_eq!(p.held(), 8);
        let b = p.take(8, "t").unwrap();
        assert_eq!(b.as_ptr(), ptr);
        p.give(b);
        // A buffer the pool never issued is not kept.
        for _ in 0..100 {
            p.give(vec![0.0; 8]);
        }
        assert_eq!(p.held(), 8);
    }
}
