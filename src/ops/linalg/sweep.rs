//! The one hook through which the reverse sweep reaches the products'
//! weight-gradient machinery (the Wᵀ reorder of `reorder.rs`, the deferred
//! weight gradients of `deferral.rs`), so that the sweep in `tape/backward.rs`
//! stays one op-agnostic loop and `tape/` names no op family.
//!
//! The sweep calls, in this order:
//!
//! 1. [`WeightGrads::before_sweep`] — counts the deferrable uses of each
//!    weight (it sizes their blocks);
//! 2. per node i, from the root down:
//!    - [`WeightGrads::reached`] before i's gradient is read — flushes the
//!      uses held for i (a weight's uses all come later in the graph);
//!    - [`WeightGrads::untransposed`] — the operands i's rule may read
//!      untransposed (`BackwardCtx::untransposed`);
//!    - [`WeightGrads::route`] per input k that requires a gradient —
//!      `Some(route)`: the sweep gives `route.target`'s slot to
//!      [`Route::backward`] now; `None`: the hook holds this use, and the
//!      sweep hands over i's output gradient with [`WeightGrads::hold`] once
//!      the node's other inputs are done;
//! 3. [`WeightGrads::after_sweep`] — nothing may still be held.
//!
//! Anomaly mode goes through the same hook as training, deferral included:
//! the sweep passes a check, which the hook runs on every gradient a flush
//! produces, naming a product it holds (the sweep checks what the rules
//! write itself). So both modes compute bitwise the same gradients.

use super::deferral::{deferrable_use, Deferrals};
use super::reorder;
use crate::error::Result;
use crate::ops::{BackwardCtx, GradSlot, Op};
use crate::tape::pool::Pool;
use crate::tape::Node;
use crate::tensor::Tensor;
use crate::Real;
use smallvec::SmallVec;

/// The anomaly check: `check(gradient, of, by)` errs if the gradient of
/// node `of` holds NaN or ±∞, naming node `by` (the op that produced it).
pub(crate) type CheckGrad<'a, F> = &'a dyn Fn(&[F], usize, usize) -> Result<()>;

/// What the hook reads during one sweep: the nodes up to the root and, in
/// anomaly mode, the check.
pub(super) struct Sweep<'a, F> {
    pub(super) nodes: &'a [Node<F>],
    pub(super) check: Option<CheckGrad<'a, F>>,
}

impl<F> Clone for Sweep<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F> Copy for Sweep<'_, F> {}

/// Where one input's gradient goes now: into node `target`'s slot, by the
/// op's own rule or, for a reordered weight's Wᵀ, by the rule that writes
/// W's gradient (`LinalgOp::backward_to_source`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// The node whose gradient slot receives the contribution.
    pub(crate) target: usize,
    to_source: bool,
}

impl Route {
    /// Runs the rule for input `k` of a node with op `op` into `slot` (the
    /// slot of `self.target`).
    #[inline]
    pub(crate) fn backward<F: Real>(
        &self,
        op: &Op<F>,
        k: usize,
        ctx: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        match op {
            Op::Linalg(o) if self.to_source => o.backward_to_source(ctx, slot),
            _ => op.backward(k, ctx, slot),
        }
    }
}

/// The products' weight-gradient machinery for one backward sweep (see the
/// module docs for the order of calls).
pub(crate) struct WeightGrads<'a, F> {
    sweep: Sweep<'a, F>,
    deferrals: Deferrals<F>,
    /// The (weight, orientation) the node being processed defers to.
    held: Option<(usize, bool)>,
}

impl<'a, F: Real> WeightGrads<'a, F> {
    /// Before the sweep: `nodes` are those up to the root; `check` is the
    /// anomaly check (`None` outside anomaly mode).
    pub(crate) fn before_sweep(nodes: &'a [Node<F>], check: Option<CheckGrad<'a, F>>) -> Self {
        WeightGrads {
            sweep: Sweep { nodes, check },
            deferrals: Deferrals::count(nodes),
            held: None,
        }
    }

