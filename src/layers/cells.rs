//! One time step of each recurrent cell, written as tape primitives.
//!
//! The input projection `xw = x(t)·W_ihᵀ + b_ih (+ b_hh)` arrives
//! precomputed (the layer does it for a chunk of steps in one GEMM), as a
//! window of rows of that chunk ([`Projected`]); a step adds the recurrent
//! projection onto its window (`addmm_rows`: no slice copy) and applies the
//! gates. With PyTorch's gate order:
//!
//! ```text
//! RNN   h = φ(xw + h₋·W_hhᵀ)                                   (b_hh folded into xw)
//! LSTM  z = xw + h₋·W_hhᵀ = [z_i z_f z_g z_o]                  (b_hh folded into xw)
//!       i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
//!       c = f⊙c₋ + i⊙g         h = o⊙tanh(c)
//! GRU   hw = h₋·W_hhᵀ + b_hh = [hw_r hw_z hw_n],  xw = [xw_r xw_z xw_n]
//!       r = σ(xw_r + hw_r)  z = σ(xw_z + hw_z)  n = tanh(xw_n + r⊙hw_n)
//!       h = (1 − z)⊙n + z⊙h₋ = n + z⊙(h₋ − n)
//! ```
//!
//! Each gate is recorded under its own label scope, so a listing or an
//! error says `lstm.l0/t=3/forget_gate`.
//!
//! Memory: a step releases ([`Var::release`]) the values no backward rule
//! reads — the pre-activations z (each gate reads its block of z in place),
//! the partial sums `f⊙c₋` and `i⊙g` — as soon as their consumers are
//! recorded, so what stays on the tape per LSTM step is i, f, g, o, c,
//! tanh c and h: the activations hand-written BPTT keeps.

use crate::{Nonlinearity, Real, Var};

/// A weight W [out × in] as a product reads it: `x·Wᵀ`.
#[derive(Clone, Copy)]
pub(crate) enum Weight<'t, F: Real> {
    /// W in PyTorch's layout: `x·Wᵀ` by `matmul_t` (the per-step API,
    /// where reordering would copy the weight every step).
    Stored(Var<'t, F>),
    /// Wᵀ [in × out], reordered once per sequence by `transpose`: `x·Wᵀ` as
    /// a row-major product by `matmul`.
    Transposed(Var<'t, F>),
}

impl<'t, F: Real> Weight<'t, F> {
    /// `x·Wᵀ`.
    pub(crate) fn times(self, x: Var<'t, F>) -> Var<'t, F> {
        match self {
            Weight::Stored(w) => x.matmul_t(w),
            Weight::Transposed(wt) => x.matmul(wt),
        }
    }

    /// `c + x·Wᵀ` in one GEMM (c [m×n], or a bias row [n]).
    pub(crate) fn times_onto(self, c: Var<'t, F>, x: Var<'t, F>) -> Var<'t, F> {
        match self {
            Weight::Stored(w) => c.addmm_t(x, w),
            Weight::Transposed(wt) => c.addmm(x, wt),
        }
    }

    /// `xw + x·Wᵀ` in one GEMM, reading the window `xw` in place.
    fn times_onto_rows(self, xw: Projected<'t, F>, x: Var<'t, F>) -> Var<'t, F> {
        match self {
            Weight::Stored(w) => xw.chunk.addmm_rows_t(xw.start, x, w),
            Weight::Transposed(wt) => xw.chunk.addmm_rows(xw.start, x, wt),
        }
    }
}

/// A step's projected input: rows `start..start + rows` of `chunk`, the
/// input projection of a chunk of steps ([T_c·B × G·H]). The caller keeps
/// and releases the chunk.
#[derive(Clone, Copy)]
pub(crate) struct Projected<'t, F: Real> {
    pub(crate) chunk: Var<'t, F>,
    pub(crate) start: usize,
    pub(crate) rows: usize,
}

impl<'t, F: Real> Projected<'t, F> {
    /// The window as a var of its own (a copy, unless it is the whole chunk).
    fn to_var(self) -> Var<'t, F> {
        if self.start == 0 && self.rows == self.chunk.shape()[0] {
            self.chunk
        } else {
            self.chunk.slice(0, self.start, self.rows)
        }
    }
}

/// Which cell a recurrent layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CellKind {
    Rnn(Nonlinearity),
    Lstm,
    Gru,
}

