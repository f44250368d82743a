//! Flat buffers: every parameter gradient (or parameter) laid end to end,
//! so one collective moves all of them.

use crate::error::{or_panic, Error, ErrorKind};
use crate::{Grads, ParamStore, Real};

/// Every parameter gradient of `grads`, in binding order (the order the
/// forward pass bound the parameters — the same on every rank running the
/// same model code), laid end to end.
///
/// ```
/// use tapegrad::distributed::{pack_grads, unpack_grads};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let a = store.insert("a", Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
/// let b = store.insert("b", Tensor::scalar(3.0));
/// let tape = Tape::new();
/// let loss = (tape.param(&store, a).sum() * tape.param(&store, b)).sum();
/// let mut g = loss.backward();
/// let mut flat = pack_grads(&g);
/// assert_eq!(flat, vec![3.0, 3.0, 3.0]); // d/da = b (twice), d/db = Σa
/// flat.iter_mut().for_each(|x| *x *= 2.0);
/// unpack_grads(&mut g, &flat);
/// assert_eq!(g.param(b).unwrap().item(), 6.0);
/// ```
pub fn pack_grads<F: Real>(grads: &Grads<F>) -> Vec<F> {
    let n = grads.params().map(|(_, g)| g.numel()).sum();
    let mut flat = Vec::with_capacity(n);
    for (_, g) in grads.params() {
        flat.extend_from_slice(g.data());
    }
    flat
}

/// Writes a flat buffer made by [`pack_grads`] (and, say, summed across
/// ranks) back into `grads`' parameter gradients.
///
/// # Panics
/// If `flat` does not hold exactly as many elements as the gradients.
#[track_caller]
pub fn unpack_grads<F: Real>(grads: &mut Grads<F>, flat: &[F]) {
    let n: usize = grads.params().map(|(_, g)| g.numel()).sum();
    if n != flat.len() {
        or_panic::<()>(Err(Error::shape(
            "unpack_grads",
            format!(
                "a flat buffer of {} elements for gradients of {n} elements",
                flat.len()
            ),
        )));
    }
    let mut at = 0;
    grads.for_each_param_mut(|g| {
        let len = g.numel();
        g.data_mut().copy_from_slice(&flat[at..at + len]);
        at += len;
    });
}

/// Every parameter of `store`, in store order, as `f64` (exact for `f32`
/// and `f64`), laid end to end.
///
/// ```
/// use tapegrad::distributed::{pack_params, unpack_params};
/// use tapegrad::{ParamStore, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let w = store.insert("w", Tensor::from_vec(vec![0.1, -0.0], &[2]).unwrap());
/// let flat = pack_params(&store);
/// assert_eq!(flat, vec![0.1f32 as f64, -0.0]);
/// unpack_params(&mut store, &[1.5, 2.5]);
/// assert_eq!(store.get(w).data(), &[1.5, 2.5]);
/// ```
pub fn pack_params<F: Real>(store: &ParamStore<F>) -> Vec<f64> {
    let mut flat = Vec::with_capacity(store.num_elements());
    for (_, p) in store.iter() {
        flat.extend(
            p.value
                .data()
                .iter()
                .map(|x| x.to_f64().unwrap_or(f64::NAN)),
        );
    }
    flat
}

/// Writes a flat buffer made by [`pack_params`] back into `store`.
///
/// # Panics
/// If `flat` does not hold exactly as many elements as the store.
#[track_caller]
pub fn unpack_params<F: Real>(store: &mut ParamStore<F>, flat: &[f64]) {
    if store.num_elements() != flat.len() {
        or_panic::<()>(Err(Error::new(
            ErrorKind::Shape,
            "unpack_params",
            format!(
                "a flat buffer of {} elements for a store of {} elements",
                flat.len(),
                store.num_elements()
            ),
        )));
    }
    let keys: Vec<_> = store.keys().collect();
    let mut at = 0;
    for key in keys {
        let t = store.get_mut(key);
        let len = t.numel();
        for (x, &y) in t.data_mut().iter_mut().zip(&flat[at..at + len]) {
            *x = F::from_f64(y).unwrap_or_else(F::nan);
        }
        at += len;
    }
}
