//! Peak heap of one BPTT training step, tape vs hand-written, measured with
//! a counting global allocator (bytes live above the level before the step).
//!
//! `cargo run --release --example bptt_memory [-- S|M|L]`
//!
//! `cargo run --release --example bptt_memory -- steps M|L N plain|checkpointed`
//! runs N LSTM training steps of `benches/bptt.rs`'s task (for
//! `valgrind --tool=callgrind`, whose instruction counts are repeatable
//! under load where timings are not).
//!
//! `cargo run --release --example bptt_memory -- sweep [B I H O T₁ T₂ …]`
//! instead measures the peak of one whole-sequence gradient of an LSTM
//! language model (`tests/common/long_lm.rs`; default B = 1, I = H = O =
//! 256, T = 1k … 100k, f32) against T, in four regimes: full BPTT, the
//! layer's checkpointing (`Checkpointing::Auto`, readout outside), user-code
//! checkpointing over ⌈√T⌉-step segments that include the readout and the
//! loss (`Tape::checkpoint`), and truncated BPTT(100); it fits the exponent
//! of peak against T and, with `--plot FILE`, draws the figure
//! (docs/figures/checkpoint_memory.svg).
//!
//! The tape side is measured twice per cell: with the input copied onto
//! the tape from the caller's slice (`constant_from_slice`, what
//! `benches/bptt.rs` times), and bound without a copy from a shared tensor
//! (`Tensor::into_shared`, a data set held across steps). The last line
//! measures the LSTM once more with its cell written outside the crate
//! through the public `Cell` interface.
//!
//! Each configuration is run once unmeasured first: the GEMM kernels'
//! thread-local packing buffers, allocated on first use and kept, are then
//! charged to no side (measurements before 2026-12-07's issue-15 views
//! charged them to the tape, which ran first).
//!
//! "Activation bytes BPTT must keep" counts what backward needs from the
//! forward pass and nothing else: for the RNN h(0..T) and the softmax
//! probabilities of every step; for the LSTM the four gates, c(0..T),
//! tanh c(1..T), h(0..T) and the probabilities. Parameters and their
//! gradients are allocated before the measurement starts on the tape side
//! too (the store; gradients are counted, as they are produced in the step).

#[path = "../tests/common/bptt_task.rs"]
mod bptt_task;
#[path = "../tests/common/long_lm.rs"]
mod long_lm;

