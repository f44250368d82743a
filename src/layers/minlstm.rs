//! The minimal LSTM (minLSTM; Feng et al. 2024, "Were RNNs all we
//! needed?", §3.2): forget and input gates read only the input, and are
//! normalised so that h is a linear recurrence with a ∈ (0, 1):
//!
//! ```text
//! xw = x·W_ihᵀ + b_ih = [xw_f xw_i xw_h]   (weight_ih [3H × I], no weight_hh)
//! f = σ(xw_f),  i = σ(xw_i),  h̃ = xw_h
//! f' = f / (f + i),  i' = i / (f + i)
//! h = f'⊙h₋ + i'⊙h̃  =  a⊙h₋ + b,   a = f',  b = i'⊙h̃
//! ```
//!
//! As the paper's sequential mode (h̃ = Linear_h(x), without the g(·) its
//! log-space variant needs for positivity; see [`super::MinGruCell`]'s
//! module for why). Parallel and sequential modes as for minGRU
//! ([`ScanMode`]).

use super::cell::{Cell, CellSpec, Sequence, Step};
use super::{Recurrent, ScanMode};
use crate::{Real, Var};

/// The minLSTM cell: `f' = σ(xw_f)/(σ(xw_f) + σ(xw_i))`, `i' = 1 − f'`
/// computed as `σ(xw_i)/(σ(xw_f) + σ(xw_i))`, `h = f'⊙h₋ + i'⊙h̃`.
/// Parameters `weight_ih_l{k}` [3H × I] (blocks f, i, h̃) and
/// `bias_ih_l{k}` [3H]; no recurrent weight.
///
/// ```
/// use tapegrad::layers::{MinLstm, MinLstmCell, Recurrent, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let cfg = RecurrentConfig::new(3, 4).bidirectional(true);
/// let par: MinLstm = Recurrent::with_cell(MinLstmCell::parallel(), &mut store, "a", cfg, 1);
/// let seq = Recurrent::with_cell(MinLstmCell::sequential(), &mut store, "b", cfg, 1);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[6, 2, 3], 0));
/// let (p, s) = (par.forward(&tape, &store, x, None), seq.forward(&tape, &store, x, None));
/// let (p, s) = (p.stacked(), s.stacked());
/// let (pv, sv) = (p.value(), s.value());
/// let diff = pv.data().iter().zip(sv.data()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
/// assert!(diff <= 1e-12);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinLstmCell {
    /// Parallel (one scan node) or sequential (one step per time step).
    pub mode: ScanMode,
}

impl MinLstmCell {
    /// The whole sequence as one scan node (the default).
    pub fn parallel() -> Self {
        MinLstmCell {
            mode: ScanMode::Parallel,
        }
    }

    /// One cell step per time step.
    pub fn sequential() -> Self {
        MinLstmCell {
            mode: ScanMode::Sequential,
        }
    }

    /// a = f' and b = i'⊙h̃ from the projected input [rows × 3H].
    fn coefficients<'t, F: Real>(xw: Var<'t, F>, hidden: usize) -> (Var<'t, F>, Var<'t, F>) {
        let f = xw.sigmoid_cols(0, hidden);
        let i = xw.sigmoid_cols(hidden, hidden);
        let candidate = xw.slice(1, 2 * hidden, hidden);
        let total = f + i;
        (f / total, i / total * candidate)
    }
}

impl Cell for MinLstmCell {
    fn name(&self) -> &str {
        "minlstm"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 3).recurrent_gates(0)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (a, b) = Self::coefficients(s.input(), s.hidden());
        vec![a * state[0] + b]
    }

    fn sequence<'t, F: Real>(
        &self,
        s: &Sequence<'_, 't, F>,
        state: &[Var<'t, F>],
    ) -> Option<(Var<'t, F>, Vec<Var<'t, F>>)> {
        self.mode.scan(s, state, Self::coefficients)
    }
}

/// A minLSTM layer ([`MinLstmCell`]).
pub type MinLstm = Recurrent<MinLstmCell>;
