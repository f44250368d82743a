//! Matrix products and transposes (2-D).
//!
//! `matmul` carries two flags so that `x·Wᵀ` (PyTorch's weight layout) is one
//! GEMM with a strided operand, and its backward is two more GEMM calls whose
//! operands are transposed by strides — no transpose is ever materialised.
//! With A = op(a) (m×k), B = op(b) (k×n), Y = A·B and G = ∂L/∂Y:
//!
//! ```text
//! ∂L/∂A = G·Bᵀ        ∂L/∂B = Aᵀ·G
//! ```
//!
//! and a transposed operand receives the transpose of its rule:
//! ∂L/∂a = B·Gᵀ when a holds Aᵀ, ∂L/∂b = Gᵀ·A when b holds Bᵀ.

use super::{BackwardCtx, GradSlot, Op};
use crate::error::{Error, Result};
use crate::tensor::gemm::{MatMut, MatRef};
use crate::tensor::{Shape, Tensor};
use crate::{Real, Var};

/// A linear-algebra op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinalgOp {
    /// `y = op(a)·op(b)` where op transposes when the flag is set.
    Matmul { ta: bool, tb: bool },
    /// `y = aᵀ` (2-D); ∂L/∂a = Gᵀ.
    Transpose,
}

/// A row-major 2-D tensor as a view, transposed by strides when asked.
fn view<F: Real>(t: &Tensor<F>, transposed: bool) -> MatRef<'_, F> {
    let v = MatRef::row_major(t.data(), t.shape()[0], t.shape()[1]);
    if transposed {
        v.t()
    } else {
        v
    }
}

impl LinalgOp {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            LinalgOp::Matmul {
                ta: false,
                tb: false,
            } => "matmul",
            LinalgOp::Matmul {
                ta: false,
                tb: true,
            } => "matmul_t",
            LinalgOp::Matmul {
                ta: true,
                tb: false,
            } => "t_matmul",
            LinalgOp::Matmul { ta: true, tb: true } => "t_matmul_t",
            LinalgOp::Transpose => "transpose",
        }
    }

    pub(crate) fn backward<F: Real>(
        &self,
        k: usize,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        let acc = !slot.fresh;
        match *self {
            LinalgOp::Matmul { ta, tb } => {
                let a = view(c.x[0], ta);
                let b = view(c.x[1], tb);
                let g = view(c.gy, false);
                let (rows, cols) = (c.x[k].shape()[0], c.x[k].shape()[1]);
                let dst = MatMut::row_major(slot.data, rows, cols);
                match (k, ta, tb) {
                    (0, false, _) => F::gemm(dst, g, b.t(), acc), // G·Bᵀ
                    (0, true, _) => F::gemm(dst, b, g.t(), acc),  // (G·Bᵀ)ᵀ = B·Gᵀ
                    (_, _, false) => F::gemm(dst, a.t(), g, acc), // Aᵀ·G
                    (_, _, true) => F::gemm(dst, g.t(), a, acc),  // (Aᵀ·G)ᵀ = Gᵀ·A
                }
            }
            LinalgOp::Transpose => {
                let (r, cl) = (c.gy.shape()[0], c.gy.shape()[1]);
                let g = c.gy.data();
                // x is cl×r; ∂L/∂x[j][i] = G[i][j].
                slot.put((0..cl * r).map(|p| g[(p % r) * cl + p / r]));
            }
        }
    }
}

/// Weight-gradient contributions deferred to one GEMM (see
/// [`LinalgOp::deferrable`]): for each use, the output gradient G_t and the
/// left operand A_t.
pub(crate) struct Deferred<'a, F> {
    pub(crate) gy: &'a [F],
    pub(crate) a: &'a Tensor<F>,
}

/// Largest left-operand row count for which a weight gradient is deferred:
/// beyond it the per-use GEMM is already efficient and deferring would only
/// keep G_t alive longer.
const DEFER_MAX_ROWS: usize = 512;

