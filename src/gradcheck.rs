//! Gradient checking for users: compare the tape's gradients of any scalar
//! function of vars with central finite differences in `f64`, as PyTorch's
//! `gradcheck` and JAX's `check_grads` do — but return a report (the worst
//! absolute and relative error per input), not just a bool.
//!
//! For each input element xᵢ the numerical derivative is
//! `(f(x + εeᵢ) − f(x − εeᵢ)) / 2ε`, whose truncation error is O(ε²); the
//! default ε = 1e-6 balances that against the rounding error O(δ/ε) of f64.
//!
//! Two entry points: [`gradcheck`] differentiates with respect to plain
//! input tensors (bound as vars on a fresh tape), [`gradcheck_params`]
//! with respect to parameters of a [`ParamStore`] — a model's own weights,
//! bound by the model with [`Tape::param`] as in training — by key, or all
//! of them ([`gradcheck_store`]).

use crate::error::{or_panic, Error, ErrorKind, Result};
use crate::{ParamKey, ParamStore, Tape, Tensor, Var};

/// The worst errors found for one input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputReport {
    /// The input's position in the slice passed to [`gradcheck`] (or the
    /// key's position in the keys passed to [`gradcheck_params`]).
    pub input: usize,
    /// `"input 0"`, `"input 1"`, … for [`gradcheck`]; the parameter's name
    /// in the store (`"lstm.weight_hh_l0"`) for [`gradcheck_params`].
    pub name: String,
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
/// If `f` returns a var with more than one element (the message says so
/// and names its shape: reduce it, e.g. with `.sum()`).
///
/// ```
/// use tapegrad::{gradcheck::gradcheck, Tensor};
/// let x = Tensor::from_vec(vec![0.3, -1.2, 2.0], &[3]).unwrap();
/// let report = gradcheck(&[x], |_, v| (v[0].tanh() * v[0]).sum());
/// assert!(report.max_rel_error() < 1e-7, "{report:?}");
/// assert!(report.passes(1e-8, 1e-6));
/// ```
#[track_caller]
pub fn gradcheck<G>(inputs: &[Tensor<f64>], f: G) -> GradcheckReport
where
    G: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    gradcheck_with(inputs, GradcheckOptions::default(), f)
}

