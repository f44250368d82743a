//! Optimizers that update a [`ParamStore`] from the [`Grads`] of a backward
//! pass, gradient clipping, and learning-rate schedules.
//!
//! Every optimizer implements [`Optimizer`]; its per-parameter state
//! (momentum buffers, moment estimates) is keyed by [`ParamKey`], so it
//! follows the parameters, not the tape.
//!
//! A tape binds the store's own parameter buffers (shared, not copied:
//! [`Tape::param`](crate::Tape::param)). An update while a tape still holds
//! a parameter copies that parameter first (copy on write), so it is always
//! correct; reset the tape before `step` (its gradients stay valid) and
//! the update writes in place, as `CharModel::train_step` and
//! `Tbptt::train` do.
//!
//! | optimizer | PyTorch | state per parameter |
//! | --- | --- | --- |
//! | [`Sgd`] (momentum, Nesterov, weight decay) | `torch.optim.SGD` | `momentum_buffer` |
//! | [`Adagrad`] | `torch.optim.Adagrad` | `sum` |
//! | [`RmsProp`] (momentum, centered) | `torch.optim.RMSprop` | `square_avg`, `momentum_buffer`, `grad_avg` |
//! | [`Adam`], AdamW ([`Adam::adamw`]) | `torch.optim.Adam`, `AdamW` | `exp_avg`, `exp_avg_sq` |
//!
//! ## Saving and restoring state
//!
//! [`Optimizer::state`] exports everything a resumed run needs as an
//! [`OptimizerState`]: the optimizer's [`kind`](Optimizer::kind), its
//! hyper-parameters and counters as named scalars (`lr`, `step`, …) and its
//! buffers as tensors named `{buffer}.{parameter name}`, e.g.
//! `exp_avg.lstm.weight_ih_l0` — names, not keys, so the state survives a
//! new process and a new store. [`Optimizer::load_state`] checks all of it
//! against the store (kind, every scalar, every name, every shape) before it
//! changes anything, and restores the hyper-parameters too, as PyTorch's
//! `load_state_dict` restores its `param_groups`. A buffer may be absent (a
//! parameter that never had a gradient has none); a buffer for a parameter
//! the store does not hold, or of an unknown kind, is an error.
//! [`checkpoint`](crate::checkpoint) writes this state into the same file as
//! the parameters.
//!
//! ```
//! use tapegrad::optim::{Adam, Optimizer};
//! use tapegrad::{ParamStore, Tape, Tensor};
//! let mut store = ParamStore::<f64>::new();
//! let w = store.insert("w", Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap());
//! let mut opt = Adam::new(0.1);
//! let g = Tape::new().param(&store, w).powf(2.0).sum().backward();
//! opt.step(&mut store, &g);
//! let state = opt.state(&store);
//! assert_eq!(state.kind, "adam");
//! assert_eq!(state.scalar("step"), Some(1.0));
//! assert!(state.tensor("exp_avg.w").is_some());
//! let mut fresh = Adam::new(0.5);
//! fresh.load_state(&store, &state).unwrap();
//! assert_eq!((fresh.steps(), fresh.lr), (1, 0.1));
//! ```

mod adagrad;
mod adam;
mod clip;
mod rmsprop;
mod schedule;
mod sgd;

pub use adagrad::Adagrad;
pub use adam::Adam;
pub(crate) use clip::finite_grad_norm;
pub use clip::{clip_grad_norm, clip_grad_value};
pub use rmsprop::RmsProp;
pub use schedule::LrSchedule;
pub use sgd::Sgd;

use crate::error::{Error, ErrorKind, Result};
use crate::{Grads, ParamKey, ParamStore, Real, Tensor};
use std::collections::HashMap;

