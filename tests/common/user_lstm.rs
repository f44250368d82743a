//! An LSTM cell written the way a user writes one, through the public
//! `Cell` interface, outside the crate: shared (through `#[path]`) by
//! `tests/custom_cell.rs` (bitwise equal to `Lstm`), `benches/custom_cell.rs`
//! (its speed against `Lstm`) and `examples/bptt_memory.rs` (its peak heap).

use tapegrad::layers::{Cell, CellSpec, Step};
use tapegrad::{Real, Var};

/// `c = σ(z_f)⊙c₋ + σ(z_i)⊙tanh(z_g)`, `h = σ(z_o)⊙tanh(c)`, with
/// `z = s.gates(h)` in PyTorch's gate order i, f, g, o.
#[derive(Debug, Clone, Copy, Default)]
pub struct UserLstm;

impl Cell for UserLstm {
    fn name(&self) -> &str {
        "user_lstm"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 4).state("c", hidden)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (h, c, n) = (state[0], state[1], s.hidden());
        let z = s.gates(h);
        let (i, f) = (z.sigmoid_cols(0, n), z.sigmoid_cols(n, n));
        let (g, o) = (z.tanh_cols(2 * n, n), z.sigmoid_cols(3 * n, n));
        let c = f * c + i * g;
        vec![o * c.tanh(), c]
    }
}
