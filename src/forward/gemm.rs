//! The product of dual matrices as three products of their parts: with
//! A = Aₚ + Aₜε and B = Bₚ + Bₜε,
//!
//! ```text
//! A·B = Aₚ·Bₚ + (Aₚ·Bₜ + Aₜ·Bₚ)·ε        (ε² = 0)
//! ```
//!
//! so a `Dual<f64>` GEMM is three f64 GEMMs through the inner type's
//! [`Real::gemm`] (the `gemm` crate's kernels for f32/f64) instead of the
//! generic scalar loop, plus copies that split the interleaved operands
//! into their parts and merge the result: O(mk + kn + mn) next to the
//! O(mkn) of the products. A part that is all zero (data, a constant) is
//! skipped: `x·Wᵀ` with a constant x costs two products, not three.
//!
//! Every product, however small, takes this path (no scalar loop below a
//! size): the primal part is then computed by the very kernel call, with
//! the same shapes and strides, that an f64 tape makes, so **the values
//! and gradients of a dual pass are bitwise those of the plain pass** —
//! only the tangents are new.
//!
//! Why here and not in `tensor/gemm.rs`: it is the dual type's
//! [`Real::gemm`] hook, the one seam the rest of the crate calls; no other
//! code knows that dual numbers exist.

use super::Dual;
use crate::tensor::gemm::{MatMut, MatRef};
use crate::Real;

/// The parts of the elements a strided view can reach, in the same layout
/// (so the strides still apply), and whether the tangent part is all zero.
fn split<F: Real>(m: &MatRef<'_, Dual<F>>) -> (Vec<F>, Vec<F>, bool) {
    let reach = if m.rows == 0 || m.cols == 0 {
        0
    } else {
        ((m.rows - 1) * m.rs + (m.cols - 1) * m.cs + 1).min(m.data.len())
    };
    let src = &m.data[..reach];
    let primal: Vec<F> = src.iter().map(|d| d.primal).collect();
    let tangent: Vec<F> = src.iter().map(|d| d.tangent).collect();
    let zero = tangent.iter().all(|t| t.is_zero());
    (primal, tangent, zero)
}

/// `c ← a·b` (or `c ← c + a·b`) for dual matrices: [`Real::gemm`] of
/// `Dual<F>`.
///
/// ```
/// use tapegrad::forward::Dual;
/// use tapegrad::tensor::gemm::{MatMut, MatRef};
/// use tapegrad::Real;
/// let d = |p: f64, t: f64| Dual::new(p, t);
/// let a = [d(1.0, 1.0), d(2.0, 0.0)];              // 1×2
/// let b = [d(3.0, 0.0), d(4.0, 2.0)];              // 2×1
/// let mut c = [Dual::default()];
/// Dual::gemm(MatMut::row_major(&mut c, 1, 1), MatRef::row_major(&a, 1, 2),
///            MatRef::row_major(&b, 2, 1), false);
/// assert_eq!(c[0], d(11.0, 3.0 + 4.0));             // (1+ε)·3 + 2·(4+2ε)
/// ```
pub fn dual_gemm<F: Real>(
    c: MatMut<'_, Dual<F>>,
    a: MatRef<'_, Dual<F>>,
    b: MatRef<'_, Dual<F>>,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        c.rows == m && c.cols == n && b.rows == k && c.data.len() == m * n,
        "gemm: [{m}×{k}]·[{}×{n}] into [{}×{}]",
        b.rows,
        c.rows,
        c.cols
    );
    let (ap, at, a_const) = split(&a);
    let (bp, bt, b_const) = split(&b);
    let view = |data, v: &MatRef<'_, Dual<F>>| MatRef {
        data,
        rows: v.rows,
        cols: v.cols,
        rs: v.rs,
        cs: v.cs,
    };
    // With `accumulate`, c's parts are the accumulators of the inner
    // calls, exactly as an f64 tape passes its c.
    let part = |f: fn(&Dual<F>) -> F| -> Vec<F> {
        if accumulate {
            c.data.iter().map(f).collect()
        } else {
            vec![F::zero(); m * n]
        }
    };
    let mut cp = part(|d| d.primal);
    let mut ct = part(|d| d.tangent);
    F::gemm(
        MatMut::row_major(&mut cp, m, n),
        view(&ap, &a),
        view(&bp, &b),
        accumulate,
    );
    let mut written = accumulate;
    if !b_const {
        F::gemm(
            MatMut::row_major(&mut ct, m, n),
            view(&ap, &a),
            view(&bt, &b),
            written,
        );
        written = true;
    }
    if !a_const {
        F::gemm(
            MatMut::row_major(&mut ct, m, n),
            view(&at, &a),
            view(&bp, &b),
            written,
        );
    }
    for ((o, p), t) in c.data.iter_mut().zip(cp).zip(ct) {
        *o = Dual::new(p, t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The split product equals the plain loop, with strided operands,
    /// constant parts and accumulation.
    #[test]
    fn split_product_matches_the_scalar_loop() {
        let (m, k, n) = (13, 21, 17);
        let val = |i: usize, s: f64| Dual::new((i as f64 * s).sin(), (i as f64 * s * 1.3).cos());
        let a: Vec<Dual<f64>> = (0..m * k).map(|i| val(i, 0.37)).collect();
        let bt: Vec<Dual<f64>> = (0..n * k).map(|i| val(i, 0.11)).collect(); // Bᵀ stored
        let a_const: Vec<Dual<f64>> = a.iter().map(|d| Dual::constant(d.primal)).collect();
        for (lhs, acc) in [(&a, false), (&a, true), (&a_const, false), (&a_const, true)] {
            let mut c1 = vec![Dual::new(0.5, -0.25); m * n];
            let mut c2 = c1.clone();
            let av = MatRef::row_major(lhs.as_slice(), m, k);
            let bv = MatRef::row_major(bt.as_slice(), n, k).t();
            crate::tensor::gemm::naive(MatMut::row_major(&mut c1, m, n), av, bv, acc);
            dual_gemm(MatMut::row_major(&mut c2, m, n), av, bv, acc);
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x.primal - y.primal).abs() < 1e-12);
                assert!((x.tangent - y.tangent).abs() < 1e-12);
            }
        }
    }
}
