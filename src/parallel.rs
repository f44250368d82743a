//! Data-parallel training over batch shards: one tape per worker thread,
//! parameter gradients summed.
//!
//! A [`Tape`] records through a `RefCell`, so it belongs to one thread at a
//! time (`Send`, not `Sync`). To put several cores on one training step,
//! cut the batch into shards ([`shard_ranges`], then [`shard_columns`] and
//! [`shard_targets`] for time-major data), let each worker record and
//! differentiate its shard's loss on its own tape, and add the parameter
//! gradients up ([`Grads::accumulate_params`]). Differentiation is linear,
//! so when the loss is a **sum** over the batch ([`Reduction::Sum`]),
//!
//! ```text
//! ∂/∂θ Σ_b L_b  =  Σ_shards ∂/∂θ Σ_{b ∈ shard} L_b
//! ```
//!
//! and the summed shard gradients are the full-batch gradient, up to the
//! order of floating-point additions. For a **mean** loss each shard's mean
//! must be weighted by its share of the batch, `|shard| / B`
//! ([`mean_weight`]).
//!
//! [`DataParallel`] does the bookkeeping: it keeps one tape per worker
//! across steps (so every tape's buffer pool stays warm: a step that
//! replays the same shapes takes its values' and gradients' buffers from
//! the pools, as with one reused tape), runs worker 0 on
//! the calling thread and the others on scoped threads, limits each
//! worker's GEMMs to one thread while it runs (W workers already occupy W
//! cores; see [`crate::tensor::gemm::limit_threads_here`]), sums the
//! gradients into worker 0's set and recycles the other workers' buffers.
//!
//! It lives in its own module because it is the only part of the crate that
//! starts threads; the tape itself stays single-threaded.
//!
//! When it pays: each worker's products have B/W rows instead of B, so the
//! per-step work must stay large enough to amortise a thread start (tens of
//! µs) and the serial gradient sum (one pass over the parameters) — a batch
//! of dozens of sequences over tens of steps is plenty; a batch of one
//! cannot be sharded at all (use the GEMM threads instead, see
//! [`crate::set_num_threads`]).
//!
//! [`Reduction::Sum`]: crate::Reduction::Sum

use crate::error::{fail, or_panic, Error, ErrorKind, Result};
use crate::tensor::gemm::limit_threads_here;
use crate::{Grads, Real, Tape, Tensor};
use std::ops::Range;

/// One tape per worker, reused across training steps, and the step that
/// runs them in parallel and sums their parameter gradients.
///
/// A step (see [`DataParallel::step`]) calls `f(k, tape_k)` for every
/// worker `k`; `f` records worker `k`'s shard of the batch on `tape_k`,
/// calls `backward()` and returns `(anything, grads)`. The step returns the
/// `anything`s in worker order and worker 0's gradients with every other
/// worker's parameter gradients added in. After the optimizer has used
/// them, hand them back with [`DataParallel::reset_with`] so their buffers
/// are reused.
///
/// ```
/// use tapegrad::layers::{Linear, Lstm, RecurrentConfig};
/// use tapegrad::parallel::{shard_columns, shard_ranges, shard_targets, DataParallel};
/// use tapegrad::{ParamStore, Reduction, Tensor};
///
/// let (t, b, i, h, o) = (4, 5, 3, 6, 2);
/// let mut store = ParamStore::<f64>::new();
/// let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(i, h), 1);
/// let head = Linear::new(&mut store, "decoder", h, o, true, 2);
/// let x = Tensor::randn(&[t, b, i], 3);                   // time-major [T, B, I]
/// let y: Vec<usize> = (0..t * b).map(|k| k % o).collect(); // [T·B]
///
/// let mut dp = DataParallel::new(2);
/// let shards = shard_ranges(b, dp.workers());             // [0..3, 3..5]
/// let xs: Vec<_> = shards.iter().map(|r| shard_columns(&x, r.clone())).collect();
/// let ys: Vec<_> = shards.iter().map(|r| shard_targets(&y, b, r.clone())).collect();
/// for _step in 0..2 {
///     let (losses, grads) = dp.step(|k, tape| {
///         let out = lstm.forward(tape, &store, tape.constant(xs[k].clone()), None);
///         let logits = head.forward(tape, &store, out.stacked_rows());
///         let loss = logits.cross_entropy(&ys[k], Reduction::Sum); // a sum: shards add up
///         (loss.item(), loss.backward())
///     });
///     let total: f64 = losses.iter().sum();                // the full-batch loss
///     assert!(total.is_finite());
///     assert_eq!(grads.params().count(), store.len());
///     // … an optimizer step with `grads` here …
///     dp.reset_with(grads);
/// }
/// ```
pub struct DataParallel<F: Real> {
    tapes: Vec<Tape<F>>,
}

