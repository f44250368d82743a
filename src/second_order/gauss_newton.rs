//! Gauss–Newton–vector products `G·v = Jᵀ·H_L·J·v` for a loss that is a
//! convex readout `ℓ(z)` of a model's outputs `z = f(θ)` (Schraudolph
//! 2002, "Fast curvature matrix-vector products for second-order gradient
//! descent"; the curvature of Hessian-free training, Martens 2010).
//!
//! `J = ∂z/∂θ` is the model's Jacobian and `H_L = ∂²ℓ/∂z²` the readout's
//! Hessian, which is positive semi-definite for the two readouts here, so
//! `G` is too (vᵀGv = (Jv)ᵀH_L(Jv) ≥ 0), unlike the full Hessian of a
//! non-convex model. Three steps, none of which forms a matrix:
//!
//! 1. `J·v`: one forward pass on duals with parameters `θ + vε`
//!    ([`crate::forward`]); the outputs' tangents are `J·v`.
//! 2. `u = H_L·(J·v)` in closed form, per row of z:
//!    - softmax cross-entropy, `ℓ = Σᵢ logsumexp(zᵢ) − zᵢ[tᵢ]`, p = softmax(zᵢ):
//!      `H_L·w = p ⊙ w − p·⟨p, w⟩` (i.e. diag(p) − ppᵀ), divided by N for
//!      the mean over N rows;
//!    - squared error, `ℓ = Σ (z − y)²` (tapegrad's `mse`): `H_L·w = 2w`,
//!      divided by the number of elements for the mean.
//! 3. `Jᵀ·u`: the reverse sweep of the same tape seeded with `u` (tangent
//!    0); its primal parts are `Jᵀu`.
//!
//! Cost: the same dual forward and dual reverse sweep as an HVP (the
//! tangents of step 3 are computed and dropped: the closure builds one
//! tape type, so the sweep runs on duals; see `docs/second_order.md`).

use super::parts_of_params;
use crate::error::{fail, or_panic, Error, ErrorKind};
use crate::forward::{dual_tensor, lift, primal_part, tangent_part, Dual};
use crate::{ParamStore, ParamVec, Real, Reduction, Tape, Tensor, Var};

/// A convex readout `ℓ(z)` of model outputs z whose Hessian `H_L` has a
/// closed form.
///
/// ```
/// use tapegrad::second_order::Readout;
/// use tapegrad::{Reduction, Tensor};
/// let r: Readout<'_, f64> = Readout::SoftmaxCrossEntropy { targets: &[0], reduction: Reduction::Sum };
/// let z = Tensor::from_vec(vec![0.0, 0.0], &[1, 2]).unwrap();
/// let hw = r.hessian_times(&z, &Tensor::from_vec(vec![1.0, 0.0], &[1, 2]).unwrap());
/// assert_eq!(hw.data(), &[0.25, -0.25]);          // (diag(p) − ppᵀ)·e₀, p = (½, ½)
/// assert!((r.value(&z) - 2f64.ln()).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Readout<'a, F: Real> {
    /// `Var::cross_entropy(targets, reduction)` of logits `[N×C]` (or `[C]`).
    SoftmaxCrossEntropy {
        /// One class per row.
        targets: &'a [usize],
        /// `Sum` or `Mean` (a Gauss–Newton product needs a scalar loss).
        reduction: Reduction,
    },
    /// `Var::mse(target, reduction)`: `Σ (z − y)²` or its mean.
    SquaredError {
        /// y, shaped like z.
        target: &'a Tensor<F>,
        /// `Sum` or `Mean`.
        reduction: Reduction,
    },
}

