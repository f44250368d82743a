//! Ops that move elements without arithmetic: reshape, concat/stack,
//! slice/split along an axis, and row gather (embedding lookup).
//!
//! Along an axis every tensor is seen as [outer, n, inner] with `inner`
//! contiguous, so each op copies whole `n·inner` blocks — or copies
//! nothing: a reshape, a slice whose window is contiguous (along the
//! leading axis, or any axis with only 1s before it) and a concat of
//! adjacent windows of one buffer (the slices of a sequence, joined back)
//! are **views** that share their source's buffer (`tensor/storage.rs`).
//! A view holds its source's buffer alive; its gradient is the same as the
//! copy's, so the rules below do not know the difference. Gradients move the
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
    /// ∂L/∂x_k = the k-th block of gy, found at `offsets.of(k)`.
    Concat {
        axis: usize,
        stack: bool,
        offsets: Offsets,
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

/// Where each input of a concat starts along its axis, fixed at recording
/// so the rule for input k finds its block in O(1): summing the earlier
/// inputs' lengths per input made a backward over n inputs O(n²) (a
/// 4096-row concat cost tens of milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offsets {
    /// Every input has this length along the axis (a stack, or the steps of
    /// a sequence): input k starts at `k·len`. Nothing allocated.
    Uniform(usize),
    /// Input k starts at `starts[k]` (prefix sums of the lengths).
    Ragged(Vec<usize>),
}

impl Offsets {
    /// The offsets of inputs of lengths `lens` along the axis.
    fn of(lens: impl Iterator<Item = usize> + Clone) -> Offsets {
        let first = lens.clone().next().unwrap_or(0);
        if lens.clone().all(|n| n == first) {
            return Offsets::Uniform(first);
        }
        Offsets::Ragged(
            lens.scan(0, |at, n| {
                let start = *at;
                *at += n;
                Some(start)
            })
            .collect(),
        )
    }

    /// Where input `k` starts.
    fn start(&self, k: usize) -> usize {
        match self {
            Offsets::Uniform(len) => k * len,
            Offsets::Ragged(starts) => starts[k],
        }
    }
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

    /// For a concat along a contiguous axis (only 1s before it), where
    /// input `k`'s gradient starts in gy: it is that window, unchanged (see
    /// `Op::gradient_window`).
    pub(crate) fn gradient_window<F: Real>(
        &self,
        k: usize,
        c: &BackwardCtx<'_, F>,
    ) -> Option<usize> {
        match self {
            ShapeOp::Concat { axis, offsets, .. } => {
                let (outer, _, inner) = around(c.gy.shape(), *axis);
                (outer == 1).then(|| offsets.start(k) * inner)
            }
            _ => None,
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
            ShapeOp::Concat { axis, offsets, .. } => {
                // Input k's block of every outer row, copied (or added) whole.
                let (outer, total, inner) = around(c.gy.shape(), *axis);
                let per = (outer * inner).max(1);
                let offset = offsets.start(k);
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
        self.tape().make_shareable(self);
        self.tape().record("reshape", &[self], |x, pool| {
            let x = x[0];
            if numel(shape)? != x.numel() {
                return Err(Error::shape(
                    "reshape",
                    format!("cannot reshape {:?} into {shape:?}", x.shape()),
                ));
            }
            Ok((
                Op::Shape(ShapeOp::Reshape),
                pool.window(x, 0, shape, "reshape")?,
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
        let joined = first.tape().record(name, parts, |x, pool| {
            let s0 = x[0].shape();
            let rank = if stack { s0.len() + 1 } else { s0.len() };
            check_axis(name, s0, axis, rank)?;
            let mut shape: Shape = s0.into();
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
                shape[axis] += if stack { 1 } else { s[axis] };
            }
            let (outer, _, inner) = around(&shape, axis);
            let lens = x.iter().map(|t| if stack { 1 } else { t.shape()[axis] });
            let op = Op::Shape(ShapeOp::Concat {
                axis,
                stack,
                offsets: Offsets::of(lens),
            });
            // Adjacent windows of one buffer, joined along a contiguous
            // axis: the join is a view of that buffer.
            if outer == 1 {
                if let Some(view) = Tensor::joined(x, &shape) {
                    return Ok((op, view));
                }
            }
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
            Ok((op, Tensor::from_parts(shape, out)))
        });
        // A copying join along a contiguous axis: large inputs become views
        // of it (`Tape::reseat_as_views`), so their elements are held once.
        if joined.shape()[..axis].iter().all(|&d| d == 1) {
            joined.tape().reseat_as_views(joined);
        }
        joined
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
        let contiguous = self
            .shape()
            .get(..axis)
            .is_some_and(|s| s.iter().all(|&d| d == 1));
        if contiguous {
            self.tape().make_shareable(self);
        }
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
            let mut shape: Shape = Shape::from_slice(x.shape());
            shape[axis] = len;
            let op = Op::Shape(ShapeOp::Slice { axis, start, len });
            if outer == 1 {
                return Ok((op, pool.window(x, start * inner, &shape, "slice")?));
            }
            let mut out = pool.take(outer * len * inner, "slice")?;
            for o in 0..outer {
                let from = (o * n + start) * inner;
                out[o * len * inner..(o + 1) * len * inner]
                    .copy_from_slice(&x.data()[from..from + len * inner]);
            }
            Ok((op, Tensor::from_parts(shape, out)))
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
            let mut shape: Shape = Shape::from_slice(x.shape());
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

#[cfg(test)]
mod tests {
    use crate::{Tape, Tensor, Var};

    /// Wide joins (more inputs than a node holds inline), ragged and
    /// uniform, along an inner axis: each input's gradient is exactly its
    /// block of the upstream gradient (`Offsets`, both kinds).
    #[test]
    fn wide_joins_hand_each_input_its_block() {
        let tape = Tape::<f64>::new();
        // Ragged: 9 parts of widths 1..=9 along axis 1 of [2, ·].
        let parts: Vec<_> = (1..=9)
            .map(|w| tape.var(Tensor::from_fn(&[2, w], |i| i as f64)))
            .collect();
        let y = Var::concat(&parts, 1);
        let total: usize = (1..=9).sum();
        let weights = Tensor::from_fn(&[2, total], |i| i as f64 * 0.5 - 3.0);
        let g = (y * tape.constant(weights.clone())).sum().backward();
        let mut start = 0;
        for (k, p) in parts.iter().enumerate() {
            let w = k + 1;
            let want: Vec<f64> = (0..2)
                .flat_map(|r| (start..start + w).map(move |c| r * total + c))
                .map(|i| weights.data()[i])
                .collect();
            assert_eq!(g.wrt(*p).data(), want.as_slice(), "part {k}");
            start += w;
        }
        // Uniform: 7 equal parts stacked along a new axis 1.
        let rows: Vec<_> = (0..7).map(|_| tape.var(Tensor::ones(&[3, 2]))).collect();
        let s = Var::stack(&rows, 1); // [3, 7, 2]
        let weights = Tensor::from_fn(&[3, 7, 2], |i| i as f64);
        let g = (s * tape.constant(weights.clone())).sum().backward();
        for (k, r) in rows.iter().enumerate() {
            let want: Vec<f64> = (0..3)
                .flat_map(|a| (0..2).map(move |c| (a * 7 + k) * 2 + c))
                .map(|i| weights.data()[i])
                .collect();
            assert_eq!(g.wrt(*r).data(), want.as_slice(), "row {k}");
        }
    }
}
