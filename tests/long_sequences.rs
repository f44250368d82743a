//! Long sequences: peak heap of truncated BPTT does not grow with T.
//!
//! A counting global allocator (live bytes and a high-water mark) measures
//! the peak heap of whole training runs of one LSTM (B = 1, I = 16, H = 64,
//! f64) with a linear readout and a cross-entropy loss at every step:
//!
//! - plain BPTT over T = 100 (one window);
//! - truncated BPTT(100; 100) over T = 1,000 and T = 10,000, every window on
//!   the same tape, reset between windows, the state carried as values
//!   (`to_tensors` → `bind`), inputs bound with `constant_from_slice` and an
//!   Adam step per window;
//! - full BPTT over T = 10,000 on one tape with one backward pass.
//!
//! Every measured section runs inside the one `#[test]` below, one after
//! the other, so no other test thread of this binary allocates during a
//! measurement. Each peak is taken above the live level at the start of its
//! section; the model, the input sequence and the labels are built before
//! the section (they are the data, not the training's memory).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tapegrad::layers::tbptt::Tbptt;
use tapegrad::layers::{Linear, Lstm, RecurrentConfig, State};
use tapegrad::optim::{Adam, Optimizer};
use tapegrad::{ParamStore, Reduction, Tape, Tensor, Var};

// ----- counting allocator ---------------------------------------------------

/// `System`, counting the live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

impl Counting {
    fn grew(by: usize) {
        let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
    fn shrank(by: usize) {
        LIVE.fetch_sub(by, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// plain atomics updated only after a successful allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Counting::grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        Counting::shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                Counting::grew(new_size - layout.size());
            } else {
                Counting::shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result and the peak heap above the live level
/// at its start, in bytes.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let r = f();
    let peak = PEAK.load(Ordering::SeqCst);
    (r, peak.saturating_sub(base))
}

// ----- the model --------------------------------------------------------------

const B: usize = 1;
const I: usize = 16;
const H: usize = 64;
const CLASSES: usize = 8;
const K: usize = 100;

struct Model {
    store: ParamStore<f64>,
    lstm: Lstm,
    head: Linear,
}

fn model() -> Model {
    let mut store = ParamStore::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(I, H), 11);
    let head = Linear::new(&mut store, "head", H, CLASSES, true, 12);
    Model { store, lstm, head }
}

/// Inputs [T×B×I] (flat) and one label per step and sequence.
fn data(t: usize) -> (Vec<f64>, Vec<usize>) {
    let x = Tensor::<f64>::randn(&[t, B, I], 21).into_vec();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let y = (0..t * B)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % CLASSES as u64) as usize
        })
        .collect();
    (x, y)
}

/// Steps `t0..t1` from `init`: the summed cross-entropy of every step and
/// the final state.
fn run<'t>(
    m: &Model,
    tape: &'t Tape<f64>,
    x: &[f64],
    y: &[usize],
    (t0, t1): (usize, usize),
    init: &State<'t, f64>,
) -> (Var<'t, f64>, State<'t, f64>) {
    let xs = tape.constant_from_slice(&x[t0 * B * I..t1 * B * I], &[t1 - t0, B, I]);
    let out = m.lstm.forward(tape, &m.store, xs, Some(init));
    let loss = m
        .head
        .forward(tape, &m.store, out.stacked_rows())
        .cross_entropy(&y[t0 * B..t1 * B], Reduction::Sum);
    (loss, out.state)
}

/// What one truncated-BPTT run saw.
struct TbpttRun {
    windows: usize,
    /// tape.len() at the start of every window (after its reset).
    lens_at_start: Vec<usize>,
    /// tape.len() right after binding the carried state.
    lens_after_bind: Vec<usize>,
    /// Carried state vars that required a gradient (must be 0).
    grad_requiring_state: usize,
    /// tape.held_elements() at the end of every window.
    held: Vec<usize>,
    last_loss: f64,
}

/// Truncated BPTT(K; K) over the whole of `x`, on one tape reset between
/// windows, with an Adam step per window.
fn tbptt(m: &mut Model, x: &[f64], y: &[usize]) -> TbpttRun {
    let len = y.len() / B;
    let windows = Tbptt::new(K, K).unwrap().windows(len);
    let mut opt = Adam::new(1e-3);
    let mut tape = Tape::<f64>::new();
    let mut carried = m.lstm.zero_state(&tape, B).to_tensors();
    tape.reset();
    let mut r = TbpttRun {
        windows: windows.len(),
        lens_at_start: Vec::with_capacity(windows.len()),
        lens_after_bind: Vec::with_capacity(windows.len()),
        grad_requiring_state: 0,
        held: Vec::with_capacity(windows.len()),
        last_loss: 0.0,
    };
    for w in &windows {
        assert_eq!((w.start, w.carry_at), (w.loss_from, w.end), "k1 = k2");
        r.lens_at_start.push(tape.len());
        let grads = {
            let init = carried.bind(&tape);
            r.lens_after_bind.push(tape.len());
            r.grad_requiring_state += init
                .h
                .iter()
                .chain(init.c.iter().flatten())
                .filter(|v| v.requires_grad())
                .count();
            let (loss, state) = run(m, &tape, x, y, (w.start, w.end), &init);
            r.last_loss = loss.item();
            carried = state.to_tensors();
            loss.backward()
        };
        opt.step(&mut m.store, &grads);
        tape.reset_with(grads);
        r.held.push(tape.held_elements());
    }
    r
}