impl<F: Real> std::fmt::Debug for DataParallel<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("dtype", &F::NAME)
            .field("workers", &self.tapes.len())
            .finish()
    }
}

impl<F: Real> DataParallel<F> {
    /// `workers` workers, each with its own (empty) tape. One worker runs
    /// `f` on the calling thread with the GEMM threads unchanged, so
    /// `DataParallel::new(1)` is the serial step.
    ///
    /// # Panics
    /// If `workers` is 0; see [`DataParallel::try_new`].
    ///
    /// ```
    /// let dp = tapegrad::parallel::DataParallel::<f32>::new(2);
    /// assert_eq!(dp.workers(), 2);
    /// ```
    #[track_caller]
    pub fn new(workers: usize) -> Self {
        or_panic(Self::try_new(workers))
    }

    /// [`DataParallel::new`], returning an error for 0 workers.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if `workers` is 0.
    ///
    /// ```
    /// use tapegrad::{parallel::DataParallel, ErrorKind};
    /// let err = DataParallel::<f64>::try_new(0).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// assert!(err.to_string().contains("DataParallel::new"));
    /// ```
    pub fn try_new(workers: usize) -> Result<Self> {
        if workers == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "DataParallel::new",
                "0 workers: a data-parallel step needs at least one worker",
            ));
        }
        Ok(DataParallel {
            tapes: (0..workers).map(|_| Tape::new()).collect(),
        })
    }

    /// The number of workers (and tapes).
    ///
    /// ```
    /// assert_eq!(tapegrad::parallel::DataParallel::<f32>::new(3).workers(), 3);
    /// ```
    pub fn workers(&self) -> usize {
        self.tapes.len()
    }

    /// The workers' tapes, in worker order: for settings that outlive a
    /// reset ([`Tape::set_anomaly_detection`]) and for memory accounting
    /// ([`Tape::held_elements`]).
    ///
    /// ```
    /// let dp = tapegrad::parallel::DataParallel::<f32>::new(2);
    /// for tape in dp.tapes() {
    ///     tape.set_anomaly_detection(true);
    /// }
    /// assert_eq!(dp.tapes().iter().map(|t| t.held_elements()).sum::<usize>(), 0);
    /// ```
    pub fn tapes(&self) -> &[Tape<F>] {
        &self.tapes
    }

    /// One data-parallel step: runs `f(k, tape_k)` for every worker `k` at
    /// once — worker 0 on the calling thread, the others on scoped threads
    /// — and returns their results in worker order together with the sum
    /// of their parameter gradients.
    ///
    /// `f` must record on the tape it is given and return the [`Grads`] of
    /// a `backward()` on that tape. The sum is formed in worker 0's set
    /// (`g₀ += g₁; g₀ += g₂; …`, [`Grads::accumulate_params`]), so the
    /// returned set's parameter gradients are `Σ_k g_k` while its var
    /// gradients (if any) stay worker 0's own. Workers 1… are reset with
    /// their gradients' buffers right away; worker 0's tape is reset by
    /// [`DataParallel::reset_with`] (or, if that was not called, at the
    /// start of the next step, and the buffers of the dropped gradients are
    /// then not reused).
    ///
    /// With two or more workers, each worker's GEMMs run on one thread
    /// while `f` runs ([`limit_threads_here`]); the calling thread's limit
    /// is restored afterwards. With one worker nothing changes.
    ///
    /// # Panics
    /// If `f` panics in any worker, after all workers have finished, with
    /// that worker's panic payload (the first failing worker in index
    /// order; worker 0's takes precedence). The tapes stay usable: the next
    /// step resets them. Also if the workers' gradient sets do not have the
    /// same parameters (shards of different models).
    ///
    /// ```
    /// use tapegrad::{parallel::DataParallel, ParamStore, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let w = store.insert("w", Tensor::scalar(3.0));
    /// let data = [1.0, 2.0, 4.0];
    /// let mut dp = DataParallel::new(3);
    /// // L = Σ_k (w·x_k)², one x per worker: dL/dw = Σ_k 2·w·x_k² = 2·3·21
    /// let (losses, g) = dp.step(|k, tape| {
    ///     let loss = (tape.param(&store, w) * data[k]).powf(2.0);
    ///     (loss.item(), loss.backward())
    /// });
    /// assert_eq!(losses, vec![9.0, 36.0, 144.0]);
    /// assert_eq!(g.param(w).unwrap().item(), 126.0);
    /// dp.reset_with(g);
    /// ```
    pub fn step<R, G>(&mut self, f: G) -> (Vec<R>, Grads<F>)
    where
        R: Send,
        G: Fn(usize, &Tape<F>) -> (R, Grads<F>) + Sync,
    {
        for tape in &mut self.tapes {
            if !tape.is_empty() {
                tape.reset();
            }
        }
        let mut outs = run_workers(&mut self.tapes, |k, tape| f(k, &*tape)).into_iter();
        let (r0, mut g0) = outs.next().expect("a DataParallel has at least one worker");
        let mut results = Vec::with_capacity(self.tapes.len());
        results.push(r0);
        for ((r, g), tape) in outs.zip(self.tapes[1..].iter_mut()) {
            g0.accumulate_params(&g);
            tape.reset_with(g);
            results.push(r);
        }
        (results, g0)
    }

    /// Resets every worker's tape, keeping the gradients of the last
    /// [`DataParallel::step`] valid for their parameters: the tapes let go
    /// of the parameters they bound (the store's own buffers, shared), so
    /// an optimizer update that follows writes them in place instead of
    /// copying each one first. Hand the gradients back afterwards with
    /// [`DataParallel::reset_with`].
    ///
    /// ```
    /// use tapegrad::{parallel::DataParallel, ParamStore, Tensor};
    /// let mut store = ParamStore::<f32>::new();
    /// let w = store.insert("w", Tensor::ones(&[4]));
    /// let mut dp = DataParallel::<f32>::new(2);
    /// let (_, g) = dp.step(|_, tape| ((), tape.param(&store, w).sum().backward()));
    /// dp.reset();
    /// let at = store.get(w).data().as_ptr();
    /// let dw = g.param(w).unwrap().data().to_vec();
    /// for (p, d) in store.get_mut(w).data_mut().iter_mut().zip(&dw) {
    ///     *p -= 0.5 * d; // in place: no tape holds w any more
    /// }
    /// assert_eq!(store.get(w).data().as_ptr(), at);
    /// assert_eq!(store.get(w).data(), &[0.0; 4]);
    /// dp.reset_with(g);
    /// ```
    pub fn reset(&mut self) {
        for tape in &mut self.tapes {
            tape.reset();
        }
    }

    /// Hands the gradients of the last [`DataParallel::step`] back to
    /// worker 0's tape and resets it, so the next step reuses their buffers
    /// ([`Tape::reset_with`]).
    ///
    /// ```
    /// use tapegrad::{parallel::DataParallel, Tensor};
    /// let mut dp = DataParallel::<f32>::new(2);
    /// let (_, g) = dp.step(|_, tape| ((), tape.var(Tensor::ones(&[8])).sum().backward()));
    /// dp.reset_with(g);
    /// assert!(dp.tapes().iter().all(|t| t.is_empty()));
    /// ```
    pub fn reset_with(&mut self, grads: Grads<F>) {
        self.tapes[0].reset_with(grads);
    }
}

