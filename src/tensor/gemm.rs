//! Matrix multiplication: strided matrix views, the `gemm`-crate kernels for
//! `f32`/`f64`, the generic fallback, and the thread policy.
//!
//! This is the only module with `unsafe` code. The `gemm` crate (chosen by
//! measurement, see `docs/design.md`) and, for column-major right operands
//! with few left rows, `matrixmultiply` (both expose only a raw-pointer API)
//! are called through [`fast_f32`]/[`fast_f64`], which first check, in safe
//! code, that every index the kernel can touch lies inside the borrowed
//! slices. Transposes are strides: `aᵀ` is the same slice with
//! row and column strides swapped, so backward never materialises one.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A read-only m×n matrix view: element (i, j) is `data[i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, F> {
    /// The backing slice.
    pub data: &'a [F],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// A writable row-major m×n matrix (row stride `cols`, column stride 1).
#[derive(Debug)]
pub struct MatMut<'a, F> {
    /// The backing slice, exactly `rows * cols` long.
    pub data: &'a mut [F],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
}

impl<'a, F> MatRef<'a, F> {
    /// A row-major view of `data` as `rows × cols`.
    pub fn row_major(data: &'a [F], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, as a view (strides swapped; no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Whether every index the view can address lies inside `data`.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .and_then(|r| (self.cols - 1).checked_mul(self.cs).map(|c| (r, c)))
            .and_then(|(r, c)| r.checked_add(c));
        matches!(last, Some(i) if i < self.data.len())
    }
}

impl<'a, F> MatMut<'a, F> {
    /// A row-major view of `data` as `rows × cols`.
    pub fn row_major(data: &'a mut [F], rows: usize, cols: usize) -> Self {
        MatMut { data, rows, cols }
    }
}

/// Checks the operand shapes of `c = a·b`; panics on a caller bug (the
/// public ops check shapes with proper messages before getting here).
fn check<F>(c: &MatMut<'_, F>, a: &MatRef<'_, F>, b: &MatRef<'_, F>) {
    assert!(
        a.rows == c.rows && b.cols == c.cols && a.cols == b.rows,
        "gemm: [{}×{}]·[{}×{}] into [{}×{}]",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        c.rows,
        c.cols
    );
    assert!(
        a.in_bounds() && b.in_bounds() && c.data.len() == c.rows * c.cols,
        "gemm: a view reaches outside its slice"
    );
}

static MAX_THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's override of [`MAX_THREADS`] (0 = none), set by
    /// [`limit_threads_here`] for as long as its guard lives.
    static LOCAL_MAX_THREADS: Cell<usize> = const { Cell::new(0) };
}

/// Sets how many threads a large GEMM may use (1 = always single-threaded).
/// The default is the machine's available parallelism. A thread that holds
/// a [`limit_threads_here`] guard keeps its own limit regardless.
///
/// ```
/// tapegrad::set_num_threads(1);
/// assert_eq!(tapegrad::num_threads(), 1);
/// tapegrad::set_num_threads(0); // back to the default
/// ```
pub fn set_num_threads(n: usize) {
    MAX_THREADS.store(n, Ordering::Relaxed);
}

/// The number of threads a large GEMM called on this thread may use: the
/// limit of a live [`limit_threads_here`] guard on this thread if there is
/// one, otherwise the process-wide [`set_num_threads`] value.
pub fn num_threads() -> usize {
    match LOCAL_MAX_THREADS.with(Cell::get) {
        0 => match MAX_THREADS.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        n => n,
    }
}

/// Limits the GEMMs called on the current thread to `n` threads until the
/// returned guard is dropped; other threads, and the process-wide
/// [`set_num_threads`] value, are unaffected. `n = 0` removes any limit of
/// an outer guard (the process-wide value applies again).
///
/// Why: data-parallel training ([`crate::parallel::DataParallel`]) already
/// runs one worker per core; if each worker's large GEMMs also split across
/// all cores, W workers × C GEMM threads oversubscribe the machine. Each
/// worker therefore runs under `limit_threads_here(1)`.
///
/// Guards nest: dropping one restores the limit that was in force when it
/// was made. The guard is neither `Send` nor `Sync` (it belongs to the
/// thread whose limit it set).
///
/// ```
/// use tapegrad::tensor::gemm::limit_threads_here;
/// tapegrad::set_num_threads(4);
/// {
///     let _one = limit_threads_here(1);
///     assert_eq!(tapegrad::num_threads(), 1);
///     // another thread still sees the process-wide value
///     assert_eq!(std::thread::spawn(tapegrad::num_threads).join().unwrap(), 4);
/// }
/// assert_eq!(tapegrad::num_threads(), 4);
/// tapegrad::set_num_threads(0);
/// ```
pub fn limit_threads_here(n: usize) -> ThreadLimitGuard {
    let prev = LOCAL_MAX_THREADS.with(|c| c.replace(n));
    ThreadLimitGuard {
        prev,
        _this_thread: PhantomData,
    }
}