impl CellKind {
    /// Gate blocks per step: rows of W_ih are `gates·H`.
    pub(crate) fn gates(self) -> usize {
        match self {
            CellKind::Rnn(_) => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// Whether b_hh can be folded into the hoisted input projection (not
    /// for the GRU, whose b_hn sits inside r⊙(·)).
    pub(crate) fn folds_hidden_bias(self) -> bool {
        !matches!(self, CellKind::Gru)
    }

    pub(crate) fn has_cell_state(self) -> bool {
        matches!(self, CellKind::Lstm)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            CellKind::Rnn(_) => "rnn",
            CellKind::Lstm => "lstm",
            CellKind::Gru => "gru",
        }
    }

    /// One step: `(h, c)` from the projected input `xw` [B×G·H], the
    /// previous state, W_hh and (GRU only) b_hh.
    pub(crate) fn step<'t, F: Real>(
        self,
        xw: Projected<'t, F>,
        h: Var<'t, F>,
        c: Option<Var<'t, F>>,
        w_hh: Weight<'t, F>,
        b_hh: Option<Var<'t, F>>,
    ) -> (Var<'t, F>, Option<Var<'t, F>>) {
        let tape = h.tape();
        match self {
            CellKind::Rnn(phi) => {
                let a = w_hh.times_onto_rows(xw, h);
                let h = match phi {
                    Nonlinearity::Tanh => a.tanh(),
                    Nonlinearity::Relu => a.relu(),
                };
                a.release(); // kept by relu, whose backward reads it
                (h, None)
            }
            CellKind::Lstm => {
                let c_prev = c.expect("an LSTM step needs a cell state");
                let z = {
                    let _s = tape.scope("gates");
                    w_hh.times_onto_rows(xw, h)
                };
                // Each gate reads its block of z in place (no split copies).
                let hs = z.shape()[1] / 4;
                let block = |k: usize, name: &'static str, act: GateAct<'t, F>| {
                    let _s = tape.scope(name);
                    act(z, k * hs, hs)
                };
                let i = block(0, "input_gate", Var::sigmoid_cols);
                let f = block(1, "forget_gate", Var::sigmoid_cols);
                let g = block(2, "cell_gate", Var::tanh_cols);
                let o = block(3, "output_gate", Var::sigmoid_cols);
                z.release(); // the gates' rules read their outputs
                let c = {
                    let _s = tape.scope("cell");
                    let (fc, ig) = (f * c_prev, i * g);
                    let c = fc + ig;
                    fc.release();
                    ig.release();
                    c
                };
                let h = {
                    let _s = tape.scope("hidden");
                    o * c.tanh()
                };
                (h, Some(c))
            }
            CellKind::Gru => {
                let hw = {
                    let _s = tape.scope("gates");
                    let hw = w_hh.times(h);
                    match b_hh {
                        Some(b) => {
                            let biased = hw + b;
                            hw.release();
                            biased
                        }
                        None => hw,
                    }
                };
                let xw_t = xw.to_var();
                let x = xw_t.split(1, 3);
                if xw_t.id() != xw.chunk.id() {
                    xw_t.release();
                }
                let hh = hw.split(1, 3);
                hw.release();
                let r = gate(x[0] + hh[0], "reset_gate", Var::sigmoid);
                let z = gate(x[1] + hh[1], "update_gate", Var::sigmoid);
                let n = {
                    let _s = tape.scope("new_gate");
                    let rh = r * hh[2];
                    let pre = x[2] + rh;
                    let n = pre.tanh();
                    // hh[2] stays: r⊙hh_n's backward reads it.
                    for v in [rh, pre, x[0], x[1], x[2], hh[0], hh[1]] {
                        v.release();
                    }
                    n
                };
                let h = {
                    let _s = tape.scope("hidden");
                    let zd = z * (h - n);
                    let h = n + zd;
                    zd.release();
                    h
                };
                (h, None)
            }
        }
    }
}

/// An activation of a window of columns (`Var::sigmoid_cols`, `tanh_cols`).
type GateAct<'t, F> = fn(Var<'t, F>, usize, usize) -> Var<'t, F>;

/// Applies `act` to `pre` under the label scope `name`, then releases `pre`
/// (the gate activations' backward rules read their outputs, not `pre`).
fn gate<'t, F: Real>(
    pre: Var<'t, F>,
    name: &'static str,
    act: fn(Var<'t, F>) -> Var<'t, F>,
) -> Var<'t, F> {
    let _s = pre.tape().scope(name);
    let y = act(pre);
    pre.release();
    y
}
