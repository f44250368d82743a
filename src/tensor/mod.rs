//! [`Tensor<F>`]: a dense, row-major, owned array of any rank — the values
//! that flow through a tape.
//!
//! A tensor is a shape (a `SmallVec`, so ranks up to 4 never allocate) and
//! its contiguous elements: a `Vec<F>` of its own, or a contiguous window of
//! a buffer shared with other tensors (a view: `storage.rs`), so the tape's
//! slices, reshapes and stacked rows can read another value's buffer
//! instead of copying it. There are no strides: every value is one
//! contiguous block, and the kernels that want a transposed operand get it
//! through [`gemm::MatRef`] strides instead.

pub mod gemm;
#[cfg(feature = "ndarray")]
mod ndarray_conv;
mod random;
mod storage;
pub mod vecmath;

pub(crate) use random::derive_seed;
pub use random::{rng, SeededRng};

use crate::error::{Error, ErrorKind, Result};
use crate::Real;
use smallvec::SmallVec;
use std::fmt;
use storage::Storage;

/// A tensor shape: dimension sizes, outermost first. Ranks up to 4 are
/// stored inline.
pub type Shape = SmallVec<[usize; 4]>;

/// The number of elements of `shape`, or a [`ErrorKind::Size`] error if the
/// product overflows `usize`.
///
/// ```
/// assert_eq!(tapegrad::tensor::numel(&[2, 3, 4]).unwrap(), 24);
/// assert!(tapegrad::tensor::numel(&[usize::MAX, 2]).is_err());
/// ```
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Size,
                "shape",
                format!("the element count of {shape:?} overflows usize"),
            )
        })
}

/// `dst (=|+=) srcᵀ` for a row-major `rows × cols` source (`dst` is
/// `cols × rows`): a weight transposed once per training step (the
/// recurrent layers' reorder, its gradient's way back, and the hand-written
/// reference's) costs a fraction of one GEMM with it.
///
/// Full 16×16 tiles go through a block on the stack: sixteen contiguous
/// source rows in, sixteen contiguous destination rows out, so both sides
/// are read and written a whole row segment at a time (about twice as fast
/// as a strided element loop at the shapes the layers use); edge tiles take
/// the element loop.
pub(crate) fn transpose_into<F: Real>(
    src: &[F],
    rows: usize,
    cols: usize,
    dst: &mut [F],
    add: bool,
) {
    const T: usize = 16;
    assert!(src.len() == rows * cols && dst.len() == rows * cols);
    let mut block = [[F::zero(); T]; T];
    for r0 in (0..rows).step_by(T) {
        let r1 = (r0 + T).min(rows);
        for c0 in (0..cols).step_by(T) {
            let c1 = (c0 + T).min(cols);
            if r1 - r0 < T || c1 - c0 < T {
                for c in c0..c1 {
                    for r in r0..r1 {
                        let v = src[r * cols + c];
                        let d = &mut dst[c * rows + r];
                        *d = if add { *d + v } else { v };
                    }
                }
                continue;
            }
            for (i, r) in (r0..r1).enumerate() {
                let s = &src[r * cols + c0..r * cols + c1];
                for (j, &v) in s.iter().enumerate() {
                    block[j][i] = v;
                }
            }
            for (j, c) in (c0..c1).enumerate() {
                let d = &mut dst[c * rows + r0..c * rows + r1];
                if add {
                    for (d, &v) in d.iter_mut().zip(&block[j]) {
                        *d = *d + v;
                    }
                } else {
                    d.copy_from_slice(&block[j]);
                }
            }
        }
    }
}

/// Allocates `n` elements equal to `value`, with a [`ErrorKind::Size`] error
/// instead of an abort when the allocation cannot be had.
pub(crate) fn try_alloc<F: Copy>(n: usize, value: F, op: &str) -> Result<Vec<F>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| {
        Error::new(
            ErrorKind::Size,
            op,
            format!(
                "cannot allocate {n} elements ({} bytes)",
                n.saturating_mul(std::mem::size_of::<F>())
            ),
        )
    })?;
    v.resize(n, value);
    Ok(v)
}

/// A dense row-major array of `F`.
///
/// ```
/// use tapegrad::Tensor;
/// let t = Tensor::from_vec(vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
/// assert_eq!(t.shape(), &[2, 3]);
/// assert_eq!(t.at(&[1, 0]), 4.0);
/// assert_eq!(t.data().iter().sum::<f64>(), 21.0);
/// ```
///
/// Cloning a shared tensor ([`Tensor::into_shared`]) shares its buffer
/// instead of copying it; writing to either copies first, so clones never
/// see each other's writes.
#[derive(Clone)]
pub struct Tensor<F> {
    shape: Shape,
    data: Storage<F>,
}

