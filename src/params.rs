//! Parameters that outlive a tape: a [`ParamStore`] of named tensors keyed
//! by [`ParamKey`].
//!
//! A training step binds parameters into a fresh or reset tape
//! ([`Tape::param`](crate::Tape::param)) as leaves that require gradients,
//! and the gradients come back keyed by the same keys
//! ([`Grads::param`](crate::Grads::param)). Keys are slotmap keys (stable,
//! with stale-key detection built in) tagged with the id of the store that
//! made them, so a removed key *and* a key of another store are both caught
//! instead of silently naming some other parameter.
//!
//! The keys live in a `SlotMap` of their own and the values in a
//! `SecondaryMap` on those keys, so [`ParamStore::map`] can build a store of
//! another element type under the *same* keys — how second-order code lifts
//! a `ParamStore<f64>` to dual numbers without the layers, which hold keys,
//! noticing.

use crate::error::{Error, ErrorKind, Result};
use crate::tensor::Tensor;
use crate::Real;
use slotmap::{SecondaryMap, SlotMap};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

slotmap::new_key_type! {
    /// The slot of a parameter inside its store.
    struct Slot;
}

/// A handle to one parameter of one [`ParamStore`]: `Copy`, hashable, and
/// checked on every use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamKey {
    store: u32,
    slot: Slot,
}

/// One parameter: its name (a PyTorch `state_dict` name such as
/// `lstm.weight_ih_l0`) and its value.
#[derive(Debug, Clone)]
pub struct Param<F: Real> {
    /// The unique name.
    pub name: String,
    /// The current value.
    pub value: Tensor<F>,
}

/// Named parameters that persist across training steps.
///
/// ```
/// use tapegrad::{ParamStore, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let w = store.insert("linear.weight", Tensor::zeros(&[2, 3]));
/// assert_eq!(store.name(w), "linear.weight");
/// assert_eq!(store.key("linear.weight"), Some(w));
/// assert_eq!(store.num_elements(), 6);
/// ```
#[derive(Debug, Clone)]
pub struct ParamStore<F: Real> {
    id: u32,
    keys: SlotMap<Slot, ()>,
    values: SecondaryMap<Slot, Param<F>>,
    by_name: HashMap<String, Slot>,
}

static NEXT_STORE_ID: AtomicU32 = AtomicU32::new(1);

impl<F: Real> Default for ParamStore<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Real> ParamStore<F> {
    /// An empty store.
    pub fn new() -> Self {
        ParamStore {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            keys: SlotMap::with_key(),
            values: SecondaryMap::new(),
            by_name: HashMap::new(),
        }
    }

    /// Adds a parameter.
    ///
    /// # Panics
    /// If the name is taken; see [`ParamStore::try_insert`].
    #[track_caller]
    pub fn insert(&mut self, name: impl Into<String>, value: Tensor<F>) -> ParamKey {
        crate::error::or_panic(self.try_insert(name, value))
    }