/// Runs `f(k, &mut items[k])` for every item, item 0 on the calling thread
/// and the others on scoped threads, and returns the results in order: the
/// thread plumbing of [`DataParallel::step`], for any per-worker state (the
/// benchmark runs its hand-written BPTT shards with it).
///
/// With two or more items each call's GEMMs run on one thread
/// ([`limit_threads_here`]); with one, `f` runs as a plain call.
///
/// # Panics
/// If `f` panics for any item, after all have finished, with that call's
/// own payload (item 0's first, then the lowest failing index).
///
/// ```
/// let mut sums = [0u64, 0, 0];
/// let out = tapegrad::parallel::run_workers(&mut sums, |k, s| {
///     *s = (0..=k as u64 * 10).sum();
///     k * 2
/// });
/// assert_eq!(out, vec![0, 2, 4]);
/// assert_eq!(sums, [0, 55, 210]);
/// ```
pub fn run_workers<W, R, G>(items: &mut [W], f: G) -> Vec<R>
where
    W: Send,
    R: Send,
    G: Fn(usize, &mut W) -> R + Sync,
{
    let Some((first, rest)) = items.split_first_mut() else {
        return Vec::new();
    };
    if rest.is_empty() {
        return vec![f(0, first)];
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = rest
            .iter_mut()
            .enumerate()
            .map(|(k, item)| {
                s.spawn(move || {
                    let _one = limit_threads_here(1);
                    f(k + 1, item)
                })
            })
            .collect();
        // If item 0 panics, `scope` joins the others and then resumes its
        // panic.
        let r0 = {
            let _one = limit_threads_here(1);
            f(0, first)
        };
        let mut out = Vec::with_capacity(handles.len() + 1);
        out.push(r0);
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                // Re-raise with the worker's own payload (message).
                Err(payload) => std::panic::resume_unwind(payload),
            }
        }
        out
    })
}

