//! Conjugate gradients on [`ParamVec`]s with a matrix given only by its
//! products — the inner solver of Hessian-free optimisation (Martens
//! 2010), which minimises the quadratic model
//!
//! ```text
//! φ(x) = ½ xᵀAx − bᵀx,     A = G + λI (Gauss–Newton plus damping), b = −∇L
//! ```
//!
//! by solving `A·x = b` with one product `A·p` per iteration and no matrix.
//! Besides the usual residual test it has Martens' progress test (§4.4 of
//! the paper): stop at iteration i once `i ≥ min_iters` and, with
//! `k = max(10, i/10)`, `φ(xᵢ) < 0` and `(φ(xᵢ) − φ(xᵢ₋ₖ))/φ(xᵢ) < k·ε` —
//! the quadratic has stopped improving, which matters far more for the
//! outer optimisation than a small residual. It stops too on a direction
//! of non-positive curvature (A not positive definite).

use crate::{ParamVec, Real};

/// When [`conjugate_gradient`] stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CgOptions {
    /// At most this many products with A.
    pub max_iters: usize,
    /// Never stop on the progress test before this many iterations.
    pub min_iters: usize,
    /// Stop when ‖b − Ax‖ ≤ `residual_tol`·‖b‖.
    pub residual_tol: f64,
    /// Martens' ε of the progress test (5e-4 in the paper; 0 turns it off).
    pub progress_tol: f64,
}

impl Default for CgOptions {
    fn default() -> Self {
        CgOptions {
            max_iters: 250,
            min_iters: 10,
            residual_tol: 1e-10,
            progress_tol: 5e-4,
        }
    }
}

/// What [`conjugate_gradient`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct CgSolution<F: Real> {
    /// The last iterate.
    pub x: ParamVec<F>,
    /// `A·x` (tracked through the residual, no extra product).
    pub ax: ParamVec<F>,
    /// φ(x) = ½xᵀAx − bᵀx.
    pub objective: F,
    /// Products with A made.
    pub iterations: usize,
    /// ‖b − Ax‖ / ‖b‖.
    pub relative_residual: F,
}

/// Solves `A·x = b` (minimises ½xᵀAx − bᵀx) by conjugate gradients from
/// `x0`, with `apply(p) = A·p`; A must be symmetric positive definite.
/// `x0` is usually the previous solution, decayed (Martens' warm start).
///
/// ```
/// use tapegrad::second_order::{conjugate_gradient, CgOptions};
/// use tapegrad::{ParamStore, ParamVec, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// store.insert("x", Tensor::zeros(&[2]));
/// // A = [[4, 1], [1, 3]], b = (1, 2): x = (1/11, 7/11)
/// let apply = |p: &ParamVec<f64>| {
///     let v = p.to_flat();
///     ParamVec::try_from_flat(&store, &[4.0 * v[0] + v[1], v[0] + 3.0 * v[1]]).unwrap()
/// };
/// let b = ParamVec::try_from_flat(&store, &[1.0, 2.0])?;
/// let sol = conjugate_gradient(&b, ParamVec::zeros_like(&store), apply, &CgOptions::default());
/// let x = sol.x.to_flat();
/// assert!((x[0] - 1.0 / 11.0).abs() < 1e-12 && (x[1] - 7.0 / 11.0).abs() < 1e-12);
/// assert!(sol.iterations <= 2);
/// # Ok::<(), tapegrad::Error>(())
/// ```
pub fn conjugate_gradient<F: Real>(
    b: &ParamVec<F>,
    x0: ParamVec<F>,
    mut apply: impl FnMut(&ParamVec<F>) -> ParamVec<F>,
    opts: &CgOptions,
) -> CgSolution<F> {
    let half = F::of(0.5);
    let mut x = x0;
    // r = b − A·x0
    let mut r = b.clone();
    let mut iterations = 0;
    if x.norm() > F::zero() {
        r.axpy(-F::one(), &apply(&x));
        iterations += 1;
    }
    let b_norm = b.norm().max(F::min_positive_value());
    let objective = |x: &ParamVec<F>, r: &ParamVec<F>| {
        // φ = ½xᵀ(b − r) − bᵀx = −½xᵀ(b + r)
        -half * (x.dot(b) + x.dot(r))
    };
    let mut history = vec![objective(&x, &r)];
    let mut p = r.clone();
    let mut rr = r.dot(&r);
    let mut i = 0;
    while iterations < opts.max_iters {
        if rr.sqrt() / b_norm <= F::of(opts.residual_tol) {
            break;
        }
        let ap = apply(&p);
        iterations += 1;
        i += 1;
        let curvature = p.dot(&ap);
        if curvature <= F::zero() {
            break;
        }
        let alpha = rr / curvature;
        x.axpy(alpha, &p);
        r.axpy(-alpha, &ap);
        let rr_new = r.dot(&r);
        let phi = objective(&x, &r);
        history.push(phi);
        let k = (i / 10).max(10);
        if opts.progress_tol > 0.0 && i >= opts.min_iters.max(k) && phi < F::zero() {
            let gain = (phi - history[i - k]) / phi;
            if gain < F::of(k as f64 * opts.progress_tol) {
                break;
            }
        }
        let beta = rr_new / rr;
        rr = rr_new;
        let mut next = r.clone();
        next.axpy(beta, &p);
        p = next;
    }
    let mut ax = b.clone();
    ax.axpy(-F::one(), &r);
    CgSolution {
        objective: *history.last().expect("history starts with x0"),
        relative_residual: r.norm() / b_norm,
        x,
        ax,
        iterations,
    }
}
