//! NumPy-style broadcasting for elementwise binary ops: shapes align at the
//! trailing dimension; a dimension of 1 (or a missing one) stretches.
//!
//! Kernels are chosen once per op by [`Plan`]: equal shapes (a plain zip),
//! a *tiled* operand whose shape is a suffix of the output (a bias `[H]`
//! over `[B×H]`: element `i % n`), a *repeated* operand whose shape is a
//! prefix followed by ones (a per-row mask `[B×1]`: element `i / m`), and a
//! general odometer for everything else. The gradient of a stretched operand
//! is the sum of the output gradient over the stretched dimensions.

use crate::error::{Error, Result};
use crate::tensor::Shape;
use crate::Real;

/// The broadcast shape of `a` and `b`, or a shape error naming both.
pub(crate) fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Result<Shape> {
    // Equal shapes, the common case (gates of a step): one copy.
    if same(a, b) {
        return Ok(Shape::from_slice(a));
    }
    let rank = a.len().max(b.len());
    let mut out = Shape::with_capacity(rank);
    for i in 0..rank {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    format!(
                        "shapes {a:?} and {b:?} do not broadcast (dimension {i}: {da} vs {db})"
                    ),
                ))
            }
        });
    }
    Ok(out)
}

/// Whether two shapes are equal, compared inline: `==` on slices calls
/// `memcmp`, a visible cost for the rank-2 shapes every elementwise op
/// compares.
#[inline]
fn same(a: &[usize], b: &[usize]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Dimension `k` counted from the right (0 = last), 1 where missing.
fn dim_from_right(s: &[usize], k: usize) -> usize {
    if k < s.len() {
        s[s.len() - 1 - k]
    } else {
        1
    }
}

/// How one operand maps onto the output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Access {
    /// Same shape as the output: element `i`.
    Same,
    /// Element `i % n` (shape is a suffix of the output's, after leading ones).
    Tile(usize),
    /// Element `i / m` (shape is a prefix of the output's, then ones).
    Repeat(usize),
    /// Any other stretch: strides aligned to the output, 0 where stretched.
    Strided(Shape),
}

impl Access {
    pub(crate) fn of(shape: &[usize], out: &[usize]) -> Access {
        if same(shape, out) {
            return Access::Same;
        }
        let n: usize = shape.iter().product();
        let total: usize = out.iter().product();
        if n == total {
            return Access::Same;
        }
        let rank = out.len();
        let aligned: Shape = (0..rank)
            .map(|i| dim_from_right(shape, rank - 1 - i))
            .collect();
        // Suffix: leading dims all 1, the rest equal to out's.
        let first_real = aligned.iter().position(|&d| d != 1).unwrap_or(rank);
        if aligned[first_real..] == out[first_real..] {
            return Access::Tile(n.max(1));
        }
        // Prefix: trailing dims all 1, the rest equal to out's.
        let last_real = aligned.iter().rposition(|&d| d != 1).map_or(0, |p| p + 1);
        if aligned[..last_real] == out[..last_real] {
            return Access::Repeat(total / n.max(1));
        }
        Access::Strided(Self::strided_always(shape, out))
    }
}

/// Visits every output index with the offsets of both operands.
fn odometer(out: &[usize], sa: &[usize], sb: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let total: usize = out.iter().product();
    if total == 0 {
        return;
    }
    let rank = out.len();
    let mut idx = vec![0usize; rank];
    let (mut oa, mut ob) = (0usize, 0usize);
    for i in 0..total {
        f(i, oa, ob);
        for d in (0..rank).rev() {
            idx[d] += 1;
            oa += sa[d];
            ob += sb[d];
            if idx[d] < out[d] {
                break;
            }
            oa -= sa[d] * out[d];
            ob -= sb[d] * out[d];
            idx[d] = 0;
        }
    }
}

fn strides_of(access: &Access, shape: &[usize], out: &[usize]) -> Shape {
    match access {
        Access::Strided(s) => s.clone(),
        _ => Access::strided_always(shape, out),
    }
}

impl Access {
    fn strided_always(shape: &[usize], out: &[usize]) -> Shape {
        let rank = out.len();
        let aligned: Shape = (0..rank)
            .map(|i| dim_from_right(shape, rank - 1 - i))
            .collect();
        let mut strides = Shape::from_elem(0, rank);
        let mut acc = 1;
        for i in (0..rank).rev() {
            if aligned[i] != 1 {
                strides[i] = acc;
            }
            acc *= aligned[i];
        }
        strides
    }
}