impl<F: Real> PartialEq for Tensor<F> {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data.as_slice() == other.data.as_slice()
    }
}

impl<F: Real> Tensor<F> {
    /// A tensor of `shape` filled with `value`.
    ///
    /// # Panics
    /// If the element count overflows or cannot be allocated; see
    /// [`Tensor::try_full`].
    ///
    /// ```
    /// let t = tapegrad::Tensor::full(&[2, 2], 7.0f32);
    /// assert_eq!(t.data(), &[7.0; 4]);
    /// ```
    #[track_caller]
    pub fn full(shape: &[usize], value: F) -> Self {
        crate::error::or_panic(Self::try_full(shape, value))
    }

    /// A tensor of `shape` filled with `value`, or a [`ErrorKind::Size`]
    /// error for an overflowing or unallocatable shape.
    ///
    /// ```
    /// use tapegrad::{ErrorKind, Tensor};
    /// let e = Tensor::try_full(&[1 << 40, 1 << 30], 0.0f32).unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Size);
    /// ```
    pub fn try_full(shape: &[usize], value: F) -> Result<Self> {
        let n = numel(shape)?;
        Ok(Tensor {
            shape: shape.into(),
            data: Storage::Owned(try_alloc(n, value, "tensor")?),
        })
    }

    /// A tensor of zeros.
    ///
    /// ```
    /// assert_eq!(tapegrad::Tensor::<f64>::zeros(&[3]).data(), &[0.0; 3]);
    /// ```
    #[track_caller]
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, F::zero())
    }

    /// A tensor of ones.
    ///
    /// ```
    /// assert_eq!(tapegrad::Tensor::<f64>::ones(&[2]).data(), &[1.0, 1.0]);
    /// ```
    #[track_caller]
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, F::one())
    }

    /// A rank-0 tensor holding `value`.
    ///
    /// ```
    /// let s = tapegrad::Tensor::scalar(2.5f32);
    /// assert_eq!((s.rank(), s.item()), (0, 2.5));
    /// ```
    pub fn scalar(value: F) -> Self {
        Tensor {
            shape: Shape::new(),
            data: Storage::Owned(vec![value]),
        }
    }

    /// Wraps `data` as a tensor of `shape`; an error if the lengths differ.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]).unwrap();
    /// assert_eq!(t.shape(), &[2, 1]);
    /// assert!(tapegrad::Tensor::from_vec(vec![1.0f32], &[2]).is_err());
    /// ```
    pub fn from_vec(data: Vec<F>, shape: &[usize]) -> Result<Self> {
        let n = numel(shape)?;
        if n != data.len() {
            return Err(Error::shape(
                "Tensor::from_vec",
                format!(
                    "{} elements do not fill shape {shape:?} ({n} elements)",
                    data.len()
                ),
            ));
        }
        Ok(Tensor {
            shape: shape.into(),
            data: Storage::Owned(data),
        })
    }

    /// Copies `data` into a new tensor of `shape`.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_slice(&[1.0f64, 2.0, 3.0], &[3]).unwrap();
    /// assert_eq!(t.numel(), 3);
    /// ```
    pub fn from_slice(data: &[F], shape: &[usize]) -> Result<Self> {
        Self::from_vec(data.to_vec(), shape)
    }

    /// Converts `f64` data (rounding for `f32`).
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::from_f64(&[0.5, 1.5], &[2]).unwrap();
    /// assert_eq!(t.data(), &[0.5f32, 1.5]);
    /// ```
    pub fn from_f64(data: &[f64], shape: &[usize]) -> Result<Self> {
        Self::from_vec(data.iter().map(|&x| F::of(x)).collect(), shape)
    }

    /// Builds a tensor from a function of the flat index.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f64>::from_fn(&[2, 2], |i| i as f64);
    /// assert_eq!(t.data(), &[0.0, 1.0, 2.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn from_fn(shape: &[usize], f: impl FnMut(usize) -> F) -> Self {
        let n = crate::error::or_panic(numel(shape));
        Tensor {
            shape: shape.into(),
            data: Storage::Owned((0..n).map(f).collect()),
        }
    }

    /// Takes the buffer out, leaving the shape over an empty buffer: a tape
    /// value that was released. Such a tensor never leaves the crate.
    ///
    /// A view gives back its whole buffer if it was the buffer's last
    /// holder, and an empty vector otherwise (see `storage.rs`).
    pub(crate) fn take_data(&mut self) -> Vec<F> {
        self.data.take_vec()
    }

    /// Internal constructor for callers that already hold a matching buffer.
    pub(crate) fn from_parts(shape: Shape, data: Vec<F>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor {
            shape,
            data: Storage::Owned(data),
        }
    }

    /// Makes the buffer shareable (moves it behind an `Arc`; no copy), so
    /// [`Tensor::view`] can window it. A released (empty) value stays as it
    /// is.
    pub(crate) fn make_shareable(&mut self) {
        self.data.share();
    }

    /// A view of this shareable tensor's elements `at..at + numel(shape)`
    /// under `shape`, or `None` if the buffer is not shareable (see
    /// [`Tensor::make_shareable`]).
    ///
    /// # Panics
    /// If the window is out of range.
    pub(crate) fn view(&self, at: usize, shape: &[usize]) -> Option<Self> {
        Some(Tensor {
            data: self.data.window(at, shape.iter().product())?,
            shape: Shape::from_slice(shape),
        })
    }

    /// If `parts` are adjacent views of one buffer, in order, the view they
    /// cover together under `shape`: a concat along the leading axis that
    /// copies nothing.
    pub(crate) fn joined(parts: &[&Tensor<F>], shape: &[usize]) -> Option<Self> {
        let storages: SmallVec<[&Storage<F>; 8]> = parts.iter().map(|t| &t.data).collect();
        let data = Storage::joined(&storages)?;
        (data.len() == shape.iter().product::<usize>()).then(|| Tensor {
            shape: Shape::from_slice(shape),
            data,
        })
    }

    /// Whether this tensor is a view of a shared buffer.
    pub(crate) fn is_view(&self) -> bool {
        self.data.is_shared()
    }

    /// The same tensor with its buffer made shareable (no copy): from then
    /// on its clones share the buffer instead of copying it — a data set or
    /// a parameter bound on a tape every step without a copy. Writing to a
    /// clone copies it first (copy on write), so no clone ever sees
    /// another's writes.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let x = Tensor::<f32>::ones(&[1000, 64]).into_shared();
    /// let tape = Tape::new();
    /// let xv = tape.constant(x.clone()); // no copy of the 64,000 elements
    /// assert_eq!(xv.value().data().as_ptr(), x.data().as_ptr());
    /// let mut y = x.clone();
    /// y.data_mut()[0] = 2.0; // y copies first
    /// assert_eq!((x.data()[0], y.data()[0]), (1.0, 2.0));
    /// ```
    pub fn into_shared(mut self) -> Self {
        self.make_shareable();
        self
    }

    /// The shape, outermost dimension first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements (the product of the shape).
    pub fn numel(&self) -> usize {
        // From the shape, not the buffer: a tape node whose value was
        // released keeps its shape with an empty buffer, and backward rules
        // size gradients by it.
        self.shape.iter().product()
    }

    /// The elements, row-major.
    ///
    /// In debug builds, reading the data of a tape value that was released
    /// (its shape kept, its buffer back in the pool) panics: a backward rule
    /// that reads a value its op did not declare would otherwise compute a
    /// wrong gradient from an empty slice.
    pub fn data(&self) -> &[F] {
        debug_assert!(
            self.data.len() == self.numel(),
            "read of the data of a released {:?} value: a backward rule reads a value \
             its op does not declare (ops/mod.rs: reads_input / reads_output)",
            self.shape.as_slice()
        );
        self.data.as_slice()
    }

    /// The length of the buffer: `numel()`, or 0 once a tape released it.
    pub(crate) fn buffer_len(&self) -> usize {
        self.data.len()
    }

    /// The elements, row-major, writable. A shared tensor
    /// ([`Tensor::into_shared`]) is copied first unless it is its buffer's
    /// only holder.
    ///
    /// ```
    /// let mut t = tapegrad::Tensor::<f32>::zeros(&[2]);
    /// t.data_mut()[1] = 3.0;
    /// assert_eq!(t.data(), &[0.0, 3.0]);
    /// ```
    pub fn data_mut(&mut self) -> &mut [F] {
        self.data.as_mut_slice()
    }

    /// Gives up the tensor's buffer (a copy of the elements if the buffer
    /// is shared with other tensors).
    pub fn into_vec(self) -> Vec<F> {
        self.data.into_vec()
    }

    #[cfg(feature = "ndarray")]
    pub(crate) fn into_parts(self) -> (Shape, Vec<F>) {
        (self.shape, self.data.into_vec())
    }

    /// The single value of a one-element tensor.
    ///
    /// # Panics
    /// If the tensor does not hold exactly one element.
    #[track_caller]
    pub fn item(&self) -> F {
        assert!(
            self.data.len() == 1,
            "tapegrad: item: tensor of shape {:?} has {} elements, not 1",
            self.shape,
            self.data.len()
        );
        self.data.as_slice()[0]
    }

    /// The element at a multi-index.
    ///
    /// # Panics
    /// If the index has the wrong rank or is out of range.
    #[track_caller]
    pub fn at(&self, index: &[usize]) -> F {
        assert!(
            index.len() == self.rank() && index.iter().zip(&self.shape).all(|(i, d)| i < d),
            "tapegrad: at: index {index:?} out of range for shape {:?}",
            self.shape
        );
        let flat = index
            .iter()
            .zip(&self.shape)
            .fold(0, |acc, (&i, &d)| acc * d + i);
        self.data.as_slice()[flat]
    }

    /// The same data under a new shape with the same element count.
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f32>::zeros(&[2, 3]).reshape(&[3, 2]).unwrap();
    /// assert_eq!(t.shape(), &[3, 2]);
    /// ```
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        if numel(shape)? != self.data.len() {
            return Err(Error::shape(
                "reshape",
                format!("cannot view {:?} as {shape:?}", self.shape),
            ));
        }
        Ok(Tensor {
            shape: shape.into(),
            data: self.data,
        })
    }

    /// Converts every element to another [`Real`] type (through `f64`).
    ///
    /// ```
    /// let t = tapegrad::Tensor::<f64>::ones(&[2]).cast::<f32>();
    /// assert_eq!(t.data(), &[1.0f32, 1.0]);
    /// ```
    pub fn cast<G: Real>(&self) -> Tensor<G> {
        Tensor {
            shape: self.shape.clone(),
            data: Storage::Owned(
                self.data()
                    .iter()
                    .map(|&x| G::of(x.to_f64_lossy()))
                    .collect(),
            ),
        }
    }

    /// The largest absolute elementwise difference to `other` (∞ if the
    /// shapes differ): a helper for tests and checks.
    ///
    /// ```
    /// let a = tapegrad::Tensor::<f64>::ones(&[2]);
    /// assert_eq!(a.max_abs_diff(&a), 0.0);
    /// ```
    pub fn max_abs_diff(&self, other: &Tensor<F>) -> f64 {
        if self.shape != other.shape {
            return f64::INFINITY;
        }
        self.data()
            .iter()
            .zip(other.data())
            .map(|(a, b)| (a.to_f64_lossy() - b.to_f64_lossy()).abs())
            .fold(0.0, f64::max)
    }

    /// The Euclidean norm of all elements, accumulated in `f64`.
    ///
    /// ```
    /// let t = tapegrad::Tensor::from_vec(vec![3.0f32, 4.0], &[2]).unwrap();
    /// assert_eq!(t.norm(), 5.0);
    /// ```
    pub fn norm(&self) -> f64 {
        self.data()
            .iter()
            .map(|x| x.to_f64_lossy().powi(2))
            .sum::<f64>()
            .sqrt()
    }
}

