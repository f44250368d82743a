//! Hessian-free training of a small RNN on the addition problem, next to
//! Adam with the same budget of gradient-equivalent evaluations.
//!
//! ```text
//! cargo run --release --example hessian_free            # the default run
//! cargo run --release --example hessian_free -- --quick # a seconds-long smoke run
//! cargo run --release --example hessian_free -- --help
//! ```
//!
//! **The task** (Hochreiter & Schmidhuber 1997, in the form of Martens &
//! Sutskever 2011): a sequence of T pairs (value uᵢ uniform in [0, 1),
//! marker mᵢ ∈ {0, 1}); exactly two markers, one in the first 10% of the
//! steps and one in the last half. The target, read at the last step, is
//! the sum of the two marked values. Predicting the mean (1) scores a mean
//! squared error of 1/6 ≈ 0.167; a sequence counts as solved when the
//! prediction is within 0.04 of the target. The two markers are ≥ 0.4·T
//! steps apart, so the error signal has to travel that far back.
//!
//! **The model**: a tanh `Rnn` (input 2, hidden H) and a `Linear` readout
//! of the last hidden state, squared error averaged over the batch.
//!
//! **Hessian-free** (Martens 2010): each iteration takes the gradient g on
//! a fresh batch, then runs conjugate gradients
//! ([`tapegrad::second_order::conjugate_gradient`]) on the damped
//! Gauss–Newton system `(G + λI)·d = −g`, each product `G·p` a
//! [`tapegrad::second_order::gnvp_in`] on a sub-batch (forward mode for
//! J·p, the closed-form Hessian of the squared error, a reverse sweep for
//! Jᵀ; one dual tape reused by every product); CG starts from 0.95× the
//! previous solution and stops on Martens' progress test. A backtracking line search along d (Armijo, c = 10⁻²)
//! sets the step, and λ follows the Levenberg–Marquardt rule: with
//! ρ = (L(θ + d) − L(θ)) / (gᵀd + ½dᵀGd), λ ← 1.5λ if ρ < ¼, λ ← ⅔λ if
//! ρ > ¾. (Martens & Sutskever's structural damping is not used.)
//!
//! **The budget**, counted in gradient-equivalents (one forward and
//! backward pass over one sequence): a gradient on n sequences costs n, a
//! Gauss–Newton product on n sequences 2n (a dual forward and a reverse
//! sweep: two passes), a loss evaluation n/2. Adam (lr 3·10⁻³, gradient
//! norm clipped at 1, batches of 100) gets the budget HF used. Both curves
//! — test MSE on 1000 held-out sequences against gradient-equivalents —
//! are printed and drawn into `docs/figures/hessian_free.svg`.

use plotters::prelude::*;
use std::path::PathBuf;
use std::time::Instant;
use tapegrad::layers::{Linear, RecurrentConfig, Rnn};
use tapegrad::optim::{clip_grad_norm, Adam, Optimizer};
use tapegrad::second_order::{conjugate_gradient, gnvp_in, CgOptions, Readout};
use tapegrad::{ParamStore, ParamVec, Real, Reduction, Tape, Tensor, Var};

/// The run's settings (see `--help`).
#[derive(Debug, Clone)]
struct Args {
    t: usize,
    hidden: usize,
    iters: usize,
    grad_batch: usize,
    curv_batch: usize,
    max_cg: usize,
    seed: u64,
    plot: PathBuf,
}

impl Args {
    fn parse() -> Self {
        let mut a = Args {
            t: 50,
            hidden: 24,
            iters: 60,
            grad_batch: 1000,
            curv_batch: 200,
            max_cg: 40,
            seed: 1,
            plot: PathBuf::from("docs/figures/hessian_free.svg"),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut num = |name: &str| -> usize {
                it.next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name} needs a number"))
            };
            match flag.as_str() {
                "--t" => a.t = num("--t"),
                "--hidden" => a.hidden = num("--hidden"),
                "--iters" => a.iters = num("--iters"),
                "--grad-batch" => a.grad_batch = num("--grad-batch"),
                "--curv-batch" => a.curv_batch = num("--curv-batch"),
                "--max-cg" => a.max_cg = num("--max-cg"),
                "--seed" => a.seed = num("--seed") as u64,
                "--plot" => a.plot = PathBuf::from(it.next().expect("--plot needs a path")),
                "--quick" => {
                    a.t = 10;
                    a.hidden = 8;
                    a.iters = 5;
                    a.grad_batch = 100;
                    a.curv_batch = 50;
                    a.max_cg = 10;
                    a.plot = PathBuf::from("out/hessian_free/quick.svg");
                }
                "--help" | "-h" => {
                    println!(
                        "hessian_free [--t 50] [--hidden 24] [--iters 60] [--grad-batch 1000] \
                         [--curv-batch 200] [--max-cg 40] [--seed 1] \
                         [--plot docs/figures/hessian_free.svg] [--quick]"
                    );
                    std::process::exit(0);
                }
                other => panic!("unknown flag {other} (see --help)"),
            }
        }
        assert!(
            a.curv_batch <= a.grad_batch,
            "--curv-batch must be ≤ --grad-batch"
        );
        a
    }
}

