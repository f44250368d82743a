//! `Embedding`: a lookup table of row vectors, `y[i] = E[idx[i]]`.

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
}
