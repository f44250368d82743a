//! Second-order products through time: Hessian–vector products `H·v`
//! (forward over reverse) and Gauss–Newton–vector products `Jᵀ·H_L·J·v`
//! ([`gnvp`], in `gauss_newton.rs`).
//!
//! **Hessian–vector products.** Lift the parameters to `θ + vε` (dual
//! numbers, [`crate::forward`]), record the loss on a `Tape<Dual<F>>` and
//! run the ordinary reverse sweep there. Every backward rule is a smooth
//! function of the recorded values, evaluated on duals, so the sweep
//! returns
//!
//! ```text
//! ∇L(θ + vε) = ∇L(θ) + (∇²L(θ)·v)·ε
//! ```
//!
//! — the gradient in the primal parts and the Hessian–vector product in
//! the tangent parts, exact up to rounding (Pearlmutter 1994, "Fast exact
//! multiplication by the Hessian"). Through an unrolled RNN the sweep is
//! backpropagation through time on duals, so `H·v` is exact for the whole
//! sequence, for the built-in `Rnn`, `Lstm`, `Gru` (stacked, bidirectional)
//! and for any cell written from primitives. Cost: one forward and one
//! backward pass on numbers twice as wide, each dual GEMM three GEMMs of
//! the inner type (`docs/second_order.md` has the count and the measured
//! ratios).
//!
//! Inputs can be differentiated too ([`hvp_with_inputs`]): `v` then has a
//! part for the inputs, and the product is with the Hessian in (θ, x)
//! jointly.
//!
//! [`conjugate_gradient`] (`cg.rs`) solves `(G + λI)·x = −∇L` with these
//! products — the inner loop of Hessian-free training
//! (`examples/hessian_free.rs`).

mod cg;
mod gauss_newton;

pub use cg::{conjugate_gradient, CgOptions, CgSolution};
pub use gauss_newton::{gnvp, gnvp_in, Gnvp, Readout};

use crate::forward::{check_counts, dual_tensor, lift, primal_part, tangent_part, Dual};
use crate::{ParamStore, ParamVec, Real, Tape, Tensor, Var};

/// A Hessian–vector product and what came with it for free.
#[derive(Debug, Clone, PartialEq)]
pub struct Hvp<F: Real> {
    /// L(θ).
    pub loss: F,
    /// ∇_θ L(θ).
    pub grad: ParamVec<F>,
    /// (∇²L(θ)·v)_θ: the parameter block of the Hessian–vector product.
    pub hv: ParamVec<F>,
    /// ∇_x L for each input of [`hvp_with_inputs`] (empty for [`hvp`]).
    pub input_grad: Vec<Tensor<F>>,
    /// (∇²L·v)_x for each input of [`hvp_with_inputs`] (empty for [`hvp`]).
    pub input_hv: Vec<Tensor<F>>,
}

/// `H·v` with `H = ∇²_θ L(θ)` the Hessian of a scalar loss with respect
/// to all parameters of `store`, and the loss and its gradient on the way
/// (forward over reverse: one dual forward pass and one dual reverse
/// sweep).
///
/// `loss` receives a dual tape and `store` lifted to duals, and records
/// the loss exactly as it would on `store` (any layers, any cells, any
/// readout); data it captures enters as constants. A parameter `v` has no
/// entry for moves with tangent 0.
///
/// # Panics
/// If `loss` returns a var with more than one element, or an entry of `v`
/// is shaped unlike its parameter.
///
/// ```
/// use tapegrad::second_order::hvp;
/// use tapegrad::{ParamStore, ParamVec, Tensor};
/// // L(a, b) = a²·b: H = [[2b, 2a], [2a, 0]]
/// let mut store = ParamStore::<f64>::new();
/// let a = store.insert("a", Tensor::scalar(3.0));
/// let b = store.insert("b", Tensor::scalar(5.0));
/// let v = ParamVec::try_from_flat(&store, &[1.0, 10.0])?;
/// let out = hvp(&store, &v, |tape, s| {
///     let (a, b) = (tape.param(s, a), tape.param(s, b));
///     a * a * b
/// });
/// assert_eq!(out.loss, 45.0);
/// assert_eq!(out.grad.to_flat(), vec![30.0, 9.0]);          // (2ab, a²)
/// assert_eq!(out.hv.to_flat(), vec![2.0 * 5.0 + 2.0 * 3.0 * 10.0, 2.0 * 3.0]);
/// # Ok::<(), tapegrad::Error>(())
/// ```
#[track_caller]
pub fn hvp<F, L>(store: &ParamStore<F>, v: &ParamVec<F>, loss: L) -> Hvp<F>
where
    F: Real,
    L: for<'t> Fn(&'t Tape<Dual<F>>, &ParamStore<Dual<F>>) -> Var<'t, Dual<F>>,
{
    hvp_in(&mut Tape::new(), store, v, loss)
}

