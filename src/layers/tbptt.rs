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

use crate::error::{Error, ErrorKind, Result};

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