/// `n` addition-problem sequences: inputs [T × n × 2] and targets [n × 1].
fn addition_batch(t: usize, n: usize, seed: u64) -> (Tensor<f64>, Tensor<f64>) {
    let u = Tensor::<f64>::uniform(&[t, n], 0.0, 1.0, seed).unwrap();
    let pick = Tensor::<f64>::uniform(&[2, n], 0.0, 1.0, seed ^ 0x5eed).unwrap();
    let early = (t / 10).max(1);
    let (mut x, mut y) = (vec![0.0; t * n * 2], vec![0.0; n]);
    for b in 0..n {
        let i = ((pick.at(&[0, b]) * early as f64) as usize).min(early - 1);
        let j = t / 2 + ((pick.at(&[1, b]) * (t - t / 2) as f64) as usize).min(t - t / 2 - 1);
        for s in 0..t {
            x[(s * n + b) * 2] = u.at(&[s, b]);
            x[(s * n + b) * 2 + 1] = if s == i || s == j { 1.0 } else { 0.0 };
        }
        y[b] = u.at(&[i, b]) + u.at(&[j, b]);
    }
    (
        Tensor::from_vec(x, &[t, n, 2]).unwrap(),
        Tensor::from_vec(y, &[n, 1]).unwrap(),
    )
}

/// The first `m` sequences of a batch.
fn first(x: &Tensor<f64>, y: &Tensor<f64>, m: usize) -> (Tensor<f64>, Tensor<f64>) {
    let (t, n) = (x.shape()[0], x.shape()[1]);
    let xs = Tensor::from_fn(&[t, m, 2], |k| {
        let (s, rest) = (k / (m * 2), k % (m * 2));
        x.data()[s * n * 2 + rest]
    });
    (xs, Tensor::from_slice(&y.data()[..m], &[m, 1]).unwrap())
}

struct Model {
    rnn: Rnn,
    head: Linear,
}

impl Model {
    /// Predictions [n × 1] from the last hidden state.
    fn predict<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        s: &ParamStore<F>,
        x: &Tensor<f64>,
    ) -> Var<'t, F> {
        let out = self.rnn.forward(tape, s, tape.constant(x.cast()), None);
        let last = *out.outputs.last().expect("T ≥ 1");
        self.head.forward(tape, s, last)
    }

    fn loss(&self, s: &ParamStore<f64>, x: &Tensor<f64>, y: &Tensor<f64>) -> f64 {
        let tape = Tape::new();
        self.predict(&tape, s, x)
            .mse(tape.constant(y.clone()), Reduction::Mean)
            .item()
    }

    fn grad(&self, s: &ParamStore<f64>, x: &Tensor<f64>, y: &Tensor<f64>) -> (f64, ParamVec<f64>) {
        let tape = Tape::new();
        let l = self
            .predict(&tape, s, x)
            .mse(tape.constant(y.clone()), Reduction::Mean);
        (l.item(), ParamVec::from_grads(s, &l.backward()))
    }

    /// Test MSE and the fraction of sequences within 0.04 of the target.
    fn evaluate(&self, s: &ParamStore<f64>, x: &Tensor<f64>, y: &Tensor<f64>) -> (f64, f64) {
        let tape = Tape::new();
        let p = self.predict(&tape, s, x).to_tensor();
        let n = y.numel() as f64;
        let mse = p
            .data()
            .iter()
            .zip(y.data())
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f64>()
            / n;
        let ok = p
            .data()
            .iter()
            .zip(y.data())
            .filter(|(a, b)| (*a - *b).abs() < 0.04)
            .count();
        (mse, ok as f64 / n)
    }
}