    /// The sweep reached node `i`: flushes the uses held for it (it is a
    /// weight whose uses have all been processed), before its gradient is
    /// read.
    #[inline]
    pub(crate) fn reached(
        &mut self,
        i: usize,
        slots: &mut [Option<Vec<F>>],
        pool: &mut Pool<F>,
    ) -> Result<()> {
        self.deferrals.flush_weight(i, self.sweep, slots, pool)
    }

    /// The operands `node`'s rule may read untransposed: for a product,
    /// each input that is a `transpose` node's output maps to that node's
    /// own input (empty for every other op).
    #[inline]
    pub(crate) fn untransposed(&self, node: &Node<F>) -> SmallVec<[Option<&'a Tensor<F>>; 4]> {
        reorder::untransposed(node, self.sweep.nodes)
    }

    /// Where input `k`'s gradient from `node` goes: `Some(route)` into a
    /// slot now, `None` if this use is held (deferred) — the sweep then
    /// hands over `node`'s output gradient with [`WeightGrads::hold`].
    #[inline]
    pub(crate) fn route(&mut self, node: &Node<F>, k: usize) -> Option<Route> {
        let (target, to_source) = reorder::target(self.sweep.nodes, node, k);
        if let Some(tb) = deferrable_use(node, k, self.sweep.nodes) {
            // Passed on to W, a use of Wᵀ counts as a use of W in the other
            // orientation.
            self.held = Some((target, tb != to_source));
            return None;
        }
        Some(Route { target, to_source })
    }

    /// Takes node `i`'s output gradient `gy` for the use [`WeightGrads::route`]
    /// held (it goes back to the pool once copied into the weight's block);
    /// may flush, into the weight's slot in `slots`.
    ///
    /// # Panics
    /// If `route` held no use of node `i` (a bug in the sweep).
    pub(crate) fn hold(
        &mut self,
        i: usize,
        gy: Vec<F>,
        slots: &mut [Option<Vec<F>>],
        pool: &mut Pool<F>,
    ) -> Result<()> {
        let to = self.held.take().expect("route() held a use of this node");
        self.deferrals.defer(to, gy, i, self.sweep, slots, pool)
    }

    /// After the sweep (which reached every weight, so flushed every held
    /// use).
    pub(crate) fn after_sweep(self) {
        debug_assert!(
            self.held.is_none() && !self.deferrals.holds_any(),
            "a deferred weight gradient was never flushed"
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::{Tape, Tensor};

    /// The gradients of `x_t·Wᵀ` summed over `steps` steps of `rows` rows,
    /// with W used directly (`reordered: false`) or through a `transpose`
    /// node, and in anomaly mode or not.
    fn weight_grad(rows: usize, steps: usize, reordered: bool, anomaly: bool) -> Vec<f64> {
        let tape = Tape::<f64>::new();
        tape.set_anomaly_detection(anomaly);
        let w = tape.var(Tensor::randn(&[6, 5], 1));
        let wt = w.transpose();
        let mut loss = None;
        for t in 0..steps {
            let x = tape.constant(Tensor::randn(&[rows, 5], 10 + t as u64));
            let y = if reordered {
                x.matmul(wt)
            } else {
                x.matmul_t(w)
            };
            let term = (y.tanh() * y).sum();
            loss = Some(match loss {
                None => term,
                Some(l) => l + term,
            });
        }
        let g = loss.expect("steps > 0").backward();
        g.wrt(w).data().to_vec()
    }

    #[test]
    fn every_route_gives_the_same_weight_gradient() {
        // Deferred (rows ≤ 512) and not, reordered and not, anomaly mode and
        // not: the same sums, to rounding across routes and bitwise across
        // modes.
        for rows in [3, 600] {
            let plain = weight_grad(rows, 7, false, false);
            for reordered in [false, true] {
                let g = weight_grad(rows, 7, reordered, false);
                for (a, b) in plain.iter().zip(&g) {
                    assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
                }
                assert_eq!(g, weight_grad(rows, 7, reordered, true));
            }
        }
    }
}
