//! Peak heap of checkpointed BPTT grows like √T (f64 LSTM language model,
//! B = 1, I = 8, H = 64, 8 classes: `tests/common/long_lm.rs`), measured
//! with a counting global allocator in one `#[test]` (so no other test
//! thread allocates during a measurement).
//!
//! The peak of one whole-sequence gradient is taken above the live level
//! before it, for T = 1 and T = 256, 1024, 4096, user-code segments of
//! ⌈√T⌉ steps (`Tape::checkpoint` over the LSTM, the readout and the loss).
//! A warm-up run first allocates what stays allocated once used (the GEMM
//! kernels' thread-local packing buffers). What a step holds whatever T is — the parameters' copies on the tape and
//! their gradients — is the T = 1 peak; the exponent fitted to
//! (peak − T=1 peak) against T must lie in [0.4, 0.6], and full BPTT's in
//! [0.8, 1.2] (the same measurement sees linear growth where there is
//! some). The big-T sweep (T up to 100,000, H = 256) is
//! `examples/bptt_memory.rs sweep`; its numbers are in docs/reliability.md.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

#[path = "common/long_lm.rs"]
mod long_lm;
use long_lm::{LongLm, Mode};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// plain atomics updated only after a successful allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The peak heap of `f` above the live level at its start, in bytes.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst).saturating_sub(base)
}

/// The peak of one gradient of `steps` steps computed as `mode(steps)`.
fn peak(steps: usize, mode: fn(usize) -> Mode) -> usize {
    let lm = LongLm::<f64>::new(1, 8, 64, 8, steps);
    peak_of(|| drop(lm.gradient(mode(steps))))
}

/// Least-squares slope of ln y against ln x.
fn exponent(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().map(|&(x, y)| (x.ln(), y.ln())).unzip();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

#[test]
fn checkpointed_peak_grows_like_the_square_root_of_t() {
    let segments: fn(usize) -> Mode = |t| Mode::Segments((t as f64).sqrt().ceil() as usize);
    let full: fn(usize) -> Mode = |_| Mode::Full;
    // Warm-up: the GEMM kernels' thread-local packing buffers and the
    // thread pool are allocated once, on first use, and stay.
    peak(256, segments);
    peak(256, full);
    for (name, mode, lo, hi) in [
        ("checkpointed", segments, 0.4, 0.6),
        ("full", full, 0.8, 1.2),
    ] {
        let base = peak(1, mode);
        let points: Vec<(f64, f64)> = [256, 1024, 4096]
            .iter()
            .map(|&t| (t as f64, (peak(t, mode) - base) as f64))
            .collect();
        let e = exponent(&points);
        eprintln!("{name}: T = 1 peak {base} B, above it {points:?}, exponent {e:.3}");
        assert!(
            (lo..=hi).contains(&e),
            "{name}: exponent {e:.3} outside [{lo}, {hi}] ({points:?})"
        );
    }
}