/// Restores the current thread's previous GEMM thread limit when dropped
/// (see [`limit_threads_here`]).
#[must_use = "the limit is lifted when this guard is dropped"]
#[derive(Debug)]
pub struct ThreadLimitGuard {
    prev: usize,
    /// `*const ()` makes the guard `!Send`: it must drop on its own thread.
    _this_thread: PhantomData<*const ()>,
}

impl Drop for ThreadLimitGuard {
    fn drop(&mut self) {
        LOCAL_MAX_THREADS.with(|c| c.set(self.prev));
    }
}

/// Below this many multiply-adds (8M) a GEMM runs on one thread: handing
/// work to the pool costs more than it saves. Measured (docs/performance.md):
/// with 2¹⁹ the M configuration ran 1.4× *slower* on 2 threads; the per-step
/// products of L (64×512×2048, 67M) still halve on 2 threads.
const PARALLEL_MIN_MACS: usize = 1 << 23;

fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    let threads = num_threads();
    if threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_MACS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// Fewest rows of a per-step product `h·Wᵀ` for which reordering W to a
/// row-major Wᵀ once per sequence pays (the recurrent layers and the
/// hand-written reference both follow it): with fewer rows the products
/// are matrix–vector-like, a column-major Wᵀ is read as fast, and the
/// transposes (two in forward, two in backward per sequence) cost more
/// than they save — 17% of the B = 1 LSTM step when they were always on.
pub const REORDER_MIN_ROWS: usize = 8;

/// Whether `matrixmultiply` should take this product: a column-major right
/// operand (`x·Wᵀ` with W stored [n×k] row-major) with a few rows on the
/// left, single-threaded. There the `gemm` crate's packing of the right
/// operand dominates and runs 2–3× slower than `matrixmultiply`'s; for
/// row-major right operands, for m < 8 (matrix–vector) and for small
/// products `gemm` is faster (measurements in docs/design.md).
fn prefer_matrixmultiply(m: usize, n: usize, k: usize, b_rs: usize, b_cs: usize) -> bool {
    b_rs == 1 && b_cs > 1 && m >= 8 && k.saturating_mul(n) >= 1 << 18
}

