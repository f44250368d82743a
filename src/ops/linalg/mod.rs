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
//!
//! `addmm` adds a third operand c, read in one of two ways ([`Addend`]):
//! as rows `start..start+m` of an [R×n] matrix (R = m for the plain
//! `c + a·b`; a row window is how a recurrent step reads its rows of the
//! hoisted input projection, with no slice copy), or as a bias row [n]
//! broadcast over the m rows. ∂L/∂c is G added into the window, or G's
//! column sums.
//!
//! This file holds the ops and their plain rules. The speed work on the
//! weight gradients of products lives next to them, behind the one hook the
//! reverse sweep calls ([`sweep::WeightGrads`]), so the sweep itself knows
//! no op family:
//!
//! - `reorder.rs`: the backward side of the Wᵀ reorder — a product whose
//!   right operand is a `transpose` node reads W itself for its G·W and
//!   writes its weight gradient straight into W's slot;
//! - `deferral.rs`: the T thin weight gradients G_tᵀ·A_t of a weight used at
//!   every step, held and summed as one GEMM over stacked rows;
//! - `sweep.rs`: the hook — before the sweep, as the sweep reaches a node,
//!   where one input's gradient goes, and after the sweep.

mod deferral;
mod reorder;
pub(crate) mod sweep;

use super::{BackwardCtx, GradSlot, Op};
use crate::error::{Error, Result};
use crate::tensor::gemm::{MatMut, MatRef};
use crate::tensor::{transpose_into, Shape, Tensor};
use crate::{Real, Var};
use smallvec::SmallVec;

/// How `addmm` reads its addend c (the third input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addend {
    /// No addend: a plain product.
    None,
    /// c is [m×n].
    Full,
    /// Rows `start..start+m` of c [R×n] (`addmm_rows`).
    Rows { start: usize },
    /// c is a row [n], added to every row of the product.
    Bias,
}

/// A linear-algebra op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinalgOp {
    /// `y = op(a)·op(b) (+ c)` where op transposes when the flag is set and
    /// `c` (a third input) is added as `add` says (`addmm`).
    Matmul { ta: bool, tb: bool, add: Addend },
    /// `y = aᵀ` (2-D); ∂L/∂a = Gᵀ.
    Transpose,
}

/// A tensor as a matrix: [rows × last] with every leading dimension folded
/// into the rows (a 2-D tensor is itself).
fn dims2<F: Real>(t: &Tensor<F>) -> (usize, usize) {
    let cols = t.shape().last().copied().unwrap_or(1);
    (t.numel() / cols.max(1), cols)
}

/// A row-major tensor as a matrix view, transposed by strides when asked.
fn view<F: Real>(t: &Tensor<F>, transposed: bool) -> MatRef<'_, F> {
    let (rows, cols) = dims2(t);
    let v = MatRef::row_major(t.data(), rows, cols);
    if transposed {
        v.t()
    } else {
        v
    }
}

impl LinalgOp {
    /// Whether backward reads input `k`'s value: a product's two factors
    /// (each one's gradient reads the other), not the addend `c` of addmm,
    /// not the operand of a transpose.
    pub(crate) fn reads_input(&self, k: usize) -> bool {
        matches!(self, LinalgOp::Matmul { .. }) && k < 2
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            LinalgOp::Matmul { ta, tb, add } => {
                const NAMES: [&str; 8] = [
                    "matmul",
                    "matmul_t",
                    "t_matmul",
                    "t_matmul_t",
                    "addmm",
                    "addmm_t",
                    "addmm(aᵀ)",
                    "addmm(aᵀ, bᵀ)",
                ];
                let add = *add != Addend::None;
                NAMES[(add as usize) * 4 + (*ta as usize) * 2 + (*tb as usize)]
            }
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
            LinalgOp::Matmul { add, .. } if k == 2 => {
                let gy = c.gy.data();
                match add {
                    // ∂L/∂c = G: the whole of c, or added into its window.
                    Addend::Full => slot.put_slice(gy),
                    Addend::Rows { start } => {
                        let d = slot.for_adding();
                        let at = start * (gy.len() / c.gy.shape()[0].max(1));
                        for (d, &g) in d[at..at + gy.len()].iter_mut().zip(gy) {
                            *d = *d + g;
                        }
                    }
                    // ∂L/∂c = Σ_rows G.
                    Addend::Bias => {
                        let d = slot.for_adding();
                        if !d.is_empty() {
                            for row in gy.chunks_exact(d.len()) {
                                for (d, &g) in d.iter_mut().zip(row) {
                                    *d = *d + g;
                                }
                            }
                        }
                    }
                    Addend::None => unreachable!("a product has two inputs"),
                }
            }
            LinalgOp::Matmul { ta, tb, .. } => {
                let a = view(c.x[0], ta);
                let g = view(c.gy, false);
                if k == 1 {
                    return right_operand_grad(tb, a, g, slot);
                }
                let b = view(c.x[1], tb);
                let (rows, cols) = dims2(c.x[0]);
                let dst = MatMut::row_major(slot.data, rows, cols);
                match (ta, tb) {
                    // G·Bᵀ with B = Wᵀ a reordered weight: G·W, row-major.
                    (false, false) if c.untransposed[1].is_some() => {
                        let w = c.untransposed[1].expect("checked");
                        F::gemm(dst, g, view(w, false), acc)
                    }
                    (false, _) => F::gemm(dst, g, b.t(), acc), // G·Bᵀ
                    (true, _) => F::gemm(dst, b, g.t(), acc),  // (G·Bᵀ)ᵀ = B·Gᵀ
                }
            }
            LinalgOp::Transpose => {
                // x is cl×r; ∂L/∂x[j][i] = G[i][j].
                let (r, cl) = (c.gy.shape()[0], c.gy.shape()[1]);
                transpose_into(c.gy.data(), r, cl, slot.data, acc);
            }
        }
    }
}