impl LinalgOp {
    /// Whether the gradient for input `k` of this node may be deferred and
    /// batched with the node's other uses of the same weight: a weight `b`
    /// (a leaf) multiplied by a small left operand, as the recurrent
    /// `h(t−1)·W_hhᵀ` is at every step. The T contributions Σ_t G_tᵀ·A_t
    /// then become one GEMM over the stacked rows [G_1; …; G_T]ᵀ·[A_1; …; A_T]
    /// instead of T thin ones — the same sum, in one call that runs near the
    /// kernel's peak. Returns `Some(tb)` when deferrable.
    pub(crate) fn deferrable<F: Real>(&self, k: usize, a: &Tensor<F>) -> Option<bool> {
        match *self {
            LinalgOp::Matmul { ta: false, tb } if k == 1 && a.shape()[0] <= DEFER_MAX_ROWS => {
                Some(tb)
            }
            _ => None,
        }
    }
}

/// Adds Σ_t G_tᵀ·A_t (or Σ_t A_tᵀ·G_t when `!tb`) into `slot`, stacking the
/// contributions into two contiguous blocks first so that it is one GEMM.
pub(crate) fn flush_deferred<F: Real>(
    tb: bool,
    items: &[Deferred<'_, F>],
    slot: GradSlot<'_, F>,
    pool: &mut crate::tape::pool::Pool<F>,
) -> crate::error::Result<()> {
    let acc = !slot.fresh;
    let (k, n) = (
        items[0].a.shape()[1],
        items[0].gy.len() / items[0].a.shape()[0].max(1),
    );
    let rows: usize = items.iter().map(|d| d.a.shape()[0]).sum();
    let (g, a) = if items.len() == 1 {
        (None, None)
    } else {
        let mut g = pool.take(rows * n, "backward")?;
        let mut a = pool.take(rows * k, "backward")?;
        let (mut pg, mut pa) = (0, 0);
        for d in items {
            g[pg..pg + d.gy.len()].copy_from_slice(d.gy);
            a[pa..pa + d.a.numel()].copy_from_slice(d.a.data());
            pg += d.gy.len();
            pa += d.a.numel();
        }
        (Some(g), Some(a))
    };
    {
        let gv = MatRef::row_major(g.as_deref().unwrap_or(items[0].gy), rows, n);
        let av = MatRef::row_major(a.as_deref().unwrap_or(items[0].a.data()), rows, k);
        if tb {
            F::gemm(MatMut::row_major(slot.data, n, k), gv.t(), av, acc);
        } else {
            F::gemm(MatMut::row_major(slot.data, k, n), av.t(), gv, acc);
        }
    }
    for buf in [g, a].into_iter().flatten() {
        pool.give(buf);
    }
    Ok(())
}

fn check_2d<F: Real>(op: &str, a: &Tensor<F>, b: &Tensor<F>) -> Result<()> {
    if a.rank() != 2 || b.rank() != 2 {
        return Err(Error::shape(
            op,
            format!(
                "needs two 2-D operands, got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    Ok(())
}

impl<'t, F: Real> Var<'t, F> {
    #[track_caller]
    fn matmul_flags(self, rhs: Var<'t, F>, ta: bool, tb: bool) -> Var<'t, F> {
        let op = LinalgOp::Matmul { ta, tb };
        self.tape().record(op.name(), &[self, rhs], |x, pool| {
            check_2d(op.name(), x[0], x[1])?;
            let a = view(x[0], ta);
            let b = view(x[1], tb);
            if a.cols != b.rows {
                return Err(Error::shape(
                    op.name(),
                    format!(
                        "inner dimensions differ: {:?}{} · {:?}{} is [{}×{}]·[{}×{}]",
                        x[0].shape(),
                        if ta { "ᵀ" } else { "" },
                        x[1].shape(),
                        if tb { "ᵀ" } else { "" },
                        a.rows,
                        a.cols,
                        b.rows,
                        b.cols
                    ),
                ));
            }
            let (m, n) = (a.rows, b.cols);
            let mut out = pool.take(m.saturating_mul(n), op.name())?;
            F::gemm(MatMut::row_major(&mut out, m, n), a, b, false);
            Ok((
                Op::Linalg(op),
                Tensor::from_parts(Shape::from_slice(&[m, n]), out),
            ))
        })
    }

    /// Matrix product of 2-D vars, `y = a·b` ([m×k]·[k×n] → [m×n]).
    ///
    /// Gradient: ∂L/∂a = G·bᵀ, ∂L/∂b = aᵀ·G, each one GEMM call with a
    /// strided (not copied) transpose.
    ///
    /// # Panics
    /// If either operand is not 2-D or the inner dimensions differ.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap());
    /// let b = tape.constant(Tensor::from_vec(vec![1.0, 0.0, 1.0, 1.0], &[2, 2]).unwrap());
    /// let y = a.matmul(b);
    /// assert_eq!(y.value().data(), &[3.0, 2.0, 7.0, 4.0]);
    /// // ∂(Σy)/∂a = 1·bᵀ: row sums of b, per row of a
    /// assert_eq!(y.sum().backward().wrt(a).data(), &[1.0, 2.0, 1.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn matmul(self, rhs: Var<'t, F>) -> Var<'t, F> {
        self.matmul_flags(rhs, false, false)
    }

    /// `y = a·bᵀ` in one GEMM, for weights stored as [out×in] (PyTorch's
    /// layout): `x.matmul_t(w)` is `x·Wᵀ`.
    ///
    /// Gradient: ∂L/∂a = G·b, ∂L/∂b = Gᵀ·a.
    ///
    /// # Panics
    /// If either operand is not 2-D or `a.cols ≠ b.cols`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.constant(Tensor::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap());
    /// let w = tape.var(Tensor::from_vec(vec![1.0, 1.0, 0.0, 3.0, 5.0, 0.0], &[3, 2]).unwrap());
    /// let y = x.matmul_t(w);
    /// assert_eq!(y.value().data(), &[3.0, 6.0, 5.0]);
    /// assert_eq!(y.sum().backward().wrt(w).data(), &[1.0, 2.0, 1.0, 2.0, 1.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn matmul_t(self, rhs: Var<'t, F>) -> Var<'t, F> {
        self.matmul_flags(rhs, false, true)
    }

    /// `y = aᵀ·b` in one GEMM.
    ///
    /// Gradient: ∂L/∂a = b·Gᵀ, ∂L/∂b = a·G.
    ///
    /// # Panics
    /// If either operand is not 2-D or `a.rows ≠ b.rows`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0], &[2, 1]).unwrap());
    /// let b = tape.constant(Tensor::from_vec(vec![3.0, 4.0], &[2, 1]).unwrap());
    /// assert_eq!(a.t_matmul(b).item(), 11.0);
    /// ```
    #[track_caller]
    pub fn t_matmul(self, rhs: Var<'t, F>) -> Var<'t, F> {
        self.matmul_flags(rhs, true, false)
    }

    /// Transpose of a 2-D var, `y = aᵀ` (a copy; prefer [`Var::matmul_t`]
    /// inside products).
    ///
    /// Gradient: ∂L/∂a = Gᵀ.
    ///
    /// # Panics
    /// If the var is not 2-D.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap());
    /// let t = a.transpose();
    /// assert_eq!(t.shape().as_slice(), &[3, 2]);
    /// assert_eq!(t.value().data(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// ```
    #[track_caller]
    pub fn transpose(self) -> Var<'t, F> {
        self.tape().record("transpose", &[self], |x, pool| {
            let a = x[0];
            if a.rank() != 2 {
                return Err(Error::shape(
                    "transpose",
                    format!("needs a 2-D operand, got {:?}", a.shape()),
                ));
            }
            let (r, c) = (a.shape()[0], a.shape()[1]);
            let mut out = pool.take(a.numel(), "transpose")?;
            let d = a.data();
            for (p, o) in out.iter_mut().enumerate() {
                *o = d[(p % r) * c + p / r];
            }
            Ok((
                Op::Linalg(LinalgOp::Transpose),
                Tensor::from_parts(Shape::from_slice(&[c, r]), out),
            ))
        })
    }
}