impl<F: Real> Readout<'_, F> {
    fn reduction(&self) -> Reduction {
        match *self {
            Readout::SoftmaxCrossEntropy { reduction, .. }
            | Readout::SquaredError { reduction, .. } => reduction,
        }
    }

    /// Records `ℓ(z)` on z's tape (any element type, so the same readout
    /// serves an f64 training step and a dual curvature product).
    ///
    /// # Panics
    /// As `cross_entropy` and `mse` do on mismatched shapes.
    #[track_caller]
    pub fn loss<'t, R: Real>(&self, z: Var<'t, R>) -> Var<'t, R> {
        match *self {
            Readout::SoftmaxCrossEntropy { targets, reduction } => {
                z.cross_entropy(targets, reduction)
            }
            Readout::SquaredError { target, reduction } => {
                z.mse(z.tape().constant(target.cast::<R>()), reduction)
            }
        }
    }

    /// `ℓ(z)` for a tensor of outputs.
    #[track_caller]
    pub fn value(&self, z: &Tensor<F>) -> F {
        let tape = Tape::new();
        self.loss(tape.constant(z.clone())).item()
    }

    /// `H_L·w`, the readout's Hessian at `z` times `w` (same shape as z),
    /// in closed form (see the module docs).
    ///
    /// # Panics
    /// If `w` is shaped unlike `z`, the reduction is `None`, or the targets
    /// do not fit z.
    #[track_caller]
    pub fn hessian_times(&self, z: &Tensor<F>, w: &Tensor<F>) -> Tensor<F> {
        self.check(z);
        if w.shape() != z.shape() {
            fail(Error::shape(
                "gnvp",
                format!("direction {:?} for outputs {:?}", w.shape(), z.shape()),
            ));
        }
        let mean = self.reduction() == Reduction::Mean;
        match *self {
            Readout::SoftmaxCrossEntropy { targets, .. } => {
                let cols = z.shape().last().copied().unwrap_or(1).max(1);
                let s = if mean {
                    F::one() / F::of(targets.len() as f64)
                } else {
                    F::one()
                };
                let mut out = Vec::with_capacity(z.numel());
                for (zr, wr) in z.data().chunks_exact(cols).zip(w.data().chunks_exact(cols)) {
                    let m = zr.iter().copied().fold(F::neg_infinity(), F::max);
                    let e: Vec<F> = zr.iter().map(|&x| (x - m).exp()).collect();
                    let total: F = e.iter().copied().sum();
                    let p: Vec<F> = e.iter().map(|&x| x / total).collect();
                    let pw: F = p.iter().zip(wr).map(|(&a, &b)| a * b).sum();
                    out.extend(p.iter().zip(wr).map(|(&pi, &wi)| s * pi * (wi - pw)));
                }
                or_panic(Tensor::from_vec(out, z.shape()))
            }
            Readout::SquaredError { .. } => {
                let two = F::of(2.0);
                let s = if mean {
                    two / F::of(z.numel() as f64)
                } else {
                    two
                };
                Tensor::from_fn(z.shape(), |i| s * w.data()[i])
            }
        }
    }

    /// Panics unless the readout fits outputs `z` and reduces to a scalar.
    #[track_caller]
    fn check(&self, z: &Tensor<F>) {
        let shape_err = |msg: String| fail(Error::new(ErrorKind::Shape, "gnvp", msg));
        if self.reduction() == Reduction::None {
            fail(Error::new(
                ErrorKind::InvalidArgument,
                "gnvp",
                "a Gauss–Newton product needs a scalar loss: Reduction::Sum or Reduction::Mean",
            ));
        }
        match *self {
            Readout::SoftmaxCrossEntropy { targets, .. } => {
                let cols = z.shape().last().copied().unwrap_or(0);
                let rows = z.numel() / cols.max(1);
                if z.rank() == 0 || z.rank() > 2 || rows != targets.len() {
                    shape_err(format!(
                        "logits {:?} need [N×C] (or [C]) with one target per row, got {} targets",
                        z.shape(),
                        targets.len()
                    ));
                }
                if let Some(bad) = targets.iter().find(|&&t| t >= cols) {
                    shape_err(format!(
                        "target class {bad} out of range for logits {:?}",
                        z.shape()
                    ));
                }
            }
            Readout::SquaredError { target, .. } => {
                if target.shape() != z.shape() {
                    shape_err(format!(
                        "target {:?} for outputs {:?}",
                        target.shape(),
                        z.shape()
                    ));
                }
            }
        }
    }
}

/// A Gauss–Newton–vector product and the loss at the point.
#[derive(Debug, Clone, PartialEq)]
pub struct Gnvp<F: Real> {
    /// ℓ(f(θ)).
    pub loss: F,
    /// `Jᵀ·H_L·J·v`, shaped like the parameters.
    pub gv: ParamVec<F>,
    /// `J·v`: the outputs' directional derivative (step 1).
    pub jv: Tensor<F>,
}