/// Cuts a batch of `batch` sequences into at most `workers` contiguous,
/// balanced shards: `min(workers, batch)` ranges that cover `0..batch` in
/// order, exactly once, whose lengths differ by at most one (the first
/// `batch % n` shards are the longer ones). No range is empty; so when
/// `batch < workers` there are only `batch` shards of one sequence each
/// (give those to the first `batch` workers, or use a
/// [`DataParallel`] with that many workers), and `batch = 0` gives none.
///
/// # Panics
/// If `workers` is 0.
///
/// ```
/// use tapegrad::parallel::shard_ranges;
/// assert_eq!(shard_ranges(10, 3), vec![0..4, 4..7, 7..10]);
/// assert_eq!(shard_ranges(2, 4), vec![0..1, 1..2]);
/// assert!(shard_ranges(0, 2).is_empty());
/// ```
#[track_caller]
pub fn shard_ranges(batch: usize, workers: usize) -> Vec<Range<usize>> {
    if workers == 0 {
        fail(Error::new(
            ErrorKind::InvalidArgument,
            "shard_ranges",
            format!("0 workers for a batch of {batch}"),
        ));
    }
    let n = workers.min(batch);
    if n == 0 {
        return Vec::new();
    }
    let (q, r) = (batch / n, batch % n);
    let mut lo = 0;
    (0..n)
        .map(|k| {
            let len = q + usize::from(k < r);
            let range = lo..lo + len;
            lo += len;
            range
        })
        .collect()
}

/// Copies batch columns `cols` of `rows` consecutive blocks of `batch`
/// items of `inner` elements each.
fn copy_columns<T: Copy>(
    data: &[T],
    rows: usize,
    batch: usize,
    inner: usize,
    cols: &Range<usize>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(rows * cols.len() * inner);
    for t in 0..rows {
        let base = t * batch;
        out.extend_from_slice(&data[(base + cols.start) * inner..(base + cols.end) * inner]);
    }
    out
}

#[track_caller]
fn check_cols(op: &str, cols: &Range<usize>, batch: usize) {
    if cols.start > cols.end || cols.end > batch {
        fail(Error::shape(
            op,
            format!("batch columns {cols:?} do not lie in 0..{batch}"),
        ));
    }
}

