//! Every primitive's backward rule against an independent judge, through the
//! public API only.
//!
//! Each property draws a random case — shapes (rank 0..4 where the op allows,
//! dimensions 1..5), values, op parameters — reduces the op's output `y` to a
//! scalar with a fixed random weighting, `L = Σ (y − y₀) ⊙ R` (R uniform in
//! [−1, 1), y₀ the output at the checked point, both constants; see
//! [`Case::loss`] for why y₀), so that every output element's gradient
//! matters, and checks the tape's gradient of L with respect to *every*
//! input.
//!
//! Tolerances (relative error `|a − b| / max(|a|, |b|, 1e-3)`, the floor being
//! gradcheck's default):
//!
//! - **f64: ≤ 1e-6** against central finite differences in f64
//!   ([`tapegrad::gradcheck::gradcheck_with`]). The step ε suits the op
//!   ([`OpSpec::fd_step`]): 1e-2 where L is linear or quadratic in each input
//!   element (central differences are then exact, and rounding noise falls
//!   as 1/ε), 1e-4 for relu/abs/clamp (one linear piece within ±ε, since
//!   inputs keep 1e-3 from kinks), 1e-5 for smooth transcendental ops (the
//!   balance of truncation and rounding error). With gradcheck's default
//!   ε = 1e-6 everywhere, rounding noise alone — u·|y|/ε, up to 1e-8
//!   absolute — exceeded 1e-6 relative on elements whose gradient is small
//!   beside the output (mse of 625 elements, matmul with cancelling terms):
//!   the judge failing, not the tape.
//! - **f32: ≤ 1e-3** against the f64 tape gradient at the same point. Every
//!   input, weight and op parameter is drawn f32-representable, so both
//!   element types differentiate exactly the same function.
//!
//! Each property is written once, generic in the element type, and run for
//! both (`<op>::f64`, `<op>::f32`). Inputs stay away from non-differentiable
//! points: values within 1e-3 of a relu/abs/clamp kink are rejected, log,
//! sqrt and powf see positive inputs, denominators satisfy |b| ≥ 0.5. The
//! worst error of each property is printed at its end (`--nocapture`).
//!
//! 256 cases per property; `PROPTEST_CASES` overrides it.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use std::cell::Cell;
use std::ops::RangeInclusive;
use tapegrad::gradcheck::{gradcheck, gradcheck_with, GradcheckOptions, GradcheckReport};
use tapegrad::{Real, Reduction, Tape, Tensor, Var};

/// Relative error allowed against finite differences, f64.
const TOL_F64: f64 = 1e-6;
/// Relative error allowed against the f64 tape gradient, f32.
const TOL_F32: f64 = 1e-3;
/// The denominator floor of the relative error (gradcheck's default).
const FLOOR: f64 = 1e-3;
/// Inputs closer than this to a kink (relu, abs, clamp) are rejected.
const KINK: f64 = 1e-3;
/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 256;

// ----- what is differentiated -------------------------------------------------

/// One primitive with its non-tensor arguments.
#[derive(Debug, Clone)]
enum OpSpec {
    Add,
    Sub,
    Mul,
    Div,
    Neg,
    AddScalar(f64),
    MulScalar(f64),
    RsubScalar(f64),
    Matmul,
    MatmulT,
    TMatmul,
    Addmm,
    AddmmT,
    /// tanh (false) or σ (true) of columns `start..start+len`.
    ActCols(bool, usize, usize),
    /// Rows `start..start+m` of c [R×n] plus a·b (or a·bᵀ when true).
    AddmmRows(usize, bool),
    MatmulBatched,
    Transpose,
    Tanh,
    Sigmoid,
    Relu,
    Exp,
    Log,
    Sqrt,
    Powf(f64),
    Abs,
    Clamp(f64, f64),
    Sum,
    Mean,
    SumAxis(usize),
    MeanAxis(usize),
    Reshape(Vec<usize>),
    Concat(usize),
    Stack(usize),
    Slice {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// Split, then `Σ_i (i + 1)·part_i`, so every part reaches L with its
    /// own weight.
    Split {
        axis: usize,
        parts: usize,
    },
    Gather(Vec<usize>),
    Softmax,
    LogSoftmax,
    CrossEntropy(Vec<usize>, Reduction),
    Mse(Reduction),
    Dropout(f64, u64),
    Select(Vec<bool>),
    /// Layer norm over the last axis with this ε.
    LayerNorm(f64),
    /// Layer norm with gain and bias (inputs x, γ, β).
    LayerNormAffine(f64),
}

impl OpSpec {
    /// The finite-difference step for this op (see the module docs).
    fn fd_step(&self) -> f64 {
        match self {
            // Piecewise linear, inputs ≥ KINK from every kink: x ± ε stays
            // on one linear piece, so central differences are exact.
            OpSpec::Relu | OpSpec::Abs | OpSpec::Clamp(..) => 1e-4,
            // Smooth but not polynomial: truncation ≈ ε²·|f‴|/6 balanced
            // against rounding ≈ u·|y|/ε.
            OpSpec::Div
            | OpSpec::Tanh
            | OpSpec::Sigmoid
            | OpSpec::ActCols(..)
            | OpSpec::Exp
            | OpSpec::Log
            | OpSpec::Sqrt
            | OpSpec::Powf(_)
            | OpSpec::Softmax
            | OpSpec::LogSoftmax
            | OpSpec::CrossEntropy(..)
            | OpSpec::LayerNorm(_)
            | OpSpec::LayerNormAffine(_) => 1e-5,
            // Linear (quadratic for mse) in each input element: central
            // differences are exact at any step, and a large one divides
            // the rounding noise away.
            _ => 1e-2,
        }
    }