/// [`hvp`] on a dual tape the caller keeps: the tape is reset when the
/// product is done and its buffers stay in its pool, so a loop of products
/// (conjugate gradients, a training loop) allocates nothing after its first
/// one, as a reused f64 tape does for gradients.
///
/// ```
/// use tapegrad::second_order::hvp_in;
/// use tapegrad::{ParamStore, ParamVec, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
/// let mut tape = Tape::new();
/// for seed in 0..3 {
///     let v = ParamVec::randn_like(&store, seed);
///     let out = hvp_in(&mut tape, &store, &v, |t, s| t.param(s, w).exp().sum());
///     // H = diag(eʷ)
///     let want: Vec<f64> = [1f64, 2.0].iter().zip(v.to_flat()).map(|(w, v)| w.exp() * v).collect();
///     assert_eq!(out.hv.to_flat(), want);
/// }
/// assert!(tape.is_empty());
/// ```
#[track_caller]
pub fn hvp_in<F, L>(
    tape: &mut Tape<Dual<F>>,
    store: &ParamStore<F>,
    v: &ParamVec<F>,
    loss: L,
) -> Hvp<F>
where
    F: Real,
    L: for<'t> Fn(&'t Tape<Dual<F>>, &ParamStore<Dual<F>>) -> Var<'t, Dual<F>>,
{
    let (out, grads) = run_hvp(tape, store, v, &[], &[], |t, s, _| loss(t, s));
    tape.reset_with(grads);
    out
}

/// [`hvp`] with respect to the parameters *and* the tensors `inputs`:
/// the product of the joint Hessian `∇²_{(θ,x)} L` with the direction
/// `(v, input_v)`. `loss` receives one var per input (each requiring its
/// gradient); the result's `input_grad` and `input_hv` hold the input
/// blocks. With an empty store it is the HVP of any function of tensors.
///
/// # Panics
/// As [`hvp`]; also if `inputs` and `input_v` differ in number or shape.
///
/// ```
/// use tapegrad::forward::Dual;
/// use tapegrad::second_order::hvp_with_inputs;
/// use tapegrad::{ParamStore, ParamVec, Tensor};
/// // L(x) = Σ xᵢ³: H = diag(6x)
/// let store = ParamStore::<f64>::new();
/// let x = Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap();
/// let v = Tensor::from_vec(vec![1.0, 1.0], &[2]).unwrap();
/// let out = hvp_with_inputs(&store, &ParamVec::zeros_like(&store), &[x], &[v],
///     |_, _, xs| xs[0].powf(Dual::constant(3.0)).sum());
/// assert_eq!(out.input_grad[0].data(), &[3.0, 12.0]);
/// assert_eq!(out.input_hv[0].data(), &[6.0, -12.0]);
/// ```
#[track_caller]
pub fn hvp_with_inputs<F, L>(
    store: &ParamStore<F>,
    v: &ParamVec<F>,
    inputs: &[Tensor<F>],
    input_v: &[Tensor<F>],
    loss: L,
) -> Hvp<F>
where
    F: Real,
    L: for<'t> Fn(&'t Tape<Dual<F>>, &ParamStore<Dual<F>>, &[Var<'t, Dual<F>>]) -> Var<'t, Dual<F>>,
{
    run_hvp(&Tape::new(), store, v, inputs, input_v, loss).0
}

/// The product on `tape`, and the dual gradients (for the caller to hand
/// back to the tape's pool).
#[track_caller]
fn run_hvp<F, L>(
    tape: &Tape<Dual<F>>,
    store: &ParamStore<F>,
    v: &ParamVec<F>,
    inputs: &[Tensor<F>],
    input_v: &[Tensor<F>],
    loss: L,
) -> (Hvp<F>, crate::Grads<Dual<F>>)
where
    F: Real,
    L: for<'t> Fn(&'t Tape<Dual<F>>, &ParamStore<Dual<F>>, &[Var<'t, Dual<F>>]) -> Var<'t, Dual<F>>,
{
    check_counts("hvp", inputs, input_v);
    let dual = lift(store, Some(v));
    let xs: Vec<_> = inputs
        .iter()
        .zip(input_v)
        .map(|(x, dx)| tape.var(dual_tensor(x, dx)))
        .collect();
    let l = loss(tape, &dual, &xs);
    let grads = l.backward();
    let value = l.item().primal;
    let (grad, hv) = parts_of_params(store, &dual, &grads);
    let (input_grad, input_hv) = xs
        .iter()
        .map(|&x| {
            let g = grads.wrt(x);
            (primal_part(g), tangent_part(g))
        })
        .unzip();
    let out = Hvp {
        loss: value,
        grad,
        hv,
        input_grad,
        input_hv,
    };
    (out, grads)
}

/// The primal and tangent parts of the parameter gradients of a dual
/// sweep, shaped like `store` (zeros for a parameter the loss never bound).
pub(crate) fn parts_of_params<F: Real>(
    store: &ParamStore<F>,
    dual: &ParamStore<Dual<F>>,
    grads: &crate::Grads<Dual<F>>,
) -> (ParamVec<F>, ParamVec<F>) {
    let g = ParamVec::from_grads(dual, grads);
    let primal = g.map(|_, t| primal_part(t));
    let tangent = g.map(|_, t| tangent_part(t));
    debug_assert_eq!(primal.numel(), store.num_elements());
    (primal, tangent)
}
