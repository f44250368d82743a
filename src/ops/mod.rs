//! The primitives: one file per family, each op's forward (a method on
//! [`Var`](crate::Var)) and backward (a rule on the family's enum) side by
//! side, the derivative in the doc comment. This file only routes: the
//! closed [`Op`] enum names the families, and its `backward`/`name` calls
//! delegate. Adding an op to a family touches that family's file alone.
//!
//! Backward rules receive a [`BackwardCtx`] (input values `x`, output value
//! `y`, output gradient `gy`) and a [`GradSlot`] for one input, into which
//! they write (first contribution) or add (later ones) ∂L/∂x_k. Each family
//! also declares which values its rules read (`reads_input`,
//! `reads_output`): those stay on the tape, every other value may be
//! released once its forward consumers have run ([`crate::Var::release`]),
//! so a rule must never touch the data of a value it does not declare —
//! only its shape.
//!
//! The reverse sweep (`tape/backward.rs`) knows no family: it calls
//! [`Op`]'s rules through `backward`, and reaches the one piece of op-specific
//! speed work on its path — the products' weight gradients (the Wᵀ reorder
//! and the deferred, batched gradients of shared weights) — through one
//! hook, [`WeightGrads`], which lives with the products in `linalg/`.

pub(crate) mod arith;
pub(crate) mod broadcast;
pub(crate) mod dropout;
pub(crate) mod linalg;
pub(crate) mod loss;
pub(crate) mod norm;
pub(crate) mod recompute;
pub(crate) mod reduce;
pub(crate) mod scan;
pub(crate) mod select;
pub(crate) mod shape;
pub(crate) mod unary;

pub use dropout::dropout_mask;
pub(crate) use linalg::sweep::{CheckGrad, WeightGrads};
pub use loss::Reduction;

use crate::params::ParamKey;
use crate::tape::pool::Pool;
use crate::tensor::Tensor;
use crate::Real;
use std::borrow::Cow;

/// Every kind of node a tape can hold.
pub(crate) enum Op<F> {
    /// A leaf: data, a constant, or a var that requires its gradient.
    Leaf,
    /// A leaf bound from a parameter store.
    Param(ParamKey),
    /// Elementwise binary ops with broadcasting (`arith.rs`).
    Binary(arith::BinaryOp),
    /// Elementwise unary ops and activations (`unary.rs`), on the whole
    /// input or on a window of its columns.
    Unary(unary::UnaryOp<F>, Option<unary::Cols>),
    /// Matrix products and transposes (`linalg/`).
    Linalg(linalg::LinalgOp),
    /// Sums and means (`reduce.rs`).
    Reduce(reduce::ReduceOp),
    /// Reshape, concat, slice, gather (`shape.rs`).
    Shape(shape::ShapeOp),
    /// Softmax family and losses (`loss.rs`).
    Loss(loss::LossOp<F>),
    /// Dropout with its saved mask (`dropout.rs`).
    Dropout(dropout::DropoutOp<F>),
    /// Elementwise select by a mask (`select.rs`).
    Select(select::SelectOp),
    /// Layer normalisation with its saved row statistics (`norm.rs`).
    Norm(norm::NormOp<F>),
    /// The linear recurrence over a whole sequence (`scan.rs`).
    Scan(scan::ScanOp),
    /// A checkpointed function, re-run in backward (`recompute.rs`).
    Recompute(recompute::RecomputeOp<F>),
}

/// What a backward rule reads: input values, output value, output gradient.
pub(crate) struct BackwardCtx<'a, F> {
    pub(crate) x: &'a [&'a Tensor<F>],
    pub(crate) y: &'a Tensor<F>,
    pub(crate) gy: &'a Tensor<F>,
    /// For an input that is the output of a 2-D `transpose`, the
    /// transpose's own (unreleased) input: that input's transpose, already
    /// row-major. A product with a weight reordered as Wᵀ reads W here for
    /// its G·W, sparing a column-major operand (see `linalg/reorder.rs`).
    /// Filled for products only; empty for every other op.
    pub(crate) untransposed: &'a [Option<&'a Tensor<F>>],
}