    /// Records the op on the tape of `x`, in any element type.
    fn apply<'t, F: Real>(&self, x: &[Var<'t, F>]) -> Var<'t, F> {
        let c = |v: f64| F::of(v);
        match self {
            OpSpec::Add => x[0] + x[1],
            OpSpec::Sub => x[0] - x[1],
            OpSpec::Mul => x[0] * x[1],
            OpSpec::Div => x[0] / x[1],
            OpSpec::Neg => -x[0],
            OpSpec::AddScalar(k) => x[0].add_scalar(c(*k)),
            OpSpec::MulScalar(k) => x[0].mul_scalar(c(*k)),
            OpSpec::RsubScalar(k) => x[0].rsub_scalar(c(*k)),
            OpSpec::Matmul => x[0].matmul(x[1]),
            OpSpec::MatmulT => x[0].matmul_t(x[1]),
            OpSpec::TMatmul => x[0].t_matmul(x[1]),
            OpSpec::Addmm => x[2].addmm(x[0], x[1]),
            OpSpec::AddmmT => x[2].addmm_t(x[0], x[1]),
            OpSpec::ActCols(false, s, l) => x[0].tanh_cols(*s, *l),
            OpSpec::ActCols(true, s, l) => x[0].sigmoid_cols(*s, *l),
            OpSpec::AddmmRows(start, false) => x[2].addmm_rows(*start, x[0], x[1]),
            OpSpec::AddmmRows(start, true) => x[2].addmm_rows_t(*start, x[0], x[1]),
            OpSpec::MatmulBatched => x[0].matmul_t(x[1]),
            OpSpec::Transpose => x[0].transpose(),
            OpSpec::Tanh => x[0].tanh(),
            OpSpec::Sigmoid => x[0].sigmoid(),
            OpSpec::Relu => x[0].relu(),
            OpSpec::Exp => x[0].exp(),
            OpSpec::Log => x[0].log(),
            OpSpec::Sqrt => x[0].sqrt(),
            OpSpec::Powf(p) => x[0].powf(c(*p)),
            OpSpec::Abs => x[0].abs(),
            OpSpec::Clamp(lo, hi) => x[0].clamp(c(*lo), c(*hi)),
            OpSpec::Sum => x[0].sum(),
            OpSpec::Mean => x[0].mean(),
            OpSpec::SumAxis(a) => x[0].sum_axis(*a),
            OpSpec::MeanAxis(a) => x[0].mean_axis(*a),
            OpSpec::Reshape(s) => x[0].reshape(s),
            OpSpec::Concat(axis) => Var::concat(x, *axis),
            OpSpec::Stack(axis) => Var::stack(x, *axis),
            OpSpec::Slice { axis, start, len } => x[0].slice(*axis, *start, *len),
            OpSpec::Split { axis, parts } => x[0]
                .split(*axis, *parts)
                .into_iter()
                .enumerate()
                .map(|(i, p)| p.mul_scalar(c((i + 1) as f64)))
                .reduce(|a, b| a + b)
                .expect("at least one part"),
            OpSpec::Gather(idx) => x[0].gather(idx),
            OpSpec::Softmax => x[0].softmax(),
            OpSpec::LogSoftmax => x[0].log_softmax(),
            OpSpec::CrossEntropy(t, r) => x[0].cross_entropy(t, *r),
            OpSpec::Mse(r) => x[0].mse(x[1], *r),
            OpSpec::Dropout(p, seed) => x[0].dropout(*p, *seed),
            OpSpec::Select(cond) => Var::select(cond, x[0], x[1]),
            OpSpec::LayerNorm(eps) => x[0].layer_norm(*eps),
            OpSpec::LayerNormAffine(eps) => x[0].layer_norm_affine(x[1], x[2], *eps),
        }
    }
}

/// An op, its inputs (all f32-representable), the weighting R and the
/// op's f64 output y₀ at the inputs.
#[derive(Debug, Clone)]
struct Case {
    op: OpSpec,
    inputs: Vec<Tensor<f64>>,
    weights: Tensor<f64>,
    center: Tensor<f64>,
}

impl Case {
    fn new(op: OpSpec, inputs: Vec<Tensor<f64>>, seed: u64) -> Case {
        let tape = Tape::<f64>::new();
        let x: Vec<_> = inputs.iter().map(|t| tape.constant(t.clone())).collect();
        let center = op.apply(&x).to_tensor();
        let weights = to_f32_grid(Tensor::uniform(center.shape(), -1.0, 1.0, seed).unwrap());
        Case {
            op,
            inputs,
            weights,
            center,
        }
    }