use bptt_task::TapeModel;
use long_lm::{LongLm, Mode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tapegrad::layers::Checkpointing;
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
    if name == "sweep" {
        return sweep(std::env::args().skip(2).collect());
    }
    if name == "steps" {
        return steps(std::env::args().skip(2).collect());
    }
    let (b, i, h, o, t) = match name.as_str() {
        "S" => (1, 64, 100, 64, 25),
        "M" => (32, 64, 128, 64, 50),
        _ => (64, 256, 512, 256, 100),
    };
    let f32b = std::mem::size_of::<f32>();
    let x = Tensor::<f32>::randn(&[t, b, i], 11);
    let targets: Vec<usize> = (0..t * b).map(|k| (k * 7 + 3) % o).collect();
    // Warm-up, not measured: the GEMM kernels allocate thread-local packing
    // buffers on first use and keep them, so without it the side measured
    // first (the tape) would be charged for them and the others not.
    {
        let (rp, lp) = (
            RnnParams::<f32>::random(i, h, o, 5),
            LstmParams::<f32>::random(i, h, o, 5),
        );
        let z = vec![0.0f32; b * h];
        for model in [
            TapeModel::rnn(&rp, Nonlinearity::Tanh),
            TapeModel::lstm(&lp),
        ] {
            drop(model.step(&Tape::new(), x.data(), [t, b, i], &targets));
        }
        RnnBptt::new(b, i, h, o, t, Nonlinearity::Tanh, false).run(&rp, x.data(), &z, &targets);
        LstmBptt::new(b, i, h, o, t, false).run(&lp, x.data(), &z, &z, &targets);
    }
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
    let shared = x.clone().into_shared();
    let tape = Tape::new();
    let tape_shared = peak_of(|| {
        let (_, g) = model.step_tensor(&tape, &shared, &targets);
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
        "rnn:  must keep {}, tape peak {} ({:.2}×), hand peak {} ({:.2}×); \
         tape with the input shared, not copied: {} ({:.2}×)",
        mib(must_rnn),
        mib(tape_peak),
        tape_peak as f64 / must_rnn as f64,
        mib(hand_peak),
        hand_peak as f64 / must_rnn as f64,
        mib(tape_shared),
        tape_shared as f64 / must_rnn as f64
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
    let tape = Tape::new();
    let tape_shared = peak_of(|| {
        let (_, g) = model.step_tensor(&tape, &shared, &targets);
        drop(g);
    });
    let z = vec![0.0f32; b * h];
    let hand_peak = peak_of(|| {
        let mut fresh = LstmBptt::new(b, i, h, o, t, false);
        fresh.run(&p, x.data(), &z, &z, &targets);
    });
    println!(
        "lstm: must keep {}, tape peak {} ({:.2}×), hand peak {} ({:.2}×); \
         tape with the input shared, not copied: {} ({:.2}×)",
        mib(must_lstm),
        mib(tape_peak),
        tape_peak as f64 / must_lstm as f64,
        mib(hand_peak),
        hand_peak as f64 / must_lstm as f64,
        mib(tape_shared),
        tape_shared as f64 / must_lstm as f64
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

/// One regime of the sweep: its name and mode for a sequence of T steps.
type Regime = (&'static str, fn(usize) -> Mode);

const REGIMES: [Regime; 4] = [
    ("full BPTT", |_| Mode::Full),
    ("layer checkpointing (Auto)", |_| {
        Mode::Layer(Checkpointing::Auto)
    }),
    (
        "checkpointed segments of ⌈√T⌉ (readout and loss inside)",
        |t| Mode::Segments((t as f64).sqrt().ceil() as usize),
    ),
    ("truncated BPTT(100)", |_| Mode::Truncated(100)),
];

/// Peak heap against T for every regime; prints a table, the fitted
/// exponents, and draws the figure with `--plot FILE`.
fn sweep(args: Vec<String>) {
    let plot = args
        .iter()
        .position(|a| a == "--plot")
        .map(|i| args[i + 1].clone());
    let nums: Vec<usize> = args
        .iter()
        .take_while(|a| *a != "--plot")
        .map(|a| a.parse().expect("numbers: B I H O T…"))
        .collect();
    let (b, i, h, o) = match nums[..] {
        [b, i, h, o, ..] => (b, i, h, o),
        _ => (1, 256, 256, 256),
    };
    let ts: Vec<usize> = if nums.len() > 4 {
        nums[4..].to_vec()
    } else {
        vec![1_000, 3_000, 10_000, 30_000, 100_000]
    };
    let f32b = std::mem::size_of::<f32>();
    let step_bytes = (7 * h + o) * b * f32b;
    let params = LongLm::<f32>::new(b, i, h, o, 1).store.keys().count();
    let param_bytes: usize = {
        let lm = LongLm::<f32>::new(b, i, h, o, 1);
        lm.store
            .keys()
            .map(|k| lm.store.get(k).numel())
            .sum::<usize>()
            * f32b
    };
    println!(
        "LSTM LM, B={b} I={i} H={h} O={o}, f32: one step's must-keep activations (i, f, g, o, c, tanh c, h, probabilities) {}, parameters {} ({params} tensors)",
        kib(step_bytes),
        mib(param_bytes)
    );
    println!("| T | regime | peak | peak − T=1 peak | steps' worth | time |");
    println!("|---|---|---|---|---|---|");
    let mut curves: Vec<Vec<(f64, f64)>> = vec![Vec::new(); REGIMES.len()];
    // Warm-up: the GEMM kernels' thread-local packing buffers and the
    // thread pool are allocated once, on first use, and stay.
    for (_, mode) in REGIMES {
        let lm = LongLm::<f32>::new(b, i, h, o, 300);
        drop(lm.gradient(mode(300)));
    }
    let mut bases = vec![0usize; REGIMES.len()];
    for (r, (_, mode)) in REGIMES.iter().enumerate() {
        let lm = LongLm::<f32>::new(b, i, h, o, 1);
        bases[r] = peak_of(|| drop(lm.gradient(mode(1))));
    }
    for &t in &ts {
        let lm = LongLm::<f32>::new(b, i, h, o, t);
        for (r, (name, mode)) in REGIMES.iter().enumerate() {
            let start = std::time::Instant::now();
            let peak = peak_of(|| drop(lm.gradient(mode(t))));
            let secs = start.elapsed().as_secs_f64();
            let above = peak.saturating_sub(bases[r]);
            println!(
                "| {t} | {name} | {} | {} | {:.1} | {secs:.1} s |",
                mib(peak),
                mib(above),
                above as f64 / step_bytes as f64
            );
            curves[r].push((t as f64, peak as f64));
        }
    }
    for (r, (name, _)) in REGIMES.iter().enumerate() {
        let raw = fit_exponent(&curves[r]);
        let above: Vec<(f64, f64)> = curves[r]
            .iter()
            .map(|&(t, p)| (t, (p - bases[r] as f64).max(1.0)))
            .collect();
        println!(
            "{name}: fitted exponent of peak against T {raw:.3}; of (peak − T=1 peak) {:.3}",
            fit_exponent(&above)
        );
    }
    if let Some(path) = plot {
        draw(&path, &ts, &curves, b, h).expect("plot");
        println!("plot: {path}");
    }
}

fn kib(b: usize) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

/// Least-squares slope of ln p against ln t.
fn fit_exponent(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.iter().map(|&(t, p)| (t.ln(), p.ln())).unzip();
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    sxy / sxx
}

fn draw(
    path: &str,
    ts: &[usize],
    curves: &[Vec<(f64, f64)>],
    b: usize,
    h: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mb = |p: f64| p / (1 << 20) as f64;
    let all = curves.iter().flatten().map(|&(_, p)| mb(p));
    let (lo, hi) = all.fold((f64::INFINITY, 0f64), |(l, u), v| (l.min(v), u.max(v)));
    let (t0, t1) = (ts[0] as f64, *ts.last().expect("a T") as f64);
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("peak heap of one gradient, LSTM LM, B = {b}, H = {h}, f32"),
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d(
            (t0 * 0.9..t1 * 1.1).log_scale(),
            (lo * 0.8..hi * 1.25).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("sequence length T (steps)")
        .y_desc("peak heap (MiB)")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    let colors = [
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(31, 119, 180),
        RGBColor(120, 120, 120),
    ];
    for ((curve, (name, _)), color) in curves.iter().zip(REGIMES.iter()).zip(colors) {
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|&(t, p)| (t, mb(p))),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            curve
                .iter()
                .map(|&(t, p)| Circle::new((t, mb(p)), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// N LSTM steps of the bench task, plain or checkpointed (`Auto`).
fn steps(args: Vec<String>) {
    let config = args.first().map(String::as_str).unwrap_or("M");
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let checkpointed = args.get(2).map(String::as_str) == Some("checkpointed");
    let (b, i, h, o, t) = match config {
        "M" => (32, 64, 128, 64, 50),
        _ => (64, 256, 512, 256, 100),
    };
    let x = Tensor::<f32>::randn(&[t, b, i], 11);
    let targets: Vec<usize> = (0..t * b).map(|k| (k * 7 + 3) % o).collect();
    let p = LstmParams::<f32>::random(i, h, o, 5);
    let mut model = TapeModel::lstm(&p);
    if checkpointed {
        model = model.with_checkpoint(Checkpointing::Auto);
    }
    let mut tape = Tape::new();
    let start = std::time::Instant::now();
    for _ in 0..n {
        let (_, g) = model.step(&tape, x.data(), [t, b, i], &targets);
        tape.reset_with(g);
    }
    println!(
        "{config} {} {n} steps: {:.1} ms per step",
        if checkpointed {
            "checkpointed"
        } else {
            "plain"
        },
        start.elapsed().as_secs_f64() * 1e3 / n as f64
    );
}
