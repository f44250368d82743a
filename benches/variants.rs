//! What each LSTM variant costs beside the plain LSTM: one training step
//! of the `lstm_bptt` task (`benches/bptt.rs`: forward over T steps,
//! readout over all T·B rows, summed cross-entropy, backward to every
//! parameter), at the M and L sizes of `common/sizes.rs`, one thread:
//!
//! - `variants/lstm/{M,L}`: `tapegrad::layers::Lstm` (the baseline);
//! - `variants/proj/{M,L}`: `ProjLstm` with P = H/2 (the readout reads P
//!   features);
//! - `variants/ln_lstm/{M,L}`: `LayerNormLstm`;
//! - `variants/peephole/{M,L}`: `PeepholeLstm`;
//! - `variants/ln_naive/{M,L}`: the same layer-normalised LSTM written as
//!   a cell that takes none of the engine's fast paths — its own W_ih and
//!   W_hh as further parameters, `x(t)·W_ihᵀ` per step instead of the
//!   hoisted projection and `h·W_hhᵀ` with W_hh in PyTorch's layout
//!   instead of `Step::recurrent` (the tape still batches W_hh's gradient:
//!   that is the sweep's, not the cell's). The same equations and sizes as
//!   `ln_lstm`; the gap between the two is what `LayerNormLstmCell` keeps
//!   by reading `Step::input()` and `Step::recurrent(h)`.
//!
//! `cargo bench --bench variants`; medians and ratios in
//! docs/performance.md ("LSTM variants").

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;
use tapegrad::layers::{
    Cell, CellSpec, Init, LayerNormLstmCell, LstmCell, PeepholeLstmCell, ProjLstmCell, Step,
};
use tapegrad::{Real, Var};

#[path = "common/sizes.rs"]
mod sizes;

#[path = "common/lm_step.rs"]
mod lm_step;

use lm_step::bench_cell;
use sizes::CONFIGS;

/// The layer-normalised LSTM of `LayerNormLstmCell`, off the fast path:
/// per-step products with weights in PyTorch's layout (see the module
/// docs).
#[derive(Debug, Clone, Copy, Default)]
struct NaiveLnLstm;

impl Cell for NaiveLnLstm {
    fn name(&self) -> &str {
        "ln_naive"
    }

    fn spec(&self, input: usize, hidden: usize) -> CellSpec {
        let g = [4 * hidden];
        CellSpec::new(hidden, 0)
            .recurrent_gates(0)
            .state("c", hidden)
            .param("w_ih", &[4 * hidden, input], Init::Uniform)
            .param("w_hh", &[4 * hidden, hidden], Init::Uniform)
            .param("b", &g, Init::Uniform)
            .param("ln_gain_ih", &g, Init::Ones)
            .param("ln_bias_ih", &g, Init::Zeros)
            .param("ln_gain_hh", &g, Init::Ones)
            .param("ln_bias_hh", &g, Init::Zeros)
            .param("ln_gain_c", &[hidden], Init::Ones)
            .param("ln_bias_c", &[hidden], Init::Zeros)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (h, c, n, eps) = (state[0], state[1], s.hidden(), 1e-5);
        let p = |name| s.param(name);
        let a = s.x().matmul_t(p("w_ih")) + p("b");
        let r = h.matmul_t(p("w_hh"));
        let z = a.layer_norm_affine(p("ln_gain_ih"), p("ln_bias_ih"), eps)
            + r.layer_norm_affine(p("ln_gain_hh"), p("ln_bias_hh"), eps);
        let (i, f) = (z.sigmoid_cols(0, n), z.sigmoid_cols(n, n));
        let (g, o) = (z.tanh_cols(2 * n, n), z.sigmoid_cols(3 * n, n));
        let c = f * c + i * g;
        let cn = c.layer_norm_affine(p("ln_gain_c"), p("ln_bias_c"), eps);
        vec![o * cn.tanh(), c]
    }
}

/// Each variant's training step at M and L, one thread.
fn variants(cr: &mut Criterion) {
    tapegrad::set_num_threads(1);
    let mut group = cr.benchmark_group("variants");
    for c in CONFIGS.into_iter().filter(|c| c.name != "S") {
        match c.name {
            "L" => group
                .sample_size(10)
                .measurement_time(Duration::from_secs(15)),
            _ => group
                .sample_size(20)
                .measurement_time(Duration::from_secs(6)),
        };
        bench_cell(&mut group, "lstm", LstmCell, &c);
        bench_cell(&mut group, "proj", ProjLstmCell::new(c.h / 2), &c);
        bench_cell(&mut group, "ln_lstm", LayerNormLstmCell::default(), &c);
        bench_cell(&mut group, "peephole", PeepholeLstmCell, &c);
        bench_cell(&mut group, "ln_naive", NaiveLnLstm, &c);
    }
    group.finish();
}

criterion_group!(benches, variants);
criterion_main!(benches);