    /// L = Σ (op(x) − y₀) ⊙ R: the gradient of Σ op(x) ⊙ R. Subtracting the
    /// constant y₀ changes nothing for the tape, but it keeps the finite
    /// differences clean: at x ± εeᵢ only the outputs that depend on xᵢ
    /// are non-zero, so the weighted sum no longer adds the rounding noise
    /// of up to 625 O(1) terms (≈ 1e-9 absolute at ε = 1e-6, which alone
    /// reached relative errors of 1e-6…6e-6 on exactly linear ops such as
    /// neg, and on elements whose gradient is near the 1e-3 floor).
    fn loss<'t, F: Real>(&self, tape: &'t Tape<F>, x: &[Var<'t, F>]) -> Var<'t, F> {
        let y = self.op.apply(x) - tape.constant(self.center.cast());
        (y * tape.constant(self.weights.cast())).sum()
    }
}

/// The tape's gradients of L with respect to every input, in `F`.
fn tape_grads<F: Real>(case: &Case) -> Vec<Tensor<f64>> {
    let tape = Tape::<F>::new();
    let x: Vec<_> = case.inputs.iter().map(|t| tape.var(t.cast())).collect();
    let grads = case.loss(&tape, &x).backward();
    x.iter().map(|&v| grads.wrt(v).cast()).collect()
}

/// max over elements of |a − b| / max(|a|, |b|, FLOOR); NaN if any is NaN.
fn max_rel_error(a: &Tensor<f64>, b: &Tensor<f64>) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(&x, &y)| (x - y).abs() / x.abs().max(y.abs()).max(FLOOR))
        .fold(0.0, nan_max)
}

/// The worst relative error of a gradcheck report, recomputed from its
/// gradients as well, so that a NaN or ∞ anywhere fails the check.
fn judge(report: &GradcheckReport) -> f64 {
    report
        .inputs
        .iter()
        .map(|r| max_rel_error(&r.analytic, &r.numeric))
        .fold(report.max_rel_error(), nan_max)
}

/// `f64::max` that keeps NaN.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// The element types under test, each with its judge and tolerance.
trait Precision: Real {
    const TOL: f64;
    /// The worst relative error of the tape gradient of `case`.
    fn max_error(case: &Case) -> f64;
}

impl Precision for f64 {
    const TOL: f64 = TOL_F64;
    fn max_error(case: &Case) -> f64 {
        let opts = GradcheckOptions {
            eps: case.op.fd_step(),
            ..GradcheckOptions::default()
        };
        judge(&gradcheck_with(&case.inputs, opts, |tape, x| {
            case.loss(tape, x)
        }))
    }
}

impl Precision for f32 {
    const TOL: f64 = TOL_F32;
    fn max_error(case: &Case) -> f64 {
        let lo = tape_grads::<f32>(case);
        let hi = tape_grads::<f64>(case);
        lo.iter()
            .zip(&hi)
            .map(|(a, b)| max_rel_error(a, b))
            .fold(0.0, nan_max)
    }
}

/// Runs one property for element type `F` and reports its worst error.
fn property<F: Precision>(name: &str, cases: u32, strategy: BoxedStrategy<Case>) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    });
    let worst = Cell::new(0.0f64);
    let result = runner.run(&strategy, |case| {
        let err = F::max_error(&case);
        prop_assert!(
            err <= F::TOL,
            "{name} ({}): relative error {err:e} exceeds {:e}",
            F::NAME,
            F::TOL
        );
        worst.set(worst.get().max(err));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name} ({}): {e}", F::NAME);
    }
    eprintln!(
        "worst relative error {:<22} {}: {:.2e} (tolerance {:.0e}, {cases} cases)",
        name,
        F::NAME,
        worst.get(),
        F::TOL
    );
}

/// One test per element type for a property written once.
macro_rules! properties {
    ($($name:ident => $strategy:expr;)*) => {$(
        mod $name {
            use super::*;
            #[test]
            fn f64() {
                property::<f64>(stringify!($name), CASES, $strategy);
            }
            #[test]
            fn f32() {
                property::<f32>(stringify!($name), CASES, $strategy);
            }
        }
    )*};
}

// ----- value and shape strategies ---------------------------------------------

/// Rounds to the nearest f32, so the point is the same in both element types.
fn r32(x: f64) -> f64 {
    x as f32 as f64
}

fn to_f32_grid(t: Tensor<f64>) -> Tensor<f64> {
    t.cast::<f32>().cast()
}

/// Uniform in [lo, hi), f32-representable.
fn uniform(lo: f64, hi: f64) -> BoxedStrategy<f64> {
    (lo..hi).prop_map(r32).boxed()
}

/// Uniform in [lo, hi), at least `KINK` away from every point of `kinks`.
fn away_from(lo: f64, hi: f64, kinks: Vec<f64>) -> BoxedStrategy<f64> {
    uniform(lo, hi)
        .prop_filter("too close to a kink", move |x| {
            kinks.iter().all(|k| (x - k).abs() >= KINK)
        })
        .boxed()
}

