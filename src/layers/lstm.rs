//! The LSTM cell, PyTorch's `nn.LSTM` (gates i, f, g, o in that order in
//! the 4H rows of `weight_ih_l{k}`), b_hh folded into the hoisted
//! projection:
//!
//! ```text
//! z = x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh = [z_i z_f z_g z_o]
//! i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
//! c = f⊙c₋ + i⊙g         h = o⊙tanh(c)
//! ```
//!
//! Each gate activates its block of z in place (`sigmoid_cols`,
//! `tanh_cols`: no split copies) under its own label scope, so a listing or
//! an error says `lstm.l0/t=3/forget_gate`. What stays on the tape per step
//! is i, f, g, o, c, tanh c and h — the activations hand-written BPTT
//! keeps; z and the partial sums are released when the step ends, because
//! no backward rule reads them.

use super::cell::{Cell, CellSpec, Step};
use super::Recurrent;
use crate::{Real, Var};

/// The LSTM cell (Hochreiter & Schmidhuber 1997, with the forget gate of
/// Gers et al. 2000), in PyTorch's gate order i, f, g, o:
/// `c = σ(z_f)⊙c₋ + σ(z_i)⊙tanh(z_g)`, `h = σ(z_o)⊙tanh(c)`.
///
/// ```
/// use tapegrad::layers::{Cell, LstmCell};
/// let spec = LstmCell.spec(3, 5);
/// assert_eq!((spec.input_gates, spec.states[0].name.as_ref()), (4, "c"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LstmCell;

/// An activation of a window of columns (`Var::sigmoid_cols`, `tanh_cols`).
type GateAct<'t, F> = fn(Var<'t, F>, usize, usize) -> Var<'t, F>;

/// From the pre-activations z = [z_i z_f z_g z_o] [B × 4H] and c₋: the
/// output gate o = σ(z_o) and the new cell c = σ(z_f)⊙c₋ + σ(z_i)⊙tanh(z_g),
/// each gate activating its block of z in place under its own label scope.
/// Shared with the layer-normalised LSTM (`ln_lstm.rs`), whose gates are
/// the LSTM's.
pub(super) fn gates_and_cell<'t, F: Real>(
    s: &Step<'_, 't, F>,
    z: Var<'t, F>,
    c_prev: Var<'t, F>,
    hs: usize,
) -> (Var<'t, F>, Var<'t, F>) {
    let tape = s.tape();
    let block = |k: usize, name: &'static str, act: GateAct<'t, F>| {
        let _s = tape.scope(name);
        act(z, k * hs, hs)
    };
    let i = block(0, "input_gate", Var::sigmoid_cols);
    let f = block(1, "forget_gate", Var::sigmoid_cols);
    let g = block(2, "cell_gate", Var::tanh_cols);
    let o = block(3, "output_gate", Var::sigmoid_cols);
    let c = {
        let _s = tape.scope("cell");
        f * c_prev + i * g
    };
    (o, c)
}

impl Cell for LstmCell {
    fn name(&self) -> &str {
        "lstm"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 4).state("c", hidden)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (h, c_prev, hs) = (state[0], state[1], s.hidden());
        let tape = s.tape();
        let z = {
            let _s = tape.scope("gates");
            s.gates(h)
        };
        let (o, c) = gates_and_cell(s, z, c_prev, hs);
        let h = {
            let _s = tape.scope("hidden");
            o * c.tanh()
        };
        vec![h, c]
    }
}

/// A long short-term memory layer, PyTorch's `nn.LSTM` (gates i, f, g, o
/// in that order in the 4H rows of `weight_ih_l{k}`):
///
/// ```text
/// z = x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh = [z_i z_f z_g z_o]
/// c = σ(z_f)⊙c₋ + σ(z_i)⊙tanh(z_g),   h = σ(z_o)⊙tanh(c)
/// ```
///
/// ```
/// use tapegrad::layers::{Lstm, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(3, 4).layers(2), 0);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[5, 2, 3], 1));
/// let out = lstm.forward(&tape, &store, x, None);
/// assert_eq!(out.state.c.as_ref().unwrap().len(), 2);
/// assert!(tape.listing().contains("lstm.l1/t=4/forget_gate"));
/// ```
pub type Lstm = Recurrent<LstmCell>;