/// [`gradcheck`] with explicit options.
///
/// # Panics
/// As [`gradcheck`].
///
/// ```
/// use tapegrad::gradcheck::{gradcheck_with, GradcheckOptions};
/// use tapegrad::Tensor;
/// let x = Tensor::from_vec(vec![0.5, 1.5], &[2]).unwrap();
/// let opts = GradcheckOptions { eps: 1e-5, ..Default::default() };
/// let r = gradcheck_with(&[x], opts, |_, v| v[0].exp().sum());
/// assert!(r.max_rel_error() < 1e-8);
/// ```
#[track_caller]
pub fn gradcheck_with<G>(inputs: &[Tensor<f64>], opts: GradcheckOptions, f: G) -> GradcheckReport
where
    G: for<'t> Fn(&'t Tape<f64>, &[Var<'t, f64>]) -> Var<'t, f64>,
{
    let mut tape = Tape::new();
    let analytic: Vec<Tensor<f64>> = {
        let vars: Vec<Var<'_, f64>> = inputs.iter().map(|t| tape.var(t.clone())).collect();
        let grads = or_panic(scalar_backward(f(&tape, &vars), "gradcheck"));
        vars.iter().map(|&v| grads.wrt(v).clone()).collect()
    };
    tape.reset();
    let mut work: Vec<Tensor<f64>> = inputs.to_vec();
    let mut reports = Vec::with_capacity(inputs.len());
    for (k, a) in analytic.into_iter().enumerate() {
        let numeric = central_differences(opts.eps, inputs[k].numel(), |i, d| {
            let x0 = inputs[k].data()[i];
            work[k].data_mut()[i] = x0 + d;
            let y = {
                let vars: Vec<Var<'_, f64>> =
                    work.iter().map(|t| tape.constant(t.clone())).collect();
                f(&tape, &vars).item()
            };
            work[k].data_mut()[i] = x0;
            tape.reset();
            y
        });
        let numeric = Tensor::from_vec(numeric, inputs[k].shape()).expect("one per element");
        reports.push(compare(k, format!("input {k}"), a, numeric, opts.floor));
    }
    GradcheckReport { inputs: reports }
}

/// Checks the tape's gradients of `f` with respect to the parameters
/// `keys` of `store` against central differences, with the default
/// options: each element of each parameter is moved by ±ε *in the store*
/// and `f` re-run, so `f` binds the parameters itself
/// ([`Tape::param`]), exactly as a model's `forward` does.
///
/// `f` receives a fresh tape and the store and returns a scalar var. The
/// store is left as it was.
///
/// # Panics
/// If a key is not in `store`, or `f` returns a var with more than one
/// element. See [`try_gradcheck_params`].
///
/// ```
/// use tapegrad::gradcheck::gradcheck_params;
/// use tapegrad::layers::Linear;
/// use tapegrad::{ParamStore, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let layer = Linear::new(&mut store, "head", 3, 2, true, 7);
/// let x = Tensor::randn(&[4, 3], 1);
/// let w = store.key("head.weight").unwrap();
/// let report = gradcheck_params(&mut store, &[w], |tape, store| {
///     layer.forward(tape, store, tape.constant(x.clone())).tanh().sum()
/// });
/// assert_eq!(report.inputs[0].name, "head.weight");
/// assert!(report.max_rel_error() < 1e-7, "{report:?}");
/// ```
#[track_caller]
pub fn gradcheck_params<G>(store: &mut ParamStore<f64>, keys: &[ParamKey], f: G) -> GradcheckReport
where
    G: for<'t> Fn(&'t Tape<f64>, &ParamStore<f64>) -> Var<'t, f64>,
{
    or_panic(try_gradcheck_params(
        store,
        keys,
        GradcheckOptions::default(),
        f,
    ))
}

/// [`gradcheck_params`] over every parameter of `store`, in the store's
/// order ([`ParamStore::keys`]).
///
/// # Panics
/// As [`gradcheck_params`].
///
/// ```
/// use tapegrad::gradcheck::gradcheck_store;
/// use tapegrad::layers::{Lstm, RecurrentConfig};
/// use tapegrad::{ParamStore, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(2, 3), 1);
/// let x = Tensor::randn(&[3, 1, 2], 2); // T = 3, B = 1, I = 2
/// let report = gradcheck_store(&mut store, |tape, store| {
///     lstm.forward(tape, store, tape.constant(x.clone()), None).state.last_h().sum()
/// });
/// assert_eq!(report.inputs.len(), 4); // weight_ih, weight_hh, bias_ih, bias_hh
/// assert!(report.inputs.iter().any(|r| r.name == "lstm.weight_hh_l0"));
/// assert!(report.passes(1e-7, 1e-6), "{report:?}");
/// ```
#[track_caller]
pub fn gradcheck_store<G>(store: &mut ParamStore<f64>, f: G) -> GradcheckReport
where
    G: for<'t> Fn(&'t Tape<f64>, &ParamStore<f64>) -> Var<'t, f64>,
{
    let keys: Vec<ParamKey> = store.keys().collect();
    gradcheck_params(store, &keys, f)
}