/// A denominator: 0.5 ≤ |b| < 2, either sign.
fn denominator() -> BoxedStrategy<f64> {
    (uniform(0.5, 2.0), any::<bool>())
        .prop_map(|(m, neg)| if neg { -m } else { m })
        .boxed()
}

/// A shape of rank in `rank`, every dimension in 1..=5.
fn dims(rank: RangeInclusive<usize>) -> BoxedStrategy<Vec<usize>> {
    vec(1usize..=5, rank).boxed()
}

/// A tensor of `shape` with elements from `elem`.
fn tensor(shape: Vec<usize>, elem: BoxedStrategy<f64>) -> BoxedStrategy<Tensor<f64>> {
    let n: usize = shape.iter().product();
    vec(elem, n)
        .prop_map(move |d| Tensor::from_vec(d, &shape).unwrap())
        .boxed()
}

/// Tensors of the given shapes, all with elements from `elem`.
fn tensors(shapes: Vec<Vec<usize>>, elem: BoxedStrategy<f64>) -> BoxedStrategy<Vec<Tensor<f64>>> {
    shapes
        .into_iter()
        .map(|s| tensor(s, elem.clone()))
        .collect::<Vec<_>>()
        .boxed()
}

/// Cases from (op, inputs), with a random weighting.
fn cases(s: impl Strategy<Value = (OpSpec, Vec<Tensor<f64>>)> + 'static) -> BoxedStrategy<Case> {
    (s, any::<u64>())
        .prop_map(|((op, inputs), seed)| Case::new(op, inputs, seed))
        .boxed()
}

/// A one-input op on shapes of rank `rank` with elements from `elem`.
fn unary(op: OpSpec, rank: RangeInclusive<usize>, elem: BoxedStrategy<f64>) -> BoxedStrategy<Case> {
    cases(
        dims(rank)
            .prop_flat_map(move |s| tensor(s, elem.clone()))
            .prop_map(move |t| (op.clone(), vec![t])),
    )
}

/// A unary op with a scalar parameter drawn from `param`.
fn unary_with(
    make: fn(f64) -> OpSpec,
    param: BoxedStrategy<f64>,
    elem: BoxedStrategy<f64>,
) -> BoxedStrategy<Case> {
    param
        .prop_flat_map(move |p| unary(make(p), 0..=4, elem.clone()))
        .boxed()
}

// ----- elementwise binary ops with broadcasting ----------------------------

#[derive(Debug, Clone, Copy)]
enum Pattern {
    /// Equal shapes, rank 0..4.
    Equal,
    /// A bias [H] over [B×H] (either side).
    Bias,
    /// A column [B×1] over [B×H] (either side).
    Column,
    /// A rank-0 scalar over any shape (either side).
    Scalar,
    /// Both operands stretched anywhere, e.g. [2, 1, 3] with [4, 1].
    General,
}

fn broadcast_shapes(p: Pattern) -> BoxedStrategy<(Vec<usize>, Vec<usize>)> {
    let pair = match p {
        Pattern::Equal => return dims(0..=4).prop_map(|s| (s.clone(), s)).boxed(),
        Pattern::Bias => (1usize..=5, 1usize..=5)
            .prop_map(|(b, h)| (vec![b, h], vec![h]))
            .boxed(),
        Pattern::Column => (1usize..=5, 1usize..=5)
            .prop_map(|(b, h)| (vec![b, h], vec![b, 1]))
            .boxed(),
        Pattern::Scalar => dims(0..=4).prop_map(|s| (s, vec![])).boxed(),
        Pattern::General => (
            dims(1..=4),
            vec(any::<bool>(), 4),
            vec(any::<bool>(), 4),
            0usize..=3,
            0usize..=3,
        )
            .prop_map(|(out, ones_a, ones_b, drop_a, drop_b)| {
                let operand = |ones: &[bool], drop: usize| -> Vec<usize> {
                    out.iter()
                        .zip(ones)
                        .map(|(&d, &one)| if one { 1 } else { d })
                        .skip(drop.min(out.len()))
                        .collect()
                };
                (operand(&ones_a, drop_a), operand(&ones_b, drop_b))
            })
            .boxed(),
    };
    (pair, any::<bool>())
        .prop_map(|((a, b), swap)| if swap { (b, a) } else { (a, b) })
        .boxed()
}

fn binary(op: OpSpec, pattern: Pattern) -> BoxedStrategy<Case> {
    let denominators = matches!(op, OpSpec::Div);
    cases(broadcast_shapes(pattern).prop_flat_map(move |(sa, sb)| {
        let b = if denominators {
            denominator()
        } else {
            uniform(-2.0, 2.0)
        };
        let op = op.clone();
        (tensor(sa, uniform(-2.0, 2.0)), tensor(sb, b))
            .prop_map(move |(a, b)| (op.clone(), vec![a, b]))
    }))
}