/// One full-size operand and one stretched by tiling or repeating: the
/// common bias and per-row-mask cases, run as chunk loops (no index
/// arithmetic per element). `small_is_b` says which side is stretched.
#[derive(Debug, Clone, Copy)]
enum Simple {
    Tile { n: usize, small_is_b: bool },
    Repeat { m: usize, small_is_b: bool },
}

fn simple(aa: &Access, ab: &Access) -> Option<Simple> {
    match (aa, ab) {
        (Access::Same, Access::Tile(n)) if *n > 0 => Some(Simple::Tile {
            n: *n,
            small_is_b: true,
        }),
        (Access::Tile(n), Access::Same) if *n > 0 => Some(Simple::Tile {
            n: *n,
            small_is_b: false,
        }),
        (Access::Same, Access::Repeat(m)) if *m > 0 => Some(Simple::Repeat {
            m: *m,
            small_is_b: true,
        }),
        (Access::Repeat(m), Access::Same) if *m > 0 => Some(Simple::Repeat {
            m: *m,
            small_is_b: false,
        }),
        _ => None,
    }
}

/// `(a-element, b-element)` from the full-size and the stretched value.
#[inline(always)]
fn order<F>(big: F, small: F, small_is_b: bool) -> (F, F) {
    if small_is_b {
        (big, small)
    } else {
        (small, big)
    }
}

/// `out[i] = f(a[ia(i)], b[ib(i)])` over the broadcast output shape.
pub(crate) fn zip<F: Real>(
    out_shape: &[usize],
    a: (&[F], &[usize]),
    b: (&[F], &[usize]),
    out: &mut [F],
    f: impl Fn(F, F) -> F,
) {
    // Equal shapes (the elementwise ops of a recurrent step on [B, H]
    // rows): the plain loop, no access plan.
    if same(a.1, out_shape) && same(b.1, out_shape) {
        return super::map2(out, a.0, b.0, f);
    }
    let aa = Access::of(a.1, out_shape);
    let ab = Access::of(b.1, out_shape);
    if let (Access::Same, Access::Same) = (&aa, &ab) {
        return super::map2(out, a.0, b.0, f);
    }
    if let Some(pattern) = simple(&aa, &ab) {
        match pattern {
            Simple::Tile { n, small_is_b } => {
                let (big, small) = if small_is_b { (a.0, b.0) } else { (b.0, a.0) };
                let small = &small[..n];
                for (oc, bc) in out.chunks_exact_mut(n).zip(big.chunks_exact(n)) {
                    for j in 0..n {
                        let (x, y) = order(bc[j], small[j], small_is_b);
                        oc[j] = f(x, y);
                    }
                }
            }
            Simple::Repeat { m, small_is_b } => {
                let (big, small) = if small_is_b { (a.0, b.0) } else { (b.0, a.0) };
                for ((oc, bc), &s) in out.chunks_exact_mut(m).zip(big.chunks_exact(m)).zip(small) {
                    for j in 0..m {
                        let (x, y) = order(bc[j], s, small_is_b);
                        oc[j] = f(x, y);
                    }
                }
            }
        }
        return;
    }
    let sa = strides_of(&aa, a.1, out_shape);
    let sb = strides_of(&ab, b.1, out_shape);
    odometer(out_shape, &sa, &sb, |i, ia, ib| {
        out[i] = f(a.0[ia], b.0[ib])
    });
}