/// Plain (full) BPTT over the whole of `x` on one tape, one backward pass
/// and one Adam step; returns the loss and the number of tape nodes.
fn full_bptt(m: &mut Model, x: &[f64], y: &[usize]) -> (f64, usize) {
    let len = y.len() / B;
    let mut opt = Adam::new(1e-3);
    let tape = Tape::<f64>::new();
    let init = m.lstm.zero_state(&tape, B);
    let (loss, _) = run(m, &tape, x, y, (0, len), &init);
    let grads = loss.backward();
    let nodes = tape.len();
    let l = loss.item();
    opt.step(&mut m.store, &grads);
    (l, nodes)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// All measurements, sequentially, in one test (see the module docs).
#[test]
fn tbptt_peak_heap_is_flat_in_t_and_full_bptt_completes() {
    let started = Instant::now();
    // Warm up once outside any measurement: lazily initialised globals
    // (GEMM thread pool, thread-locals, stdout) allocate on first use.
    {
        let mut m = model();
        let (x, y) = data(2 * K);
        tbptt(&mut m, &x, &y);
        full_bptt(&mut m, &x[..K * B * I], &y[..K * B]);
    }

    // plain BPTT, T = 100
    let mut m = model();
    let (x, y) = data(K);
    let ((loss100, nodes100), plain_100) = peak_of(|| full_bptt(&mut m, &x, &y));
    assert!(loss100.is_finite());

    // truncated BPTT, T = 1,000 and 10,000
    let mut tb = Vec::new();
    for t in [1_000, 10_000] {
        let mut m = model();
        let (x, y) = data(t);
        let t0 = Instant::now();
        let (r, peak) = peak_of(|| tbptt(&mut m, &x, &y));
        let secs = t0.elapsed().as_secs_f64();
        assert_eq!(r.windows, t / K);
        assert!(r.last_loss.is_finite());
        // nothing of an old window survives the reset: the tape starts every
        // window empty, the carried state is 2 constants (h, c) …
        assert!(
            r.lens_at_start.iter().all(|&n| n == 0),
            "{:?}",
            r.lens_at_start
        );
        assert!(
            r.lens_after_bind.iter().all(|&n| n == 2),
            "{:?}",
            r.lens_after_bind
        );
        assert_eq!(
            r.grad_requiring_state, 0,
            "a carried state var requires grad"
        );
        // … and the pool the tape keeps is the same size after every window
        // from the second on
        assert!(
            r.held[1..].iter().all(|&n| n == r.held[1]),
            "held elements grow: first {:?}, last {:?}",
            &r.held[..3],
            &r.held[r.held.len() - 3..]
        );
        println!(
            "TBPTT(k={K}) T={t}: {} windows, peak {} B ({:.3} MiB), {:.2} s, tape holds {} elements",
            r.windows,
            peak,
            mib(peak),
            secs,
            r.held[r.held.len() - 1]
        );
        tb.push(peak);
    }
    let (tb_1k, tb_10k) = (tb[0], tb[1]);
    println!(
        "plain BPTT T={K}: peak {plain_100} B ({:.3} MiB), {nodes100} nodes",
        mib(plain_100)
    );
    let vs_plain = tb_10k as f64 / plain_100 as f64;
    let vs_1k = tb_10k as f64 / tb_1k as f64;
    println!(
        "peaks: plain(100) {plain_100} B, TBPTT(1k) {tb_1k} B, TBPTT(10k) {tb_10k} B; \
         TBPTT(10k)/plain(100) = {vs_plain:.4}, TBPTT(10k)/TBPTT(1k) = {vs_1k:.4}"
    );
    assert!(
        vs_plain <= 1.5,
        "TBPTT(10k) peak {tb_10k} B > 1.5 × plain T=100 peak {plain_100} B"
    );
    assert!(
        vs_1k <= 1.05,
        "TBPTT(10k) peak {tb_10k} B > 1.05 × TBPTT(1k) peak {tb_1k} B"
    );

    // full BPTT, T = 10,000, one tape, one backward
    const T_FULL: usize = 10_000;
    let mut m = model();
    let (x, y) = data(T_FULL);
    let t0 = Instant::now();
    let ((loss, nodes), peak) = peak_of(|| full_bptt(&mut m, &x, &y));
    let secs = t0.elapsed().as_secs_f64();
    assert!(loss.is_finite());
    println!(
        "full BPTT T={T_FULL}: peak {peak} B ({:.2} MiB), {:.0} B/step, {nodes} nodes \
         ({:.1}/step), {secs:.2} s; {:.1}× plain(100)",
        mib(peak),
        peak as f64 / T_FULL as f64,
        nodes as f64 / T_FULL as f64,
        peak as f64 / plain_100 as f64
    );
    // full BPTT memory is linear in T: far above the truncated run's
    assert!(peak > 10 * tb_10k, "full {peak} B vs TBPTT {tb_10k} B");
    println!("total {:.2} s", started.elapsed().as_secs_f64());
}
