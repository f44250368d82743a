//! The minimal GRU (minGRU; Feng et al. 2024, "Were RNNs all we needed?",
//! §3.1): a GRU whose gates read only the input, so that h is a linear
//! recurrence in time,
//!
//! ```text
//! xw = x·W_ihᵀ + b_ih = [xw_z xw_h]     (weight_ih [2H × I], no weight_hh)
//! z = σ(xw_z),  h̃ = xw_h
//! h = (1 − z)⊙h₋ + z⊙h̃  =  a⊙h₋ + b,   a = 1 − z ∈ (0, 1),  b = z⊙h̃
//! ```
//!
//! This is the paper's sequential-mode definition (its Algorithm 1 with
//! h̃ = Linear_h(x)); the paper's log-space variant, which replaces h̃ by
//! g(h̃) (g(x) = x + 0.5 for x ≥ 0, σ(x) otherwise) only to keep h
//! positive for `log`, is not needed here: the parallel mode runs the
//! direct recurrence ([`Var::linear_scan`](crate::Var::linear_scan), whose
//! doc says why that is the stable form on a CPU).
//!
//! Two modes, one set of parameters and the same numbers:
//! [`ScanMode::Parallel`] hands the engine the whole sequence
//! ([`Cell::sequence`]): all gates for all steps from the one hoisted
//! projection, then h for every step as one scan node;
//! [`ScanMode::Sequential`] is an ordinary cell step.

use super::cell::{Cell, CellSpec, Sequence, Step};
use super::Recurrent;
use crate::{Real, Var};

/// How a cell without recurrent weight runs a sequence.
///
/// ```
/// use tapegrad::layers::{MinGruCell, ScanMode};
/// assert_eq!(MinGruCell::default().mode, ScanMode::Parallel);
/// assert_eq!(MinGruCell::sequential().mode, ScanMode::Sequential);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScanMode {
    /// All steps at once: gates for every step in one pass, h by one
    /// linear-scan node ([`Cell::sequence`]).
    #[default]
    Parallel,
    /// One [`Cell::step`] per time step, like any other cell.
    Sequential,
}

impl ScanMode {
    /// The [`Cell::sequence`] of a cell whose step is h = a⊙h₋ + b with
    /// (a, b) = `coefficients(projection, hidden)`: in parallel mode h for
    /// every step of the chunk as one scan node; `None` (step) otherwise.
    pub(super) fn scan<'t, F: Real>(
        self,
        s: &Sequence<'_, 't, F>,
        state: &[Var<'t, F>],
        coefficients: impl Fn(Var<'t, F>, usize) -> (Var<'t, F>, Var<'t, F>),
    ) -> Option<(Var<'t, F>, Vec<Var<'t, F>>)> {
        if self == ScanMode::Sequential {
            return None;
        }
        let (a, b) = coefficients(s.input(), s.hidden());
        let hs = s.scan(a, b, state[0]);
        Some((hs, vec![s.last(hs)]))
    }
}

/// The minGRU cell: `z = σ(x·W_zᵀ + b_z)`, `h̃ = x·W_hᵀ + b_h`,
/// `h = (1 − z)⊙h₋ + z⊙h̃`. Parameters `weight_ih_l{k}` [2H × I] (blocks
/// z, h̃) and `bias_ih_l{k}` [2H]; no recurrent weight.
///
/// ```
/// use tapegrad::layers::{MinGru, MinGruCell, Recurrent, RecurrentConfig};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let cfg = RecurrentConfig::new(3, 4);
/// let par: MinGru = Recurrent::with_cell(MinGruCell::parallel(), &mut store, "a", cfg, 1);
/// let seq = Recurrent::with_cell(MinGruCell::sequential(), &mut store, "b", cfg, 1);
/// assert!(store.key("a.weight_hh_l0").is_none()); // no recurrent weight
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[6, 2, 3], 0));
/// let (p, s) = (par.forward(&tape, &store, x, None), seq.forward(&tape, &store, x, None));
/// let (p, s) = (p.stacked(), s.stacked());
/// let (pv, sv) = (p.value(), s.value());
/// let diff = pv.data().iter().zip(sv.data()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
/// assert!(diff <= 1e-12);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinGruCell {
    /// Parallel (one scan node) or sequential (one step per time step).
    pub mode: ScanMode,
}

impl MinGruCell {
    /// The whole sequence as one scan node (the default).
    pub fn parallel() -> Self {
        MinGruCell {
            mode: ScanMode::Parallel,
        }
    }

    /// One cell step per time step.
    pub fn sequential() -> Self {
        MinGruCell {
            mode: ScanMode::Sequential,
        }
    }

    /// a = 1 − z and b = z⊙h̃ from the projected input [rows × 2H].
    fn coefficients<'t, F: Real>(xw: Var<'t, F>, hidden: usize) -> (Var<'t, F>, Var<'t, F>) {
        let z = xw.sigmoid_cols(0, hidden);
        let candidate = xw.slice(1, hidden, hidden);
        (z.rsub_scalar(F::one()), z * candidate)
    }
}

impl Cell for MinGruCell {
    fn name(&self) -> &str {
        "mingru"
    }

    fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
        CellSpec::new(hidden, 2).recurrent_gates(0)
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

/// A minGRU layer ([`MinGruCell`]), stacked, bidirectional, with lengths,
/// like every [`Recurrent`].
pub type MinGru = Recurrent<MinGruCell>;