fn new_model(a: &Args) -> (ParamStore<f64>, Model) {
    let mut store = ParamStore::new();
    let rnn = Rnn::new(&mut store, "rnn", RecurrentConfig::new(2, a.hidden), a.seed);
    let head = Linear::new(&mut store, "head", a.hidden, 1, true, a.seed + 1);
    (store, Model { rnn, head })
}

/// (gradient-equivalents used, test MSE, fraction solved)
type Curve = Vec<(f64, f64, f64)>;

fn hessian_free(a: &Args, test: &(Tensor<f64>, Tensor<f64>)) -> Curve {
    let (mut store, m) = new_model(a);
    let mut lambda = 1.0f64;
    // one dual tape for all Gauss–Newton products: its buffers are reused
    let mut dual = Tape::new();
    let mut d_prev = ParamVec::zeros_like(&store);
    let (mut used, mut curve) = (0.0, Curve::new());
    let (mse, ok) = m.evaluate(&store, &test.0, &test.1);
    curve.push((0.0, mse, ok));
    let opts = CgOptions {
        max_iters: a.max_cg,
        min_iters: 5,
        ..CgOptions::default()
    };
    for it in 0..a.iters {
        let (x, y) = addition_batch(a.t, a.grad_batch, a.seed * 1_000_003 + it as u64);
        let (f0, g) = m.grad(&store, &x, &y);
        used += a.grad_batch as f64;
        let (xc, yc) = first(&x, &y, a.curv_batch);
        let readout = Readout::SquaredError {
            target: &yc,
            reduction: Reduction::Mean,
        };
        let mut products = 0;
        let apply = |p: &ParamVec<f64>| {
            products += 1;
            let mut gp = gnvp_in(&mut dual, &store, p, &readout, |t, s| m.predict(t, s, &xc)).gv;
            gp.axpy(lambda, p);
            gp
        };
        let mut b = g.clone();
        b.scale(-1.0);
        let mut x0 = d_prev.clone();
        x0.scale(0.95);
        let sol = conjugate_gradient(&b, x0, apply, &opts);
        used += 2.0 * (products * a.curv_batch) as f64;
        let d = sol.x;
        // the undamped quadratic model's change: gᵀd + ½dᵀGd, Gd = Ad − λd
        let gd = g.dot(&d);
        let q = gd + 0.5 * (d.dot(&sol.ax) - lambda * d.dot(&d));
        // backtracking along d
        let mut alpha = 1.0;
        let mut f_full = f64::NAN;
        let mut accepted = None;
        for k in 0..8 {
            let f = m.loss(&shifted(&store, &d, alpha), &x, &y);
            used += 0.5 * a.grad_batch as f64;
            if k == 0 {
                f_full = f;
            }
            if f <= f0 + 1e-2 * alpha * gd {
                accepted = Some(alpha);
                break;
            }
            alpha *= 0.8;
        }
        let rho = (f_full - f0) / q;
        if rho.is_nan() || rho < 0.25 {
            lambda *= 1.5;
        } else if rho > 0.75 {
            lambda *= 2.0 / 3.0;
        }
        if let Some(alpha) = accepted {
            d.add_to(&mut store, alpha);
        }
        d_prev = d;
        let (mse, ok) = m.evaluate(&store, &test.0, &test.1);
        curve.push((used, mse, ok));
        println!(
            "HF {:>3}: train {f0:.4}  test MSE {mse:.4}  solved {:>5.1}%  CG {:>2}  λ {lambda:.3e}  ρ {rho:>6.2}  step {}",
            it + 1,
            100.0 * ok,
            sol.iterations,
            accepted.map_or("rejected".to_string(), |a| format!("{a:.2}")),
        );
    }
    curve
}

fn shifted(store: &ParamStore<f64>, d: &ParamVec<f64>, alpha: f64) -> ParamStore<f64> {
    let mut s = store.clone();
    d.add_to(&mut s, alpha);
    s
}

