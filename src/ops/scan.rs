//! The linear recurrence over a whole sequence as one tape node:
//! `h(t) = a(t) ⊙ h(t−1) + b(t)`, t = 1..T, from a given h(0) (zeros when
//! none is given). The gated cells without a recurrent weight (minGRU,
//! minLSTM; Feng et al. 2024, "Were RNNs all we needed?") compute all their
//! gates for all steps in one product, then their whole hidden sequence in
//! this one node instead of T steps of three elementwise nodes each.
//!
//! Forward and backward are each one pass over time, vectorised over the
//! other axes. The backward pass is the same recurrence run in reverse
//! (ḡ is the gradient arriving at output h(t), ḡ_h the total gradient of
//! h(t), through the output and through h(t+1)):
//!
//! ```text
//! ḡ_h(T) = ḡ(T),   ḡ_h(t) = ḡ(t) + a(t+1) ⊙ ḡ_h(t+1)
//! ḡ_b(t) = ḡ_h(t)
//! ḡ_a(t) = ḡ_h(t) ⊙ h(t−1)          (h(0) = h0)
//! ḡ_h0   = a(1) ⊙ ḡ_h(1)
//! ```
//!
//! Why the direct form and not the paper's log-space scan. Feng et al.
//! compute h by a parallel prefix scan in log space (`log h(t) =
//! a*(t) + log Σ exp(log b(k) − a*(k))` with `a*` the running sum of
//! log a), which needs a, b > 0 (hence their g(x) and positive h̃) and
//! trades T sequential multiply-adds for O(log T) depth of `exp`/`log`
//! work — a win on a GPU with thousands of lanes. On a CPU the sequential
//! pass is already vectorised over B·H lanes, costs one fused multiply-add
//! per element (the log form costs an `exp` and a `log` per element, and a
//! log-sum-exp per prefix), works for a, b of any sign, and is stable
//! without rescaling: with |a| ≤ 1, which both cells guarantee
//! (a ∈ (0, 1)), the error in h(t−1) reaches h(t) multiplied by |a| ≤ 1,
//! so rounding errors add up at most linearly in T and never grow
//! geometrically; the reverse recurrence for ḡ_h is the same contraction.
//! The log form, by contrast, forms `exp(a*)` of a cumulative sum that
//! underflows after a few hundred steps of a ≈ 0.1 unless it is re-centred
//! per block. So this file implements the direct form only; the
//! measurement is in `docs/performance.md` ("scan").

use super::{BackwardCtx, GradSlot, Op};
use crate::error::Error;
use crate::tensor::Tensor;
use crate::{Real, Var};

/// The linear recurrence over the leading (time) axis; inputs `[a, b]` or
/// `[a, b, h0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanOp {
    /// T, the length of the leading axis.
    steps: usize,
    /// Whether h0 is the third input (else h(0) = 0).
    has_h0: bool,
    /// Whether the recurrence runs from t = T down to 1 (h(t) = a(t) ⊙
    /// h(t+1) + b(t), h(T+1) = h0), for the reverse direction of a
    /// bidirectional layer.
    reverse: bool,
}