    /// Adds a parameter, or an error if the name is taken.
    ///
    /// ```
    /// use tapegrad::{ErrorKind, ParamStore, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// store.insert("w", Tensor::zeros(&[1]));
    /// let e = store.try_insert("w", Tensor::zeros(&[1])).unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    /// ```
    pub fn try_insert(&mut self, name: impl Into<String>, value: Tensor<F>) -> Result<ParamKey> {
        let name = name.into();
        if self.by_name.contains_key(&name) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "ParamStore::insert",
                format!("a parameter named `{name}` already exists"),
            ));
        }
        let slot = self.keys.insert(());
        self.values.insert(
            slot,
            Param {
                name: name.clone(),
                value: value.into_shared(),
            },
        );
        self.by_name.insert(name, slot);
        Ok(ParamKey {
            store: self.id,
            slot,
        })
    }

    fn stale(&self, key: ParamKey) -> Error {
        let why = if key.store != self.id {
            format!(
                "the key belongs to store #{}, not this store #{}",
                key.store, self.id
            )
        } else {
            "the parameter was removed from this store".to_string()
        };
        Error::new(
            ErrorKind::StaleKey,
            "ParamStore",
            format!("stale parameter key: {why}"),
        )
    }

    fn slot(&self, key: ParamKey) -> Result<Slot> {
        if key.store == self.id && self.keys.contains_key(key.slot) {
            Ok(key.slot)
        } else {
            Err(self.stale(key))
        }
    }

    /// The parameter behind `key`, or a [`ErrorKind::StaleKey`] error.
    pub fn try_param(&self, key: ParamKey) -> Result<&Param<F>> {
        Ok(&self.values[self.slot(key)?])
    }

    /// The value behind `key`, or a [`ErrorKind::StaleKey`] error.
    ///
    /// ```
    /// use tapegrad::{ErrorKind, ParamStore, Tensor};
    /// let mut a = ParamStore::<f64>::new();
    /// let b = ParamStore::<f64>::new();
    /// let w = a.insert("w", Tensor::zeros(&[1]));
    /// assert!(a.try_get(w).is_ok());
    /// assert_eq!(b.try_get(w).unwrap_err().kind(), ErrorKind::StaleKey);
    /// ```
    pub fn try_get(&self, key: ParamKey) -> Result<&Tensor<F>> {
        Ok(&self.try_param(key)?.value)
    }

    /// The value behind `key`.
    ///
    /// # Panics
    /// If the key is stale or foreign.
    #[track_caller]
    pub fn get(&self, key: ParamKey) -> &Tensor<F> {
        crate::error::or_panic(self.try_get(key))
    }

    /// The value behind `key`, writable, or a [`ErrorKind::StaleKey`] error.
    pub fn try_get_mut(&mut self, key: ParamKey) -> Result<&mut Tensor<F>> {
        let slot = self.slot(key)?;
        let value = &mut self.values[slot].value;
        value.make_shareable();
        Ok(value)
    }

    /// The value behind `key`, writable.
    ///
    /// # Panics
    /// If the key is stale or foreign.
    #[track_caller]
    pub fn get_mut(&mut self, key: ParamKey) -> &mut Tensor<F> {
        crate::error::or_panic(self.try_get_mut(key))
    }

    /// The name of `key`'s parameter.
    ///
    /// # Panics
    /// If the key is stale or foreign.
    #[track_caller]
    pub fn name(&self, key: ParamKey) -> &str {
        &crate::error::or_panic(self.try_param(key)).name
    }

    /// The key of the parameter called `name`.
    pub fn key(&self, name: &str) -> Option<ParamKey> {
        self.by_name.get(name).map(|&slot| ParamKey {
            store: self.id,
            slot,
        })
    }

    /// Removes a parameter; its key (and copies of it) become stale.
    ///
    /// ```
    /// use tapegrad::{ParamStore, Tensor};
    /// let mut s = ParamStore::<f64>::new();
    /// let w = s.insert("w", Tensor::zeros(&[1]));
    /// assert!(s.remove(w).is_some());
    /// assert!(s.try_get(w).is_err());
    /// ```
    pub fn remove(&mut self, key: ParamKey) -> Option<Param<F>> {
        let slot = self.slot(key).ok()?;
        self.keys.remove(slot)?;
        let p = self.values.remove(slot)?;
        self.by_name.remove(&p.name);
        Some(p)
    }

    /// Every parameter as (key, parameter), in insertion order while
    /// nothing has been removed.
    pub fn iter(&self) -> impl Iterator<Item = (ParamKey, &Param<F>)> + '_ {
        let store = self.id;
        self.keys
            .keys()
            .map(move |slot| (ParamKey { store, slot }, &self.values[slot]))
    }

    /// Every key.
    pub fn keys(&self) -> impl Iterator<Item = ParamKey> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The total number of scalar elements over all parameters.
    pub fn num_elements(&self) -> usize {
        self.values.values().map(|p| p.value.numel()).sum()
    }

    /// The same parameters, names and **keys**, each value replaced by
    /// `f(key, parameter)`, possibly of another element type: every key of
    /// this store is valid in the result and names the same parameter. The
    /// two stores share their id, so a layer built on one runs on the other
    /// unchanged. This is how [`crate::forward::lift`] turns a
    /// `ParamStore<f64>` into a `ParamStore<Dual<f64>>` for a forward-mode
    /// or second-order pass.
    ///
    /// Removing a parameter from one of the two does not remove it from the
    /// other (they are separate stores that happen to agree on keys).
    ///
    /// ```
    /// use tapegrad::{ParamStore, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let w = store.insert("w", Tensor::ones(&[2]));
    /// let single: ParamStore<f32> = store.map(|_, p| p.value.cast::<f32>());
    /// assert_eq!(single.get(w).data(), &[1.0f32, 1.0]);
    /// assert_eq!(single.name(w), "w");
    /// ```
    pub fn map<G: Real>(
        &self,
        mut f: impl FnMut(ParamKey, &Param<F>) -> Tensor<G>,
    ) -> ParamStore<G> {
        let store = self.id;
        let mut values = SecondaryMap::with_capacity(self.values.capacity());
        for (slot, p) in &self.values {
            let value = f(ParamKey { store, slot }, p);
            values.insert(
                slot,
                Param {
                    name: p.name.clone(),
                    value,
                },
            );
        }
        ParamStore {
            id: self.id,
            keys: self.keys.clone(),
            values,
            by_name: self.by_name.clone(),
        }
    }
}
