//! [`Timed`]: a [`Collective`] that measures the time its all-reduces take.

use super::Collective;
use std::cell::Cell;
use std::time::Instant;

/// Wraps a [`Collective`] and adds up the wall time spent in its
/// all-reduces ([`Collective::sum_f32`], [`Collective::sum_f64`]) and how
/// many there were: the communication share of a training step. The time
/// includes waiting for the slowest rank to arrive.
///
/// ```
/// use tapegrad::distributed::{Collective, Solo, Timed};
/// let comm = Timed::new(Solo);
/// comm.sum_f64(&mut [1.0, 2.0]);
/// comm.sum_f32(&mut [1.0]);
/// assert_eq!(comm.calls(), 2);
/// assert!(comm.seconds() >= 0.0);
/// comm.reset();
/// assert_eq!(comm.calls(), 0);
/// assert_eq!(comm.inner(), &Solo);
/// ```
#[derive(Debug)]
pub struct Timed<C> {
    inner: C,
    seconds: Cell<f64>,
    calls: Cell<u64>,
}

impl<C: Collective> Timed<C> {
    /// Wraps `inner`, with nothing measured yet.
    pub fn new(inner: C) -> Self {
        Timed {
            inner,
            seconds: Cell::new(0.0),
            calls: Cell::new(0),
        }
    }

    /// The wrapped collective.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// Seconds spent in all-reduces since the start or the last reset.
    pub fn seconds(&self) -> f64 {
        self.seconds.get()
    }

    /// All-reduces since the start or the last reset.
    pub fn calls(&self) -> u64 {
        self.calls.get()
    }

    /// Starts measuring afresh.
    pub fn reset(&self) {
        self.seconds.set(0.0);
        self.calls.set(0);
    }

    fn timed<R>(&self, f: impl FnOnce() -> R) -> R {
        let t0 = Instant::now();
        let r = f();
        self.seconds
            .set(self.seconds.get() + t0.elapsed().as_secs_f64());
        self.calls.set(self.calls.get() + 1);
        r
    }
}

impl<C: Collective> Collective for Timed<C> {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn sum_f32(&self, buf: &mut [f32]) {
        self.timed(|| self.inner.sum_f32(buf));
    }
    fn sum_f64(&self, buf: &mut [f64]) {
        self.timed(|| self.inner.sum_f64(buf));
    }
    fn broadcast_f64(&self, buf: &mut [f64]) {
        self.inner.broadcast_f64(buf);
    }
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.inner.all_gather_bytes(bytes)
    }
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>) {
        self.inner.broadcast_bytes(bytes);
    }
}
