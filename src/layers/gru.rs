//! The GRU cell, PyTorch's `nn.GRU` (gates r, z, n). b_hh cannot be folded
//! into the hoisted projection — b_hn sits inside r⊙(·) — so the step adds
//! it to its recurrent product:
//!
//! ```text
//! hw = h₋·W_hhᵀ + b_hh = [hw_r hw_z hw_n],  xw = x·W_ihᵀ + b_ih = [xw_r xw_z xw_n]
//! r = σ(xw_r + hw_r)  z = σ(xw_z + hw_z)  n = tanh(xw_n + r⊙hw_n)
//! h = (1 − z)⊙n + z⊙h₋ = n + z⊙(h₋ − n)
//! ```

use super::cell::{Cell, CellSpec, Step};
use super::Recurrent;
use crate::{Real, Var};

/// The GRU cell (Cho et al. 2014) in PyTorch's form: r, z, n as above,
/// `h = n + z⊙(h₋ − n)`.
///
/// ```
/// use tapegrad::layers::{Cell, GruCell};
/// let spec = GruCell.spec(3, 5);
/// assert_eq!((spec.input_gates, spec.fold_hidden_bias), (3, false));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GruCell;

impl Cell for GruCell {
    fn name(&self) -> &str {
        "gru"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 3).fold_hidden_bias(false)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (h, tape) = (state[0], s.tape());
        let hw = {
            let _s = tape.scope("gates");
            s.recurrent(h)
        };
        let x = s.input().chunk(3, 1);
        let hh = hw.chunk(3, 1);
        let gate = |pre: Var<'t, F>, name: &'static str| {
            let _s = tape.scope(name);
            pre.sigmoid()
        };
        let r = gate(x[0] + hh[0], "reset_gate");
        let z = gate(x[1] + hh[1], "update_gate");
        let n = {
            let _s = tape.scope("new_gate");
            (x[2] + r * hh[2]).tanh()
        };
        let _s = tape.scope("hidden");
        vec![n + z * (h - n)]
    }
}

/// A gated recurrent unit, PyTorch's `nn.GRU` (gates r, z, n):
///
/// ```text
/// r = σ(x·W_irᵀ + b_ir + h₋·W_hrᵀ + b_hr)
/// z = σ(x·W_izᵀ + b_iz + h₋·W_hzᵀ + b_hz)
/// n = tanh(x·W_inᵀ + b_in + r⊙(h₋·W_hnᵀ + b_hn))
/// h = (1 − z)⊙n + z⊙h₋
/// ```
///
/// ```
/// use tapegrad::layers::{Gru, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let gru = Gru::new(&mut store, "gru", RecurrentConfig::new(2, 3).bidirectional(true), 0);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[3, 1, 2], 1));
/// let out = gru.forward(&tape, &store, x, None);
/// assert_eq!(out.outputs[0].shape().as_slice(), &[1, 6]); // forward ‖ reverse
/// assert!(store.key("gru.weight_hh_l0_reverse").is_some());
/// ```
pub type Gru = Recurrent<GruCell>;