/// The gradient buffer of one input. `fresh` means nothing has been written
/// yet (the contents are stale pool data): the rule must overwrite every
/// element. Otherwise it must add.
pub(crate) struct GradSlot<'a, F> {
    pub(crate) data: &'a mut [F],
    pub(crate) fresh: bool,
}

impl<'a, F: Real> GradSlot<'a, F> {
    /// Writes or adds `values` elementwise (lengths must match).
    #[inline]
    pub(crate) fn put(self, values: impl Iterator<Item = F>) {
        if self.fresh {
            for (d, v) in self.data.iter_mut().zip(values) {
                *d = v;
            }
        } else {
            for (d, v) in self.data.iter_mut().zip(values) {
                *d = *d + v;
            }
        }
    }

    /// `d (=|+=) src`: the gradient passed through unchanged (reshape, the
    /// addend of addmm, a block of concat).
    #[inline]
    pub(crate) fn put_slice(self, src: &[F]) {
        if self.fresh {
            self.data.copy_from_slice(src);
        } else {
            for (d, &s) in self.data.iter_mut().zip(src) {
                *d = *d + s;
            }
        }
    }

    /// `d[i] (=|+=) f(a[i], b[i], c[i])` as a plain indexed loop over
    /// equal-length slices (no iterator adapters, so it vectorizes).
    #[inline]
    pub(crate) fn put3(self, a: &[F], b: &[F], c: &[F], f: impl Fn(F, F, F) -> F) {
        let n = self.data.len();
        let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
        let d = self.data;
        if self.fresh {
            for i in 0..n {
                d[i] = f(a[i], b[i], c[i]);
            }
        } else {
            for i in 0..n {
                d[i] = d[i] + f(a[i], b[i], c[i]);
            }
        }
    }

    /// Zeroes a fresh slot, so a rule can scatter-add into it; returns the
    /// buffer.
    #[inline]
    pub(crate) fn for_adding(self) -> &'a mut [F] {
        if self.fresh {
            self.data.fill(F::zero());
        }
        self.data
    }
}

