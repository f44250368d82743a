//! The LSTM with diagonal peephole connections (Gers & Schmidhuber 2000,
//! "Recurrent nets that time and count"; Gers, Schraudolph & Schmidhuber
//! 2002), in PyTorch's gate order i, f, g, o:
//!
//! ```text
//! z = x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh = [z_i z_f z_g z_o]
//! i = σ(z_i + w_ci⊙c₋)    f = σ(z_f + w_cf⊙c₋)    g = tanh(z_g)
//! c = f⊙c₋ + i⊙g
//! o = σ(z_o + w_co⊙c)                  (the output gate peeks at the new c)
//! h = o⊙tanh(c)
//! ```
//!
//! The peephole weights `weight_ci`, `weight_cf`, `weight_co` are vectors
//! of H (diagonal), created per layer and direction after the four
//! standard parameters and initialised U(−1/√H, 1/√H) like them. z is the
//! LSTM's one GEMM onto the hoisted projection ([`Step::gates`]); the
//! peepholes add a broadcast product and a sum per gate, and the gates
//! they touch read their column block of z through `slice` rather than in
//! place.

use super::cell::{Cell, CellSpec, Init, Step};
use super::Recurrent;
use crate::{Real, Var};

/// The LSTM cell with diagonal peepholes (Gers & Schmidhuber 2000), gates
/// i, f, g, o: `i = σ(z_i + w_ci⊙c₋)`, `f = σ(z_f + w_cf⊙c₋)`,
/// `c = f⊙c₋ + i⊙tanh(z_g)`, `o = σ(z_o + w_co⊙c)`, `h = o⊙tanh(c)`.
///
/// ```
/// use tapegrad::layers::{PeepholeLstm, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let lstm = PeepholeLstm::new(&mut store, "pl", RecurrentConfig::new(3, 4), 0);
/// let w_co = store.key("pl.weight_co_l0").unwrap();
/// assert_eq!(store.get(w_co).shape(), &[4]);
/// // With the peepholes at zero it is the plain LSTM on the same numbers.
/// for name in ["pl.weight_ci_l0", "pl.weight_cf_l0", "pl.weight_co_l0"] {
///     let k = store.key(name).unwrap();
///     *store.get_mut(k) = Tensor::zeros(&[4]);
/// }
/// let mut plain = ParamStore::<f64>::new();
/// let lstm2 = tapegrad::layers::Lstm::new(&mut plain, "pl", RecurrentConfig::new(3, 4), 0);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[5, 2, 3], 1));
/// let a = lstm.forward(&tape, &store, x, None).stacked().to_tensor();
/// let b = lstm2.forward(&tape, &plain, x, None).stacked().to_tensor();
/// assert!(a.data().iter().zip(b.data()).all(|(p, q)| (p - q).abs() < 1e-15));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeepholeLstmCell;

impl Cell for PeepholeLstmCell {
    fn name(&self) -> &str {
        "peephole_lstm"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 4)
            .state("c", hidden)
            .param("weight_ci", &[hidden], Init::Uniform)
            .param("weight_cf", &[hidden], Init::Uniform)
            .param("weight_co", &[hidden], Init::Uniform)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (h, c_prev, hs) = (state[0], state[1], s.hidden());
        let tape = s.tape();
        let z = {
            let _s = tape.scope("gates");
            s.gates(h)
        };
        let peep =
            |k: usize, c: Var<'t, F>, w: &str| (z.slice(1, k * hs, hs) + c * s.param(w)).sigmoid();
        let i = peep(0, c_prev, "weight_ci");
        let f = peep(1, c_prev, "weight_cf");
        let g = z.tanh_cols(2 * hs, hs);
        let c = {
            let _s = tape.scope("cell");
            f * c_prev + i * g
        };
        let o = peep(3, c, "weight_co");
        let h = {
            let _s = tape.scope("hidden");
            o * c.tanh()
        };
        vec![h, c]
    }
}

/// An LSTM layer with peephole connections: [`Recurrent`] running
/// [`PeepholeLstmCell`].
///
/// ```
/// use tapegrad::layers::{PeepholeLstm, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let lstm = PeepholeLstm::new(&mut store, "pl", RecurrentConfig::new(2, 3).layers(2), 0);
/// let tape = Tape::new();
/// let out = lstm.forward(&tape, &store, tape.constant(Tensor::randn(&[4, 2, 2], 0)), None);
/// assert_eq!(out.state.c.as_ref().unwrap().len(), 2);
/// ```
pub type PeepholeLstm = Recurrent<PeepholeLstmCell>;