properties! {
    add_equal => binary(OpSpec::Add, Pattern::Equal);
    add_bias => binary(OpSpec::Add, Pattern::Bias);
    add_column => binary(OpSpec::Add, Pattern::Column);
    add_scalar_operand => binary(OpSpec::Add, Pattern::Scalar);
    add_general => binary(OpSpec::Add, Pattern::General);
    sub_equal => binary(OpSpec::Sub, Pattern::Equal);
    sub_bias => binary(OpSpec::Sub, Pattern::Bias);
    sub_column => binary(OpSpec::Sub, Pattern::Column);
    sub_scalar_operand => binary(OpSpec::Sub, Pattern::Scalar);
    sub_general => binary(OpSpec::Sub, Pattern::General);
    mul_equal => binary(OpSpec::Mul, Pattern::Equal);
    mul_bias => binary(OpSpec::Mul, Pattern::Bias);
    mul_column => binary(OpSpec::Mul, Pattern::Column);
    mul_scalar_operand => binary(OpSpec::Mul, Pattern::Scalar);
    mul_general => binary(OpSpec::Mul, Pattern::General);
    div_equal => binary(OpSpec::Div, Pattern::Equal);
    div_bias => binary(OpSpec::Div, Pattern::Bias);
    div_column => binary(OpSpec::Div, Pattern::Column);
    div_scalar_operand => binary(OpSpec::Div, Pattern::Scalar);
    div_general => binary(OpSpec::Div, Pattern::General);
}

// ----- unary ops ---------------------------------------------------------------

fn clamp() -> BoxedStrategy<Case> {
    (uniform(-1.5, 0.0), uniform(0.0, 1.5))
        .prop_flat_map(|(lo, hi)| {
            unary(
                OpSpec::Clamp(lo, hi),
                0..=4,
                away_from(-2.0, 2.0, vec![lo, hi]),
            )
        })
        .boxed()
}

properties! {
    neg => unary(OpSpec::Neg, 0..=4, uniform(-2.0, 2.0));
    add_scalar => unary_with(OpSpec::AddScalar, uniform(-3.0, 3.0), uniform(-2.0, 2.0));
    mul_scalar => unary_with(OpSpec::MulScalar, uniform(-3.0, 3.0), uniform(-2.0, 2.0));
    rsub_scalar => unary_with(OpSpec::RsubScalar, uniform(-3.0, 3.0), uniform(-2.0, 2.0));
    tanh => unary(OpSpec::Tanh, 0..=4, uniform(-3.0, 3.0));
    sigmoid => unary(OpSpec::Sigmoid, 0..=4, uniform(-5.0, 5.0));
    relu => unary(OpSpec::Relu, 0..=4, away_from(-2.0, 2.0, vec![0.0]));
    exp => unary(OpSpec::Exp, 0..=4, uniform(-3.0, 3.0));
    // A window of columns of a 2-D input (an LSTM's gate blocks).
    act_cols => act_cols();
    log => unary(OpSpec::Log, 0..=4, uniform(0.1, 4.0));
    sqrt => unary(OpSpec::Sqrt, 0..=4, uniform(0.1, 4.0));
    powf => unary_with(OpSpec::Powf, uniform(-3.0, 3.0), uniform(0.2, 3.0));
    abs => unary(OpSpec::Abs, 0..=4, away_from(-2.0, 2.0, vec![0.0]));
    clamp => clamp();
}

// ----- linear algebra ------------------------------------------------------

/// Products with operand shapes built from (m, k, n).
fn product<const N: usize>(
    op: OpSpec,
    shapes: fn(usize, usize, usize) -> [Vec<usize>; N],
) -> BoxedStrategy<Case> {
    cases(
        (1usize..=5, 1usize..=5, 1usize..=5).prop_flat_map(move |(m, k, n)| {
            let op = op.clone();
            tensors(shapes(m, k, n).to_vec(), uniform(-2.0, 2.0)).prop_map(move |x| (op.clone(), x))
        }),
    )
}

properties! {
    matmul => product(OpSpec::Matmul, |m, k, n| [vec![m, k], vec![k, n]]);
    matmul_t => product(OpSpec::MatmulT, |m, k, n| [vec![m, k], vec![n, k]]);
    t_matmul => product(OpSpec::TMatmul, |m, k, n| [vec![k, m], vec![k, n]]);
    // c + a·b and c + a·bᵀ (inputs: a, b, c).
    addmm => product(OpSpec::Addmm, |m, k, n| [vec![m, k], vec![k, n], vec![m, n]]);
    addmm_t => product(OpSpec::AddmmT, |m, k, n| [vec![m, k], vec![n, k], vec![m, n]]);
    // A bias row [n] broadcast over the rows (x·W + b, x·Wᵀ + b).
    addmm_bias => product(OpSpec::Addmm, |m, k, n| [vec![m, k], vec![k, n], vec![n]]);
    addmm_t_bias => product(OpSpec::AddmmT, |m, k, n| [vec![m, k], vec![n, k], vec![n]]);
    // A window of c's rows: c has 0..=3 rows before and after the window.
    addmm_rows => addmm_rows();
}

