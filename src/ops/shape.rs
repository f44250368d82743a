//! Ops that move elements without arithmetic: reshape, concat/stack,
//! slice/split along an axis, and row gather (embedding lookup).
//!
//! Along an axis every tensor is seen as [outer, n, inner] with `inner`
//! contiguous, so each op copies whole `n·inner` blocks. Gradients move the
//! same blocks back: concat hands each input its block of `gy`; a slice adds
//! `gy` into its window of the input's gradient *in place* (the first slice
//! to arrive zeroes the buffer once), so splitting a [T·B×4H] tensor into T
//! steps costs O(T) in backward, not O(T²); gather scatter-adds rows.
//!
//! Argument order: the ops that join or cut into several parts take the
//! parts first and **the axis last** — `Var::concat(&parts, axis)`,
//! `Var::stack(&parts, axis)`, `x.chunk(parts, axis)` — as PyTorch's
//! `cat`, `stack` and `chunk` do. `x.slice(axis, start, len)` is PyTorch's
//! `narrow(dim, start, length)`. [`Var::split`]`(axis, parts)` is the
//! older spelling of `chunk` with the arguments the other way round, kept
//! so existing code compiles; prefer `chunk`.

use super::{BackwardCtx, GradSlot, Op};
use crate::error::{fail, Error, ErrorKind, Result};
use crate::tensor::{numel, Shape, Tensor};
use crate::{Real, Var};
use std::borrow::Cow;

/// A shape op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShapeOp {
    /// Same data, new shape; ∂L/∂x = gy reshaped.
    Reshape,
    /// Inputs joined along `axis` (a new axis of length 1 each if `stack`);
    /// ∂L/∂x_k = the k-th block of gy. `starts[k]`: where input k begins
    /// along the axis (saved so each input's rule finds its block in O(1),
    /// not by summing the k inputs before it: O(T²) over T steps).
    Concat {
        axis: usize,
        stack: bool,
        starts: Vec<usize>,
    },
    /// `y = x[.., start..start+len, ..]` along `axis`; ∂L/∂x = gy in that
    /// window, 0 elsewhere.
    Slice {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// `y[i] = x[idx[i]]` along axis 0; ∂L/∂x[r] = Σ_{i: idx[i]=r} gy[i].
    Gather { indices: Vec<usize> },
}

/// [outer, n, inner] around `axis`.
fn around(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

impl ShapeOp {
    pub(crate) fn name(&self) -> Cow<'static, str> {
        match self {
            ShapeOp::Reshape => "reshape".into(),
            ShapeOp::Concat {
                axis, stack: false, ..
            } => format!("concat(axis={axis})").into(),
            ShapeOp::Concat {
                axis, stack: true, ..
            } => format!("stack(axis={axis})").into(),
            ShapeOp::Slice { axis, start, len } => {
                format!("slice(axis={axis}, {start}..{})", start + len).into()
            }
            ShapeOp::Gather { indices } => format!("gather({} rows)", indices.len()).into(),
        }
    }

    pub(crate) fn backward<F: Real>(
        &self,
        k: usize,
        c: &BackwardCtx<'_, F>,
        slot: GradSlot<'_, F>,
    ) {
        let gy = c.gy.data();
        match self {
            ShapeOp::Reshape => slot.put_slice(gy),
            ShapeOp::Concat { axis, starts, .. } => {
                // Input k's block of every outer row, copied (or added) whole.
                let (outer, total, inner) = around(c.gy.shape(), *axis);
                let per = (outer * inner).max(1);
                let offset = starts[k];
                let block = c.x[k].numel() / per * inner;
                let fresh = slot.fresh;
                for (o, d) in slot
                    .data
                    .chunks_exact_mut(block.max(1))
                    .enumerate()
                    .take(outer)
                {
                    let from = (o * total + offset) * inner;
                    GradSlot { data: d, fresh }.put_slice(&gy[from..from + block]);
                }
            }
            ShapeOp::Slice { axis, start, len } => {
                let (outer, n, inner) = around(c.x[0].shape(), *axis);
                let dst = slot.for_adding();
                for o in 0..outer {
                    let to = (o * n + start) * inner;
                    let from = o * len * inner;
                    for (d, &g) in dst[to..to + len * inner]
                        .iter_mut()
                        .zip(&gy[from..from + len * inner])
                    {
                        *d = *d + g;
                    }
                }
            }
            ShapeOp::Gather { indices } => {
                let row = c.x[0].numel() / c.x[0].shape()[0].max(1);
                let dst = slot.for_adding();
                for (i, &r) in indices.iter().enumerate() {
                    for (d, &g) in dst[r * row..(r + 1) * row]
                        .iter_mut()
                        .zip(&gy[i * row..(i + 1) * row])
                    {
                        *d = *d + g;
                    }
                }
            }
        }
    }
}

fn check_axis(op: &str, shape: &[usize], axis: usize, limit: usize) -> Result<()> {
    if axis >= limit {
        return Err(Error::shape(
            op,
            format!("axis {axis} out of range for shape {shape:?}"),
        ));
    }
    Ok(())
}

