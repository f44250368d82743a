//! The backward side of the Wᵀ reorder.
//!
//! The recurrent layers multiply by `W_hh.transpose()` (a node, made once
//! per sequence) so that the per-step product `h·W_hhᵀ` reads a row-major
//! right operand, which the GEMM kernels run 1.3–1.6× faster than a
//! column-major one. Backward keeps that advantage in two places, both here,
//! next to the products they speed up:
//!
//! - **`untransposed`**: a product whose operand is a `transpose` node reads
//!   the transpose's own input (W, row-major) for its G·W instead of Wᵀ
//!   read column-major (`BackwardCtx::untransposed`, used by the product's
//!   rule in `mod.rs`);
//! - **routing to the source**: a product's right operand that is a
//!   transpose node nobody marked with `retain_grad` passes its gradient
//!   straight on to W ([`LinalgOp::backward_to_source`]), so the layers' Wᵀ
//!   get no gradient slot and no transpose back. Any other consumer of the
//!   Wᵀ still gives it a slot, whose rule adds its transpose into W's later:
//!   contributions are additive, so both routes sum to the same gradient.
//!
//! The sweep reaches both through the hook in `sweep.rs`; a deferred use
//! (`deferral.rs`) routed to W counts as a use of W in the other
//! orientation.

use super::{right_operand_grad, view, LinalgOp};
use crate::ops::{BackwardCtx, GradSlot, Op};
use crate::tape::Node;
use crate::tensor::Tensor;
use crate::Real;
use smallvec::SmallVec;

/// The node that receives input `k`'s gradient from `node`, and whether it
/// is not the input itself but the source W of a reordered weight Wᵀ (the
/// rule is then [`LinalgOp::backward_to_source`]).
pub(super) fn target<F: Real>(nodes: &[Node<F>], node: &Node<F>, k: usize) -> (usize, bool) {
    let j = node.inputs[k] as usize;
    if k == 1 && matches!(node.op, Op::Linalg(LinalgOp::Matmul { .. })) {
        let w = &nodes[j];
        if matches!(w.op, Op::Linalg(LinalgOp::Transpose)) && !w.retain {
            return (w.inputs[0] as usize, true);
        }
    }
    (j, false)
}

/// For each input of `node` that is the output of a `transpose`, the
/// transpose's own (unreleased) input; filled for products only, empty for
/// every other op (see `BackwardCtx::untransposed`).
pub(super) fn untransposed<'a, F: Real>(
    node: &Node<F>,
    nodes: &'a [Node<F>],
) -> SmallVec<[Option<&'a Tensor<F>>; 4]> {
    if !matches!(node.op, Op::Linalg(LinalgOp::Matmul { .. })) {
        return SmallVec::new();
    }
    node.inputs
        .iter()
        .map(|&j| {
            let n = &nodes[j as usize];
            match n.op {
                Op::Linalg(LinalgOp::Transpose) => {
                    let src = &nodes[n.inputs[0] as usize];
                    (!src.released).then_some(&src.value)
                }
                _ => None,
            }
        })
        .collect()
}

impl LinalgOp {
    /// The rule for a product's right operand b when b is a transpose node
    /// Wᵀ (a reordered weight), written as ∂W = (∂b)ᵀ straight into W's
    /// slot. With A = op(a) and G = ∂L/∂Y:
    ///
    /// ```text
    /// b used as is  (B = Wᵀ, ∂B = Aᵀ·G):  ∂W = Gᵀ·A
    /// b used as bᵀ  (B = W):              ∂W = Aᵀ·G
    /// ```
    ///
    /// The same FLOPs as the plain rule, landing in the layout W is stored
    /// in: Wᵀ needs no gradient slot and its transpose back never runs, and
    /// Gᵀ·A into a [4H × H] weight runs 5–10% faster in the kernels than
    /// Aᵀ·G into [H × 4H] at the recurrent layers' shapes.
    pub(super) fn backward_to_source<F: Real>(
        &self,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        let LinalgOp::Matmul { ta, tb, .. } = *self else {
            unreachable!("only a product's right operand passes its gradient on")
        };
        // W is b's transpose: the rule of the other orientation.
        right_operand_grad(!tb, view(c.x[0], ta), view(c.gy, false), slot)
    }
}
