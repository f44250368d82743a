//! The vanilla (Elman) RNN cell, PyTorch's `nn.RNN`: one gate block, b_hh
//! folded into the hoisted projection, φ from the layer's configuration.
//!
//! ```text
//! h = φ(x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh)
//! ```

use super::cell::{Cell, CellSpec, Step};
use super::Recurrent;
use crate::{Nonlinearity, Real, Var};

/// The vanilla RNN cell: `h = φ(x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh)`, φ =
/// [`RecurrentConfig::nonlinearity`](super::RecurrentConfig::nonlinearity)
/// (tanh or ReLU).
///
/// ```
/// use tapegrad::layers::{Cell, RnnCell};
/// let spec = RnnCell.spec(3, 5);
/// assert_eq!((spec.input_gates, spec.states.len()), (1, 0));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RnnCell;

impl Cell for RnnCell {
    fn name(&self) -> &str {
        "rnn"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 1)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let a = s.gates(state[0]);
        vec![match s.config().nonlinearity {
            Nonlinearity::Tanh => a.tanh(),
            Nonlinearity::Relu => a.relu(),
        }]
    }
}

/// A vanilla (Elman) RNN, PyTorch's `nn.RNN`:
///
/// ```text
/// h(t) = φ(x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh)
/// ```
///
/// In the seed article's notation `h(t) = φ(U x(t) + W h(t−1) + b)`:
/// U = `weight_ih_l0` [H×I], W = `weight_hh_l0` [H×H],
/// b = `bias_ih_l0` + `bias_hh_l0`; the readout `o(t) = V h(t) + c` is a
/// [`Linear`](super::Linear) with V = its `weight`, c = its `bias`.
///
/// ```
/// use tapegrad::layers::{RecurrentConfig, Rnn};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let rnn = Rnn::new(&mut store, "rnn", RecurrentConfig::new(3, 5), 0);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[4, 2, 3], 1)); // T=4, B=2, I=3
/// let out = rnn.forward(&tape, &store, x, None);
/// assert_eq!(out.outputs.len(), 4);
/// assert_eq!(out.state.h[0].shape().as_slice(), &[2, 5]);
/// let g = out.stacked().sum().backward(); // BPTT
/// assert!(g.param(store.key("rnn.weight_hh_l0").unwrap()).is_some());
/// ```
pub type Rnn = Recurrent<RnnCell>;
