//! Vanishing gradients, seen: ‖∂L/∂h(t)‖ against t for a vanilla RNN and an
//! LSTM on the same long random sequence, with the loss taken at the last
//! step only, so the curve shows how much of the final error reaches each
//! earlier step through the recurrence.
//!
//! `cargo run --release --example vanishing_gradients [-- docs/figures/vanishing_gradients.svg]`

use plotters::prelude::*;
use tapegrad::layers::{Linear, Lstm, RecurrentConfig, Rnn, SeqOutput};
use tapegrad::{ParamStore, Reduction, Tape, Tensor};

const T: usize = 100;
const I: usize = 8;
const H: usize = 64;
const O: usize = 8;

/// ‖∂L/∂h(t)‖ for t = 1..T, L = cross-entropy of the readout at step T.
fn grad_norms<'t>(
    tape: &'t Tape<f64>,
    store: &ParamStore<f64>,
    head: &Linear,
    out: SeqOutput<'t, f64>,
) -> Vec<f64> {
    let hs: Vec<_> = out.outputs.iter().map(|h| h.retain_grad()).collect();
    let last = *hs.last().expect("T > 0");
    let loss = head
        .forward(tape, store, last)
        .cross_entropy(&[3], Reduction::Sum);
    let grads = loss.backward();
    hs.iter().map(|h| grads.wrt(*h).norm()).collect()
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/figures/vanishing_gradients.svg".into());
    let cfg = RecurrentConfig::new(I, H);
    let x = Tensor::<f64>::randn(&[T, 1, I], 7);

    let mut store = ParamStore::<f64>::new();
    let rnn = Rnn::new(&mut store, "rnn", cfg, 1);
    let lstm = Lstm::new(&mut store, "lstm", cfg, 1);
    let mut store_fb = store.clone();
    let head = Linear::new(&mut store, "head", H, O, true, 2);
    let head_fb = Linear::new(&mut store_fb, "head", H, O, true, 2);
    // The same LSTM with its forget-gate bias raised by 3 (f ≈ σ(3) ≈ 0.95),
    // the usual remedy (Jozefowicz et al., 2015).
    let b = store_fb.key("lstm.bias_hh_l0").expect("lstm bias");
    for v in &mut store_fb.get_mut(b).data_mut()[H..2 * H] {
        *v += 3.0;
    }

    let curves: Vec<(&str, Vec<f64>, RGBColor)> = vec![
        (
            "vanilla RNN (tanh, PyTorch init)",
            {
                let tape = Tape::new();
                let out = rnn.forward(&tape, &store, tape.constant(x.clone()), None);
                grad_norms(&tape, &store, &head, out)
            },
            RED,
        ),
        (
            "LSTM (PyTorch init)",
            {
                let tape = Tape::new();
                let out = lstm.forward(&tape, &store, tape.constant(x.clone()), None);
                grad_norms(&tape, &store, &head, out)
            },
            BLUE,
        ),
        (
            "LSTM, forget-gate bias +3",
            {
                let tape = Tape::new();
                let out = lstm.forward(&tape, &store_fb, tape.constant(x.clone()), None);
                grad_norms(&tape, &store_fb, &head_fb, out)
            },
            GREEN,
        ),
    ];

    println!("‖∂L/∂h(t)‖ with L at t = {T}:");
    println!(
        "{:>5} {:>14} {:>14} {:>14}",
        "t", "RNN", "LSTM", "LSTM f-bias+3"
    );
    for t in [T, T - 1, T - 5, T - 10, T - 20, T - 40, T - 60, 1] {
        println!(
            "{t:>5} {:>14.3e} {:>14.3e} {:>14.3e}",
            curves[0].1[t - 1],
            curves[1].1[t - 1],
            curves[2].1[t - 1]
        );
    }

    let lo = curves
        .iter()
        .flat_map(|c| c.1.iter().copied())
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min)
        .max(1e-300);
    let hi = curves
        .iter()
        .flat_map(|c| c.1.iter().copied())
        .fold(0.0, f64::max);
    if let Some(dir) = std::path::Path::new(&path).parent() {
        std::fs::create_dir_all(dir).expect("create output directory");
    }
    let root = SVGBackend::new(&path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).expect("draw");
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("‖∂L/∂h(t)‖, loss at t = {T} (H = {H}, one random sequence)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        // log10 on a linear axis: plotters' log-scale labels stop near 1e-14.
        .build_cartesian_2d(1f64..T as f64, lo.log10().floor()..hi.log10().ceil())
        .expect("chart");
    chart
        .configure_mesh()
        .x_desc("time step t")
        .y_desc("‖∂L/∂h(t)‖ (log scale)")
        .y_labels(16)
        .y_label_formatter(&|v| format!("1e{v:.0}"))
        .draw()
        .expect("mesh");
    for (name, ys, color) in &curves {
        chart
            .draw_series(LineSeries::new(
                ys.iter()
                    .enumerate()
                    .map(|(t, &v)| ((t + 1) as f64, v.max(lo).log10())),
                color.stroke_width(2),
            ))
            .expect("series")
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .expect("legend");
    root.present().expect("write figure");
    println!("wrote {path}");
}