/// `G·v = Jᵀ·H_L·J·v`: the Gauss–Newton matrix of `readout ∘ model` at
/// `store`'s parameters, times `v` (Schraudolph 2002).
///
/// `model` receives a dual tape and the lifted store and returns the
/// outputs z the readout scores (logits for cross-entropy, predictions for
/// squared error) — *not* the loss. G is positive semi-definite: `vᵀGv ≥ 0`.
///
/// # Panics
/// If the readout's reduction is `None`, its targets do not fit z, or an
/// entry of `v` is shaped unlike its parameter.
///
/// ```
/// use tapegrad::forward::Dual;
/// use tapegrad::second_order::{gnvp, Readout};
/// use tapegrad::{ParamStore, ParamVec, Reduction, Tensor};
/// // z = w·x (one weight), ℓ = (z − y)²: G = 2x², v = 1 → G·v = 2x²
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::scalar(0.5));
/// let y = Tensor::scalar(1.0);
/// let readout = Readout::SquaredError { target: &y, reduction: Reduction::Sum };
/// let v = ParamVec::try_from_flat(&store, &[1.0])?;
/// let out = gnvp(&store, &v, &readout, |tape, s| tape.param(s, w).mul_scalar(Dual::constant(3.0)));
/// assert_eq!(out.gv.to_flat(), vec![18.0]);
/// assert_eq!(out.loss, 0.25);                      // (1.5 − 1)²
/// # Ok::<(), tapegrad::Error>(())
/// ```
#[track_caller]
pub fn gnvp<F, M>(
    store: &ParamStore<F>,
    v: &ParamVec<F>,
    readout: &Readout<'_, F>,
    model: M,
) -> Gnvp<F>
where
    F: Real,
    M: for<'t> Fn(&'t Tape<Dual<F>>, &ParamStore<Dual<F>>) -> Var<'t, Dual<F>>,
{
    gnvp_in(&mut Tape::new(), store, v, readout, model)
}

/// [`gnvp`] on a dual tape the caller keeps (reset when done, its buffers
/// pooled): the form for the inner loop of conjugate gradients, where the
/// same shapes are recorded once per product.
///
/// ```
/// use tapegrad::second_order::{gnvp, gnvp_in, Readout};
/// use tapegrad::{ParamStore, ParamVec, Reduction, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let w = store.insert("w", Tensor::randn(&[3, 2], 1));
/// let targets = [0, 2];
/// let readout = Readout::SoftmaxCrossEntropy { targets: &targets, reduction: Reduction::Sum };
/// let x = Tensor::<f64>::randn(&[2, 2], 2);
/// let v = ParamVec::randn_like(&store, 3);
/// let mut tape = Tape::new();
/// let a = gnvp_in(&mut tape, &store, &v, &readout, |t, s| t.constant(x.cast()).matmul_t(t.param(s, w)));
/// let b = gnvp(&store, &v, &readout, |t, s| t.constant(x.cast()).matmul_t(t.param(s, w)));
/// assert_eq!(a, b);
/// ```
#[track_caller]
pub fn gnvp_in<F, M>(
    tape: &mut Tape<Dual<F>>,
    store: &ParamStore<F>,
    v: &ParamVec<F>,
    readout: &Readout<'_, F>,
    model: M,
) -> Gnvp<F>
where
    F: Real,
    M: for<'t> Fn(&'t Tape<Dual<F>>, &ParamStore<Dual<F>>) -> Var<'t, Dual<F>>,
{
    let (out, grads) = {
        let tape = &*tape;
        let dual = lift(store, Some(v));
        let z = model(tape, &dual);
        let (zp, jv) = {
            let value = z.value();
            (primal_part(&value), tangent_part(&value))
        };
        let u = readout.hessian_times(&zp, &jv);
        let grads = z.backward_with(dual_tensor(&u, &Tensor::zeros(u.shape())));
        let (gv, _) = parts_of_params(store, &dual, &grads);
        let out = Gnvp {
            loss: readout.value(&zp),
            gv,
            jv,
        };
        (out, grads)
    };
    tape.reset_with(grads);
    out
}