/// The batch columns `cols` of a time-major tensor: `x` is `[T, B, …]`, the
/// result is `[T, cols.len(), …]` with `out[t, j, …] = x[t, cols.start + j, …]`
/// (a copy; one contiguous block per step).
///
/// # Panics
/// If `x` has rank < 2 or `cols` does not lie in `0..B`.
///
/// ```
/// use tapegrad::{parallel::shard_columns, Tensor};
/// // T = 2 steps, B = 3 sequences, 1 feature: x[t, b] = 10·t + b
/// let x = Tensor::<f32>::from_vec(vec![0., 1., 2., 10., 11., 12.], &[2, 3, 1]).unwrap();
/// let s = shard_columns(&x, 1..3);
/// assert_eq!(s.shape(), &[2, 2, 1]);
/// assert_eq!(s.data(), &[1., 2., 11., 12.]);
/// ```
#[track_caller]
pub fn shard_columns<F: Real>(x: &Tensor<F>, cols: Range<usize>) -> Tensor<F> {
    let shape = x.shape();
    if shape.len() < 2 {
        fail(Error::shape(
            "shard_columns",
            format!("x is {shape:?}; expected a time-major [T, B, …] tensor (rank ≥ 2)"),
        ));
    }
    let (steps, batch) = (shape[0], shape[1]);
    check_cols("shard_columns", &cols, batch);
    let inner: usize = shape[2..].iter().product();
    let data = copy_columns(x.data(), steps, batch, inner, &cols);
    let mut out_shape = shape.to_vec();
    out_shape[1] = cols.len();
    or_panic(Tensor::from_vec(data, &out_shape))
}

/// The batch columns `cols` of time-major per-row data of length `T·batch`
/// (class targets, masks, weights): row `t·batch + b` becomes row
/// `t·cols.len() + (b − cols.start)` for `b` in `cols`, matching the rows
/// of `shard_columns(x, cols)` after `stacked_rows()`.
///
/// # Panics
/// If `batch` is 0 and `targets` is not empty, if `targets.len()` is not a
/// multiple of `batch`, or if `cols` does not lie in `0..batch`.
///
/// ```
/// use tapegrad::parallel::shard_targets;
/// // T = 2, B = 3: rows are (t=0: 0 1 2), (t=1: 3 4 5)
/// assert_eq!(shard_targets(&[0, 1, 2, 3, 4, 5], 3, 1..3), vec![1, 2, 4, 5]);
/// ```
#[track_caller]
pub fn shard_targets<T: Copy>(targets: &[T], batch: usize, cols: Range<usize>) -> Vec<T> {
    // (a length is a multiple of 0 only if it is 0)
    if !targets.len().is_multiple_of(batch) {
        fail(Error::shape(
            "shard_targets",
            format!(
                "{} targets are not T·B for a batch of {batch}",
                targets.len()
            ),
        ));
    }
    check_cols("shard_targets", &cols, batch);
    if batch == 0 {
        return Vec::new();
    }
    copy_columns(targets, targets.len() / batch, batch, 1, &cols)
}

/// The weight `|cols| / batch` that makes shard **means** add up to the
/// full-batch mean: if every shard's loss uses [`Reduction::Mean`] over its
/// own `T·|shard|` rows, then
///
/// ```text
/// mean over T·B rows  =  Σ_shards (|shard| / B) · mean over the shard's rows
/// ```
///
/// so multiply each shard's loss by this weight before `backward()` and the
/// summed gradients are those of the full-batch mean. (With
/// [`Reduction::Sum`] no weight is needed.)
///
/// # Panics
/// If `batch` is 0.
///
/// ```
/// use tapegrad::parallel::mean_weight;
/// assert_eq!(mean_weight::<f64>(&(0..3), 4), 0.75);
/// assert_eq!(mean_weight::<f64>(&(3..4), 4), 0.25);
/// ```
///
/// [`Reduction::Mean`]: crate::Reduction::Mean
/// [`Reduction::Sum`]: crate::Reduction::Sum
#[track_caller]
pub fn mean_weight<F: Real>(cols: &Range<usize>, batch: usize) -> F {
    if batch == 0 {
        fail(Error::new(
            ErrorKind::InvalidArgument,
            "mean_weight",
            "a batch of 0 has no mean",
        ));
    }
    F::of(cols.len() as f64 / batch as f64)
}