macro_rules! fast {
    ($name:ident, $t:ty, $mm:ident) => {
        /// `c ← a·b` or `c ← c + a·b` with the `gemm` crate's kernels (or
        /// `matrixmultiply`'s where its packing is faster, see
        /// `prefer_matrixmultiply`).
        pub fn $name(c: MatMut<'_, $t>, a: MatRef<'_, $t>, b: MatRef<'_, $t>, accumulate: bool) {
            check(&c, &a, &b);
            let (m, n, k) = (c.rows, c.cols, a.cols);
            if m == 0 || n == 0 {
                return;
            }
            if k == 0 {
                if !accumulate {
                    c.data.fill(0.0);
                }
                return;
            }
            let par = parallelism(m, n, k);
            if matches!(par, gemm::Parallelism::None) && prefer_matrixmultiply(m, n, k, b.rs, b.cs)
            {
                // SAFETY: as below; matrixmultiply reads a[i*rs + j*cs] for
                // i < m, j < k (and likewise b, c) exactly as `check` proved
                // in bounds, and c does not overlap a or b.
                #[allow(unsafe_code)]
                unsafe {
                    matrixmultiply::$mm(
                        m,
                        k,
                        n,
                        1.0,
                        a.data.as_ptr(),
                        a.rs as isize,
                        a.cs as isize,
                        b.data.as_ptr(),
                        b.rs as isize,
                        b.cs as isize,
                        if accumulate { 1.0 } else { 0.0 },
                        c.data.as_mut_ptr(),
                        n as isize,
                        1,
                    );
                }
                return;
            }
            // SAFETY: `check` proved that every index (i*rs + j*cs) the kernel
            // reads from `a` and `b` is inside those slices and that `c` holds
            // exactly m×n elements with row stride n; `c` is borrowed mutably
            // and cannot overlap `a` or `b`. The strides fit in isize because
            // the slices they index exist.
            #[allow(unsafe_code)]
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.data.as_mut_ptr(),
                    1,
                    n as isize,
                    accumulate,
                    a.data.as_ptr(),
                    a.cs as isize,
                    a.rs as isize,
                    b.data.as_ptr(),
                    b.cs as isize,
                    b.rs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
    };
}

fast!(fast_f32, f32, sgemm);
fast!(fast_f64, f64, dgemm);

/// The generic fallback: a plain i-k-j loop, correct for any `Float`.
pub fn naive<F: num_traits::Float>(
    c: MatMut<'_, F>,
    a: MatRef<'_, F>,
    b: MatRef<'_, F>,
    accumulate: bool,
) {
    check(&c, &a, &b);
    let n = c.cols;
    if !accumulate {
        c.data.fill(F::zero());
    }
    for i in 0..c.rows {
        let row = &mut c.data[i * n..(i + 1) * n];
        for p in 0..a.cols {
            let aip = a.data[i * a.rs + p * a.cs];
            for (j, cij) in row.iter_mut().enumerate() {
                *cij = *cij + aip * b.data[p * b.rs + j * b.cs];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_naive_with_transposes() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
        let at: Vec<f64> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        for &acc in &[false, true] {
            let mut c1 = vec![1.0; m * n];
            let mut c2 = vec![1.0; m * n];
            naive(
                MatMut::row_major(&mut c1, m, n),
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                acc,
            );
            fast_f64(
                MatMut::row_major(&mut c2, m, n),
                MatRef::row_major(&at, k, m).t(),
                MatRef::row_major(&b, k, n),
                acc,
            );
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x - y).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn matrixmultiply_path_matches_naive() {
        // m ≥ 8, k·n ≥ 2^18, column-major right operand: the matrixmultiply path.
        let (m, k, n) = (9, 512, 512);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.013).sin()).collect();
        let w: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.007).cos()).collect();
        assert!(prefer_matrixmultiply(m, n, k, 1, k));
        for &acc in &[false, true] {
            let mut c1 = vec![0.5; m * n];
            let mut c2 = vec![0.5; m * n];
            let wt = MatRef::row_major(&w, n, k).t();
            naive(
                MatMut::row_major(&mut c1, m, n),
                MatRef::row_major(&a, m, k),
                wt,
                acc,
            );
            set_num_threads(1);
            fast_f64(
                MatMut::row_major(&mut c2, m, n),
                MatRef::row_major(&a, m, k),
                wt,
                acc,
            );
            set_num_threads(0);
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x - y).abs() < 1e-9, "{x} vs {y}");
            }
        }
    }

    #[test]
    fn thread_limit_guards_nest_and_restore() {
        // Reads this thread's override directly: other tests may change the
        // process-wide value concurrently.
        let local = || LOCAL_MAX_THREADS.with(Cell::get);
        assert_eq!(local(), 0);
        {
            let _outer = limit_threads_here(1);
            assert_eq!(num_threads(), 1);
            {
                let _inner = limit_threads_here(3);
                assert_eq!(num_threads(), 3);
                let _lifted = limit_threads_here(0);
                assert_eq!(local(), 0);
            }
            assert_eq!(num_threads(), 1);
            // A product big enough to go parallel stays on one thread.
            assert!(matches!(
                parallelism(1024, 1024, 1024),
                gemm::Parallelism::None
            ));
        }
        assert_eq!(local(), 0);
    }

    #[test]
    #[should_panic(expected = "outside its slice")]
    fn out_of_bounds_view_is_refused() {
        let a = [0.0f32; 5];
        let b = [0.0f32; 4];
        let mut c = [0.0f32; 4];
        fast_f32(
            MatMut::row_major(&mut c, 2, 2),
            MatRef::row_major(&a, 2, 2).t().t().t().t(), // fine
            MatRef {
                data: &b,
                rows: 2,
                cols: 2,
                rs: 3,
                cs: 1,
            },
            false,
        );
    }
}
