//! [`ParamVec`]: a vector in parameter space — one tensor per parameter of
//! a [`ParamStore`], under the store's keys — with the linear algebra that
//! second-order methods do on such vectors (dot products, norms, `y += αx`).
//!
//! Why a type of its own: a direction `v` for a Jacobian– or Hessian–vector
//! product, the product `H·v` itself, a gradient, and the iterates of
//! conjugate gradients all have the shape of the parameters but are not
//! parameters. Keeping them keyed (not flattened) lets a caller read the
//! block of `H·v` that belongs to `lstm.weight_hh_l0` by its key; `to_flat`
//! and `from_flat` are there for code that wants one long vector.

use crate::error::{fail, or_panic, Error, ErrorKind, Result};
use crate::{Grads, ParamKey, ParamStore, Real, Tensor};

/// One tensor per parameter of a store, in the store's order.
///
/// ```
/// use tapegrad::{ParamStore, ParamVec, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
/// let mut v = ParamVec::zeros_like(&store);
/// v.get_mut(w).unwrap().data_mut()[1] = 3.0;
/// let u = ParamVec::from_store(&store);            // the values themselves
/// assert_eq!(u.dot(&v), 6.0);
/// v.axpy(2.0, &u);                                  // v ← v + 2u
/// assert_eq!(v.get(w).unwrap().data(), &[2.0, 7.0]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ParamVec<F: Real> {
    entries: Vec<(ParamKey, Tensor<F>)>,
}

impl<F: Real> ParamVec<F> {
    /// Builds a vector from `f(key, value)` for every parameter of `store`.
    fn like(store: &ParamStore<F>, mut f: impl FnMut(ParamKey, &Tensor<F>) -> Tensor<F>) -> Self {
        ParamVec {
            entries: store.iter().map(|(k, p)| (k, f(k, &p.value))).collect(),
        }
    }

    /// Zeros shaped like every parameter of `store`.
    pub fn zeros_like(store: &ParamStore<F>) -> Self {
        Self::like(store, |_, t| Tensor::zeros(t.shape()))
    }

    /// Standard normal entries shaped like `store`'s parameters, seeded
    /// (each parameter draws from its own seed derived from `seed`).
    ///
    /// ```
    /// use tapegrad::{ParamStore, ParamVec, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// store.insert("w", Tensor::zeros(&[3, 4]));
    /// let v = ParamVec::randn_like(&store, 7);
    /// assert_eq!(v, ParamVec::randn_like(&store, 7));
    /// assert_eq!(v.numel(), 12);
    /// ```
    pub fn randn_like(store: &ParamStore<F>, seed: u64) -> Self {
        let mut i = 0u64;
        Self::like(store, |_, t| {
            i += 1;
            Tensor::randn(t.shape(), seed.wrapping_mul(0x9E37_79B9).wrapping_add(i))
        })
    }

    /// The current parameter values of `store`, as a vector.
    pub fn from_store(store: &ParamStore<F>) -> Self {
        Self::like(store, |_, t| t.clone())
    }

    /// The parameter gradients of `grads`, zeros for a parameter of
    /// `store` that was not bound on the tape.
    ///
    /// ```
    /// use tapegrad::{ParamStore, ParamVec, Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let w = store.insert("w", Tensor::scalar(3.0));
    /// store.insert("unused", Tensor::scalar(1.0));
    /// let tape = Tape::new();
    /// let g = ParamVec::from_grads(&store, &tape.param(&store, w).powf(2.0).backward());
    /// assert_eq!(g.to_flat(), vec![6.0, 0.0]);
    /// ```
    pub fn from_grads(store: &ParamStore<F>, grads: &Grads<F>) -> Self {
        Self::like(store, |k, t| {
            grads
                .param(k)
                .cloned()
                .unwrap_or_else(|| Tensor::zeros(t.shape()))
        })
    }

    /// A vector from its parts, one per parameter of `store` in the order
    /// of [`ParamStore::iter`], each shaped like its parameter.
    ///
    /// # Errors
    /// [`ErrorKind::Shape`] if a part is missing or misshapen.
    pub fn try_from_parts(store: &ParamStore<F>, parts: Vec<Tensor<F>>) -> Result<Self> {
        if parts.len() != store.len() {
            return Err(Error::shape(
                "ParamVec::from_parts",
                format!("{} parts for {} parameters", parts.len(), store.len()),
            ));
        }
        let mut entries = Vec::with_capacity(parts.len());
        for ((k, p), t) in store.iter().zip(parts) {
            if t.shape() != p.value.shape() {
                return Err(Error::shape(
                    "ParamVec::from_parts",
                    format!(
                        "part for `{}` is {:?}, the parameter {:?}",
                        p.name,
                        t.shape(),
                        p.value.shape()
                    ),
                ));
            }
            entries.push((k, t));
        }
        Ok(ParamVec { entries })
    }

