//! The layer-normalised LSTM (Ba, Kiros & Hinton 2016, "Layer
//! Normalization", §3.1 / eqs. 20–22), in PyTorch's gate order i, f, g, o:
//!
//! ```text
//! a = x·W_ihᵀ + b_ih + b_hh            (the hoisted input projection)
//! r = h₋·W_hhᵀ                          (the recurrent product)
//! z = LN(a; γ_ih, β_ih) + LN(r; γ_hh, β_hh) = [z_i z_f z_g z_o]   (each LN over all 4H)
//! i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
//! c = f⊙c₋ + i⊙g
//! h = o⊙tanh(LN(c; γ_c, β_c))                                      (LN over H)
//! ```
//!
//! LN(v; γ, β) = (v − mean v)/√(var v + ε) ⊙ γ + β per row, biased
//! variance, ε = 1e-5 by default ([`Var::layer_norm_affine`], PyTorch's
//! `F.layer_norm`). The paper's additive gate bias b is β_ih + β_hh here;
//! PyTorch's two LSTM biases b_ih, b_hh (present unless
//! [`RecurrentConfig::bias`](super::RecurrentConfig::bias) is false, which
//! gives the paper's equations exactly) are added to the input projection
//! before its normalisation.
//!
//! The fast path is the LSTM's: `a` is this step's rows of the projection
//! the engine hoists out of the loop, and `r` is [`Step::recurrent`], the
//! product with the once-per-sequence reordered W_hh whose gradient the
//! sweep defers and batches over the steps. Only the normalisations and
//! their per-step gain and bias gradients are added. Parameters per layer
//! and direction, after the four standard ones: `ln_gain_ih`, `ln_bias_ih`,
//! `ln_gain_hh`, `ln_bias_hh` [4H] and `ln_gain_c`, `ln_bias_c` [H], gains
//! initialised to 1 and biases to 0 (as the paper and `nn.LayerNorm` do).

use super::cell::{Cell, CellSpec, Init, Step};
use super::lstm::gates_and_cell;
use super::Recurrent;
use crate::{Real, Var};

/// The layer-normalised LSTM cell (Ba, Kiros & Hinton 2016), gates i, f,
/// g, o: `z = LN(x·W_ihᵀ + b_ih + b_hh; γ_ih, β_ih) + LN(h₋·W_hhᵀ; γ_hh,
/// β_hh)`, `c = σ(z_f)⊙c₋ + σ(z_i)⊙tanh(z_g)`, `h = σ(z_o)⊙tanh(LN(c; γ_c,
/// β_c))`, each LN over its whole row (4H, 4H, H) with ε = 1e-5 unless
/// [`LayerNormLstmCell::with_eps`] says otherwise.
///
/// ```
/// use tapegrad::layers::{LayerNormLstm, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let cfg = RecurrentConfig::new(3, 4).layers(2);
/// let lstm = LayerNormLstm::new(&mut store, "ln", cfg, 0);
/// let gain = store.key("ln.ln_gain_c_l1").unwrap();
/// assert_eq!(store.get(gain).data(), &[1.0; 4]);
/// let tape = Tape::new();
/// // The input projection is normalised: scaling huge inputs changes nothing.
/// let scaled = |s: f64| {
///     let mut t = Tensor::randn(&[6, 2, 3], 1);
///     t.data_mut().iter_mut().for_each(|v| *v *= s);
///     tape.constant(t)
/// };
/// let a = lstm.forward(&tape, &store, scaled(1e7), None).stacked().to_tensor();
/// let out = lstm.forward(&tape, &store, scaled(3e7), None);
/// assert!(a.max_abs_diff(&out.stacked().to_tensor()) < 1e-6);
/// let g = out.stacked().sum().backward();
/// assert!(g.param(store.key("ln.ln_gain_hh_l0").unwrap()).is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNormLstmCell {
    eps: f64,
}

impl Default for LayerNormLstmCell {
    /// ε = 1e-5, PyTorch's `nn.LayerNorm` default.
    fn default() -> Self {
        LayerNormLstmCell { eps: 1e-5 }
    }
}

impl LayerNormLstmCell {
    /// A cell whose normalisations add `eps` to the variance.
    pub fn with_eps(eps: f64) -> Self {
        LayerNormLstmCell { eps }
    }

    /// ε of the normalisations.
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Cell for LayerNormLstmCell {
    fn name(&self) -> &str {
        "ln_lstm"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        let (g, h) = ([4 * hidden], [hidden]);
        CellSpec::new(hidden, 4)
            .state("c", hidden)
            .param("ln_gain_ih", &g, Init::Ones)
            .param("ln_bias_ih", &g, Init::Zeros)
            .param("ln_gain_hh", &g, Init::Ones)
            .param("ln_bias_hh", &g, Init::Zeros)
            .param("ln_gain_c", &h, Init::Ones)
            .param("ln_bias_c", &h, Init::Zeros)
    }

    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
        let (h, c_prev, hs, eps) = (state[0], state[1], s.hidden(), self.eps);
        let tape = s.tape();
        let p = |name| s.param(name);
        let z = {
            let _s = tape.scope("gates");
            let a = s
                .input()
                .layer_norm_affine(p("ln_gain_ih"), p("ln_bias_ih"), eps);
            let r = s.recurrent(h);
            a + r.layer_norm_affine(p("ln_gain_hh"), p("ln_bias_hh"), eps)
        };
        let (o, c) = gates_and_cell(s, z, c_prev, hs);
        let h = {
            let _s = tape.scope("hidden");
            o * c
                .layer_norm_affine(p("ln_gain_c"), p("ln_bias_c"), eps)
                .tanh()
        };
        vec![h, c]
    }
}

/// A layer-normalised LSTM layer: [`Recurrent`] running
/// [`LayerNormLstmCell`] (stacked, bidirectional, variable lengths, the
/// per-step API — everything [`Lstm`](super::Lstm) has).
///
/// ```
/// use tapegrad::layers::{LayerNormLstm, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let lstm = LayerNormLstm::new(&mut store, "ln", RecurrentConfig::new(2, 3).bidirectional(true), 0);
/// let tape = Tape::new();
/// let out = lstm.forward(&tape, &store, tape.constant(Tensor::randn(&[4, 2, 2], 0)), None);
/// assert_eq!(out.outputs[3].shape().as_slice(), &[2, 6]);
/// ```
pub type LayerNormLstm = Recurrent<LayerNormLstmCell>;
