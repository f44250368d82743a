//! Data-parallel training across processes: the batch's streams split over
//! the ranks of a process group, the parameter gradients summed across it
//! every step, the same update everywhere.
//!
//! [`DataParallel`](crate::DataParallel) puts the cores of one machine on a
//! step; this module puts several processes — on one host or many — on it,
//! in the way Horovod and PyTorch's `DistributedDataParallel` do:
//!
//! 1. every rank builds the same model; the ranks compare a description of
//!    their world (parameter names, shapes and dtype, vocabulary, corpus,
//!    settings — [`WorldDescription`]) and stop, every one of them, with an
//!    error naming the ranks that differ ([`check_same_world`]);
//! 2. rank 0's parameters are broadcast to the others
//!    ([`broadcast_params`]), so the ranks start bit-identical;
//! 3. each step, rank r takes its contiguous share of the batch's streams
//!    ([`rank_streams`], [`shard_ranges`](crate::parallel::shard_ranges)
//!    over the ranks), splits that over its own threads as
//!    `DataParallel` does, and weights each shard's mean loss by its share
//!    of the **whole** batch ([`mean_weight`](crate::parallel::mean_weight));
//! 4. the gradients are packed into one flat buffer ([`pack_grads`]) and
//!    summed across the ranks in one all-reduce ([`Collective::sum_f32`],
//!    [`Collective::sum_f64`]), so every rank holds the full-batch gradient;
//! 5. every rank clips and applies the optimizer to identical numbers, so
//!    the parameters stay identical without being sent again.
//!
//! [`CharModel::train_step_distributed`](crate::models::CharModel::train_step_distributed)
//! and [`CharModel::evaluate_distributed`](crate::models::CharModel::evaluate_distributed)
//! do all of this for the character model.
//!
//! The communication goes through the [`Collective`] trait. [`Solo`] is the
//! group of one process (every operation is the identity), [`ThreadGroup`]
//! runs ranks as threads of one process (to test the logic without a
//! launcher), and with the `mpi` cargo feature `Mpi` is an MPI
//! communicator (Open MPI or MPICH through the `mpi` crate), so a job runs
//! under `mpirun -np N`.
//!
//! ## Why the result is the full-batch gradient
//!
//! With B streams cut into shards S₁…S_K across ranks and threads, each
//! shard's loss is its mean over its own `T·|S_k|` rows times `|S_k|/B`, and
//! differentiation is linear, so `Σ_k ∂(|S_k|/B · mean_{S_k})/∂θ` is the
//! gradient of the mean over all `T·B` rows. The sum runs in another order
//! than one process's, so results agree to rounding; with two ranks of one
//! thread each the all-reduce computes exactly `g₀ + g₁`, the sum
//! `DataParallel` forms with two workers, and the parameters agree bit for
//! bit.

mod flat;
#[cfg(feature = "mpi")]
mod mpi;
mod threads;
mod timed;
mod train;
mod world;

pub use flat::{pack_grads, pack_params, unpack_grads, unpack_params};
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
pub use threads::ThreadGroup;
pub use timed::Timed;
pub use world::{
    check_params_equal, check_same_world, compare_worlds, fingerprint, params_fingerprint,
    WorldDescription,
};

use crate::error::{or_panic, Error, ErrorKind};
use crate::parallel::shard_ranges;
use crate::{ParamStore, Real};
use std::ops::Range;

/// A group of `size` processes (ranks `0..size`) that exchange buffers.
/// Every rank must call the same operations in the same order with buffers
/// of the same length; each call returns only when every rank has made it
/// (a collective).
///
/// ```
/// use tapegrad::distributed::{Collective, Solo};
/// let solo = Solo;
/// let mut g = [1.5f32, -2.0];
/// solo.sum_f32(&mut g); // a group of one: the sum is the buffer itself
/// assert_eq!((solo.rank(), solo.size(), g), (0, 1, [1.5, -2.0]));
/// assert_eq!(solo.all_gather_bytes(b"abc"), vec![b"abc".to_vec()]);
/// ```
pub trait Collective {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by the elementwise sum of every rank's
    /// `buf` (an all-reduce).
    fn sum_f32(&self, buf: &mut [f32]);
    /// [`Collective::sum_f32`] for `f64`.
    fn sum_f64(&self, buf: &mut [f64]);
    /// Replaces `buf` on every rank by rank 0's `buf` (a broadcast; the
    /// lengths must already agree).
    fn broadcast_f64(&self, buf: &mut [f64]);
    /// Every rank's `bytes`, in rank order, on every rank (the lengths may
    /// differ).
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>>;
    /// Rank 0's `bytes` on every rank (other ranks' inputs are ignored; the
    /// lengths need not agree).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>);
}