/// tanh or σ of columns `start..start+len` of an [r × (start+len+after)]
/// input, the window possibly empty or the whole width.
fn act_cols() -> BoxedStrategy<Case> {
    cases(
        (
            1usize..=4,
            0usize..=3,
            0usize..=4,
            0usize..=3,
            any::<bool>(),
        )
            .prop_flat_map(|(r, start, len, after, sigmoid)| {
                tensor(vec![r, start + len + after], uniform(-3.0, 3.0))
                    .prop_map(move |t| (OpSpec::ActCols(sigmoid, start, len), vec![t]))
            }),
    )
}

/// `c[start..start+m] + a·b` / `+ a·bᵀ` with c [start + m + after, n].
fn addmm_rows() -> BoxedStrategy<Case> {
    cases(
        (
            1usize..=4,
            1usize..=4,
            1usize..=4,
            0usize..=3,
            0usize..=3,
            any::<bool>(),
        )
            .prop_flat_map(|(m, k, n, start, after, tb)| {
                let b = if tb { vec![n, k] } else { vec![k, n] };
                let shapes = vec![vec![m, k], b, vec![start + m + after, n]];
                tensors(shapes, uniform(-2.0, 2.0))
                    .prop_map(move |x| (OpSpec::AddmmRows(start, tb), x))
            }),
    )
}

properties! {
    // A rank-3 left operand [T, B, k] read as [T·B, k].
    matmul_batched => product(OpSpec::MatmulBatched, |m, k, n| [vec![2, m, k], vec![n, k]]);
    transpose => unary(OpSpec::Transpose, 2..=2, uniform(-2.0, 2.0));
}

// ----- reductions ------------------------------------------------------------

/// A reduction along a random axis of a rank 1..4 shape.
fn along_axis(make: fn(usize) -> OpSpec) -> BoxedStrategy<Case> {
    cases(dims(1..=4).prop_flat_map(move |s| {
        let rank = s.len();
        (0..rank, tensor(s, uniform(-2.0, 2.0))).prop_map(move |(axis, t)| (make(axis), vec![t]))
    }))
}

properties! {
    sum => unary(OpSpec::Sum, 0..=4, uniform(-2.0, 2.0));
    mean => unary(OpSpec::Mean, 0..=4, uniform(-2.0, 2.0));
    sum_axis => along_axis(OpSpec::SumAxis);
    mean_axis => along_axis(OpSpec::MeanAxis);
}

// ----- shape ops -----------------------------------------------------------

fn reshape() -> BoxedStrategy<Case> {
    cases(dims(0..=4).prop_flat_map(|s| {
        // The same element count: the dimensions shuffled, the first two
        // optionally merged, a unit dimension optionally appended.
        let target = (Just(s.clone()).prop_shuffle(), any::<bool>(), any::<bool>()).prop_map(
            |(mut t, merge, unit)| {
                if merge && t.len() >= 2 {
                    let d = t.remove(0);
                    t[0] *= d;
                }
                if unit {
                    t.push(1);
                }
                t
            },
        );
        (target, tensor(s, uniform(-2.0, 2.0)))
            .prop_map(|(target, t)| (OpSpec::Reshape(target), vec![t]))
    }))
}

fn concat() -> BoxedStrategy<Case> {
    cases(dims(1..=4).prop_flat_map(|s| {
        let rank = s.len();
        (0..rank, vec(1usize..=5, 1..=4)).prop_flat_map(move |(axis, lens)| {
            let shapes = lens
                .iter()
                .map(|&n| {
                    let mut p = s.clone();
                    p[axis] = n;
                    p
                })
                .collect();
            tensors(shapes, uniform(-2.0, 2.0)).prop_map(move |x| (OpSpec::Concat(axis), x))
        })
    }))
}

fn stack() -> BoxedStrategy<Case> {
    cases((dims(0..=3), 1usize..=4).prop_flat_map(|(s, k)| {
        let rank = s.len();
        (0..=rank, tensors(vec![s; k], uniform(-2.0, 2.0)))
            .prop_map(|(axis, x)| (OpSpec::Stack(axis), x))
    }))
}

fn slice() -> BoxedStrategy<Case> {
    cases(dims(1..=4).prop_flat_map(|s| {
        let rank = s.len();
        (0..rank).prop_flat_map(move |axis| {
            let n = s[axis];
            (0..n)
                .prop_flat_map(move |start| (Just(start), 1..=n - start))
                .prop_flat_map({
                    let s = s.clone();
                    move |(start, len)| {
                        tensor(s.clone(), uniform(-2.0, 2.0))
                            .prop_map(move |t| (OpSpec::Slice { axis, start, len }, vec![t]))
                    }
                })
        })
    }))
}

