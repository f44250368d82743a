//! Peak heap of one BPTT training step, tape vs hand-written, measured with
//! a counting global allocator (bytes live above the level before the step).
//!
//! `cargo run --release --example bptt_memory [-- S|M|L]`
//!
//! The last line measures the LSTM once more with its cell written outside
//! the crate through the public `Cell` interface.
//!
//! "Activation bytes BPTT must keep" counts what backward needs from the
//! forward pass and nothing else: for the RNN h(0..T) and the softmax
//! probabilities of every step; for the LSTM the four gates, c(0..T),
//! tanh c(1..T), h(0..T) and the probabilities. Parameters and their
//! gradients are allocated before the measurement starts on the tape side
//! too (the store; gradients are counted, as they are produced in the step).

#[path = "../tests/common/bptt_task.rs"]
mod bptt_task;

use bptt_task::TapeModel;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tapegrad::reference::{LstmBptt, LstmParams, RnnBptt, RnnParams};
use tapegrad::{Nonlinearity, Tape, Tensor};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only
// counts the sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = LIVE.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns the peak bytes allocated above the starting level.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

fn mib(b: usize) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| "L".into());
    let (b, i, h, o, t) = match name.as_str() {
        "S" => (1, 64, 100, 64, 25),
        "M" => (32, 64, 128, 64, 50),
        _ => (64, 256, 512, 256, 100),
    };
    let f32b = std::mem::size_of::<f32>();
    let x = Tensor::<f32>::randn(&[t, b, i], 11);
    let targets: Vec<usize> = (0..t * b).map(|k| (k * 7 + 3) % o).collect();
    println!("config {name}: B={b} I={i} H={h} O={o} T={t}, f32");

    // RNN
    let must_rnn = ((t + 1) * b * h + t * b * o) * f32b;
    let p = RnnParams::<f32>::random(i, h, o, 5);
    let model = TapeModel::rnn(&p, Nonlinearity::Tanh);
    let tape = Tape::new();
    let tape_peak = peak_of(|| {
        let (_, g) = model.step(&tape, x.data(), [t, b, i], &targets);
        drop(g);
    });
    let mut hand = RnnBptt::new(b, i, h, o, t, Nonlinearity::Tanh, false);
    let h0 = vec![0.0f32; b * h];
    // The reference allocates its buffers in `new`; count them as its peak.
    let hand_peak = peak_of(|| {
        let mut fresh = RnnBptt::new(b, i, h, o, t, Nonlinearity::Tanh, false);
        fresh.run(&p, x.data(), &h0, &targets);
    });
    hand.run(&p, x.data(), &h0, &targets);
    println!(
        "rnn:  must keep {}, tape peak {} ({:.2}×), hand peak {} ({:.2}×)",
        mib(must_rnn),
        mib(tape_peak),
        tape_peak as f64 / must_rnn as f64,
        mib(hand_peak),
        hand_peak as f64 / must_rnn as f64
    );

    // LSTM
    let must_lstm = (4 * t * b * h + (t + 1) * b * h * 2 + t * b * h + t * b * o) * f32b;
    let p = LstmParams::<f32>::random(i, h, o, 5);
    let model = TapeModel::lstm(&p);
    let tape = Tape::new();
    let tape_peak = peak_of(|| {
        let (_, g) = model.step(&tape, x.data(), [t, b, i], &targets);
        drop(g);
    });
    let z = vec![0.0f32; b * h];
    let hand_peak = peak_of(|| {
        let mut fresh = LstmBptt::new(b, i, h, o, t, false);
        fresh.run(&p, x.data(), &z, &z, &targets);
    });
    println!(
        "lstm: must keep {}, tape peak {} ({:.2}×), hand peak {} ({:.2}×)",
        mib(must_lstm),
        mib(tape_peak),
        tape_peak as f64 / must_lstm as f64,
        mib(hand_peak),
        hand_peak as f64 / must_lstm as f64
    );

    // The same LSTM, its cell written outside the crate through `Cell`
    // (tests/common/user_lstm.rs): no release calls of its own.
    let model = TapeModel::user_lstm(&p);
    let tape = Tape::new();
    let user_peak = peak_of(|| {
        let (_, g) = model.step(&tape, x.data(), [t, b, i], &targets);
        drop(g);
    });
    println!(
        "user lstm cell: tape peak {} ({:.2}×), {:.3}× the built-in Lstm's",
        mib(user_peak),
        user_peak as f64 / must_lstm as f64,
        user_peak as f64 / tape_peak as f64
    );
}