impl<F: Real> Op<F> {
    /// A short name for listings and errors (`"matmul"`, `"tanh"`, …).
    pub(crate) fn name(&self) -> Cow<'static, str> {
        match self {
            Op::Leaf => "leaf".into(),
            Op::Param(_) => "param".into(),
            Op::Binary(o) => o.name().into(),
            Op::Unary(o, w) => unary::name(o, w),
            Op::Linalg(o) => o.name().into(),
            Op::Reduce(o) => o.name(),
            Op::Shape(o) => o.name(),
            Op::Loss(o) => o.name(),
            Op::Dropout(o) => o.name(),
            Op::Select(o) => o.name().into(),
            Op::Norm(o) => o.name(),
            Op::Scan(o) => o.name().into(),
            Op::Recompute(o) => o.name().into(),
        }
    }

    /// Adds ∂L/∂x_k into `slot`, given the context of this node.
    pub(crate) fn backward(&self, k: usize, ctx: &BackwardCtx<'_, F>, slot: GradSlot<'_, F>) {
        match self {
            Op::Leaf | Op::Param(_) => {}
            Op::Binary(o) => o.backward(k, ctx, slot),
            Op::Unary(o, w) => o.backward(*w, ctx, slot),
            Op::Linalg(o) => o.backward(k, ctx, slot),
            Op::Reduce(o) => o.backward(k, ctx, slot),
            Op::Shape(o) => o.backward(k, ctx, slot),
            Op::Loss(o) => o.backward(k, ctx, slot),
            Op::Dropout(o) => o.backward(k, ctx, slot),
            Op::Select(o) => o.backward(k, ctx, slot),
            Op::Norm(o) => o.backward(k, ctx, slot),
            Op::Scan(o) => o.backward(k, ctx, slot),
            Op::Recompute(_) => unreachable!("a checkpoint's rule takes all slots at once"),
        }
    }

    /// `Some(off)` if the rule for input `k` is "∂L/∂x_k = gy's elements
    /// `off..off + numel(x_k)`, unchanged" (a concat along a contiguous
    /// axis): the sweep then lends that window of gy to the input instead
    /// of copying it into a slot of its own at once (`tape/backward.rs`).
    #[inline]
    pub(crate) fn gradient_window(&self, k: usize, ctx: &BackwardCtx<'_, F>) -> Option<usize> {
        match self {
            Op::Shape(o) => o.gradient_window(k, ctx),
            _ => None,
        }
    }

    /// Whether the rule computes every input's gradient at once
    /// ([`Op::backward_all`]) instead of one input at a time.
    pub(crate) fn takes_all_slots(&self) -> bool {
        matches!(self, Op::Recompute(_))
    }

    /// For an op that [`Op::takes_all_slots`]: adds ∂L/∂x_k onto `slots[k]`
    /// (the gradient accumulated so far, `None` for none yet) for every
    /// input that requires a gradient, in place.
    pub(crate) fn backward_all(&self, ctx: &BackwardCtx<'_, F>, slots: &mut [Option<Vec<F>>]) {
        match self {
            Op::Recompute(o) => o.backward_all(ctx, slots),
            _ => unreachable!("{} computes one input's gradient at a time", self.name()),
        }
    }

    /// Whether this op's backward reads input `k`'s value, which must then
    /// stay on the tape (see [`crate::Var::release`]).
    pub(crate) fn reads_input(&self, k: usize) -> bool {
        match self {
            Op::Leaf | Op::Param(_) => false,
            Op::Binary(o) => o.reads_input(k),
            Op::Unary(o, _) => o.reads_input(),
            Op::Linalg(o) => o.reads_input(k),
            Op::Loss(o) => o.reads_input(k),
            Op::Norm(o) => o.reads_input(k),
            Op::Scan(o) => o.reads_input(k),
            // The re-run starts from every input's value.
            Op::Recompute(_) => true,
            // Routed by shape alone, or by saved masks and indices.
            Op::Reduce(_) | Op::Shape(_) | Op::Dropout(_) | Op::Select(_) => false,
        }
    }

    /// Whether this op's backward reads its own output value.
    ///
    /// Both lists name every family (no wildcard), so a new family must
    /// declare what it reads before it compiles; a value a rule reads
    /// without declaring it trips a debug assertion (`Tensor::data`).
    pub(crate) fn reads_output(&self) -> bool {
        match self {
            Op::Unary(o, _) => o.reads_output(),
            Op::Loss(o) => o.reads_output(),
            Op::Scan(o) => o.reads_output(),
            Op::Leaf
            | Op::Param(_)
            | Op::Binary(_)
            | Op::Linalg(_)
            | Op::Reduce(_)
            | Op::Shape(_)
            | Op::Dropout(_)
            | Op::Select(_)
            | Op::Norm(_)
            | Op::Recompute(_) => false,
        }
    }

    /// Whether the op holds buffers [`Op::recycle`] returns (the others
    /// need not be taken apart at a reset).
    #[inline]
    pub(crate) fn saves_buffers(&self) -> bool {
        matches!(self, Op::Loss(_) | Op::Dropout(_))
    }

    /// Returns any buffers the op saved to the pool (tape reset).
    pub(crate) fn recycle(self, pool: &mut Pool<F>) {
        match self {
            Op::Loss(o) => o.recycle(pool),
            Op::Dropout(o) => o.recycle(pool),
            Op::Norm(o) => o.recycle(pool),
            _ => {}
        }
    }
}

/// `out[i] = f(a[i], b[i])` as a plain indexed loop.
#[inline]
pub(crate) fn map2<F: Copy>(out: &mut [F], a: &[F], b: &[F], f: impl Fn(F, F) -> F) {
    let n = out.len();
    let (a, b) = (&a[..n], &b[..n]);
    for i in 0..n {
        out[i] = f(a[i], b[i]);
    }
}

/// Formats a shape list for error messages: `[2, 3] and [4]`.
pub(crate) fn shapes(list: &[&Tensor<impl Real>]) -> String {
    list.iter()
        .map(|t| format!("{:?}", t.shape()))
        .collect::<Vec<_>>()
        .join(" and ")
}
