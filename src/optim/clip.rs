//! Gradient clipping: by global norm (`clip_grad_norm_`) and by value.

use crate::error::{Error, ErrorKind, Result};
use crate::{Grads, Real};

/// Scales every parameter gradient by max_norm / (‖g‖ + 10⁻⁶) when ‖g‖ >
/// max_norm (PyTorch's `clip_grad_norm_`), where ‖g‖ is the L2 norm over
/// all parameter gradients together, and returns ‖g‖ (before clipping).
///
/// # Errors
/// [`ErrorKind::NonFinite`] if ‖g‖ is NaN or ∞ and `error_if_nonfinite`;
/// the gradients are then left untouched.
///
/// ```
/// use tapegrad::optim::clip_grad_norm;
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::from_vec(vec![3.0, 4.0], &[2]).unwrap());
/// let tape = Tape::new();
/// let mut g = (tape.param(&store, w) * tape.param(&store, w)).sum().mul_scalar(0.5).backward();
/// let norm = clip_grad_norm(&mut g, 1.0, true).unwrap();
/// assert_eq!(norm, 5.0);
/// // [3, 4]·1/(5 + 1e-6): the norm is 5/(5 + 1e-6), just under 1
/// assert!((g.params_norm() - 5.0 / (5.0 + 1e-6)).abs() < 1e-15);
/// ```
pub fn clip_grad_norm<F: Real>(
    grads: &mut Grads<F>,
    max_norm: f64,
    error_if_nonfinite: bool,
) -> Result<f64> {
    let norm = grads.params_norm();
    if !norm.is_finite() {
        if error_if_nonfinite {
            return Err(Error::new(
                ErrorKind::NonFinite,
                "clip_grad_norm",
                format!("the total gradient norm is {norm}"),
            ));
        }
        return Ok(norm);
    }
    if norm > max_norm {
        let scale = F::of(max_norm / (norm + 1e-6));
        grads.for_each_param_mut(|g| g.data_mut().iter_mut().for_each(|x| *x = *x * scale));
    }
    Ok(norm)
}

/// The global gradient norm before clipping, the gradients clipped to
/// `clip_norm` when it is set; `Err(norm)`, the gradients untouched, when
/// the norm is NaN or ∞. The one check a training step makes before its
/// optimizer update (`CharModel::train_step`, `Tbptt::train`).
pub(crate) fn finite_grad_norm<F: Real>(
    grads: &mut Grads<F>,
    clip_norm: Option<f64>,
) -> std::result::Result<f64, f64> {
    let norm = match clip_norm {
        Some(max) => clip_grad_norm(grads, max, false).unwrap_or(f64::NAN),
        None => grads.params_norm(),
    };
    if norm.is_finite() {
        Ok(norm)
    } else {
        Err(norm)
    }
}

/// Clamps every parameter gradient element into [−limit, limit].
///
/// ```
/// use tapegrad::optim::clip_grad_value;
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::scalar(3.0));
/// let tape = Tape::new();
/// let mut g = tape.param(&store, w).powf(2.0).backward(); // 6
/// clip_grad_value(&mut g, 1.0);
/// assert_eq!(g.param(w).unwrap().item(), 1.0);
/// ```
pub fn clip_grad_value<F: Real>(grads: &mut Grads<F>, limit: f64) {
    let (lo, hi) = (F::of(-limit), F::of(limit));
    grads.for_each_param_mut(|g| g.data_mut().iter_mut().for_each(|x| *x = x.max(lo).min(hi)));
}