/// The rule for a product's right operand from A = op(a) [m × k] and
/// G = ∂L/∂Y [m × n]: Aᵀ·G [k × n] when b is used as is, (Aᵀ·G)ᵀ = Gᵀ·A
/// [n × k] when b holds Bᵀ (`tb`); written, or added unless `slot` is
/// fresh. Shared by the plain rule, the rule passed on to a transpose's
/// source, and the flush of deferred uses (A and G stacked over steps).
fn right_operand_grad<F: Real>(
    tb: bool,
    a: MatRef<'_, F>,
    g: MatRef<'_, F>,
    slot: GradSlot<'_, F>,
) {
    let (k, n, acc) = (a.cols, g.cols, !slot.fresh);
    if tb {
        F::gemm(MatMut::row_major(slot.data, n, k), g.t(), a, acc)
    } else {
        F::gemm(MatMut::row_major(slot.data, k, n), a.t(), g, acc)
    }
}

/// Checks the operands of a (possibly transposed, possibly accumulating)
/// product and returns (m, n). The left operand may have rank > 2 when it
/// is not transposed: its leading dimensions fold into rows.
fn check_operands<F: Real>(op: LinalgOp, x: &[&Tensor<F>]) -> Result<(usize, usize)> {
    let LinalgOp::Matmul { ta, tb, add } = op else {
        unreachable!("only products have operands to check")
    };
    let (a, b) = (x[0], x[1]);
    let left_ok = a.rank() == 2 || (a.rank() > 2 && !ta);
    if !left_ok || b.rank() != 2 {
        return Err(Error::shape(
            op.name(),
            format!(
                "needs 2-D operands (the left one may be [.., k]), got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        ));
    }
    let (av, bv) = (view(a, ta), view(b, tb));
    if av.cols != bv.rows {
        return Err(Error::shape(
            op.name(),
            format!(
                "inner dimensions differ: {:?}{} · {:?}{} is [{}×{}]·[{}×{}]",
                a.shape(),
                if ta { "ᵀ" } else { "" },
                b.shape(),
                if tb { "ᵀ" } else { "" },
                av.rows,
                av.cols,
                bv.rows,
                bv.cols
            ),
        ));
    }
    let (m, n) = (av.rows, bv.cols);
    let addend_ok = match add {
        Addend::None => true,
        Addend::Full => x[2].shape() == [m, n],
        Addend::Bias => x[2].shape() == [n],
        Addend::Rows { start } => {
            let c = x[2].shape();
            c.len() == 2 && c[1] == n && start.checked_add(m).is_some_and(|end| end <= c[0])
        }
    };
    if !addend_ok {
        let want = match add {
            Addend::Rows { start } => {
                format!(
                    "rows {start}..{} of an [R, {n}] matrix",
                    start.saturating_add(m)
                )
            }
            _ => format!("[{m}, {n}] or a bias row [{n}]"),
        };
        return Err(Error::shape(
            op.name(),
            format!(
                "the addend has shape {:?}; the product is [{m}, {n}], so it must be {want}",
                x[2].shape(),
            ),
        ));
    }
    Ok((av.rows, bv.cols))
}

impl<'t, F: Real> Var<'t, F> {
    #[track_caller]
    fn product(
        self,
        rhs: Var<'t, F>,
        addend: Option<(Var<'t, F>, Option<usize>)>,
        ta: bool,
        tb: bool,
    ) -> Var<'t, F> {
        // The window's start for `addmm_rows`; `None` for plain `addmm`.
        let add = match addend {
            None => Addend::None,
            Some((_, Some(start))) => Addend::Rows { start },
            Some((c, None)) if c.shape().len() == 1 => Addend::Bias,
            Some((_, None)) => Addend::Full,
        };
        let op = LinalgOp::Matmul { ta, tb, add };
        let addend = addend.map(|(c, _)| c);
        let inputs: SmallVec<[Var<'t, F>; 3]> = [Some(self), Some(rhs), addend]
            .into_iter()
            .flatten()
            .collect();
        self.tape().record(op.name(), &inputs, |x, pool| {
            let (m, n) = check_operands(op, x)?;
            let mut out = pool.take(m.saturating_mul(n), op.name())?;
            match add {
                Addend::None => {}
                Addend::Full => out.copy_from_slice(x[2].data()),
                Addend::Rows { start } => {
                    out.copy_from_slice(&x[2].data()[start * n..(start + m) * n]);
                }
                Addend::Bias => {
                    for row in out.chunks_exact_mut(n.max(1)) {
                        row.copy_from_slice(x[2].data());
                    }
                }
            }
            let dst = MatMut::row_major(&mut out, m, n);
            F::gemm(dst, view(x[0], ta), view(x[1], tb), x.len() == 3);
            Ok((
                Op::Linalg(op),
                Tensor::from_parts(Shape::from_slice(&[m, n]), out),
            ))
        })
    }

    #[track_caller]
    fn matmul_flags(self, rhs: Var<'t, F>, ta: bool, tb: bool) -> Var<'t, F> {
        self.product(rhs, None, ta, tb)
    }

    /// `y = c + a·b` in one op (`torch.addmm`): the product accumulates
    /// onto a copy of `c` (here `self`), with no separate add pass. `c` is
    /// `[m×n]`, or a bias row `[n]` added to every row (`x·W + b`, one op).
    ///
    /// Gradient: ∂L/∂c = G (for a bias row, Σ_rows G), ∂L/∂a = G·bᵀ,
    /// ∂L/∂b = aᵀ·G.
    ///
    /// # Panics
    /// If the operands are not 2-D, the inner dimensions differ, or `c` is
    /// neither `[m×n]` nor `[n]`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let c = tape.var(Tensor::ones(&[1, 2]));
    /// let a = tape.constant(Tensor::from_vec(vec![2.0], &[1, 1]).unwrap());
    /// let b = tape.var(Tensor::from_vec(vec![3.0, 4.0], &[1, 2]).unwrap());
    /// let y = c.addmm(a, b);
    /// assert_eq!(y.value().data(), &[7.0, 9.0]);
    /// let g = y.sum().backward();
    /// assert_eq!(g.wrt(c).data(), &[1.0, 1.0]);
    /// assert_eq!(g.wrt(b).data(), &[2.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn addmm(self, a: Var<'t, F>, b: Var<'t, F>) -> Var<'t, F> {
        a.product(b, Some((self, None)), false, false)
    }

    /// `y = c + a·bᵀ` in one op: a step's recurrent term `xw(t) + h(t−1)·W_hhᵀ`,
    /// or with a bias row c `[n]`, a linear layer `x·Wᵀ + b`.
    ///
    /// Gradient: ∂L/∂c = G (for a bias row, Σ_rows G), ∂L/∂a = G·b,
    /// ∂L/∂b = Gᵀ·a.
    ///
    /// # Panics
    /// If the operands are not 2-D, `a.cols ≠ b.cols`, or `c` is neither
    /// [a.rows × b.rows] nor [b.rows].
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let c = tape.constant(Tensor::zeros(&[1, 3]));
    /// let h = tape.constant(Tensor::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap());
    /// let w = tape.var(Tensor::from_vec(vec![1.0, 1.0, 0.0, 3.0, 5.0, 0.0], &[3, 2]).unwrap());
    /// let y = c.addmm_t(h, w);
    /// assert_eq!(y.value().data(), &[3.0, 6.0, 5.0]);
    /// ```
    #[track_caller]
    pub fn addmm_t(self, a: Var<'t, F>, b: Var<'t, F>) -> Var<'t, F> {
        a.product(b, Some((self, None)), false, true)
    }

    /// `y = c[start..start+m, :] + a·b` in one op, c = `self` [R×n]: adds
    /// the product onto a window of c's rows without copying the window out
    /// first (what `torch.addmm(c[start:start+m], a, b)` does with a view).
    /// A recurrent step reads its rows of the hoisted input projection this
    /// way.
    ///
    /// Gradient: ∂L/∂c = G in rows `start..start+m`, 0 elsewhere;
    /// ∂L/∂a = G·bᵀ, ∂L/∂b = aᵀ·G.
    ///
    /// # Panics
    /// If the operands are not 2-D, the inner dimensions differ, or c is not
    /// 2-D with n columns and at least `start + m` rows.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let c = tape.var(Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3, 1]).unwrap());
    /// let a = tape.constant(Tensor::from_vec(vec![10.0], &[1, 1]).unwrap());
    /// let b = tape.constant(Tensor::from_vec(vec![2.0], &[1, 1]).unwrap());
    /// let y = c.addmm_rows(1, a, b); // row 1 of c, plus 10·2
    /// assert_eq!(y.value().data(), &[22.0]);
    /// assert_eq!(y.sum().backward().wrt(c).data(), &[0.0, 1.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn addmm_rows(self, start: usize, a: Var<'t, F>, b: Var<'t, F>) -> Var<'t, F> {
        a.product(b, Some((self, Some(start))), false, false)
    }

    /// `y = c[start..start+m, :] + a·bᵀ` in one op: [`Var::addmm_rows`]
    /// with b in PyTorch's weight layout.
    ///
    /// Gradient: ∂L/∂c = G in rows `start..start+m`, 0 elsewhere;
    /// ∂L/∂a = G·b, ∂L/∂b = Gᵀ·a.
    ///
    /// # Panics
    /// As [`Var::addmm_rows`], with `a.cols ≠ b.cols` for the inner
    /// dimensions.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let c = tape.constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap());
    /// let h = tape.constant(Tensor::from_vec(vec![1.0], &[1, 1]).unwrap());
    /// let w = tape.var(Tensor::from_vec(vec![5.0, 6.0], &[2, 1]).unwrap());
    /// assert_eq!(c.addmm_rows_t(1, h, w).value().data(), &[8.0, 10.0]);
    /// ```
    #[track_caller]
    pub fn addmm_rows_t(self, start: usize, a: Var<'t, F>, b: Var<'t, F>) -> Var<'t, F> {
        a.product(b, Some((self, Some(start))), false, true)
    }

    /// Matrix product, `y = a·b` ([m×k]·[k×n] → [m×n]). A left operand of
    /// rank > 2 is read as [rows × k] with its leading dimensions folded into
    /// the rows (`[T, B, k]` → `[T·B, k]`, no copy).
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

    /// [`Var::transpose`] when the caller already holds the transpose's
    /// value (`known`, the same transpose recorded on another tape: a
    /// checkpointed segment re-running with its layer's reordered
    /// weights): the node is a transpose of `self` in every respect — its
    /// rule, and the products that read its source — but its value is a
    /// view of `known` (or a copy, if `known` is not shareable) instead of
    /// a transpose computed again.
    ///
    /// # Panics
    /// If `known` is not `self`'s transpose in shape (in debug builds, also
    /// in value).
    #[track_caller]
    pub(crate) fn transpose_known(self, known: &Tensor<F>) -> Var<'t, F> {
        self.tape().record("transpose", &[self], |x, pool| {
            let a = x[0];
            if a.rank() != 2 || known.shape() != [a.shape()[1], a.shape()[0]] {
                return Err(Error::shape(
                    "transpose",
                    format!(
                        "the known value {:?} is not the transpose of {:?}",
                        known.shape(),
                        a.shape()
                    ),
                ));
            }
            let value = pool.window(known, 0, known.shape(), "transpose")?;
            if cfg!(debug_assertions) {
                let (r, c) = (a.shape()[0], a.shape()[1]);
                let mut check = vec![F::zero(); a.numel()];
                transpose_into(a.data(), r, c, &mut check, false);
                assert!(
                    check == value.data(),
                    "transpose: the known value differs from the transpose"
                );
            }
            Ok((Op::Linalg(LinalgOp::Transpose), value))
        })
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
            transpose_into(a.data(), r, c, &mut out, false);
            Ok((
                Op::Linalg(LinalgOp::Transpose),
                Tensor::from_parts(Shape::from_slice(&[c, r]), out),
            ))
        })
    }
}
