//! Forward mode: Jacobian–vector products of any tape program, by running
//! it on dual numbers.
//!
//! A program `y = f(x, θ)` recorded on a `Tape<Dual<F>>` whose inputs carry
//! tangents `(ẋ, v)` computes, next to every value, its directional
//! derivative: the output's tangent is
//!
//! ```text
//! ẏ = J_x·ẋ + J_θ·v        (the JVP, exact up to rounding)
//! ```
//!
//! in one forward pass, at the cost of the same pass on a number type that
//! is twice as wide (a dual GEMM is three GEMMs, `forward::gemm`). Every op,
//! every layer (`Rnn`, `Lstm`, `Gru`, stacked, bidirectional) and every
//! user cell written from primitives runs unchanged, because they are
//! generic over [`Real`] and [`Dual`] is one. The derivation and the costs
//! are in `docs/second_order.md`.
//!
//! - [`Dual`]: the scalar (value + tangent), its derivative rules.
//! - [`jvp`]: the JVP of a function of tensors; [`jvp_params`]: of a
//!   function of a [`ParamStore`]'s parameters along a [`ParamVec`].
//! - [`lift`], [`dual_tensor`], [`primal_part`], [`tangent_part`]: moving
//!   stores and tensors between `F` and `Dual<F>`, to drive a dual tape by
//!   hand (several outputs, intermediate tangents, a custom loop).
//!
//! Second-order products (a reverse sweep over such a tape) are in
//! [`crate::second_order`].

mod dual;
pub mod gemm;

pub use dual::Dual;

use crate::error::{fail, or_panic, Error};
use crate::{ParamStore, ParamVec, Real, Tape, Tensor, Var};

/// The tensor of duals `primal + tangent·ε`, elementwise.
///
/// # Panics
/// If the two shapes differ.
///
/// ```
/// use tapegrad::forward::{dual_tensor, primal_part, tangent_part};
/// use tapegrad::Tensor;
/// let d = dual_tensor(&Tensor::<f64>::ones(&[2]), &Tensor::zeros(&[2]));
/// assert_eq!(primal_part(&d).data(), &[1.0, 1.0]);
/// assert_eq!(tangent_part(&d).data(), &[0.0, 0.0]);
/// ```
#[track_caller]
pub fn dual_tensor<F: Real>(primal: &Tensor<F>, tangent: &Tensor<F>) -> Tensor<Dual<F>> {
    if primal.shape() != tangent.shape() {
        fail(Error::shape(
            "dual_tensor",
            format!(
                "primal {:?} and tangent {:?} differ",
                primal.shape(),
                tangent.shape()
            ),
        ));
    }
    let data = primal
        .data()
        .iter()
        .zip(tangent.data())
        .map(|(&p, &t)| Dual::new(p, t))
        .collect();
    or_panic(Tensor::from_vec(data, primal.shape()))
}

/// The values of a tensor of duals.
pub fn primal_part<F: Real>(t: &Tensor<Dual<F>>) -> Tensor<F> {
    Tensor::from_fn(t.shape(), |i| t.data()[i].primal)
}

/// The tangents of a tensor of duals.
pub fn tangent_part<F: Real>(t: &Tensor<Dual<F>>) -> Tensor<F> {
    Tensor::from_fn(t.shape(), |i| t.data()[i].tangent)
}

/// `store` on dual numbers under the same keys: parameter θ becomes
/// `θ + v_θ·ε` with `v_θ` its entry of `tangent` (0 if `tangent` is `None`
/// or has no entry for it). Layers built on `store` run on the result as
/// they are (see [`ParamStore::map`]).
///
/// # Panics
/// If an entry of `tangent` is shaped unlike its parameter.
///
/// ```
/// use tapegrad::forward::lift;
/// use tapegrad::{ParamStore, ParamVec, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::scalar(2.0));
/// let v = ParamVec::from_store(&store);              // direction v = θ
/// let dual = lift(&store, Some(&v));
/// assert_eq!(dual.get(w).item().tangent, 2.0);
/// ```
#[track_caller]
pub fn lift<F: Real>(store: &ParamStore<F>, tangent: Option<&ParamVec<F>>) -> ParamStore<Dual<F>> {
    store.map(|k, p| match tangent.and_then(|v| v.get(k)) {
        Some(t) if t.shape() != p.value.shape() => fail(Error::shape(
            "lift",
            format!(
                "tangent {:?} for parameter `{}` of shape {:?}",
                t.shape(),
                p.name,
                p.value.shape()
            ),
        )),
        Some(t) => dual_tensor(&p.value, t),
        None => Tensor::from_fn(p.value.shape(), |i| Dual::constant(p.value.data()[i])),
    })
}

