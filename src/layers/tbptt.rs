//! Truncated BPTT: every k1 steps, backpropagate through the last k2 steps
//! (Williams & Peng's BPTT(k2; k1); k1 = k2 = k is the common case).
//!
//! [`Tbptt::windows`] plans the passes over a sequence of length T. Each
//! [`Window`] is run on a fresh (or reset) tape: bind the carried state as
//! constants ([`StateTensors::bind`](super::StateTensors::bind)), run the
//! steps `start..carry_at`, copy the state there out for the next window,
//! run on to `end`, and take the loss of the steps `loss_from..end` only.
//! The state crosses a window boundary as a plain value, so the gradient
//! stops there, memory is O(k2) whatever T is, and no node of an old tape
//! is kept alive.
//!
//! ```
//! use tapegrad::layers::tbptt::Tbptt;
//! let plan = Tbptt::new(2, 3).unwrap().windows(6);
//! // losses of steps 0..2, 2..4, 4..6; each backpropagated through ≤ 3 steps
//! let spans: Vec<_> = plan.iter().map(|w| (w.start, w.loss_from, w.end)).collect();
//! assert_eq!(spans, vec![(0, 0, 2), (1, 2, 4), (3, 4, 6)]);
//! ```
//!
//! [`Tbptt::train`] is the whole training loop over one sequence: for each
//! window it calls your closure (any model — a built-in layer or your own
//! cell — on a reset tape, given the carried state), backpropagates the
//! window's loss, optionally clips the gradient norm, steps the optimizer
//! (once per window, i.e. every k1 steps) and carries the state your
//! closure copied out at `carry_at` into the next window.
//! `examples/tbptt_loop.rs` trains an LSTM with it.

use crate::error::{Error, ErrorKind, Result};
use crate::optim::{finite_grad_norm, Optimizer};
use crate::{ParamStore, Real, Tape, Var};

/// A BPTT(k2; k1) schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbptt {
    /// Steps between two backward passes (each step's loss is counted once).
    pub k1: usize,
    /// Steps each backward pass reaches back (≥ k1).
    pub k2: usize,
}

/// One forward/backward pass of a truncated-BPTT schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First step run in this pass (the carried state enters here).
    pub start: usize,
    /// First step whose loss is counted.
    pub loss_from: usize,
    /// One past the last step run.
    pub end: usize,
    /// The step at which the next window starts: copy the state out after
    /// running `start..carry_at` (equal to `end` when k1 = k2).
    pub carry_at: usize,
}

