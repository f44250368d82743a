//! Truncated BPTT with the library loop, `Tbptt::train`: an LSTM learns
//! to echo its input three steps late, on one long stream of random ±1
//! inputs, with BPTT(k2 = 8; k1 = 4) — an optimizer step every 4 steps,
//! each backpropagated through the last 8.
//!
//! `cargo run --release --example tbptt_loop`
//!
//! The closure is the whole model: it runs the window's steps from the
//! carried state, copies the state out at `carry_at` (where the next window
//! starts; with k1 < k2 windows overlap), and returns the loss of the steps
//! `loss_from..end`. Any model fits — a custom cell written from tape
//! primitives works the same way (see `tests/newcomer.rs`).

use tapegrad::layers::tbptt::{Tbptt, WindowOutput};
use tapegrad::layers::{Linear, Lstm, RecurrentConfig, State, StateTensors};
use tapegrad::optim::Adam;
use tapegrad::{ParamStore, Reduction, Tape, Tensor, Var};

const LEN: usize = 1200;
const BATCH: usize = 8;
const HIDDEN: usize = 16;
const DELAY: usize = 3;

fn main() {
    // inputs x(t) ∈ {−1, +1}, targets y(t) = [x(t − 3) > 0] (0 before t = 3)
    let z = Tensor::<f32>::randn(&[LEN, BATCH, 1], 7);
    let x = Tensor::from_fn(&[LEN, BATCH, 1], |i| z.data()[i].signum());
    let y: Vec<usize> = (0..LEN * BATCH)
        .map(|k| {
            let t = k / BATCH;
            usize::from(t >= DELAY && x.data()[k - DELAY * BATCH] > 0.0)
        })
        .collect();

    let mut store = ParamStore::<f32>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(1, HIDDEN), 1);
    let head = Linear::new(&mut store, "head", HIDDEN, 2, true, 2);
    let (mut tape, mut opt) = (Tape::new(), Adam::new(0.01));
    let plan = Tbptt::new(4, 8).expect("1 ≤ k1 ≤ k2");

    for epoch in 0..3 {
        let zeros = lstm.zero_state(&tape, BATCH).to_tensors();
        tape.reset();
        let run = plan
            .train(
                LEN,
                &mut tape,
                &mut store,
                &mut opt,
                zeros,
                Some(1.0),
                |tape, store, w, carried: &StateTensors<f32>| {
                    let steps = |a: usize, b: usize| {
                        tape.constant_from_slice(
                            &x.data()[a * BATCH..b * BATCH],
                            &[b - a, BATCH, 1],
                        )
                    };
                    let mut state: State<'_, f32> = carried.bind(tape);
                    let mut outs: Vec<Var<'_, f32>> = Vec::new();
                    if w.carry_at > w.start {
                        let o = lstm.forward(tape, store, steps(w.start, w.carry_at), Some(&state));
                        outs.extend(&o.outputs);
                        state = o.state;
                    }
                    let carry = state.to_tensors();
                    if w.end > w.carry_at {
                        let o = lstm.forward(tape, store, steps(w.carry_at, w.end), Some(&state));
                        outs.extend(&o.outputs);
                    }
                    let counted = Var::concat(&outs[w.loss_from - w.start..], 0);
                    let loss = head
                        .forward(tape, store, counted)
                        .cross_entropy(&y[w.loss_from * BATCH..w.end * BATCH], Reduction::Mean);
                    WindowOutput { loss, carry }
                },
            )
            .expect("finite gradients");
        let n = run.losses.len();
        let first: f64 = run.losses[..n / 10].iter().sum::<f64>() / (n / 10) as f64;
        let last: f64 = run.losses[n - n / 10..].iter().sum::<f64>() / (n / 10) as f64;
        println!(
            "epoch {epoch}: {n} updates, mean loss {first:.3} over the first tenth, {last:.3} over the last (chance: {:.3})",
            std::f64::consts::LN_2
        );
    }

    // accuracy over the whole stream, one forward pass, no gradient
    let tape = Tape::<f32>::new();
    let out = lstm.forward(&tape, &store, tape.constant(x.clone()), None);
    let logits = head.forward(&tape, &store, out.stacked_rows()).to_tensor();
    let correct = (DELAY * BATCH..LEN * BATCH)
        .filter(|&k| {
            let row = &logits.data()[2 * k..2 * k + 2];
            usize::from(row[1] > row[0]) == y[k]
        })
        .count();
    let acc = correct as f64 / ((LEN - DELAY) * BATCH) as f64;
    println!("accuracy of the delayed echo: {:.1}%", 100.0 * acc);
    assert!(acc > 0.95, "the LSTM should have learned a 3-step echo");
}
