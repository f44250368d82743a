//! The training step of the `lstm_bptt` task (`benches/bptt.rs`) for any
//! layer: the layer over T steps, a readout over all T·B rows, summed
//! cross-entropy, backward to every parameter — the one step that
//! `benches/custom_cell.rs`, `benches/variants.rs` and `benches/scan.rs`
//! time for different cells, so their rows compare with each other and
//! with `lstm_bptt/tape`.

use super::sizes::Config;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId};
use std::hint::black_box;
use tapegrad::layers::{Cell, Linear, Recurrent, RecurrentConfig};
use tapegrad::{Grads, ParamStore, Reduction, Tape, Tensor, Var};

/// The task's input [T × B × I] and one target per row.
pub struct Task {
    pub x: Tensor<f32>,
    pub targets: Vec<usize>,
}

impl Task {
    /// The same numbers for every layer benched at size `c`.
    pub fn new(c: &Config) -> Self {
        Task {
            x: Tensor::randn(&[c.t, c.b, c.i], 11),
            targets: (0..c.t * c.b).map(|k| (k * 7 + 3) % c.o).collect(),
        }
    }
}

/// The readout of `rows` [T·B × width] and the summed cross-entropy, then
/// backward: the loss and the gradients.
pub fn readout_step(
    tape: &Tape<f32>,
    store: &ParamStore<f32>,
    head: &Linear,
    rows: Var<'_, f32>,
    targets: &[usize],
) -> (f32, Grads<f32>) {
    let logits = head.forward(tape, store, rows);
    let loss = logits.cross_entropy(targets, Reduction::Sum);
    logits.release(); // cross-entropy saved its probabilities
    (loss.item(), loss.backward())
}

/// A one-layer model of cell `C` and its readout, parameters created in
/// PyTorch's order from seeds 5 (layer) and 6 (readout): the same numbers
/// for every cell with the same parameters.
pub struct CellModel<C> {
    pub store: ParamStore<f32>,
    pub layer: Recurrent<C>,
    pub head: Linear,
}

impl<C: Cell> CellModel<C> {
    pub fn new(cell: C, c: &Config) -> Self {
        let mut store = ParamStore::new();
        let cfg = RecurrentConfig::new(c.i, c.h);
        let layer = Recurrent::with_cell(cell, &mut store, "lstm", cfg, 5);
        let width = layer.spec().output_size;
        let head = Linear::new(&mut store, "decoder", width, c.o, true, 6);
        CellModel { store, layer, head }
    }

    /// One training step on `task`.
    pub fn step(&self, tape: &Tape<f32>, task: &Task) -> (f32, Grads<f32>) {
        let x = tape.constant_from_slice(task.x.data(), task.x.shape());
        let rows = self
            .layer
            .forward(tape, &self.store, x, None)
            .stacked_rows();
        readout_step(tape, &self.store, &self.head, rows, &task.targets)
    }
}

/// Benches `step` (one training step on a tape reset between iterations)
/// as `{group}/{name}/{size}`.
pub fn bench_step(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    c: &Config,
    step: impl Fn(&Tape<f32>) -> (f32, Grads<f32>),
) {
    let mut tape = Tape::new();
    group.bench_function(BenchmarkId::new(name, c.name), |bench| {
        bench.iter(|| {
            let (loss, grads) = step(&tape);
            black_box(loss);
            tape.reset_with(grads);
        })
    });
}

/// Benches one training step of a one-layer model of `cell` at size `c`.
pub fn bench_cell<C: Cell>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    cell: C,
    c: &Config,
) {
    let task = Task::new(c);
    let model = CellModel::new(cell, c);
    bench_step(group, name, c, |tape| model.step(tape, &task));
}