/// A rule that turns gradients into a parameter update, with state that
/// can be exported and restored (see the module docs).
///
/// ```
/// use tapegrad::optim::{Optimizer, RmsProp, Sgd};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f32>::new();
/// let w = store.insert("w", Tensor::ones(&[2]));
/// let mut opts: Vec<Box<dyn Optimizer<f32>>> =
///     vec![Box::new(Sgd::new(0.1).momentum(0.9)), Box::new(RmsProp::new(0.01))];
/// for opt in &mut opts {
///     let g = Tape::new().param(&store, w).sum().backward();
///     opt.step(&mut store, &g);
///     opt.set_lr(opt.lr() / 2.0);
/// }
/// assert!(store.get(w).data().iter().all(|&x| x < 1.0));
/// assert_eq!(opts[0].kind(), "sgd");
/// assert_eq!(opts[0].state(&store).tensors[0].0, "momentum_buffer.w");
/// ```
pub trait Optimizer<F: Real> {
    /// Applies one update to every parameter that has a gradient in `grads`.
    fn step(&mut self, store: &mut ParamStore<F>, grads: &Grads<F>);
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (schedules call this every step).
    fn set_lr(&mut self, lr: f64);
    /// A short lowercase name (`"sgd"`, `"adam"`, `"adamw"`, `"adagrad"`,
    /// `"rmsprop"`), written into checkpoints and checked when loading.
    fn kind(&self) -> &'static str;
    /// Exports the hyper-parameters, counters and per-parameter buffers,
    /// buffers named by the parameters' names in `store` (see the module
    /// docs). Buffers of parameters no longer in `store` are left out.
    fn state(&self, store: &ParamStore<F>) -> OptimizerState<F>;
    /// Replaces this optimizer's hyper-parameters, counters and buffers by
    /// `state`, whose buffer names are resolved in `store`.
    ///
    /// # Errors
    /// [`ErrorKind::Format`] if the kind differs, a scalar is missing or not
    /// finite, a buffer has an unknown kind, names a parameter `store` does
    /// not hold, or has another shape than its parameter. On error nothing
    /// has changed.
    fn load_state(&mut self, store: &ParamStore<F>, state: &OptimizerState<F>) -> Result<()>;
}

/// An optimizer's state in a form a file can hold: see the module docs.
///
/// ```
/// use tapegrad::optim::{Adagrad, Optimizer};
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("decoder.bias", Tensor::ones(&[3]));
/// let mut opt = Adagrad::new(0.1);
/// let g = Tape::new().param(&store, w).sum().backward();
/// opt.step(&mut store, &g);
/// let state = opt.state(&store);
/// assert_eq!(state.tensor("sum.decoder.bias").unwrap().data(), &[1.0; 3]); // Σ g² = 1
/// assert_eq!(state.scalar("step"), Some(1.0));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState<F: Real> {
    /// [`Optimizer::kind`] of the optimizer that wrote it.
    pub kind: String,
    /// Hyper-parameters and counters by name (`lr`, `step`, `beta1`, …).
    pub scalars: Vec<(String, f64)>,
    /// Per-parameter buffers named `{buffer}.{parameter name}`.
    pub tensors: Vec<(String, Tensor<F>)>,
}

impl<F: Real> OptimizerState<F> {
    /// The scalar called `name`.
    ///
    /// ```
    /// use tapegrad::optim::{Optimizer, Sgd};
    /// let s = Sgd::<f32>::new(0.5).state(&tapegrad::ParamStore::new());
    /// assert_eq!(s.scalar("lr"), Some(0.5));
    /// assert_eq!(s.scalar("nope"), None);
    /// ```
    pub fn scalar(&self, name: &str) -> Option<f64> {
        self.scalars
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }

    /// The buffer called `name` (`"exp_avg.decoder.weight"`).
    pub fn tensor(&self, name: &str) -> Option<&Tensor<F>> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Per-parameter state of the same shape as the parameter, zero at first.
pub(crate) fn state_for<'a, F: Real>(
    map: &'a mut HashMap<ParamKey, Tensor<F>>,
    key: ParamKey,
    like: &Tensor<F>,
) -> &'a mut Tensor<F> {
    map.entry(key)
        .or_insert_with(|| Tensor::zeros(like.shape()))
}

/// Exports one buffer map as `{buffer}.{parameter name}` tensors, in the
/// store's order.
pub(crate) fn export_buffer<F: Real>(
    out: &mut Vec<(String, Tensor<F>)>,
    store: &ParamStore<F>,
    buffer: &str,
    map: &HashMap<ParamKey, Tensor<F>>,
) {
    for (key, p) in store.iter() {
        if let Some(t) = map.get(&key) {
            out.push((format!("{buffer}.{}", p.name), t.clone()));
        }
    }
}

/// Validates an [`OptimizerState`] against an optimizer kind and a store;
/// the optimizers' `load_state` read it through this, then commit.
pub(crate) struct StateReader<'a, F: Real> {
    state: &'a OptimizerState<F>,
    store: &'a ParamStore<F>,
}

fn format_error(message: String) -> Error {
    Error::new(ErrorKind::Format, "Optimizer::load_state", message)
}