impl<F: Real> fmt::Debug for Tensor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}>{:?} ", F::NAME, self.shape.as_slice())?;
        const SHOW: usize = 8;
        let mut list = f.debug_list();
        list.entries(self.data.as_slice().iter().take(SHOW));
        if self.data.len() > SHOW {
            list.entry(&format_args!("… {} more", self.data.len() - SHOW));
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::transpose_into;
    use proptest::prelude::*;

    proptest! {
        /// The tiled transpose equals the element-by-element definition,
        /// writing and accumulating, on shapes with full 16×16 tiles, edge
        /// tiles and both (exact: it only moves and adds elements).
        #[test]
        fn transpose_into_is_the_transpose(rows in 0usize..70, cols in 0usize..70, add: bool) {
            let src: Vec<f64> = (0..rows * cols).map(|i| i as f64 * 0.5 - 7.0).collect();
            let base: Vec<f64> = (0..rows * cols).map(|i| (i % 13) as f64).collect();
            let mut dst = base.clone();
            transpose_into(&src, rows, cols, &mut dst, add);
            for r in 0..rows {
                for c in 0..cols {
                    let want = src[r * cols + c] + if add { base[c * rows + r] } else { 0.0 };
                    prop_assert_eq!(dst[c * rows + r], want, "element ({}, {}) of {}x{}", r, c, rows, cols);
                }
            }
        }
    }
}