fn adam(a: &Args, budget: f64, test: &(Tensor<f64>, Tensor<f64>)) -> Curve {
    let (mut store, m) = new_model(a);
    let mut opt = Adam::new(3e-3);
    let batch = 100;
    let steps = (budget / batch as f64).round() as usize;
    let every = (steps / 60).max(1);
    let (mse, ok) = m.evaluate(&store, &test.0, &test.1);
    let mut curve = vec![(0.0, mse, ok)];
    let mut tape = Tape::new();
    for step in 0..steps {
        let (x, y) = addition_batch(a.t, batch, a.seed * 7_000_003 + step as u64);
        let mut grads = m
            .predict(&tape, &store, &x)
            .mse(tape.constant(y), Reduction::Mean)
            .backward();
        clip_grad_norm(&mut grads, 1.0, false).expect("finiteness is not checked");
        opt.step(&mut store, &grads);
        tape.reset_with(grads);
        if (step + 1) % every == 0 || step + 1 == steps {
            let (mse, ok) = m.evaluate(&store, &test.0, &test.1);
            curve.push((((step + 1) * batch) as f64, mse, ok));
            if (step + 1) % (every * 10) == 0 || step + 1 == steps {
                println!(
                    "Adam {:>6}: test MSE {mse:.4}  solved {:>5.1}%",
                    step + 1,
                    100.0 * ok
                );
            }
        }
    }
    curve
}

fn plot(a: &Args, hf: &Curve, adam: &Curve) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = a.plot.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let max_x = hf.iter().chain(adam).map(|p| p.0).fold(1.0, f64::max);
    let all = || hf.iter().chain(adam).map(|p| p.1);
    let hi = all().fold(0.0, f64::max).max(0.2) * 1.2;
    let lo = all().fold(f64::INFINITY, f64::min).max(1e-5) * 0.8;
    let root = SVGBackend::new(&a.plot, (760, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "addition problem, T = {}, tanh RNN with H = {}",
                a.t, a.hidden
            ),
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d(0f64..max_x, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("gradient-equivalent evaluations (sequences)")
        .y_desc("test mean squared error")
        .x_label_formatter(&|v| format!("{:.0}k", v / 1000.0))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let red = RGBColor(214, 39, 40);
    let grey = RGBColor(120, 120, 120);
    for (curve, color, label) in [
        (hf, red, "Hessian-free (Gauss–Newton, CG)"),
        (adam, blue, "Adam (lr 3e-3)"),
    ] {
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, 1.0 / 6.0), (max_x, 1.0 / 6.0)],
            grey.stroke_width(1),
        ))?
        .label("predicting the mean (1/6)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() {
    let a = Args::parse();
    tapegrad::set_num_threads(1);
    println!(
        "addition problem: T = {}, tanh RNN H = {}, {} HF iterations (gradient batch {}, curvature batch {}, ≤ {} CG steps)",
        a.t, a.hidden, a.iters, a.grad_batch, a.curv_batch, a.max_cg
    );
    let test = addition_batch(a.t, 1000, 0xdead_beef);
    let t0 = Instant::now();
    let hf = hessian_free(&a, &test);
    let hf_time = t0.elapsed();
    let budget = hf.last().map_or(0.0, |p| p.0);
    println!(
        "HF: {:.1} s, {budget:.0} gradient-equivalents; Adam gets the same budget",
        hf_time.as_secs_f64()
    );
    let t1 = Instant::now();
    let ad = adam(&a, budget, &test);
    let adam_time = t1.elapsed();
    println!("\nlearning curves (gradient-equivalents: test MSE, solved):");
    for (name, c) in [("HF", &hf), ("Adam", &ad)] {
        let picks: Vec<String> = [0.0, 0.25, 0.5, 0.75, 1.0]
            .iter()
            .map(|q| {
                let p = c[((c.len() - 1) as f64 * q).round() as usize];
                format!("{:.0}k: {:.4} ({:.0}%)", p.0 / 1000.0, p.1, 100.0 * p.2)
            })
            .collect();
        println!("  {name:<4} {}", picks.join("  "));
    }
    let (h, d) = (hf.last().unwrap(), ad.last().unwrap());
    println!(
        "final: HF test MSE {:.4}, solved {:.1}% ({:.1} s) | Adam test MSE {:.4}, solved {:.1}% ({:.1} s)",
        h.1,
        100.0 * h.2,
        hf_time.as_secs_f64(),
        d.1,
        100.0 * d.2,
        adam_time.as_secs_f64()
    );
    match plot(&a, &hf, &ad) {
        Ok(()) => println!("plot: {}", a.plot.display()),
        Err(e) => eprintln!("could not write the plot: {e}"),
    }
}
