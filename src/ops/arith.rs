//! Elementwise binary arithmetic with NumPy broadcasting: add, sub, mul, div.
//!
//! For `y = f(a, b)` broadcast to the output shape, the gradient of an
//! operand is `gy ⊙ ∂f/∂operand`, summed over the dimensions that operand
//! was stretched along (see `broadcast.rs`).

use super::broadcast::{self, broadcast_shape};
use super::{BackwardCtx, GradSlot, Op};
use crate::tensor::{numel, Tensor};
use crate::{Real, Var};

/// An elementwise binary op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    /// `y = a + b`; ∂y/∂a = 1, ∂y/∂b = 1.
    Add,
    /// `y = a − b`; ∂y/∂a = 1, ∂y/∂b = −1.
    Sub,
    /// `y = a ⊙ b`; ∂y/∂a = b, ∂y/∂b = a.
    Mul,
    /// `y = a ⊘ b`; ∂y/∂a = 1/b, ∂y/∂b = −a/b².
    Div,
}

impl BinaryOp {
    /// Whether backward reads input `k`'s value: both operands of a product
    /// or quotient (each one's gradient reads the other); none of a sum or
    /// difference, whose rules only route the gradient.
    pub(crate) fn reads_input(&self, _k: usize) -> bool {
        matches!(self, BinaryOp::Mul | BinaryOp::Div)
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }

    pub(crate) fn backward<F: Real>(
        &self,
        k: usize,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        let (a, b) = (c.x[0], c.x[1]);
        let out = c.gy.shape();
        let gy = c.gy.data();
        if gy.is_empty() {
            // No output elements: every input element gets gradient 0.
            slot.for_adding();
            return;
        }
        // A sum or difference does not read its operands, which may have
        // been released (empty): gy's leading elements stand in (an operand
        // has at most as many elements as the non-empty output).
        let read = self.reads_input(k);
        let (a, b) = (
            (operand(a, gy, read), a.shape()),
            (operand(b, gy, read), b.shape()),
        );
        match (self, k) {
            (BinaryOp::Add, _) | (BinaryOp::Sub, 0) => {
                broadcast::grad(k, out, a, b, gy, slot, |g, _, _| g)
            }
            (BinaryOp::Sub, _) => broadcast::grad(k, out, a, b, gy, slot, |g, _, _| -g),
            (BinaryOp::Mul, 0) => broadcast::grad(k, out, a, b, gy, slot, |g, _, y| g * y),
            (BinaryOp::Mul, _) => broadcast::grad(k, out, a, b, gy, slot, |g, x, _| g * x),
            (BinaryOp::Div, 0) => broadcast::grad(k, out, a, b, gy, slot, |g, _, y| g / y),
            (BinaryOp::Div, _) => {
                broadcast::grad(k, out, a, b, gy, slot, |g, x, y| -g * x / (y * y))
            }
        }
    }
}

/// An operand's data, or — for a rule that does not read it — as many of
/// gy's elements, so a released (empty) value is never indexed.
fn operand<'a, F: Real>(t: &'a Tensor<F>, gy: &'a [F], read: bool) -> &'a [F] {
    if read {
        t.data()
    } else {
        &gy[..t.numel()]
    }
}

impl<'t, F: Real> Var<'t, F> {
    #[track_caller]
    fn binary(self, rhs: Var<'t, F>, op: BinaryOp) -> Var<'t, F> {
        self.tape().record(op.name(), &[self, rhs], |x, pool| {
            let (a, b) = (x[0], x[1]);
            let shape = broadcast_shape(op.name(), a.shape(), b.shape())?;
            let mut out = pool.take(numel(&shape)?, op.name())?;
            let (a, b) = ((a.data(), a.shape()), (b.data(), b.shape()));
            // Match the op once, outside the element loop.
            match op {
                BinaryOp::Add => broadcast::zip(&shape, a, b, &mut out, |x, y| x + y),
                BinaryOp::Sub => broadcast::zip(&shape, a, b, &mut out, |x, y| x - y),
                BinaryOp::Mul => broadcast::zip(&shape, a, b, &mut out, |x, y| x * y),
                BinaryOp::Div => broadcast::zip(&shape, a, b, &mut out, |x, y| x / y),
            }
            Ok((Op::Binary(op), Tensor::from_parts(shape, out)))
        })
    }

    /// Elementwise sum with broadcasting, `y = a + b` (also the `+` operator).
    ///
    /// Gradient: ∂L/∂a = gy, ∂L/∂b = gy, each summed over the dimensions
    /// it was broadcast along (a bias `[H]` over `[B×H]` gets the column sums).
    ///
    /// # Panics
    /// If the shapes do not broadcast (the message names both).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.constant(Tensor::ones(&[2, 3]));
    /// let b = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap());
    /// let y = x.add(b);
    /// assert_eq!(y.value().data(), &[2.0, 3.0, 4.0, 2.0, 3.0, 4.0]);
    /// assert_eq!(y.sum().backward().wrt(b).data(), &[2.0, 2.0, 2.0]);
    /// ```
    #[track_caller]
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, rhs: Var<'t, F>) -> Var<'t, F> {
        self.binary(rhs, BinaryOp::Add)
    }

    /// Elementwise difference with broadcasting, `y = a − b`.
    ///
    /// Gradient: ∂L/∂a = gy, ∂L/∂b = −gy (reduced over broadcast dimensions).
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::scalar(5.0));
    /// let b = tape.var(Tensor::scalar(3.0));
    /// let g = (a - b).backward();
    /// assert_eq!((g.wrt(a).item(), g.wrt(b).item()), (1.0, -1.0));
    /// ```
    #[track_caller]
    #[allow(clippy::should_implement_trait)]
    pub fn sub(self, rhs: Var<'t, F>) -> Var<'t, F> {
        self.binary(rhs, BinaryOp::Sub)
    }

    /// Elementwise (Hadamard) product with broadcasting, `y = a ⊙ b`.
    ///
    /// Gradient: ∂L/∂a = gy ⊙ b, ∂L/∂b = gy ⊙ a (reduced over broadcast
    /// dimensions).
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::scalar(5.0));
    /// let b = tape.var(Tensor::scalar(3.0));
    /// let g = (a * b).backward();
    /// assert_eq!((g.wrt(a).item(), g.wrt(b).item()), (3.0, 5.0));
    /// ```
    #[track_caller]
    #[allow(clippy::should_implement_trait)]
    pub fn mul(self, rhs: Var<'t, F>) -> Var<'t, F> {
        self.binary(rhs, BinaryOp::Mul)
    }

    /// Elementwise quotient with broadcasting, `y = a ⊘ b`.
    ///
    /// Gradient: ∂L/∂a = gy ⊘ b, ∂L/∂b = −gy ⊙ a ⊘ b².
    ///
    /// # Panics
    /// If the shapes do not broadcast.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::scalar(6.0));
    /// let b = tape.var(Tensor::scalar(3.0));
    /// let g = (a / b).backward();
    /// assert_eq!(g.wrt(a).item(), 1.0 / 3.0);
    /// assert_eq!(g.wrt(b).item(), -6.0 / 9.0);
    /// ```
    #[track_caller]
    #[allow(clippy::should_implement_trait)]
    pub fn div(self, rhs: Var<'t, F>) -> Var<'t, F> {
        self.binary(rhs, BinaryOp::Div)
    }
}