/// The group of one process: every collective is the identity. Training
/// with it is single-process training.
///
/// ```
/// use tapegrad::distributed::{Collective, Solo};
/// let mut b = vec![1u8, 2];
/// Solo.broadcast_bytes(&mut b);
/// assert_eq!(b, vec![1, 2]);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn broadcast_f64(&self, _: &mut [f64]) {}
    fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        vec![bytes.to_vec()]
    }
    fn broadcast_bytes(&self, _: &mut Vec<u8>) {}
}

/// Sums `buf` across the group in `F`'s own precision: `f32` buffers travel
/// as `f32` (half the bytes of `f64`), `f64` as `f64`; other `F` as `f64`.
/// The conversions are exact both ways.
///
/// ```
/// use tapegrad::distributed::{all_reduce_sum, Solo};
/// let mut g = vec![0.25f32, 4.0];
/// all_reduce_sum(&Solo, &mut g);
/// assert_eq!(g, vec![0.25, 4.0]);
/// ```
pub fn all_reduce_sum<F: Real, C: Collective + ?Sized>(comm: &C, buf: &mut [F]) {
    if comm.size() == 1 {
        return;
    }
    if F::NAME == "f32" {
        let mut tmp: Vec<f32> = buf.iter().map(|x| x.to_f32().unwrap_or(f32::NAN)).collect();
        comm.sum_f32(&mut tmp);
        for (x, y) in buf.iter_mut().zip(tmp) {
            *x = F::from_f32(y).unwrap_or_else(F::nan);
        }
    } else {
        let mut tmp: Vec<f64> = buf.iter().map(|x| x.to_f64().unwrap_or(f64::NAN)).collect();
        comm.sum_f64(&mut tmp);
        for (x, y) in buf.iter_mut().zip(tmp) {
            *x = F::from_f64(y).unwrap_or_else(F::nan);
        }
    }
}

/// The streams (batch columns) rank `rank` of `size` trains on: its
/// contiguous, balanced share of `0..batch`, as
/// [`shard_ranges`](crate::parallel::shard_ranges)`(batch, size)` cuts it.
/// The same on every run, so a rank's data depends on its rank only.
///
/// # Panics
/// If `size` is 0, `rank ≥ size`, or `size > batch` (a rank would have no
/// stream).
///
/// ```
/// use tapegrad::distributed::rank_streams;
/// assert_eq!(rank_streams(32, 0, 2), 0..16);
/// assert_eq!(rank_streams(32, 1, 2), 16..32);
/// assert_eq!(rank_streams(10, 2, 3), 7..10);
/// ```
#[track_caller]
pub fn rank_streams(batch: usize, rank: usize, size: usize) -> Range<usize> {
    if size == 0 || rank >= size || size > batch {
        or_panic::<()>(Err(Error::new(
            ErrorKind::InvalidArgument,
            "rank_streams",
            format!("rank {rank} of {size} ranks for a batch of {batch} streams: every rank needs at least one stream"),
        )));
    }
    shard_ranges(batch, size)[rank].clone()
}

/// Makes every rank's parameters rank 0's, bit for bit (one broadcast of
/// all of them as `f64`, exact for `f32` and `f64`). The stores must hold
/// the same names and shapes ([`check_same_world`] first).
///
/// ```
/// use tapegrad::distributed::{broadcast_params, Solo};
/// use tapegrad::{ParamStore, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let w = store.insert("w", Tensor::ones(&[2]));
/// broadcast_params(&Solo, &mut store);
/// assert_eq!(store.get(w).data(), &[1.0, 1.0]);
/// ```
pub fn broadcast_params<F: Real, C: Collective + ?Sized>(comm: &C, store: &mut ParamStore<F>) {
    if comm.size() == 1 {
        return;
    }
    let mut buf = pack_params(store);
    comm.broadcast_f64(&mut buf);
    unpack_params(store, &buf);
}