fn split() -> BoxedStrategy<Case> {
    let parts_len = prop_oneof![
        (1usize..=5).prop_map(|len| (1, len)),
        Just((2, 1)),
        Just((2, 2)),
        Just((3, 1)),
        Just((3, 2)),
        Just((4, 1)),
        Just((5, 1)),
    ];
    cases((dims(1..=4), parts_len).prop_flat_map(|(s, (parts, len))| {
        let rank = s.len();
        (0..rank).prop_flat_map(move |axis| {
            let mut s = s.clone();
            s[axis] = parts * len;
            tensor(s, uniform(-2.0, 2.0))
                .prop_map(move |t| (OpSpec::Split { axis, parts }, vec![t]))
        })
    }))
}

fn gather() -> BoxedStrategy<Case> {
    cases(dims(1..=4).prop_flat_map(|s| {
        let rows = s[0];
        // At least one repeated index: the first is appended again.
        let indices = vec(0..rows, 1..=6).prop_map(|mut v| {
            v.push(v[0]);
            v
        });
        (indices, tensor(s, uniform(-2.0, 2.0))).prop_map(|(idx, t)| (OpSpec::Gather(idx), vec![t]))
    }))
}

properties! {
    reshape => reshape();
    concat => concat();
    stack => stack();
    slice => slice();
    split => split();
    gather => gather();
}

// ----- softmax family and losses ------------------------------------------------

fn cross_entropy(reduction: Reduction) -> BoxedStrategy<Case> {
    // Logits [N×C], or [C] for one sample.
    let shape = prop_oneof![
        (1usize..=5, 1usize..=5).prop_map(|(n, c)| vec![n, c]),
        (1usize..=5).prop_map(|c| vec![c]),
    ];
    cases(shape.prop_flat_map(move |s| {
        let (n, c) = if s.len() == 2 {
            (s[0], s[1])
        } else {
            (1, s[0])
        };
        (vec(0..c, n), tensor(s, uniform(-3.0, 3.0)))
            .prop_map(move |(t, x)| (OpSpec::CrossEntropy(t, reduction), vec![x]))
    }))
}

fn mse(reduction: Reduction) -> BoxedStrategy<Case> {
    cases(dims(0..=4).prop_flat_map(move |s| {
        tensors(vec![s.clone(), s], uniform(-2.0, 2.0))
            .prop_map(move |x| (OpSpec::Mse(reduction), x))
    }))
}

properties! {
    softmax => unary(OpSpec::Softmax, 0..=4, uniform(-3.0, 3.0));
    log_softmax => unary(OpSpec::LogSoftmax, 0..=4, uniform(-3.0, 3.0));
    cross_entropy_sum => cross_entropy(Reduction::Sum);
    cross_entropy_mean => cross_entropy(Reduction::Mean);
    cross_entropy_none => cross_entropy(Reduction::None);
    mse_sum => mse(Reduction::Sum);
    mse_mean => mse(Reduction::Mean);
    mse_none => mse(Reduction::None);
}

// ----- dropout and select -------------------------------------------------------

fn dropout() -> BoxedStrategy<Case> {
    // A fixed seed per case: every finite-difference evaluation draws the
    // same mask, so the function differentiated is x ⊙ m.
    let p = prop_oneof![Just(0.0), uniform(0.0, 0.9)];
    cases(
        (dims(0..=4), p, any::<u64>()).prop_flat_map(|(s, p, seed)| {
            tensor(s, uniform(-2.0, 2.0)).prop_map(move |t| (OpSpec::Dropout(p, seed), vec![t]))
        }),
    )
}

fn select() -> BoxedStrategy<Case> {
    cases(dims(0..=4).prop_flat_map(|s| {
        let n: usize = s.iter().product();
        (
            vec(any::<bool>(), n),
            tensors(vec![s.clone(), s], uniform(-2.0, 2.0)),
        )
            .prop_map(|(cond, x)| (OpSpec::Select(cond), x))
    }))
}

properties! {
    dropout => dropout();
    select => select();
}

// ----- normalisation --------------------------------------------------------------

/// Whether every row (last axis) of `t` has σ² + ε ≥ 0.1, or one element.
/// The gradient is r·(gy − mean gy − x̂·mean(gy⊙x̂)), r = 1/√(σ² + ε): a
/// difference of terms of size r·|gy| that nearly cancel where the output
/// barely moves (a row of two is ±1 whatever its spread), so rounding
/// grows with r. At r up to 4.6 (σ² + ε = 0.048, f32, a row of two) the
/// f32 gradient was 1.03e-3 off the f64 one relative to the 1e-3 floor,
/// and at r ≥ 10 central differences at 1e-5 lose digits in f64: the
/// judges failing, not the tape. r ≤ 3.2 here; large r is
/// `layer_norm_full_jacobian_matches_central_differences` and the
/// constant rows of `tests/numerics.rs`.
fn spread_enough(t: &Tensor<f64>, eps: f64) -> bool {
    let n = *t.shape().last().unwrap();
    n == 1
        || t.data().chunks(n).all(|r| {
            let mu = r.iter().sum::<f64>() / n as f64;
            r.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / n as f64 + eps >= 0.1
        })
}

