//! `Embedding`: a lookup table of row vectors, `y[i] = E[idx[i]]`, and
//! embedding dropout (Merity et al. 2017, AWD-LSTM): whole rows of E
//! dropped for a forward pass, `y[i] = E[idx[i]] · m[idx[i]]`, so a dropped
//! character is dropped everywhere it occurs in the batch.

use super::derive_seed;
use crate::{ParamKey, ParamStore, Real, Tape, Tensor, Var};

/// A table of `num` vectors of size `dim` (`{name}.weight` [num×dim],
/// initialised N(0, 1) like PyTorch's `nn.Embedding`). Its gradient is a
/// scatter-add into the rows that were looked up.
///
/// ```
/// use tapegrad::layers::Embedding;
/// use tapegrad::{ParamStore, Tape};
/// let mut store = ParamStore::<f32>::new();
/// let emb = Embedding::new(&mut store, "encoder", 10, 4, 1);
/// let tape = Tape::new();
/// let e = emb.forward(&tape, &store, &[3, 3, 9]);
/// assert_eq!(e.shape().as_slice(), &[3, 4]);
/// ```
#[derive(Debug, Clone)]
pub struct Embedding {
    /// `{name}.weight`, [num×dim].
    pub weight: ParamKey,
    /// Table size.
    pub num: usize,
    /// Vector size.
    pub dim: usize,
}

impl Embedding {
    /// Creates the table in `store` under `name`.
    pub fn new<F: Real>(
        store: &mut ParamStore<F>,
        name: &str,
        num: usize,
        dim: usize,
        seed: u64,
    ) -> Self {
        let weight = store.insert(
            format!("{name}.weight"),
            Tensor::randn(&[num, dim], derive_seed(seed, 0)),
        );
        Embedding { weight, num, dim }
    }

    /// The rows for `indices`, shape [len×dim].
    ///
    /// # Panics
    /// If an index is ≥ `num`.
    #[track_caller]
    pub fn forward<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        indices: &[usize],
    ) -> Var<'t, F> {
        tape.param(store, self.weight).gather(indices)
    }

    /// [`Embedding::forward`] with embedding dropout: each row r of the
    /// table is dropped with probability `p` (m[r] = 0) or kept and scaled
    /// (m[r] = 1/(1 − p)), one draw per row from `seed`, and `y[i] =
    /// E[idx[i]] · m[idx[i]]`. Training only (`p = 0` is [`forward`]).
    ///
    /// Gradient: ∂L/∂E[r] = m[r] · Σ_{i: idx[i] = r} gy[i].
    ///
    /// # Panics
    /// As [`Embedding::forward`], and unless 0 ≤ p < 1.
    ///
    /// ```
    /// use tapegrad::layers::Embedding;
    /// use tapegrad::{ParamStore, Tape};
    /// let mut store = ParamStore::<f64>::new();
    /// let emb = Embedding::new(&mut store, "encoder", 4, 3, 1);
    /// let tape = Tape::new();
    /// let idx: Vec<usize> = (0..40).map(|i| i % 4).collect();
    /// let e = emb.forward_dropout(&tape, &store, &idx, 0.5, 7);
    /// let v = e.value();
    /// let dropped = |i: usize| v.data()[i * 3..i * 3 + 3].iter().all(|&x| x == 0.0);
    /// // a row is dropped everywhere or nowhere
    /// assert!((0..40).all(|i| dropped(i) == dropped(i % 4)));
    /// ```
    ///
    /// [`forward`]: Embedding::forward
    #[track_caller]
    pub fn forward_dropout<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        indices: &[usize],
        p: f64,
        seed: u64,
    ) -> Var<'t, F> {
        let rows = self.forward(tape, store, indices);
        if p == 0.0 {
            return rows;
        }
        let m = crate::ops::dropout_mask::<F>(&[self.num], p, seed);
        let per_row = Tensor::from_fn(&[indices.len(), 1], |i| m.data()[indices[i]]);
        rows * tape.constant(per_row)
    }
}