/// [`gradcheck_params`] with explicit options, returning an error instead
/// of panicking.
///
/// # Errors
/// [`ErrorKind::StaleKey`] for a key that is not in `store`;
/// [`ErrorKind::Shape`] if `f` returns a var with more than one element.
/// The store is unchanged either way.
///
/// ```
/// use tapegrad::gradcheck::{try_gradcheck_params, GradcheckOptions};
/// use tapegrad::{ErrorKind, ParamStore, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::from_vec(vec![0.5, -1.0], &[2]).unwrap());
/// let opts = GradcheckOptions::default();
/// let r = try_gradcheck_params(&mut store, &[w], opts, |t, s| t.param(s, w).exp().sum()).unwrap();
/// assert!(r.max_rel_error() < 1e-8);
/// // not a scalar: an error that says so
/// let err = try_gradcheck_params(&mut store, &[w], opts, |t, s| t.param(s, w).exp()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Shape);
/// ```
pub fn try_gradcheck_params<G>(
    store: &mut ParamStore<f64>,
    keys: &[ParamKey],
    opts: GradcheckOptions,
    f: G,
) -> Result<GradcheckReport>
where
    G: for<'t> Fn(&'t Tape<f64>, &ParamStore<f64>) -> Var<'t, f64>,
{
    for &key in keys {
        store.try_get(key)?;
    }
    let mut tape = Tape::new();
    let analytic: Vec<Tensor<f64>> = {
        let grads = scalar_backward(f(&tape, store), "gradcheck_params")?;
        keys.iter()
            .map(|&k| {
                grads
                    .param(k)
                    .cloned()
                    .unwrap_or_else(|| Tensor::zeros(store.get(k).shape()))
            })
            .collect()
    };
    tape.reset();
    let mut reports = Vec::with_capacity(keys.len());
    for (k, (&key, a)) in keys.iter().zip(analytic).enumerate() {
        let n = store.get(key).numel();
        let numeric = central_differences(opts.eps, n, |i, d| {
            let x0 = store.get(key).data()[i];
            store.get_mut(key).data_mut()[i] = x0 + d;
            let y = f(&tape, store).item();
            tape.reset();
            store.get_mut(key).data_mut()[i] = x0;
            y
        });
        let numeric = Tensor::from_vec(numeric, store.get(key).shape()).expect("one per element");
        reports.push(compare(
            k,
            store.name(key).to_string(),
            a,
            numeric,
            opts.floor,
        ));
    }
    Ok(GradcheckReport { inputs: reports })
}

/// Backward from `y`, refusing a non-scalar with a message about what the
/// checked function returned (not about `backward`'s own options).
fn scalar_backward(y: Var<'_, f64>, op: &str) -> Result<crate::Grads<f64>> {
    let shape = y.shape();
    if shape.iter().product::<usize>() != 1 {
        return Err(Error::new(
            ErrorKind::Shape,
            op,
            format!(
                "the function under check returned a var of shape {:?}; it must return a \
                 scalar (one element) — reduce it, e.g. with `.sum()` or `.mean()`",
                shape.as_slice()
            ),
        ));
    }
    y.try_backward()
}

/// `(f(x + ε) − f(x − ε)) / 2ε` for each of `n` elements; `eval(i, d)`
/// moves element i from its value x to x + d, evaluates f, and restores x.
fn central_differences(eps: f64, n: usize, mut eval: impl FnMut(usize, f64) -> f64) -> Vec<f64> {
    (0..n)
        .map(|i| {
            let up = eval(i, eps);
            let down = eval(i, -eps);
            (up - down) / (2.0 * eps)
        })
        .collect()
}

/// The report of one input: worst absolute and relative errors.
fn compare(
    input: usize,
    name: String,
    analytic: Tensor<f64>,
    numeric: Tensor<f64>,
    floor: f64,
) -> InputReport {
    let (mut max_abs, mut max_rel, mut worst) = (0.0f64, 0.0f64, 0);
    for (i, (&g, &n)) in analytic.data().iter().zip(numeric.data()).enumerate() {
        let abs = (g - n).abs();
        let rel = abs / g.abs().max(n.abs()).max(floor);
        if abs > max_abs || abs.is_nan() {
            max_abs = abs;
            worst = i;
        }
        max_rel = nan_max(max_rel, rel);
    }
    InputReport {
        input,
        name,
        max_abs_error: max_abs,
        max_rel_error: max_rel,
        worst_index: worst,
        analytic,
        numeric,
    }
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
