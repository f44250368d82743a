//! Optimizers that update a [`ParamStore`] from the
//! [`Grads`] of a backward pass, and gradient clipping.
//!
//! Every optimizer implements [`Optimizer`]; its per-parameter state
//! (momentum buffers, moment estimates) is keyed by [`ParamKey`], so it
//! follows the parameters, not the tape.

mod adam;
mod clip;
mod sgd;

pub use adam::Adam;
pub use clip::{clip_grad_norm, clip_grad_value};
pub use sgd::Sgd;

use crate::{Grads, ParamKey, ParamStore, Real, Tensor};

/// A rule that turns gradients into a parameter update.
pub trait Optimizer<F: Real> {
    /// Applies one update to every parameter that has a gradient in `grads`.
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Grads<F>);
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (schedules call this every step).
    fn set_lr(&mut self, lr: f64);
}

/// Per-parameter state of the same shape as the parameter, zero at first.
pub(crate) fn state_for<'a, F: Real>(
    map: &'a mut std::collections::HashMap<ParamKey, Tensor<F>>,
    key: ParamKey,
    like: &Tensor<F>,
) -> &'a mut Tensor<F> {
    map.entry(key)
        .or_insert_with(|| Tensor::zeros(like.shape()))
}