impl<'a, F: Real> StateReader<'a, F> {
    /// Checks the kind and that every tensor is `{one of buffers}.{a
    /// parameter of store}` with its parameter's shape.
    pub(crate) fn new(
        kind: &str,
        buffers: &[&str],
        store: &'a ParamStore<F>,
        state: &'a OptimizerState<F>,
    ) -> Result<Self> {
        if state.kind != kind {
            return Err(format_error(format!(
                "the state was written by a `{}` optimizer, this one is `{kind}`",
                state.kind
            )));
        }
        for (name, t) in &state.tensors {
            let param = buffers
                .iter()
                .find_map(|b| name.strip_prefix(b).and_then(|r| r.strip_prefix('.')))
                .ok_or_else(|| {
                    format_error(format!(
                        "buffer `{name}` is not one of {kind}'s buffers ({}) followed by a parameter name",
                        buffers.join(", ")
                    ))
                })?;
            let key = store.key(param).ok_or_else(|| {
                format_error(format!(
                    "buffer `{name}` belongs to a parameter `{param}` that the store does not hold"
                ))
            })?;
            let want = store.get(key).shape();
            if t.shape() != want {
                return Err(format_error(format!(
                    "buffer `{name}` has shape {:?}, its parameter `{param}` has shape {want:?}",
                    t.shape()
                )));
            }
        }
        Ok(StateReader { state, store })
    }

    /// A required scalar, finite.
    pub(crate) fn scalar(&self, name: &str) -> Result<f64> {
        match self.state.scalar(name) {
            Some(v) if v.is_finite() => Ok(v),
            Some(v) => Err(format_error(format!(
                "{} state: scalar `{name}` is {v}",
                self.state.kind
            ))),
            None => Err(format_error(format!(
                "{} state: scalar `{name}` is missing",
                self.state.kind
            ))),
        }
    }

    /// A required counter: a finite whole number ≥ 0.
    pub(crate) fn counter(&self, name: &str) -> Result<u64> {
        let v = self.scalar(name)?;
        if v < 0.0 || v.fract() != 0.0 || v > 2f64.powi(53) {
            return Err(format_error(format!(
                "{} state: counter `{name}` is {v}, not a whole number ≥ 0",
                self.state.kind
            )));
        }
        Ok(v as u64)
    }

    /// A required flag stored as 0 or 1.
    pub(crate) fn flag(&self, name: &str) -> Result<bool> {
        let v = self.scalar(name)?;
        if v == 0.0 || v == 1.0 {
            Ok(v == 1.0)
        } else {
            Err(format_error(format!(
                "{} state: flag `{name}` is {v}, not 0 or 1",
                self.state.kind
            )))
        }
    }

    /// The buffers of one kind, keyed by parameter (already validated).
    pub(crate) fn buffer(&self, buffer: &str) -> HashMap<ParamKey, Tensor<F>> {
        self.state
            .tensors
            .iter()
            .filter_map(|(name, t)| {
                let param = name.strip_prefix(buffer)?.strip_prefix('.')?;
                Some((self.store.key(param)?, t.clone()))
            })
            .collect()
    }

    /// An error unless two buffer maps cover the same parameters (Adam's
    /// two moments, say).
    pub(crate) fn same_params(
        &self,
        (a, ma): (&str, &HashMap<ParamKey, Tensor<F>>),
        (b, mb): (&str, &HashMap<ParamKey, Tensor<F>>),
    ) -> Result<()> {
        if let Some(k) = ma
            .keys()
            .chain(mb.keys())
            .find(|k| ma.contains_key(k) != mb.contains_key(k))
        {
            let (has, lacks) = if ma.contains_key(k) { (a, b) } else { (b, a) };
            return Err(format_error(format!(
                "{} state: parameter `{}` has a `{has}` buffer but no `{lacks}` buffer",
                self.state.kind,
                self.store.name(*k)
            )));
        }
        Ok(())
    }
}

/// Checks hyper-parameters against the ranges PyTorch's optimizer
/// constructors accept: each `(name, value, upper)` must be finite and
/// `0 ≤ value`, and `value < upper` when an upper bound is given. The same
/// check runs in the constructors (which panic, or return the error from
/// their `try_` forms) and on state read from a file
/// ([`Optimizer::load_state`], which refuses it).
pub(crate) fn check_hyper(op: &str, checks: &[(&str, f64, Option<f64>)]) -> Result<()> {
    for &(name, v, upper) in checks {
        let ok = v.is_finite() && v >= 0.0 && upper.is_none_or(|hi| v < hi);
        if !ok {
            let range = match upper {
                Some(hi) => format!("in [0, {hi})"),
                None => "finite and ≥ 0".to_string(),
            };
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                op,
                format!("{name} = {v} is not {range}"),
            ));
        }
    }
    Ok(())
}

/// The error of a state whose hyper-parameters fail `check`: a
/// [`ErrorKind::Format`] error of `load_state` naming the optimizer.
pub(crate) fn refuse_hyper(kind: &str, check: Result<()>) -> Result<()> {
    check.map_err(|e| {
        format_error(format!(
            "{kind} state: hyper-parameter {} (the constructor refuses it too)",
            e.message()
        ))
    })
}

/// 1.0 or 0.0, for flags stored as scalars.
pub(crate) fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}