impl<'t, F: Real> Var<'t, F> {
    /// The same elements under a new shape with the same count.
    ///
    /// Gradient: ∂L/∂x = gy reshaped back.
    ///
    /// # Panics
    /// If the element counts differ.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::ones(&[2, 3]));
    /// assert_eq!(x.reshape(&[3, 2]).shape().as_slice(), &[3, 2]);
    /// ```
    #[track_caller]
    pub fn reshape(self, shape: &[usize]) -> Var<'t, F> {
        self.tape().record("reshape", &[self], |x, pool| {
            let x = x[0];
            if numel(shape)? != x.numel() {
                return Err(Error::shape(
                    "reshape",
                    format!("cannot reshape {:?} into {shape:?}", x.shape()),
                ));
            }
            let mut out = pool.take(x.numel(), "reshape")?;
            out.copy_from_slice(x.data());
            Ok((
                Op::Shape(ShapeOp::Reshape),
                Tensor::from_parts(shape.into(), out),
            ))
        })
    }

    /// Joins vars along an existing `axis`; all other dimensions must agree.
    ///
    /// Gradient: each input receives its block of gy.
    ///
    /// # Panics
    /// If `parts` is empty, the axis is out of range, or shapes disagree.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let a = tape.var(Tensor::ones(&[2, 1]));
    /// let b = tape.var(Tensor::zeros(&[2, 2]));
    /// let c = Var::concat(&[a, b], 1);
    /// assert_eq!(c.shape().as_slice(), &[2, 3]);
    /// assert_eq!(c.value().data(), &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn concat(parts: &[Var<'t, F>], axis: usize) -> Var<'t, F> {
        Self::join(parts, axis, false)
    }

    /// Stacks equal-shaped vars along a new `axis` (0 ≤ axis ≤ rank).
    ///
    /// Gradient: each input receives its slice of gy.
    ///
    /// # Panics
    /// If `parts` is empty, the axis is out of range, or shapes differ.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let hs: Vec<_> = (0..3).map(|t| tape.constant(Tensor::full(&[2], t as f64))).collect();
    /// let s = Var::stack(&hs, 0);
    /// assert_eq!(s.shape().as_slice(), &[3, 2]);
    /// ```
    #[track_caller]
    pub fn stack(parts: &[Var<'t, F>], axis: usize) -> Var<'t, F> {
        Self::join(parts, axis, true)
    }

    #[track_caller]
    fn join(parts: &[Var<'t, F>], axis: usize, stack: bool) -> Var<'t, F> {
        let name = if stack { "stack" } else { "concat" };
        let Some(first) = parts.first() else {
            fail(Error::shape(name, "needs at least one input"));
        };
        first.tape().record(name, parts, |x, pool| {
            let s0 = x[0].shape();
            let rank = if stack { s0.len() + 1 } else { s0.len() };
            check_axis(name, s0, axis, rank)?;
            let mut shape: Shape = s0.into();
            let mut starts = Vec::with_capacity(x.len());
            if stack {
                shape.insert(axis, 0);
            } else {
                shape[axis] = 0;
            }
            for t in x {
                let s = t.shape();
                let fits = if stack {
                    s == s0
                } else {
                    s.len() == s0.len()
                        && s.iter()
                            .zip(s0)
                            .enumerate()
                            .all(|(i, (a, b))| i == axis || a == b)
                };
                if !fits {
                    return Err(Error::shape(
                        name,
                        format!("inputs disagree off axis {axis}: {}", super::shapes(x)),
                    ));
                }
                starts.push(shape[axis]);
                shape[axis] += if stack { 1 } else { s[axis] };
            }
            let (outer, _, inner) = around(&shape, axis);
            let mut out = pool.take(numel(&shape)?, name)?;
            let mut pos = 0;
            for o in 0..outer {
                for t in x {
                    let n = if stack { 1 } else { t.shape()[axis] };
                    let block = &t.data()[o * n * inner..(o + 1) * n * inner];
                    out[pos..pos + block.len()].copy_from_slice(block);
                    pos += block.len();
                }
            }
            Ok((
                Op::Shape(ShapeOp::Concat {
                    axis,
                    stack,
                    starts,
                }),
                Tensor::from_parts(shape, out),
            ))
        })
    }

    /// The window `start..start+len` along `axis` (PyTorch's `narrow`).
    ///
    /// Gradient: ∂L/∂x = gy inside the window, 0 elsewhere, added in place.
    ///
    /// # Panics
    /// If the axis or the window is out of range.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_fn(&[2, 4], |i| i as f64));
    /// let s = x.slice(1, 1, 2);
    /// assert_eq!(s.value().data(), &[1.0, 2.0, 5.0, 6.0]);
    /// assert_eq!(s.sum().backward().wrt(x).data(), &[0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
    /// ```
    #[track_caller]
    pub fn slice(self, axis: usize, start: usize, len: usize) -> Var<'t, F> {
        self.tape().record("slice", &[self], |x, pool| {
            let x = x[0];
            check_axis("slice", x.shape(), axis, x.rank())?;
            let (outer, n, inner) = around(x.shape(), axis);
            if start.checked_add(len).is_none_or(|end| end > n) {
                return Err(Error::shape(
                    "slice",
                    format!(
                        "window {start}..{} out of range for axis {axis} of {:?}",
                        start.saturating_add(len),
                        x.shape()
                    ),
                ));
            }
            let mut shape: Shape = x.shape().into();
            shape[axis] = len;
            let mut out = pool.take(outer * len * inner, "slice")?;
            for o in 0..outer {
                let from = (o * n + start) * inner;
                out[o * len * inner..(o + 1) * len * inner]
                    .copy_from_slice(&x.data()[from..from + len * inner]);
            }
            Ok((
                Op::Shape(ShapeOp::Slice { axis, start, len }),
                Tensor::from_parts(shape, out),
            ))
        })
    }

    /// Cuts into `parts` equal windows along `axis` (an LSTM's 4H gate
    /// pre-activations into i, f, g, o): PyTorch's `chunk`, with the axis
    /// last like [`Var::concat`], whose inverse it is.
    ///
    /// Gradient: as [`Var::slice`], each window's gradient added in place.
    ///
    /// # Panics
    /// If `parts` is 0, the axis is out of range, or its length is not
    /// divisible by `parts`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor, Var};
    /// let tape = Tape::<f64>::new();
    /// let z = tape.var(Tensor::from_fn(&[1, 8], |i| i as f64));
    /// let g = z.chunk(4, 1);
    /// assert_eq!(g[2].value().data(), &[4.0, 5.0]);
    /// assert_eq!(Var::concat(&g, 1).value().data(), z.value().data());
    /// ```
    #[track_caller]
    pub fn chunk(self, parts: usize, axis: usize) -> Vec<Var<'t, F>> {
        self.split_impl(axis, parts, "chunk")
    }

    /// [`Var::chunk`] with the arguments the other way round,
    /// `split(axis, parts)`: the older spelling, kept so existing code
    /// compiles. Prefer `x.chunk(parts, axis)`, whose order matches
    /// [`Var::concat`].
    ///
    /// # Panics
    /// As [`Var::chunk`].
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let z = tape.var(Tensor::from_fn(&[1, 8], |i| i as f64));
    /// let g = z.split(1, 4);
    /// assert_eq!(g[2].value().data(), &[4.0, 5.0]);
    /// ```
    #[track_caller]
    pub fn split(self, axis: usize, parts: usize) -> Vec<Var<'t, F>> {
        self.split_impl(axis, parts, "split")
    }

    #[track_caller]
    fn split_impl(self, axis: usize, parts: usize, name: &str) -> Vec<Var<'t, F>> {
        let shape = self.shape();
        let n = shape.get(axis).copied().unwrap_or(0);
        if parts == 0 || axis >= shape.len() || n % parts != 0 {
            fail(
                Error::shape(
                    name,
                    format!(
                        "cannot split axis {axis} of {:?} into {parts} equal parts",
                        shape.as_slice()
                    ),
                )
                .with_label(Some(self.label())),
            );
        }
        let len = n / parts;
        (0..parts).map(|p| self.slice(axis, p * len, len)).collect()
    }

    /// Rows of `self` picked by `indices` along axis 0 (embedding lookup):
    /// `y[i] = x[indices[i]]`, shape `[indices.len(), rest…]`.
    ///
    /// Gradient: scatter-add, `∂L/∂x[r] = Σ gy[i]` over the i with `indices[i] = r`.
    ///
    /// # Panics
    /// If an index is out of range (the message names it).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let emb = tape.var(Tensor::from_fn(&[3, 2], |i| i as f64));
    /// let e = emb.gather(&[2, 0, 2]);
    /// assert_eq!(e.value().data(), &[4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    /// assert_eq!(e.sum().backward().wrt(emb).data(), &[1.0, 1.0, 0.0, 0.0, 2.0, 2.0]);
    /// ```
    #[track_caller]
    pub fn gather(self, indices: &[usize]) -> Var<'t, F> {
        self.tape().record("gather", &[self], |x, pool| {
            let x = x[0];
            if x.rank() == 0 {
                return Err(Error::shape("gather", "cannot gather rows of a scalar"));
            }
            let rows = x.shape()[0];
            if let Some(bad) = indices.iter().find(|&&i| i >= rows) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "gather",
                    format!(
                        "index {bad} out of range for {rows} rows of {:?}",
                        x.shape()
                    ),
                ));
            }
            let row = x.numel() / rows.max(1);
            let mut shape: Shape = x.shape().into();
            shape[0] = indices.len();
            let mut out = pool.take(indices.len() * row, "gather")?;
            for (i, &r) in indices.iter().enumerate() {
                out[i * row..(i + 1) * row].copy_from_slice(&x.data()[r * row..(r + 1) * row]);
            }
            Ok((
                Op::Shape(ShapeOp::Gather {
                    indices: indices.to_vec(),
                }),
                Tensor::from_parts(shape, out),
            ))
        })
    }
}
