//! The LSTM with a projected hidden state, PyTorch's
//! `nn.LSTM(proj_size = P)` (Sak, Senior & Beaufays 2014, "LSTMP"):
//!
//! ```text
//! z = x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh = [z_i z_f z_g z_o]     W_hh: [4H × P]
//! i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
//! c = f⊙c₋ + i⊙g                                                 [B × H]
//! h = (o⊙tanh(c))·W_hrᵀ                                          [B × P], W_hr: [P × H]
//! ```
//!
//! The cell state keeps width H; h, which the recurrence, the next layer
//! and the outputs read, has width P < H. Everything the engine does for
//! an LSTM it does here: the cell declares h of width P (`output_size`),
//! so `weight_hh_l{k}` is [4H × P], h(0) and h_n are [B × P], a stacked
//! layer reads D·P features, and `weight_hr_l{k}[_reverse]` is created
//! after the four standard parameters of each layer and direction, in
//! PyTorch's `state_dict` order, initialised U(−1/√H, 1/√H) as PyTorch
//! initialises every LSTM weight. The per-step product with W_hr is an
//! ordinary `matmul_t` of a weight leaf by a [B × H] operand, so the sweep
//! defers and batches W_hr's gradient over the steps as it does W_hh's.

use super::cell::{Cell, CellSpec, Init, Step};
use super::lstm::LstmCell;
use super::Recurrent;
use crate::error::{fail, Error, ErrorKind};
use crate::{Real, Var};

/// The LSTM cell with a projection of its output (PyTorch's
/// `nn.LSTM(proj_size = P)`), gates in PyTorch's order i, f, g, o:
/// `c = σ(z_f)⊙c₋ + σ(z_i)⊙tanh(z_g)`, `h = (σ(z_o)⊙tanh(c))·W_hrᵀ`, with
/// `z = x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh` and h of width P.
///
/// Build the layer with [`Recurrent::with_cell`]; as in PyTorch, P must be
/// at least 1 and smaller than the hidden size.
///
/// ```
/// use tapegrad::layers::{ProjLstm, ProjLstmCell, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let cfg = RecurrentConfig::new(3, 6).layers(2).bidirectional(true);
/// let lstm = ProjLstm::with_cell(ProjLstmCell::new(2), &mut store, "lstm", cfg, 0);
/// let w_hr = store.key("lstm.weight_hr_l1_reverse").unwrap();
/// assert_eq!(store.get(w_hr).shape(), &[2, 6]);          // [P × H]
/// let w_hh = store.key("lstm.weight_hh_l0").unwrap();
/// assert_eq!(store.get(w_hh).shape(), &[24, 2]);         // [4H × P]
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[5, 4, 3], 1));
/// let out = lstm.forward(&tape, &store, x, None);
/// assert_eq!(out.outputs[0].shape().as_slice(), &[4, 4]); // [B × D·P]
/// assert_eq!(out.state.c.as_ref().unwrap()[0].shape().as_slice(), &[4, 6]);
/// let g = out.stacked().sum().backward();
/// assert!(g.param(w_hr).is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjLstmCell {
    proj_size: usize,
}

impl ProjLstmCell {
    /// A cell whose h has `proj_size` features (P in the equations).
    pub fn new(proj_size: usize) -> Self {
        ProjLstmCell { proj_size }
    }

    /// P, the width of h.
    pub fn proj_size(&self) -> usize {
        self.proj_size
    }
}

impl Cell for ProjLstmCell {
    fn name(&self) -> &str {
        "proj_lstm"
    }

    #[track_caller]
    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        let p = self.proj_size;
        if p == 0 || p >= hidden {
            fail(Error::new(
                ErrorKind::InvalidArgument,
                "proj_lstm",
                format!(
                    "proj_size = {p} must be at least 1 and smaller than hidden_size = {hidden} (as in PyTorch)"
                ),
            ));
        }
        CellSpec::new(hidden, 4)
            .output_size(p)
            .state("c", hidden)
            .param("weight_hr", &[p, hidden], Init::Uniform)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        // The LSTM's step (h₋ of width P feeds W_hh [4H × P]), then h
        // projected: h = W_hr·(o⊙tanh c).
        let mut next = LstmCell.step(s, state);
        let _s = s.tape().scope("projection");
        next[0] = next[0].matmul_t(s.param("weight_hr"));
        next
    }
}

/// An LSTM layer with projected outputs, PyTorch's
/// `nn.LSTM(proj_size = P)`: [`Recurrent`] running [`ProjLstmCell`].
///
/// ```
/// use tapegrad::layers::{ProjLstm, ProjLstmCell, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let lstm = ProjLstm::with_cell(ProjLstmCell::new(3), &mut store, "p", RecurrentConfig::new(2, 8), 1);
/// let tape = Tape::new();
/// let out = lstm.forward(&tape, &store, tape.constant(Tensor::randn(&[4, 2, 2], 0)), None);
/// assert_eq!(out.state.h[0].shape().as_slice(), &[2, 3]);
/// ```
pub type ProjLstm = Recurrent<ProjLstmCell>;