/// An output and its directional derivative.
#[derive(Debug, Clone, PartialEq)]
pub struct Jvp<F: Real> {
    /// f at the point.
    pub value: Tensor<F>,
    /// J·v: the derivative of f along the tangent.
    pub tangent: Tensor<F>,
}

/// The Jacobian–vector product of `f` at `inputs` along `tangents`:
/// `ẏ = Σₖ (∂f/∂xₖ)·ẋₖ`, exact (one forward pass on dual numbers).
///
/// `f` receives a dual tape and one var per input (its value
/// `xₖ + ẋₖε`) and returns any var; the result holds its value and its
/// tangent. Nothing is differentiated in reverse.
///
/// # Panics
/// If `inputs` and `tangents` differ in number or an input and its tangent
/// in shape.
///
/// ```
/// use tapegrad::forward::jvp;
/// use tapegrad::Tensor;
/// // f(x) = tanh(x)·x elementwise: J·ẋ = (1 − tanh²x)·x·ẋ + tanh(x)·ẋ
/// let x = Tensor::from_vec(vec![0.3, -1.2], &[2]).unwrap();
/// let dx = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
/// let out = jvp(&[x], &[dx], |_, v| v[0].tanh() * v[0]);
/// let want = |x: f64, d: f64| ((1.0 - x.tanh().powi(2)) * x + x.tanh()) * d;
/// assert!((out.tangent.data()[0] - want(0.3, 1.0)).abs() < 1e-15);
/// assert!((out.tangent.data()[1] - want(-1.2, 2.0)).abs() < 1e-15);
/// ```
#[track_caller]
pub fn jvp<F, G>(inputs: &[Tensor<F>], tangents: &[Tensor<F>], f: G) -> Jvp<F>
where
    F: Real,
    G: for<'t> Fn(&'t Tape<Dual<F>>, &[Var<'t, Dual<F>>]) -> Var<'t, Dual<F>>,
{
    check_counts("jvp", inputs, tangents);
    let tape = Tape::new();
    let xs: Vec<_> = inputs
        .iter()
        .zip(tangents)
        .map(|(x, dx)| tape.constant(dual_tensor(x, dx)))
        .collect();
    split(&f(&tape, &xs))
}

/// The JVP of a function of `store`'s parameters along `v`: `ẏ = J_θ·v`.
/// `f` receives a dual tape and the store lifted to duals ([`lift`]), and
/// builds its output from them, exactly as it would on `store` — built-in
/// layers and user cells alike. Data it captures enters as constants
/// (tangent 0); give an input a tangent with [`dual_tensor`].
///
/// ```
/// use tapegrad::forward::{jvp_params, Dual};
/// use tapegrad::layers::{Lstm, RecurrentConfig};
/// use tapegrad::{ParamStore, ParamVec, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(3, 4), 0);
/// let x = Tensor::<f64>::randn(&[5, 2, 3], 1).cast::<Dual<f64>>();
/// let v = ParamVec::randn_like(&store, 2);
/// let out = jvp_params(&store, &v, |tape, s| {
///     lstm.forward(tape, s, tape.constant(x.clone()), None).stacked_rows().sum()
/// });
/// // the derivative is linear in v: twice the direction, twice the JVP
/// let mut v2 = v.clone();
/// v2.scale(2.0);
/// let out2 = jvp_params(&store, &v2, |tape, s| {
///     lstm.forward(tape, s, tape.constant(x.clone()), None).stacked_rows().sum()
/// });
/// assert!((out2.tangent.item() - 2.0 * out.tangent.item()).abs() < 1e-12);
/// ```
pub fn jvp_params<F, G>(store: &ParamStore<F>, v: &ParamVec<F>, f: G) -> Jvp<F>
where
    F: Real,
    G: for<'t> Fn(&'t Tape<Dual<F>>, &ParamStore<Dual<F>>) -> Var<'t, Dual<F>>,
{
    let dual = lift(store, Some(v));
    let tape = Tape::new();
    split(&f(&tape, &dual))
}

/// Value and tangent of a dual var.
fn split<F: Real>(y: &Var<'_, Dual<F>>) -> Jvp<F> {
    let value = y.value();
    Jvp {
        value: primal_part(&value),
        tangent: tangent_part(&value),
    }
}

/// Panics unless there is one tangent per input (shapes are checked by
/// [`dual_tensor`]).
#[track_caller]
pub(crate) fn check_counts<F: Real>(op: &str, inputs: &[Tensor<F>], tangents: &[Tensor<F>]) {
    if inputs.len() != tangents.len() {
        fail(Error::shape(
            op,
            format!("{} inputs and {} tangents", inputs.len(), tangents.len()),
        ));
    }
}