impl ScanOp {
    pub(crate) fn name(&self) -> &'static str {
        if self.reverse {
            "linear_scan_reverse"
        } else {
            "linear_scan"
        }
    }

    /// a (input 0) for every rule (it carries ḡ_h back), h0 (input 2) for
    /// ḡ_a(1); b is never read (h(t) is the output).
    pub(crate) fn reads_input(&self, k: usize) -> bool {
        k != 1
    }

    /// ḡ_a(t) reads h(t−1), the output.
    pub(crate) fn reads_output(&self) -> bool {
        true
    }

    /// The time index of the `s`-th step taken (0-based).
    fn time(&self, s: usize) -> usize {
        if self.reverse {
            self.steps - 1 - s
        } else {
            s
        }
    }

    /// ∂L/∂a, ∂L/∂b or ∂L/∂h0 (k = 0, 1, 2) by the reverse recurrence.
    pub(crate) fn backward<F: Real>(
        &self,
        k: usize,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        if self.steps == 0 {
            slot.for_adding(); // T = 0: every gradient is zero
            return;
        }
        let a = c.x[0].data();
        let gy = c.gy.data();
        let n = gy.len() / self.steps;
        let gh = self.reverse_recurrence(a, gy, n);
        let first = self.time(0) * n..(self.time(0) + 1) * n;
        match k {
            1 => slot.put_slice(&gh),
            0 => {
                let y = c.y.data();
                let data = slot.for_adding();
                if self.has_h0 {
                    let h0 = c.x[2].data();
                    let (d, g) = (&mut data[first.clone()], &gh[first]);
                    for i in 0..n {
                        d[i] = d[i] + g[i] * h0[i];
                    }
                }
                for s in 1..self.steps {
                    let (t, p) = (self.time(s) * n, self.time(s - 1) * n);
                    let (d, g, prev) = (&mut data[t..t + n], &gh[t..t + n], &y[p..p + n]);
                    for i in 0..n {
                        d[i] = d[i] + g[i] * prev[i];
                    }
                }
            }
            _ => slot.put(
                gh[first.clone()]
                    .iter()
                    .zip(&a[first])
                    .map(|(&g, &a1)| g * a1),
            ),
        }
    }

    /// ḡ_h(t) for every t, from a and ḡ (both [T·n], time-major).
    fn reverse_recurrence<F: Real>(&self, a: &[F], gy: &[F], n: usize) -> Vec<F> {
        let mut gh = gy.to_vec();
        for s in (0..self.steps.saturating_sub(1)).rev() {
            let (t, next) = (self.time(s) * n, self.time(s + 1) * n);
            let (now, later) = if t < next {
                let (lo, hi) = gh.split_at_mut(next);
                (&mut lo[t..t + n], &hi[..n])
            } else {
                let (lo, hi) = gh.split_at_mut(t);
                (&mut hi[..n], &lo[next..next + n])
            };
            let a_next = &a[next..next + n];
            for i in 0..n {
                now[i] = now[i] + a_next[i] * later[i];
            }
        }
        gh
    }

    /// h(t) for every t into `out` ([T·n], time-major).
    fn forward<F: Real>(&self, a: &[F], b: &[F], h0: Option<&[F]>, n: usize, out: &mut [F]) {
        for s in 0..self.steps {
            let t = self.time(s) * n;
            let (at, bt) = (&a[t..t + n], &b[t..t + n]);
            if s == 0 {
                let now = &mut out[t..t + n];
                match h0 {
                    Some(h0) => {
                        for i in 0..n {
                            now[i] = at[i] * h0[i] + bt[i];
                        }
                    }
                    None => now.copy_from_slice(bt),
                }
                continue;
            }
            let p = self.time(s - 1) * n;
            let (now, prev) = if t > p {
                let (lo, hi) = out.split_at_mut(t);
                (&mut hi[..n], &lo[p..p + n])
            } else {
                let (lo, hi) = out.split_at_mut(p);
                (&mut lo[t..t + n], &hi[..n])
            };
            for i in 0..n {
                now[i] = at[i] * prev[i] + bt[i];
            }
        }
    }
}