    /// Cuts a flat vector (the parameters concatenated in store order, as
    /// [`ParamVec::to_flat`] makes it) into a vector shaped like `store`.
    ///
    /// # Errors
    /// [`ErrorKind::Shape`] if `flat` does not hold exactly
    /// `store.num_elements()` numbers.
    ///
    /// ```
    /// use tapegrad::{ParamStore, ParamVec, Tensor};
    /// let mut store = ParamStore::<f32>::new();
    /// store.insert("a", Tensor::zeros(&[2]));
    /// store.insert("b", Tensor::zeros(&[1]));
    /// let v = ParamVec::try_from_flat(&store, &[1.0, 2.0, 3.0])?;
    /// assert_eq!(v.to_flat(), vec![1.0, 2.0, 3.0]);
    /// assert!(ParamVec::try_from_flat(&store, &[1.0]).is_err());
    /// # Ok::<(), tapegrad::Error>(())
    /// ```
    pub fn try_from_flat(store: &ParamStore<F>, flat: &[F]) -> Result<Self> {
        if flat.len() != store.num_elements() {
            return Err(Error::shape(
                "ParamVec::from_flat",
                format!(
                    "{} numbers for {} parameter elements",
                    flat.len(),
                    store.num_elements()
                ),
            ));
        }
        let mut at = 0;
        Ok(Self::like(store, |_, t| {
            let n = t.numel();
            at += n;
            or_panic(Tensor::from_slice(&flat[at - n..at], t.shape()))
        }))
    }

    /// Every entry as (key, tensor), in the store's order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamKey, &Tensor<F>)> + '_ {
        self.entries.iter().map(|(k, t)| (*k, t))
    }

    /// The entry for `key`, if the vector has one.
    pub fn get(&self, key: ParamKey) -> Option<&Tensor<F>> {
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }

    /// The entry for `key`, writable.
    pub fn get_mut(&mut self, key: ParamKey) -> Option<&mut Tensor<F>> {
        self.entries
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t)
    }

    /// The number of scalar elements over all entries.
    pub fn numel(&self) -> usize {
        self.entries.iter().map(|(_, t)| t.numel()).sum()
    }

    /// The entries concatenated in order.
    pub fn to_flat(&self) -> Vec<F> {
        self.entries
            .iter()
            .flat_map(|(_, t)| t.data().iter().copied())
            .collect()
    }

    /// Checks that `other` has the same keys and shapes, in the same order.
    fn check_same(&self, other: &Self, op: &str) -> Result<()> {
        let same = self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(&other.entries)
                .all(|((k, a), (l, b))| k == l && a.shape() == b.shape());
        if same {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Shape,
                op,
                format!(
                    "parameter vectors of different layouts: {} entries ({} elements) and {} entries ({} elements)",
                    self.entries.len(),
                    self.numel(),
                    other.entries.len(),
                    other.numel()
                ),
            ))
        }
    }

    /// ⟨self, other⟩ = Σ selfᵢ·otherᵢ.
    ///
    /// # Panics
    /// If the two vectors have different keys or shapes.
    #[track_caller]
    pub fn dot(&self, other: &Self) -> F {
        or_panic(self.check_same(other, "ParamVec::dot"));
        self.entries
            .iter()
            .zip(&other.entries)
            .flat_map(|((_, a), (_, b))| a.data().iter().zip(b.data()).map(|(&x, &y)| x * y))
            .sum()
    }

    /// The Euclidean norm √⟨self, self⟩.
    pub fn norm(&self) -> F {
        self.dot(self).sqrt()
    }

    /// `self ← self + α·x`.
    ///
    /// # Panics
    /// If the two vectors have different keys or shapes.
    #[track_caller]
    pub fn axpy(&mut self, alpha: F, x: &Self) {
        or_panic(self.check_same(x, "ParamVec::axpy"));
        for ((_, a), (_, b)) in self.entries.iter_mut().zip(&x.entries) {
            for (p, &q) in a.data_mut().iter_mut().zip(b.data()) {
                *p = *p + alpha * q;
            }
        }
    }

    /// `self ← α·self`.
    pub fn scale(&mut self, alpha: F) {
        for (_, t) in &mut self.entries {
            t.data_mut().iter_mut().for_each(|x| *x = *x * alpha);
        }
    }

    /// `θ ← θ + α·self` for every parameter θ of `store` this vector has an
    /// entry for (a step along the vector).
    ///
    /// # Panics
    /// If a key is stale for `store` or an entry is misshapen.
    ///
    /// ```
    /// use tapegrad::{ParamStore, ParamVec, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let w = store.insert("w", Tensor::scalar(1.0));
    /// let mut step = ParamVec::zeros_like(&store);
    /// step.get_mut(w).unwrap().data_mut()[0] = 0.5;
    /// step.add_to(&mut store, -2.0);
    /// assert_eq!(store.get(w).item(), 0.0);
    /// ```
    #[track_caller]
    pub fn add_to(&self, store: &mut ParamStore<F>, alpha: F) {
        for (k, t) in &self.entries {
            let p = store.get_mut(*k);
            if p.shape() != t.shape() {
                fail(Error::shape(
                    "ParamVec::add_to",
                    format!("entry {:?} for a parameter {:?}", t.shape(), p.shape()),
                ));
            }
            for (x, &d) in p.data_mut().iter_mut().zip(t.data()) {
                *x = *x + alpha * d;
            }
        }
    }

    /// Each entry mapped through `f`, possibly to another element type.
    pub fn map<G: Real>(
        &self,
        mut f: impl FnMut(ParamKey, &Tensor<F>) -> Tensor<G>,
    ) -> ParamVec<G> {
        ParamVec {
            entries: self.entries.iter().map(|(k, t)| (*k, f(*k, t))).collect(),
        }
    }
}