impl Tbptt {
    /// A schedule that backpropagates `k2` steps every `k1` steps.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] unless 1 ≤ k1 ≤ k2.
    pub fn new(k1: usize, k2: usize) -> Result<Self> {
        if k1 == 0 || k2 < k1 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "Tbptt::new",
                format!("needs 1 ≤ k1 ≤ k2, got k1 = {k1}, k2 = {k2}"),
            ));
        }
        Ok(Tbptt { k1, k2 })
    }

    /// The passes over a sequence of `len` steps, in order. Every step's
    /// loss is counted in exactly one window.
    pub fn windows(&self, len: usize) -> Vec<Window> {
        let mut out = Vec::new();
        let mut loss_from = 0;
        while loss_from < len {
            let end = (loss_from + self.k1).min(len);
            let start = end.saturating_sub(self.k2);
            let next_end = (end + self.k1).min(len);
            let carry_at = if end < len {
                next_end.saturating_sub(self.k2).max(start)
            } else {
                end
            };
            out.push(Window {
                start,
                loss_from,
                end,
                carry_at,
            });
            loss_from = end;
        }
        out
    }

    /// Trains on one sequence of `len` steps with this schedule: for each
    /// [`Window`] of [`Tbptt::windows`]`(len)`, in order,
    ///
    /// 1. `window(tape, store, w, carried)` runs the model on the steps
    ///    `w.start..w.end` from the `carried` state (bind it as constants,
    ///    e.g. [`StateTensors::bind`](super::StateTensors::bind), so the
    ///    gradient stops at the window's start), and returns the loss of
    ///    the steps `w.loss_from..w.end` (a scalar) and the state after
    ///    the steps `w.start..w.carry_at`, copied out as values (e.g.
    ///    [`State::to_tensors`](super::State::to_tensors)); with k1 = k2,
    ///    `carry_at` is `end`: the state after the window;
    /// 2. one reverse sweep from that loss;
    /// 3. if `clip_norm` is set, the global gradient norm is clipped to it
    ///    ([`clip_grad_norm`](crate::optim::clip_grad_norm));
    /// 4. one optimizer step; the tape is reset (its buffers reused);
    /// 5. the returned state becomes `carried` for the next window.
    ///
    /// `init` is the state the first window starts from. Returns each
    /// window's loss and the state carried out of the last window (the
    /// state after the whole sequence), to continue with the next one.
    ///
    /// # Errors
    /// [`ErrorKind::NonFinite`] if a window's gradient norm is NaN or ∞;
    /// that window's update is skipped and the loop stops there (earlier
    /// windows' updates stay).
    ///
    /// # Panics
    /// If the closure returns a loss with more than one element, or as the
    /// closure itself panics.
    ///
    /// ```
    /// use tapegrad::layers::tbptt::{Tbptt, WindowOutput};
    /// use tapegrad::layers::{Linear, Lstm, RecurrentConfig};
    /// use tapegrad::optim::Adam;
    /// use tapegrad::{ParamStore, Reduction, Tape, Tensor};
    ///
    /// let (len, b, i, h) = (24, 2, 3, 8);
    /// let mut store = ParamStore::<f32>::new();
    /// let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(i, h), 1);
    /// let head = Linear::new(&mut store, "head", h, 2, true, 2);
    /// let x = Tensor::<f32>::randn(&[len, b, i], 3);
    /// let y: Vec<usize> = (0..len * b).map(|k| k % 2).collect();
    /// let (mut tape, mut opt) = (Tape::new(), Adam::new(0.01));
    /// let init = lstm.zero_state(&tape, b).to_tensors();
    /// tape.reset();
    ///
    /// let plan = Tbptt::new(6, 6).unwrap(); // k1 = k2 = 6: carry_at = end
    /// let run = plan.train(len, &mut tape, &mut store, &mut opt, init, Some(1.0),
    ///     |tape, store, w, carried| {
    ///         let steps = w.end - w.start;
    ///         let xs = tape.constant_from_slice(&x.data()[w.start * b * i..w.end * b * i], &[steps, b, i]);
    ///         let out = lstm.forward(tape, store, xs, Some(&carried.bind(tape)));
    ///         let loss = head
    ///             .forward(tape, store, out.stacked_rows())
    ///             .cross_entropy(&y[w.start * b..w.end * b], Reduction::Mean);
    ///         WindowOutput { loss, carry: out.state.to_tensors() }
    ///     })
    ///     .unwrap();
    /// assert_eq!(run.losses.len(), 4); // 24 steps, an update every 6
    /// assert_eq!(run.state.h[0].shape(), &[b, h]);
    /// ```
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub fn train<F, S, M>(
        &self,
        len: usize,
        tape: &mut Tape<F>,
        store: &mut ParamStore<F>,
        optimizer: &mut dyn Optimizer<F>,
        init: S,
        clip_norm: Option<f64>,
        mut window: M,
    ) -> Result<TbpttRun<S>>
    where
        F: Real,
        M: for<'t> FnMut(&'t Tape<F>, &ParamStore<F>, Window, &S) -> WindowOutput<'t, F, S>,
    {
        let mut carried = init;
        let mut losses = Vec::new();
        for w in self.windows(len) {
            let (loss, next, mut grads) = {
                let out = window(&*tape, &*store, w, &carried);
                let shape = out.loss.shape();
                if shape.iter().product::<usize>() != 1 {
                    crate::error::fail(Error::shape(
                        "Tbptt::train",
                        format!(
                            "the window closure returned a loss of shape {:?} for steps {}..{}; \
                             it must be a scalar (reduce it, e.g. with `.sum()` or `.mean()`)",
                            shape.as_slice(),
                            w.loss_from,
                            w.end
                        ),
                    ));
                }
                (
                    out.loss.item().to_f64_lossy(),
                    out.carry,
                    out.loss.backward(),
                )
            };
            let norm = finite_grad_norm(&mut grads, clip_norm).map_err(|n| {
                Error::new(
                    ErrorKind::NonFinite,
                    "Tbptt::train",
                    format!(
                        "the gradient norm of the window of steps {}..{} is {n}",
                        w.loss_from, w.end
                    ),
                )
            });
            if let Err(e) = norm {
                tape.reset_with(grads);
                return Err(e);
            }
            // Reset first: the tape lets go of the store's (shared)
            // parameter buffers, so the update writes them in place.
            tape.reset();
            optimizer.step(store, &grads);
            tape.reset_with(grads);
            losses.push(loss);
            carried = next;
        }
        Ok(TbpttRun {
            losses,
            state: carried,
        })
    }
}

/// What the window closure of [`Tbptt::train`] returns.
#[derive(Debug)]
pub struct WindowOutput<'t, F: Real, S> {
    /// The loss of the window's counted steps `loss_from..end`, a scalar.
    pub loss: Var<'t, F>,
    /// The state after the steps `start..carry_at`, as values (no tape
    /// nodes), for the next window to start from.
    pub carry: S,
}

/// What [`Tbptt::train`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct TbpttRun<S> {
    /// Each window's loss, in order (one per optimizer step).
    pub losses: Vec<f64>,
    /// The state carried out of the last window: the state after the
    /// sequence.
    pub state: S,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_counted_once_and_reach_bounded() {
        for k1 in 1..5 {
            for k2 in k1..8 {
                for len in 0..20 {
                    let w = Tbptt::new(k1, k2).unwrap().windows(len);
                    let counted: usize = w.iter().map(|w| w.end - w.loss_from).sum();
                    assert_eq!(counted, len);
                    for (i, win) in w.iter().enumerate() {
                        assert!(win.end - win.start <= k2);
                        assert!(win.start <= win.loss_from && win.loss_from < win.end);
                        if let Some(next) = w.get(i + 1) {
                            assert_eq!(next.start, win.carry_at);
                            assert!(win.carry_at >= win.start && win.carry_at <= win.end);
                        }
                    }
                }
            }
        }
        assert!(Tbptt::new(3, 2).is_err());
    }
}