impl<'t, F: Real> Var<'t, F> {
    /// The linear recurrence `h(t) = a(t) ⊙ h(t−1) + b(t)` over the leading
    /// axis of `a` and `b` (both [T, …], the same shape), from `h0` (the
    /// shape of one step, [… ]; zeros if `None`), as one node: the output
    /// is every h(t), [T, …].
    ///
    /// Gradient (the reverse recurrence, ḡ_h(t) = ḡ(t) + a(t+1) ⊙ ḡ_h(t+1)):
    /// ∂L/∂b(t) = ḡ_h(t), ∂L/∂a(t) = ḡ_h(t) ⊙ h(t−1),
    /// ∂L/∂h0 = a(1) ⊙ ḡ_h(1). Exact and stable for |a| ≤ 1 (see the
    /// module doc for why this is not the log-space form).
    ///
    /// # Panics
    /// If `a` and `b` differ in shape, have no leading axis, or `h0` is not
    /// the shape of one step.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![0.5, 0.5, 0.5], &[3, 1]).unwrap());
    /// let b = tape.var(Tensor::from_vec(vec![1.0, 1.0, 1.0], &[3, 1]).unwrap());
    /// let h0 = tape.var(Tensor::from_vec(vec![4.0], &[1]).unwrap());
    /// let h = Var::linear_scan(a, b, Some(h0));
    /// assert_eq!(h.value().data(), &[3.0, 2.5, 2.25]); // 0.5·4+1, 0.5·3+1, …
    /// let g = h.sum().backward();
    /// // ḡ_h = [1.75, 1.5, 1], so ∂L/∂h0 = 0.5·1.75
    /// assert_eq!(g.wrt(h0).data(), &[0.875]);
    /// assert_eq!(g.wrt(b).data(), &[1.75, 1.5, 1.0]);
    /// assert_eq!(g.wrt(a).data(), &[1.75 * 4.0, 1.5 * 3.0, 2.5]);
    /// ```
    #[track_caller]
    pub fn linear_scan(a: Var<'t, F>, b: Var<'t, F>, h0: Option<Var<'t, F>>) -> Var<'t, F> {
        Self::scan(a, b, h0, false, None)
    }

    /// [`Var::linear_scan`] backwards in time: `h(t) = a(t) ⊙ h(t+1) +
    /// b(t)` from t = T down to 1, h(T+1) = `h0` (the reverse direction of a
    /// bidirectional layer, without reversing a copy of the sequence).
    ///
    /// Gradient: as [`Var::linear_scan`] with the time axis reversed.
    ///
    /// # Panics
    /// As [`Var::linear_scan`].
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.constant(Tensor::from_vec(vec![0.5, 0.5, 0.5], &[3]).unwrap());
    /// let b = tape.constant(Tensor::from_vec(vec![1.0, 1.0, 1.0], &[3]).unwrap());
    /// let h0 = tape.constant(Tensor::scalar(4.0));
    /// let h = Var::linear_scan_reverse(a, b, Some(h0));
    /// assert_eq!(h.value().data(), &[2.25, 2.5, 3.0]);
    /// ```
    #[track_caller]
    pub fn linear_scan_reverse(a: Var<'t, F>, b: Var<'t, F>, h0: Option<Var<'t, F>>) -> Var<'t, F> {
        Self::scan(a, b, h0, true, None)
    }

    /// The scan over `steps` blocks of rows: a and b are [T·B × …] (the
    /// layout of a recurrent layer's projected input, rows ordered by time
    /// then batch), h0 is [B × …], and so is each step.
    #[track_caller]
    pub(crate) fn linear_scan_rows(
        a: Var<'t, F>,
        b: Var<'t, F>,
        h0: Var<'t, F>,
        steps: usize,
        reverse: bool,
    ) -> Var<'t, F> {
        Self::scan(a, b, Some(h0), reverse, Some(steps))
    }

    #[track_caller]
    fn scan(
        a: Var<'t, F>,
        b: Var<'t, F>,
        h0: Option<Var<'t, F>>,
        reverse: bool,
        blocks: Option<usize>,
    ) -> Var<'t, F> {
        let mut inputs = vec![a, b];
        inputs.extend(h0);
        let name = if reverse {
            "linear_scan_reverse"
        } else {
            "linear_scan"
        };
        a.tape().record(name, &inputs, |x, pool| {
            let (ta, tb) = (x[0], x[1]);
            let bad = |msg: String| Err(Error::shape(name, msg));
            if ta.shape() != tb.shape() || ta.shape().is_empty() {
                return bad(format!(
                    "a and b must share a shape [T, …] with a leading time axis, got {}",
                    super::shapes(&x[..2])
                ));
            }
            let lead = ta.shape()[0];
            let steps = blocks.unwrap_or(lead);
            let rows = lead.checked_div(steps).unwrap_or(0);
            if steps * rows != lead {
                return bad(format!(
                    "{lead} rows do not split into {steps} steps of equal size"
                ));
            }
            let n = ta.numel().checked_div(steps).unwrap_or(0);
            if let Some(h0) = x.get(2) {
                let mut step = ta.shape().to_vec();
                if blocks.is_some() {
                    step[0] = rows;
                } else {
                    step.remove(0);
                }
                if h0.shape() != step.as_slice() {
                    return bad(format!(
                        "h0 of shape {:?} must be the shape of one step of a and b, {step:?}",
                        h0.shape(),
                    ));
                }
            }
            let op = ScanOp {
                steps,
                has_h0: x.len() == 3,
                reverse,
            };
            let mut out = pool.take(ta.numel(), name)?;
            op.forward(
                ta.data(),
                tb.data(),
                x.get(2).map(|h| h.data()),
                n,
                &mut out,
            );
            Ok((Op::Scan(op), Tensor::from_parts(ta.shape().into(), out)))
        })
    }
}