/// Layer norm of a rank 1..4 input (with γ, β [n] when `affine`), ε from
/// {1e-5 (PyTorch's default), 0.1}.
fn layer_norm(affine: bool) -> BoxedStrategy<Case> {
    let eps = prop_oneof![Just(1e-5), Just(0.1)];
    cases(
        (dims(1..=4), eps)
            .prop_flat_map(move |(s, eps)| {
                let n = *s.last().unwrap();
                let shapes = if affine {
                    vec![s, vec![n], vec![n]]
                } else {
                    vec![s]
                };
                let op = if affine {
                    OpSpec::LayerNormAffine(eps)
                } else {
                    OpSpec::LayerNorm(eps)
                };
                tensors(shapes, uniform(-2.0, 2.0)).prop_map(move |x| (op.clone(), x))
            })
            .prop_filter("a row with too little spread", |(op, x)| {
                let (OpSpec::LayerNorm(eps) | OpSpec::LayerNormAffine(eps)) = op else {
                    unreachable!()
                };
                spread_enough(&x[0], *eps)
            }),
    )
}

properties! {
    layer_norm => layer_norm(false);
    layer_norm_affine => layer_norm(true);
}

/// The whole Jacobian of layer norm (with gain and bias) against central
/// differences, f64: for every output element y_i, the tape's gradient of
/// y_i w.r.t. x, γ and β is row i of the Jacobian; column j is
/// (y(x + εe_j) − y(x − εe_j)) / 2ε. Rows of a [3 × 2 × 5] input, one of
/// them at 1e3 offset, one constant (r = 1/√1e-5 ≈ 316 there, so entries
/// reach ~300); step 1e-6, bound 1e-6·max(1, |fd|) (truncation at the
/// constant row is ≈ (step·r)² ≈ 1e-7 relative).
#[test]
fn layer_norm_full_jacobian_matches_central_differences() {
    let mut x = Tensor::<f64>::uniform(&[3, 2, 5], -2.0, 2.0, 11).unwrap();
    x.data_mut()[10..15].iter_mut().for_each(|v| *v += 1e3);
    x.data_mut()[20..25].iter_mut().for_each(|v| *v = 0.75);
    let inputs = [
        x,
        Tensor::uniform(&[5], 0.5, 1.5, 12).unwrap(),
        Tensor::uniform(&[5], -1.0, 1.0, 13).unwrap(),
    ];
    let f = |t: &[Tensor<f64>]| {
        let tape = Tape::<f64>::new();
        let v: Vec<_> = t.iter().map(|t| tape.constant(t.clone())).collect();
        v[0].layer_norm_affine(v[1], v[2], 1e-5).to_tensor()
    };
    let y0 = f(&inputs);
    let (eps, mut worst) = (1e-6, 0.0f64);
    for i in 0..y0.numel() {
        let tape = Tape::<f64>::new();
        let v: Vec<_> = inputs.iter().map(|t| tape.var(t.clone())).collect();
        let y = v[0].layer_norm_affine(v[1], v[2], 1e-5);
        let mut pick = Tensor::zeros(y0.shape());
        pick.data_mut()[i] = 1.0;
        let g = (y * tape.constant(pick)).sum().backward();
        for (k, t) in inputs.iter().enumerate() {
            for j in 0..t.numel() {
                let mut shifted = inputs.clone();
                shifted[k].data_mut()[j] += eps;
                let up = f(&shifted).data()[i];
                shifted[k].data_mut()[j] -= 2.0 * eps;
                let down = f(&shifted).data()[i];
                let fd = (up - down) / (2.0 * eps);
                let err = (g.wrt(v[k]).data()[j] - fd).abs() / fd.abs().max(1.0);
                assert!(
                    err <= 1e-6,
                    "∂y[{i}]/∂input{k}[{j}]: tape {} vs fd {fd}",
                    g.wrt(v[k]).data()[j]
                );
                worst = worst.max(err);
            }
        }
    }
    eprintln!("layer_norm full Jacobian ({} outputs × 40 inputs): worst |tape − fd|/max(1, |fd|) {worst:.1e}", y0.numel());
}

// ----- the judge itself ---------------------------------------------------------

/// The checker can fail: `x ⊙ detach(x)` has tape gradient x but true
/// derivative 2x (finite differences see through detach), and a NaN
/// gradient is reported as NaN, not dropped.
#[test]
fn gradcheck_detects_wrong_and_nan_gradients() {
    let x = Tensor::from_vec(vec![0.5, -1.5, 2.0], &[3]).unwrap();
    let wrong = gradcheck(&[x], |_, v| (v[0] * v[0].detach()).sum());
    assert!(wrong.max_rel_error() > 0.4, "{wrong:?}");

    let at_zero = Tensor::from_vec(vec![0.0, 1.0], &[2]).unwrap();
    let nan = gradcheck(&[at_zero], |_, v| (v[0] * v[0]).sqrt().sum());
    assert!(nan.inputs[0].analytic.data()[0].is_nan());
    assert!(nan.max_rel_error().is_nan(), "{nan:?}");
    assert!(nan.max_abs_error().is_nan(), "{nan:?}");
    assert!(judge(&nan).is_nan());
}
