//! Gradient checking for users: compare the tape's gradients of any scalar
//! function of vars with central finite differences in `f64`, as PyTorch's
//! `gradcheck` and JAX's `check_grads` do — but return a report (the worst
//! absolute and relative error per input), not just a bool.
//!
//! For each input element xᵢ the numerical derivative is
//! `(f(x + εeᵢ) − f(x − εeᵢ)) / 2ε`, whose truncation error is O(ε²); the
//! default ε = 1e-6 balances that against the rounding error O(δ/ε) of f64.

use crate::{Tape, Tensor, Var};

/// The worst errors found for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputReport {
    /// The input's position in the slice passed to [`gradcheck`].
    pub input: usize,
    /// max |analytic − numeric| over the input's elements.
    pub max_abs_error: f64,
    /// max |analytic − numeric| / max(|analytic|, |numeric|, `floor`).
    pub max_rel_error: f64,
    /// The flat index where the absolute error peaks.
    pub worst_index: usize,
    /// The tape's gradient.
    pub analytic: Tensor<f64>,
    /// The finite-difference gradient.
    pub numeric: Tensor<f64>,
}

/// A gradient check's findings over all inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    /// One entry per input.
    pub inputs: Vec<InputReport>,
}

impl GradcheckReport {
    /// The largest absolute error over all inputs (NaN if any is NaN).
    pub fn max_abs_error(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_abs_error)
            .fold(0.0, nan_max)
    }

    /// The largest relative error over all inputs (NaN if any is NaN).
    pub fn max_rel_error(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_rel_error)
            .fold(0.0, nan_max)
    }

    /// Whether every element satisfies |analytic − numeric| ≤ atol + rtol·|numeric|
    /// (PyTorch's criterion).
    pub fn passes(&self, atol: f64, rtol: f64) -> bool {
        self.inputs.iter().all(|r| {
            r.analytic
                .data()
                .iter()
                .zip(r.numeric.data())
                .all(|(a, n)| (a - n).abs() <= atol + rtol * n.abs())
        })
    }
}

/// Options for [`gradcheck_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradcheckOptions {
    /// The finite-difference step.
    pub eps: f64,
    /// The denominator floor of the relative error (so gradients near zero
    /// are judged by absolute error).
    pub floor: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-6,
            floor: 1e-3,
        }
    }
}

/// Checks `f`'s tape gradients at `inputs` against central differences
/// with the default options.
///
/// `f` receives a fresh tape and one var per input (each requiring its
/// gradient) and returns a scalar var.
///
/// # Panics
/// If `f` returns a var with more than one element.
///
/// ```
/// use tapegrad::{gradcheck::gradcheck, Tensor};
/// let x = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3]).unwrap();
/// let report = gradcheck(&[x], |_, v| (v[0].tanh() * v[0]).sum());
/// assert!(report.max_rel_error() < 1e-7, "{report:?}");
/// assert!(report.passes(1e-8, 1e-6));
/// ```
pub fn gradcheck<G>(inputs: &[Tensor<f64>], f: G) -> GradcheckReport
where
    G: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    gradcheck_with(inputs, GradcheckOptions::default(), f)
}

/// [`gradcheck`] with explicit options.
///
/// ```
/// use tapegrad::gradcheck::{gradcheck_with, GradcheckOptions};
/// use tapegrad::Tensor;
/// let x = Tensor::from_vec(vec![0.5, 1.5], &[2]).unwrap();
/// let opts = GradcheckOptions { eps: 1e-5, ..Default::default() };
/// let r = gradcheck_with(&[x], opts, |_, v| v[0].exp().sum());
/// assert!(r.max_rel_error() < 1e-8);
/// ```
pub fn gradcheck_with<G>(inputs: &[Tensor<f64>], opts: GradcheckOptions, f: G) -> GradcheckReport
where
    G: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let mut tape = Tape::new();
    let analytic: Vec<Tensor<f64>> = {
        let vars: Vec<Var<'_, f64>> = inputs.iter().map(|t| tape.var(t.clone())).collect();
        let grads = f(&tape, &vars).backward();
        vars.iter().map(|&v| grads.wrt(v).clone()).collect()
    };
    tape.reset();
    let mut eval = |xs: &[Tensor<f64>]| -> f64 {
        let y = {
            let vars: Vec<Var<'_, f64>> = xs.iter().map(|t| tape.constant(t.clone())).collect();
            f(&tape, &vars).item()
        };
        tape.reset();
        y
    };
    let mut work: Vec<Tensor<f64>> = inputs.to_vec();
    let mut reports = Vec::with_capacity(inputs.len());
    for (k, a) in analytic.into_iter().enumerate() {
        let mut numeric = Tensor::zeros(inputs[k].shape());
        for i in 0..inputs[k].numel() {
            let x0 = inputs[k].data()[i];
            work[k].data_mut()[i] = x0 + opts.eps;
            let up = eval(&work);
            work[k].data_mut()[i] = x0 - opts.eps;
            let down = eval(&work);
            work[k].data_mut()[i] = x0;
            numeric.data_mut()[i] = (up - down) / (2.0 * opts.eps);
        }
        let (mut max_abs, mut max_rel, mut worst) = (0.0f64, 0.0f64, 0);
        for (i, (&g, &n)) in a.data().iter().zip(numeric.data()).enumerate() {
            let abs = (g - n).abs();
            let rel = abs / g.abs().max(n.abs()).max(opts.floor);
            if abs > max_abs || abs.is_nan() {
                max_abs = abs;
                worst = i;
            }
            max_rel = nan_max(max_rel, rel);
        }
        reports.push(InputReport {
            input: k,
            max_abs_error: max_abs,
            max_rel_error: max_rel,
            worst_index: worst,
            analytic: a,
            numeric,
        });
    }
    GradcheckReport { inputs: reports }
}

/// `f64::max` that keeps a NaN instead of dropping it: a NaN gradient (or
/// finite difference) must fail a check, not vanish from the report.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}