/// Adds `Σ df(gy[i], a[ia(i)], b[ib(i)])` into the gradient of operand `k`
/// (0 = a, 1 = b), summing over the dimensions that operand was stretched
/// along.
pub(crate) fn grad<F: Real>(
    k: usize,
    out_shape: &[usize],
    a: (&[F], &[usize]),
    b: (&[F], &[usize]),
    gy: &[F],
    slot: super::GradSlot<'_, F>,
    df: impl Fn(F, F, F) -> F,
) {
    // A zero incoming gradient is a structural zero (see `unary::rule`).
    // Both sides computed, then a select: no branch, the loops vectorize.
    let df = |g: F, x: F, y: F| {
        let v = df(g, x, y);
        if g == F::zero() {
            F::zero()
        } else {
            v
        }
    };
    if same(a.1, out_shape) && same(b.1, out_shape) {
        slot.put3(gy, a.0, b.0, df);
        return;
    }
    let aa = Access::of(a.1, out_shape);
    let ab = Access::of(b.1, out_shape);
    if let (Access::Same, Access::Same) = (&aa, &ab) {
        slot.put3(gy, a.0, b.0, df);
        return;
    }
    if let Some(pattern) = simple(&aa, &ab) {
        let small_is_b = match pattern {
            Simple::Tile { small_is_b, .. } | Simple::Repeat { small_is_b, .. } => small_is_b,
        };
        let (big, small) = if small_is_b { (a.0, b.0) } else { (b.0, a.0) };
        let k_is_small = (k == 1) == small_is_b;
        let fresh = slot.fresh;
        match (pattern, k_is_small) {
            (Simple::Tile { n, .. }, false) => {
                let small = &small[..n];
                let chunks = slot
                    .data
                    .chunks_exact_mut(n)
                    .zip(gy.chunks_exact(n))
                    .zip(big.chunks_exact(n));
                for ((dc, gc), bc) in chunks {
                    for j in 0..n {
                        let (x, y) = order(bc[j], small[j], small_is_b);
                        let v = df(gc[j], x, y);
                        dc[j] = if fresh { v } else { dc[j] + v };
                    }
                }
            }
            (Simple::Tile { n, .. }, true) => {
                let small = &small[..n];
                let dst = &mut slot.for_adding()[..n];
                for (gc, bc) in gy.chunks_exact(n).zip(big.chunks_exact(n)) {
                    for j in 0..n {
                        let (x, y) = order(bc[j], small[j], small_is_b);
                        dst[j] = dst[j] + df(gc[j], x, y);
                    }
                }
            }
            (Simple::Repeat { m, .. }, false) => {
                let chunks = slot
                    .data
                    .chunks_exact_mut(m)
                    .zip(gy.chunks_exact(m))
                    .zip(big.chunks_exact(m));
                for (((dc, gc), bc), &s) in chunks.zip(small) {
                    for j in 0..m {
                        let (x, y) = order(bc[j], s, small_is_b);
                        let v = df(gc[j], x, y);
                        dc[j] = if fresh { v } else { dc[j] + v };
                    }
                }
            }
            (Simple::Repeat { m, .. }, true) => {
                let dst = slot.for_adding();
                for (((d, gc), bc), &s) in dst
                    .iter_mut()
                    .zip(gy.chunks_exact(m))
                    .zip(big.chunks_exact(m))
                    .zip(small)
                {
                    let mut acc = F::zero();
                    for j in 0..m {
                        let (x, y) = order(bc[j], s, small_is_b);
                        acc = acc + df(gc[j], x, y);
                    }
                    *d = *d + acc;
                }
            }
        }
        return;
    }
    let dst = slot.for_adding();
    let sa = strides_of(&aa, a.1, out_shape);
    let sb = strides_of(&ab, b.1, out_shape);
    odometer(out_shape, &sa, &sb, |i, ia, ib| {
        let d = if k == 0 { ia } else { ib };
        dst[d] = dst[d] + df(gy[i], a.0[ia], b.0[ib]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_broadcast_like_numpy() {
        assert_eq!(
            broadcast_shape("t", &[4, 3], &[3]).unwrap().as_slice(),
            &[4, 3]
        );
        assert_eq!(
            broadcast_shape("t", &[4, 1], &[1, 5]).unwrap().as_slice(),
            &[4, 5]
        );
        assert_eq!(
            broadcast_shape("t", &[], &[2, 2]).unwrap().as_slice(),
            &[2, 2]
        );
        let e = broadcast_shape("add", &[4, 3], &[4]).unwrap_err();
        assert!(e.to_string().contains("[4, 3] and [4]"), "{e}");
    }

    #[test]
    fn access_kinds() {
        assert_eq!(Access::of(&[3], &[4, 3]), Access::Tile(3));
        assert_eq!(Access::of(&[1, 3], &[4, 3]), Access::Tile(3));
        assert_eq!(Access::of(&[4, 1], &[4, 3]), Access::Repeat(3));
        assert_eq!(Access::of(&[], &[4, 3]), Access::Tile(1));
        assert!(matches!(
            Access::of(&[2, 1, 3], &[2, 4, 3]),
            Access::Strided(_)
        ));
    }
}
