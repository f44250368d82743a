//! Properties of the tape as a whole, through the public API: broadcasting,
//! accumulation over shared subexpressions, requires-grad pruning,
//! `retain_grad`, `detach`, repeated backward, reset and reuse, seeded
//! backward, deep graphs, and parameter binding.
//!
//! Most properties are written once, generic in the element type, and run
//! for both `f32` and `f64` inside the same case. Where two computations
//! must agree exactly (same operations on the same values, or exact
//! integer arithmetic), they are compared bit for bit (−0 and +0 count as
//! the same); where only the summation order differs, the bound
//! is the rounding bound `K·ε·Σ|terms|` (floor 1, K = 256, ε the type's
//! machine epsilon), so a real mistake — an O(1) error — cannot hide in it.
//!
//! 256 cases per property (`PROPTEST_CASES` overrides it).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tapegrad::gradcheck::{gradcheck_with, GradcheckOptions};
use tapegrad::{ErrorKind, ParamStore, Real, Reduction, Tape, Tensor, Var};

/// The rounding-bound multiplier (see the module docs).
const K: f64 = 256.0;

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

// ----- helpers -------------------------------------------------------------

/// The bit patterns of a tensor's elements (widened to f64, which is exact),
/// with −0 read as +0: a rule may write −0.0 where accumulating into a
/// zeroed buffer gives 0.0 + (−0.0) = +0.0, and both are the same gradient.
fn bits<F: Real>(t: &Tensor<F>) -> Vec<u64> {
    t.data()
        .iter()
        .map(|x| (x.to_f64_lossy() + 0.0).to_bits())
        .collect()
}

/// Asserts `a` and `b` are identical: shape and bits (up to the sign of
/// zero).
fn same<F: Real>(what: &str, a: &Tensor<F>, b: &Tensor<F>) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.shape(), b.shape(), "{}: shapes", what);
    prop_assert!(
        bits(a) == bits(b),
        "{} ({}): not bitwise equal:\n{:?}\n{:?}",
        what,
        F::NAME,
        a,
        b
    );
    Ok(())
}

/// Asserts |got − want| ≤ K·ε·max(1, scale) elementwise, where `scale` is
/// Σ|terms| of the sum that `want` stands for.
fn within_rounding<F: Real>(
    what: &str,
    got: &Tensor<F>,
    want: &[f64],
    scale: &[f64],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.numel(), want.len(), "{}: sizes", what);
    let eps = F::epsilon().to_f64_lossy();
    for (i, ((&g, &w), &s)) in got.data().iter().zip(want).zip(scale).enumerate() {
        let g = g.to_f64_lossy();
        let bound = K * eps * s.max(1.0);
        prop_assert!(
            (g - w).abs() <= bound,
            "{} ({})[{}]: {} vs {} (|diff| {:e} > {:e})",
            what,
            F::NAME,
            i,
            g,
            w,
            (g - w).abs(),
            bound
        );
    }
    Ok(())
}

fn uniform(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::uniform(shape, -1.0, 1.0, seed).unwrap()
}

fn as_f64<F: Real>(t: &Tensor<F>) -> Vec<f64> {
    t.data().iter().map(|x| x.to_f64_lossy()).collect()
}

/// `(y ⊙ R).sum()` with `R` a constant.
fn weighted<'t, F: Real>(y: Var<'t, F>, r: &Tensor<f64>) -> Var<'t, F> {
    (y * y.tape().constant(r.cast())).sum()
}

// ----- broadcasting ----------------------------------------------------------

/// Two broadcastable operand shapes, e.g. [2, 1, 3] with [4, 1].
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    (
        vec(1usize..=5, 1..=4),
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
}

fn broadcast_of(a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        let k = rank - 1 - i;
        if k < s.len() {
            s[s.len() - 1 - k]
        } else {
            1
        }
    };
    (0..rank).map(|i| dim(a, i).max(dim(b, i))).collect()
}

/// Small integers: every sum below is exact in f32 and f64, whatever the
/// order, so broadcasting and explicit tiling must agree bit for bit.
fn integers(shape: Vec<usize>) -> impl Strategy<Value = Tensor<f64>> {
    let n: usize = shape.iter().product();
    vec((-4i32..=4).prop_map(f64::from), n).prop_map(move |d| Tensor::from_vec(d, &shape).unwrap())
}

/// `v` (of `shape`) tiled explicitly to `out`: missing leading axes by
/// `stack`, stretched unit axes by `concat` of copies.
fn tile<'t, F: Real>(v: Var<'t, F>, shape: &[usize], out: &[usize]) -> Var<'t, F> {
    let missing = out.len() - shape.len();
    let mut v = v;
    for d in (0..missing).rev() {
        v = Var::stack(&vec![v; out[d]], 0);
    }
    for d in missing..out.len() {
        if shape[d - missing] == 1 && out[d] != 1 {
            v = Var::concat(&vec![v; out[d]], d);
        }
    }
    assert_eq!(v.shape().as_slice(), out);
    v
}

/// Two broadcasting uses of the same operands, `L = Σ (a ∘₁ b) ⊙ R₁ +
/// Σ (a ∘₂ b) ⊙ R₂`, so each operand's gradient slot also accumulates
/// across broadcast nodes.
#[derive(Debug, Clone)]
struct BroadcastCase {
    ops: [usize; 2],
    a: Tensor<f64>,
    b: Tensor<f64>,
    r: [Tensor<f64>; 2],
}

fn broadcast_case() -> impl Strategy<Value = BroadcastCase> {
    (0usize..3, 0usize..3, broadcast_pair()).prop_flat_map(|(op1, op2, (sa, sb))| {
        let out = broadcast_of(&sa, &sb);
        (
            integers(sa),
            integers(sb),
            integers(out.clone()),
            integers(out),
        )
            .prop_map(move |(a, b, r1, r2)| BroadcastCase {
                ops: [op1, op2],
                a,
                b,
                r: [r1, r2],
            })
    })
}

fn broadcast_matches_tiling<F: Real>(c: &BroadcastCase) -> Result<(), TestCaseError> {
    fn apply<'t, F: Real>(op: usize, x: Var<'t, F>, y: Var<'t, F>) -> Var<'t, F> {
        match op {
            0 => x + y,
            1 => x - y,
            _ => x * y,
        }
    }
    let out = c.r[0].shape();
    let tape = Tape::<F>::new();
    let (va, vb) = (tape.var(c.a.cast()), tape.var(c.b.cast()));
    let ys = c.ops.map(|op| apply(op, va, vb));
    let g = (weighted(ys[0], &c.r[0]) + weighted(ys[1], &c.r[1])).backward();

    let tiled = Tape::<F>::new();
    let (ta, tb) = (tiled.var(c.a.cast()), tiled.var(c.b.cast()));
    let yts = c
        .ops
        .map(|op| apply(op, tile(ta, c.a.shape(), out), tile(tb, c.b.shape(), out)));
    let gt = (weighted(yts[0], &c.r[0]) + weighted(yts[1], &c.r[1])).backward();

    for (y, yt) in ys.iter().zip(&yts) {
        same("broadcast value vs tiled", &y.to_tensor(), &yt.to_tensor())?;
    }
    same("∂L/∂a, broadcast vs tiled", g.wrt(va), gt.wrt(ta))?;
    same("∂L/∂b, broadcast vs tiled", g.wrt(vb), gt.wrt(tb))?;
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// The gradient of a broadcast operand is the sum over the stretched
    /// axes: exactly what differentiating an explicit tiling (stack/concat
    /// of copies, whose gradients accumulate) gives.
    #[test]
    fn broadcast_gradient_is_sum_over_stretched_axes(c in broadcast_case()) {
        broadcast_matches_tiling::<f64>(&c)?;
        broadcast_matches_tiling::<f32>(&c)?;
    }
}

// ----- accumulation over shared subexpressions ------------------------------

/// One use of x in y = Σ term(x).
#[derive(Debug, Clone, Copy)]
enum Term {
    /// x ⊙ x: one node using x twice.
    Square,
    /// x ⊙ x ⊙ x.
    Cube,
    /// c·x.
    Scale(i8),
    Tanh,
    Sigmoid,
    Exp,
    /// x + x + … (n copies).
    Repeat(u8),
}

impl Term {
    fn apply<'t, F: Real>(self, x: Var<'t, F>) -> Var<'t, F> {
        match self {
            Term::Square => x * x,
            Term::Cube => x * x * x,
            Term::Scale(c) => x.mul_scalar(F::of(f64::from(c))),
            Term::Tanh => x.tanh(),
            Term::Sigmoid => x.sigmoid(),
            Term::Exp => x.exp(),
            Term::Repeat(n) => (1..n).fold(x, |acc, _| acc + x),
        }
    }

    /// d term / dx, in f64.
    fn derivative(self, x: f64) -> f64 {
        match self {
            Term::Square => 2.0 * x,
            Term::Cube => 3.0 * x * x,
            Term::Scale(c) => f64::from(c),
            Term::Tanh => 1.0 - x.tanh().powi(2),
            Term::Sigmoid => {
                let s = 1.0 / (1.0 + (-x).exp());
                s * (1.0 - s)
            }
            Term::Exp => x.exp(),
            Term::Repeat(n) => f64::from(n),
        }
    }
}

fn term() -> impl Strategy<Value = Term> {
    prop_oneof![
        Just(Term::Square),
        Just(Term::Cube),
        (-3i8..=3).prop_map(Term::Scale),
        Just(Term::Tanh),
        Just(Term::Sigmoid),
        Just(Term::Exp),
        (1u8..=4).prop_map(Term::Repeat),
    ]
}

fn shared_subexpressions<F: Real>(
    terms: &[Term],
    x: &Tensor<f64>,
    r: &Tensor<f64>,
) -> Result<(), TestCaseError> {
    let tape = Tape::<F>::new();
    let xv = tape.var(x.cast());
    let y = terms
        .iter()
        .map(|t| t.apply(xv))
        .reduce(|a, b| a + b)
        .unwrap();
    let g = weighted(y, r).backward();

    // Each path on its own tape, then added up.
    let n = x.numel();
    let (mut sum, mut scale) = (vec![0.0; n], vec![0.0; n]);
    for t in terms {
        let tape = Tape::<F>::new();
        let xv = tape.var(x.cast());
        let gt = weighted(t.apply(xv), r).backward();
        for (i, v) in as_f64(gt.wrt(xv)).into_iter().enumerate() {
            sum[i] += v;
            scale[i] += v.abs();
        }
    }
    within_rounding("Σ over paths", g.wrt(xv), &sum, &scale)?;

    // And the calculus: R ⊙ Σ term'(x), at the point the tape saw.
    let xs = as_f64(&x.cast::<F>());
    let (mut exact, mut exact_scale) = (vec![0.0; n], vec![0.0; n]);
    for (i, &xi) in xs.iter().enumerate() {
        for t in terms {
            let d = r.data()[i] * t.derivative(xi);
            exact[i] += d;
            exact_scale[i] += d.abs();
        }
    }
    within_rounding("R ⊙ Σ term'(x)", g.wrt(xv), &exact, &exact_scale)?;
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// x used k times: its gradient is the sum of the gradients of the
    /// individual paths (and matches the closed form).
    #[test]
    fn gradient_accumulates_over_shared_uses(
        (terms, x, seed) in (vec(term(), 1..=6), vec(1usize..=4, 0..=3)).prop_flat_map(|(terms, s)| {
            let n: usize = s.iter().product();
            let x = vec((-1.5f64..1.5).prop_map(|v| v as f32 as f64), n)
                .prop_map(move |d| Tensor::from_vec(d, &s).unwrap());
            (Just(terms), x, any::<u64>())
        })
    ) {
        let r = uniform(x.shape(), seed).cast::<f32>().cast::<f64>();
        shared_subexpressions::<f64>(&terms, &x, &r)?;
        shared_subexpressions::<f32>(&terms, &x, &r)?;
    }
}

// ----- requires-grad pruning ------------------------------------------------

fn pruning<F: Real>(shape: &[usize], seed: u64) -> Result<(), TestCaseError> {
    let tape = Tape::<F>::new();
    let x = tape.var(uniform(shape, seed).cast());
    let c = tape.constant(uniform(shape, seed + 1).cast());
    let unused = tape.var(uniform(&[3, 2], seed + 2).cast());
    let from_constants = (c.tanh() * c).exp();
    prop_assert!(x.requires_grad() && unused.requires_grad());
    prop_assert!(!c.requires_grad() && !from_constants.requires_grad());
    let mixed = x * c + from_constants;
    prop_assert!(mixed.requires_grad());
    let loss = mixed.sum();
    let g = loss.backward();

    // The constant and what is computed from constants alone get nothing.
    for v in [c, from_constants] {
        let e = g.try_wrt(v).unwrap_err();
        prop_assert_eq!(e.kind(), ErrorKind::NoGradient);
    }
    // Neither does an intermediate that did not ask to be retained.
    prop_assert_eq!(g.try_wrt(mixed).unwrap_err().kind(), ErrorKind::NoGradient);
    // A leaf the loss does not depend on gets zeros of its shape.
    let gu = g.wrt(unused);
    prop_assert_eq!(gu.shape(), &[3, 2]);
    prop_assert!(gu.data().iter().all(|&v| v == F::zero()));
    // ∂(Σ x⊙c + const)/∂x = c, exactly.
    same("∂L/∂x = c", g.wrt(x), &c.to_tensor())?;
    // A var recorded after the root has no gradient either.
    let later = tape.var(Tensor::zeros(&[1]));
    prop_assert_eq!(g.try_wrt(later).unwrap_err().kind(), ErrorKind::NoGradient);
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Constants get no gradient (`NoGradient`), unused leaves get zeros.
    #[test]
    fn constants_are_pruned_and_unused_leaves_get_zeros(
        shape in vec(1usize..=4, 0..=3),
        seed in any::<u64>().prop_map(|s| s >> 2),
    ) {
        pruning::<f64>(&shape, seed)?;
        pruning::<f32>(&shape, seed)?;
    }
}

// ----- retain_grad and detach ---------------------------------------------

/// h = tanh(x·W + b).
fn hidden<'t, F: Real>(x: Var<'t, F>, w: Var<'t, F>, b: Var<'t, F>) -> Var<'t, F> {
    (x.matmul(w) + b).tanh()
}

/// L(h) = Σ σ(h ⊙ h) ⊙ R + Σ exp(Σ_rows h) + CE(h, targets).
fn head<'t, F: Real>(h: Var<'t, F>, r: &Tensor<f64>) -> Var<'t, F> {
    let rows = h.shape()[0];
    let targets: Vec<usize> = (0..rows).map(|i| i % h.shape()[1]).collect();
    weighted((h * h).sigmoid(), r)
        + h.sum_axis(0).exp().sum()
        + h.cross_entropy(&targets, Reduction::Mean)
}

#[derive(Debug, Clone)]
struct Layer {
    x: Tensor<f64>,
    w: Tensor<f64>,
    b: Tensor<f64>,
    r: Tensor<f64>,
}

fn layer() -> impl Strategy<Value = Layer> {
    (1usize..=4, 1usize..=4, 1usize..=4, any::<u64>()).prop_map(|(n, i, h, seed)| Layer {
        x: uniform(&[n, i], seed),
        w: uniform(&[i, h], seed ^ 1),
        b: uniform(&[h], seed ^ 2),
        r: uniform(&[n, h], seed ^ 3),
    })
}

fn retained_chain_rule<F: Real>(c: &Layer) -> Result<(), TestCaseError> {
    let tape = Tape::<F>::new();
    let (x, w, b) = (
        tape.var(c.x.cast()),
        tape.var(c.w.cast()),
        tape.var(c.b.cast()),
    );
    let h = hidden(x, w, b).retain_grad();
    let g = head(h, &c.r).backward();
    let dh = g.wrt(h).clone();

    // dL/dh is what you get with h as a leaf.
    let leaf_tape = Tape::<F>::new();
    let h_leaf = leaf_tape.var(h.to_tensor());
    let gl = head(h_leaf, &c.r).backward();
    same("retained dL/dh vs h as a leaf", &dh, gl.wrt(h_leaf))?;

    // And the rest of the chain: backward from h seeded with dL/dh gives
    // the same dL/dx, dL/dW, dL/db.
    let t2 = Tape::<F>::new();
    let (x2, w2, b2) = (t2.var(c.x.cast()), t2.var(c.w.cast()), t2.var(c.b.cast()));
    let g2 = hidden(x2, w2, b2).backward_with(dh);
    same("dL/dx via the seeded chain", g.wrt(x), g2.wrt(x2))?;
    same("dL/dW via the seeded chain", g.wrt(w), g2.wrt(w2))?;
    same("dL/db via the seeded chain", g.wrt(b), g2.wrt(b2))?;
    Ok(())
}

fn detach_stops_gradient<F: Real>(c: &Layer) -> Result<(), TestCaseError> {
    let tape = Tape::<F>::new();
    let x = tape.var(c.x.cast());
    let d = x.detach();
    prop_assert!(!d.requires_grad());
    same("detached value", &d.to_tensor(), &x.to_tensor())?;

    // y = x ⊙ detach(x): the second factor is a constant, ∂L/∂x = R ⊙ x.
    let r = tape.constant(c.x.cast::<F>().cast::<f64>().cast());
    let y = (x * d * r).sum();
    let g = y.backward();
    let want: Vec<F> = r
        .value()
        .data()
        .iter()
        .zip(x.value().data())
        .map(|(&r, &x)| r * x)
        .collect();
    same(
        "∂(Σ x⊙detach(x)⊙R)/∂x",
        g.wrt(x),
        &Tensor::from_vec(want, c.x.shape()).unwrap(),
    )?;
    prop_assert_eq!(g.try_wrt(d).unwrap_err().kind(), ErrorKind::NoGradient);

    // L = A(x) + B(detach(x)): only A's path reaches x.
    let t1 = Tape::<F>::new();
    let x1 = t1.var(c.x.cast());
    let both = weighted(x1.tanh(), &c.x) + weighted(x1.detach().exp(), &c.x);
    let t2 = Tape::<F>::new();
    let x2 = t2.var(c.x.cast());
    let only_a = weighted(x2.tanh(), &c.x);
    same(
        "gradient through A + B(detach)",
        both.backward().wrt(x1),
        only_a.backward().wrt(x2),
    )?;
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// A retained dL/dh equals the gradient with h made a leaf, and seeding
    /// h with it reproduces the gradients below h (chain-rule consistency).
    #[test]
    fn retain_grad_is_chain_rule_consistent(c in layer()) {
        retained_chain_rule::<f64>(&c)?;
        retained_chain_rule::<f32>(&c)?;
    }

    /// detach() passes the value and stops the gradient.
    #[test]
    fn detach_stops_the_gradient(c in layer()) {
        detach_stops_gradient::<f64>(&c)?;
        detach_stops_gradient::<f32>(&c)?;
    }
}

// ----- random programs: repeated backward, reset, seeds, gradcheck ---------

/// One step of a random program over [B×H] values; operands are indices
/// into the values so far (taken modulo their count).
#[derive(Debug, Clone)]
enum Step {
    Tanh(usize),
    Sigmoid(usize),
    Scale(usize, i8),
    Add(usize, usize),
    Sub(usize, usize),
    Mul(usize, usize),
    /// v·W + b (bias broadcast over rows).
    Linear(usize),
    /// v·Wᵀ.
    LinearT(usize),
    Softmax(usize),
    /// v + mean over the row, broadcast back as a [B×1] column.
    CenterRows(usize),
    /// tanh on the first columns, the rest passed through, concatenated.
    SliceConcat(usize),
    Dropout(usize, u64),
    Select(usize, usize, u64),
    /// Rows picked with repeats.
    Gather(usize, u64),
    /// Σ over a stack of two.
    StackSum(usize, usize),
    /// (a − b)² elementwise.
    SquaredError(usize, usize),
    /// tanh(v·(vᵀ·v)/4): one value used three times, through t_matmul.
    Gram(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let i = || any::<usize>();
    prop_oneof![
        i().prop_map(Step::Tanh),
        i().prop_map(Step::Sigmoid),
        (i(), -2i8..=2).prop_map(|(a, c)| Step::Scale(a, c)),
        (i(), i()).prop_map(|(a, b)| Step::Add(a, b)),
        (i(), i()).prop_map(|(a, b)| Step::Sub(a, b)),
        (i(), i()).prop_map(|(a, b)| Step::Mul(a, b)),
        i().prop_map(Step::Linear),
        i().prop_map(Step::LinearT),
        i().prop_map(Step::Softmax),
        i().prop_map(Step::CenterRows),
        i().prop_map(Step::SliceConcat),
        (i(), any::<u64>()).prop_map(|(a, s)| Step::Dropout(a, s)),
        (i(), i(), any::<u64>()).prop_map(|(a, b, s)| Step::Select(a, b, s)),
        (i(), any::<u64>()).prop_map(|(a, s)| Step::Gather(a, s)),
        (i(), i()).prop_map(|(a, b)| Step::StackSum(a, b)),
        (i(), i()).prop_map(|(a, b)| Step::SquaredError(a, b)),
        i().prop_map(Step::Gram),
    ]
}

/// Leaves x [B×H], W [H×H], b [H] (vars), c [B×H] (a constant), the steps,
/// and the weights of the loss.
#[derive(Debug, Clone)]
struct Program {
    x: Tensor<f64>,
    w: Tensor<f64>,
    b: Tensor<f64>,
    c: Tensor<f64>,
    steps: Vec<Step>,
    r: Tensor<f64>,
    targets: Vec<usize>,
}

fn program() -> impl Strategy<Value = Program> {
    (1usize..=3, 1usize..=4, vec(step(), 1..=12), any::<u64>()).prop_flat_map(
        |(rows, h, steps, seed)| {
            vec(0..h, rows).prop_map(move |targets| {
                let scale = |t: Tensor<f64>, s: f64| {
                    Tensor::from_vec(t.data().iter().map(|v| v * s).collect(), t.shape()).unwrap()
                };
                Program {
                    x: uniform(&[rows, h], seed),
                    w: scale(uniform(&[h, h], seed ^ 1), 1.0 / (h as f64).sqrt()),
                    b: uniform(&[h], seed ^ 2),
                    c: uniform(&[rows, h], seed ^ 3),
                    steps: steps.clone(),
                    r: uniform(&[rows, h], seed ^ 4),
                    targets,
                }
            })
        },
    )
}

/// What a run of a program records: the vars that matter.
struct Run<'t, F: Real> {
    leaves: [Var<'t, F>; 3],
    values: Vec<Var<'t, F>>,
    last: Var<'t, F>,
    loss: Var<'t, F>,
}

impl<'t, F: Real> Run<'t, F> {
    /// The last value, marked with `retain_grad` when a gradient can reach
    /// it; a value the program computed from constants only cannot receive
    /// one (`retain_grad` refuses it rather than report zeros), so then the
    /// first leaf stands in for it.
    fn retained_last(&self) -> Var<'t, F> {
        if self.last.requires_grad() {
            self.last.retain_grad()
        } else {
            self.leaves[0]
        }
    }
}

impl Program {
    /// Records the program on `tape` with leaves `leaves` = [x, W, b].
    fn record<'t, F: Real>(&self, tape: &'t Tape<F>, leaves: [Var<'t, F>; 3]) -> Run<'t, F> {
        let [x, w, b] = leaves;
        let (rows, h) = (self.x.shape()[0], self.x.shape()[1]);
        let mut vals = vec![x, tape.constant(self.c.cast())];
        for s in &self.steps {
            let n = vals.len();
            let v = |i: usize| vals[i % n];
            let next = match *s {
                Step::Tanh(a) => v(a).tanh(),
                Step::Sigmoid(a) => v(a).sigmoid(),
                Step::Scale(a, c) => v(a).mul_scalar(F::of(f64::from(c))),
                Step::Add(a, b) => v(a) + v(b),
                Step::Sub(a, b) => v(a) - v(b),
                Step::Mul(a, b) => v(a) * v(b),
                Step::Linear(a) => v(a).matmul(w) + b,
                Step::LinearT(a) => v(a).matmul_t(w),
                Step::Softmax(a) => v(a).softmax(),
                Step::CenterRows(a) => v(a) + v(a).mean_axis(1).reshape(&[rows, 1]),
                Step::SliceConcat(a) => {
                    let k = h.div_ceil(2);
                    let mut parts = vec![v(a).slice(1, 0, k).tanh()];
                    if k < h {
                        parts.push(v(a).slice(1, k, h - k));
                    }
                    Var::concat(&parts, 1)
                }
                Step::Dropout(a, seed) => v(a).dropout(0.3, seed),
                Step::Select(a, b, seed) => {
                    let cond: Vec<bool> = uniform(&[rows * h], seed)
                        .data()
                        .iter()
                        .map(|&u| u > 0.0)
                        .collect();
                    Var::select(&cond, v(a), v(b))
                }
                Step::Gather(a, seed) => {
                    let idx: Vec<usize> = uniform(&[rows], seed)
                        .data()
                        .iter()
                        .map(|&u| (((u + 1.0) / 2.0) * rows as f64) as usize % rows)
                        .collect();
                    v(a).gather(&idx)
                }
                Step::StackSum(a, b) => Var::stack(&[v(a), v(b)], 0).sum_axis(0),
                Step::SquaredError(a, b) => v(a).mse(v(b), Reduction::None),
                Step::Gram(a) => v(a)
                    .matmul(v(a).t_matmul(v(a)))
                    .mul_scalar(F::of(0.25))
                    .tanh(),
            };
            vals.push(next);
        }
        let last = *vals.last().unwrap();
        // Every value feeds the loss, so every step's backward rule runs.
        let loss = vals[2..]
            .iter()
            .fold(weighted(last, &self.r), |acc, &v| acc + v.mean())
            + last.cross_entropy(&self.targets, Reduction::Mean);
        Run {
            leaves,
            values: vals,
            last,
            loss,
        }
    }

    fn leaves<'t, F: Real>(&self, tape: &'t Tape<F>) -> [Var<'t, F>; 3] {
        [
            tape.var(self.x.cast()),
            tape.var(self.w.cast()),
            tape.var(self.b.cast()),
        ]
    }
}

/// Everything a run produces, owned (so the tape can be reset).
#[derive(Debug)]
struct Outcome<F: Real> {
    loss: Tensor<F>,
    values: Vec<Tensor<F>>,
    grads: Vec<Tensor<F>>,
}

fn run_program<F: Real>(tape: &Tape<F>, p: &Program) -> (Outcome<F>, tapegrad::Grads<F>) {
    let run = p.record(tape, p.leaves(tape));
    let last = run.retained_last();
    let g = run.loss.backward();
    let mut grads: Vec<Tensor<F>> = run.leaves.iter().map(|&v| g.wrt(v).clone()).collect();
    grads.push(g.wrt(last).clone());
    let outcome = Outcome {
        loss: run.loss.to_tensor(),
        values: run.values.iter().map(Var::to_tensor).collect(),
        grads,
    };
    (outcome, g)
}

fn same_outcome<F: Real>(what: &str, a: &Outcome<F>, b: &Outcome<F>) -> Result<(), TestCaseError> {
    same(&format!("{what}: loss"), &a.loss, &b.loss)?;
    prop_assert_eq!(a.values.len(), b.values.len());
    for (i, (x, y)) in a.values.iter().zip(&b.values).enumerate() {
        same(&format!("{what}: value {i}"), x, y)?;
    }
    for (i, (x, y)) in a.grads.iter().zip(&b.grads).enumerate() {
        same(&format!("{what}: gradient {i}"), x, y)?;
    }
    Ok(())
}

fn backward_twice<F: Real>(p: &Program) -> Result<(), TestCaseError> {
    let tape = Tape::<F>::new();
    let run = p.record(&tape, p.leaves(&tape));
    let last = run.retained_last();
    let first = run.loss.backward();
    let second = run.loss.backward();
    let third = run.loss.backward();
    for v in run.leaves.iter().copied().chain([last]) {
        same("backward twice", first.wrt(v), second.wrt(v))?;
        same("backward thrice", first.wrt(v), third.wrt(v))?;
    }
    Ok(())
}

/// Releasing every value no recorded backward rule reads — after the whole
/// forward pass, and again with each value released as soon as the next
/// step is recorded — leaves the gradients bitwise unchanged; the released
/// buffers really go (fewer elements held), and what stays is read.
fn release_keeps_gradients<F: Real>(p: &Program) -> Result<(), TestCaseError> {
    let (want, _) = run_program(&Tape::<F>::new(), p);

    let tape = Tape::<F>::new();
    let run = p.record(&tape, p.leaves(&tape));
    let last = run.retained_last();
    let values = |t: &Tape<F>| t.held_elements();
    let held = values(&tape);
    let freed = tape.release_unneeded(&[run.loss]);
    // Pooled buffers are reused (held); buffers the pool did not issue
    // (the leaves' own tensors) are dropped.
    prop_assert!(values(&tape) <= held);
    let g = run.loss.backward();
    for (k, v) in run.leaves.iter().copied().chain([last]).enumerate() {
        same(
            &format!("released after forward: gradient {k}"),
            g.wrt(v),
            &want.grads[k],
        )?;
    }
    // A second backward over the released graph is still exact.
    let g2 = run.loss.backward();
    for v in run.leaves.iter().copied().chain([last]) {
        same("released, backward twice", g.wrt(v), g2.wrt(v))?;
    }
    prop_assert!(freed <= held);

    // Per var: each recorded value released with `Var::release`.
    let tape = Tape::<F>::new();
    let run = p.record(&tape, p.leaves(&tape));
    let last = run.retained_last();
    for v in &run.values[..run.values.len() - 1] {
        v.release();
    }
    let g = run.loss.backward();
    for (k, v) in run.leaves.iter().copied().chain([last]).enumerate() {
        same(
            &format!("released per var: gradient {k}"),
            g.wrt(v),
            &want.grads[k],
        )?;
    }
    Ok(())
}

fn reset_and_reuse<F: Real>(p: &Program, other: &Program) -> Result<(), TestCaseError> {
    let (fresh, _) = run_program(&Tape::<F>::new(), p);
    let mut tape = Tape::<F>::new();
    // Dirty the pool with another program's buffers, gradients included.
    let (_, g) = run_program(&tape, other);
    tape.reset_with(g);
    let (reused, g) = run_program(&tape, p);
    same_outcome("after reset_with", &fresh, &reused)?;
    drop(g);
    tape.reset();
    let (again, _) = run_program(&tape, p);
    same_outcome("after reset", &fresh, &again)?;
    prop_assert_eq!(tape.generation(), 2);
    Ok(())
}

fn seeded_backward<F: Real>(
    p: &Program,
    seed: u64,
    alpha: i8,
    beta: i8,
) -> Result<(), TestCaseError> {
    let tape = Tape::<F>::new();
    let run = p.record(&tape, p.leaves(&tape));
    let y = run.last;
    let shape = y.shape();
    let s1 = uniform(&shape, seed);
    let s2 = uniform(&shape, seed ^ 7);
    let (a, b) = (f64::from(alpha), f64::from(beta));
    let mix = Tensor::from_vec(
        s1.data()
            .iter()
            .zip(s2.data())
            .map(|(x, y)| a * x + b * y)
            .collect(),
        &shape,
    )
    .unwrap();

    // A seed s is the gradient of Σ y ⊙ s, bit for bit.
    let g1 = y.backward_with(s1.cast());
    let g1_sum = weighted(y, &s1).backward();
    for &v in &run.leaves {
        same(
            "backward_with(s) vs backward of Σ y⊙s",
            g1.wrt(v),
            g1_sum.wrt(v),
        )?;
    }
    // A scalar seeded with 1 is plain backward.
    let plain = run.loss.backward();
    let ones = run.loss.backward_with(Tensor::scalar(F::one()));
    for &v in &run.leaves {
        same("backward_with(1) vs backward", plain.wrt(v), ones.wrt(v))?;
    }

    // A zero seed gives exactly zero gradients (every rule treats a zero
    // incoming gradient as a structural zero).
    let gz = y.backward_with(Tensor::zeros(&shape));
    for &v in &run.leaves {
        prop_assert!(
            gz.wrt(v).data().iter().all(|&g| g == F::zero()),
            "zero seed gave a non-zero gradient"
        );
    }

    // Linear in the seed: g(αs₁ + βs₂) = α·g(s₁) + β·g(s₂).
    let g2 = y.backward_with(s2.cast());
    let gm = y.backward_with(mix.cast());
    for &v in &run.leaves {
        let (x1, x2) = (as_f64(g1.wrt(v)), as_f64(g2.wrt(v)));
        let want: Vec<f64> = x1.iter().zip(&x2).map(|(p, q)| a * p + b * q).collect();
        let scale: Vec<f64> = x1
            .iter()
            .zip(&x2)
            .map(|(p, q)| (a * p).abs() + (b * q).abs())
            .collect();
        within_rounding("linearity in the seed", gm.wrt(v), &want, &scale)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// Backward twice (and thrice) on the same root gives bitwise-identical
    /// gradients: nothing is consumed, and pooled buffers come back clean.
    #[test]
    fn backward_twice_is_bitwise_identical(p in program()) {
        backward_twice::<f64>(&p)?;
        backward_twice::<f32>(&p)?;
    }

    /// Released values (every one no backward rule reads) change no
    /// gradient: bitwise equal to the run that kept them, f64 and f32.
    #[test]
    fn releasing_unread_values_keeps_gradients_bitwise(p in program()) {
        release_keeps_gradients::<f64>(&p)?;
        release_keeps_gradients::<f32>(&p)?;
    }

    /// A reset tape, its pool dirty from another program, records and
    /// differentiates exactly as a fresh tape does.
    #[test]
    fn reset_and_reuse_matches_a_fresh_tape(p in program(), other in program()) {
        reset_and_reuse::<f64>(&p, &other)?;
        reset_and_reuse::<f32>(&p, &other)?;
    }

    /// backward_with(seed) is the gradient of Σ y ⊙ seed and is linear in
    /// the seed.
    #[test]
    fn backward_with_is_linear_in_the_seed(
        p in program(),
        seed in any::<u64>(),
        alpha in -3i8..=3,
        beta in -3i8..=3,
    ) {
        seeded_backward::<f64>(&p, seed, alpha, beta)?;
        seeded_backward::<f32>(&p, seed, alpha, beta)?;
    }

    /// Whole programs — every op family, shared values, broadcasting,
    /// pooled buffers — against finite differences (f64, ε = 1e-5, the
    /// programs being smooth; relative error ≤ 1e-6 as in ops_gradcheck).
    #[test]
    fn random_programs_pass_gradcheck(p in program()) {
        let opts = GradcheckOptions { eps: 1e-5, ..GradcheckOptions::default() };
        let inputs = [p.x.clone(), p.w.clone(), p.b.clone()];
        let report = gradcheck_with(&inputs, opts, |tape, v| {
            p.record(tape, [v[0], v[1], v[2]]).loss
        });
        let err = report.max_rel_error();
        prop_assert!(err <= 1e-6, "relative error {:e}: {:?}", err, report);
    }
}

// ----- deep graphs -----------------------------------------------------------

/// A chain of a million nodes differentiates and drops on a 2 MiB stack:
/// the sweep is a loop, not a recursion, and so is dropping the tape.
#[test]
fn million_node_chain_on_a_small_stack() {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(|| {
            let tape = Tape::<f64>::new();
            let x = tape.var(Tensor::scalar(0.25));
            let mut y = x;
            // y ← 1 − y, twice per iteration: y returns to x, dy/dx = (−1)²ⁿ.
            for _ in 0..500_000 {
                y = y.mul_scalar(-1.0).add_scalar(1.0);
            }
            assert_eq!(tape.len(), 1_000_001);
            assert_eq!(y.item(), 0.25);
            let g = y.backward();
            assert_eq!(g.wrt(x).item(), 1.0);
            drop(g);
            drop(tape);
        })
        .unwrap()
        .join()
        .expect("the million-node chain overflowed or failed");
}

// ----- parameters ------------------------------------------------------------

#[derive(Debug, Clone)]
struct Unrolled {
    xs: Vec<Tensor<f64>>,
    w_ih: Tensor<f64>,
    w_hh: Tensor<f64>,
    bias: Tensor<f64>,
    rs: Vec<Tensor<f64>>,
}

fn unrolled() -> impl Strategy<Value = Unrolled> {
    (1usize..=5, 1usize..=3, 1usize..=3, 1usize..=4, any::<u64>()).prop_map(
        |(steps, batch, input, hidden, seed)| Unrolled {
            xs: (0..steps as u64)
                .map(|t| uniform(&[batch, input], seed ^ (10 + t)))
                .collect(),
            w_ih: uniform(&[hidden, input], seed ^ 1),
            w_hh: uniform(&[hidden, hidden], seed ^ 2),
            bias: uniform(&[hidden], seed ^ 3),
            rs: (0..steps as u64)
                .map(|t| uniform(&[batch, hidden], seed ^ (100 + t)))
                .collect(),
        },
    )
}

/// h(t) = tanh(x(t)·W_ihᵀ + h(t−1)·W_hhᵀ + b), L = Σ_t Σ h(t) ⊙ R(t), with
/// the weights from `weights(t)`.
fn unroll<'t, F: Real>(
    tape: &'t Tape<F>,
    u: &Unrolled,
    mut weights: impl FnMut(usize) -> [Var<'t, F>; 3],
) -> Var<'t, F> {
    let (batch, hidden) = (u.xs[0].shape()[0], u.w_hh.shape()[0]);
    let mut h = tape.constant(Tensor::zeros(&[batch, hidden]));
    let mut loss = tape.scalar(F::zero());
    for (t, (x, r)) in u.xs.iter().zip(&u.rs).enumerate() {
        let [w_ih, w_hh, b] = weights(t);
        let x = tape.constant(x.cast());
        h = (x.matmul_t(w_ih) + h.matmul_t(w_hh) + b).tanh();
        loss = loss + weighted(h, r);
    }
    loss
}

fn tied_weights_sum_over_steps<F: Real>(u: &Unrolled) -> Result<(), TestCaseError> {
    let mut store = ParamStore::<F>::new();
    let keys = [
        store.insert("w_ih", u.w_ih.cast()),
        store.insert("w_hh", u.w_hh.cast()),
        store.insert("b", u.bias.cast()),
    ];

    // Tied: the keys are bound again at every step and give the same vars.
    let tape = Tape::<F>::new();
    let bound = keys.map(|k| tape.param(&store, k));
    let loss = unroll(&tape, u, |_| {
        let before = tape.len();
        let again = keys.map(|k| tape.param(&store, k));
        assert_eq!(tape.len(), before, "rebinding records nothing");
        for (a, b) in again.iter().zip(&bound) {
            assert_eq!(a.id(), b.id(), "binding a key twice gives the same var");
        }
        again
    });
    let g = loss.backward();
    let listed: Vec<_> = g.params().map(|(k, _)| k).collect();
    prop_assert_eq!(listed, keys.to_vec());

    // Untied: a fresh leaf per step with the same value.
    let untied = Tape::<F>::new();
    let mut per_step: Vec<[Var<'_, F>; 3]> = Vec::new();
    let loss_u = unroll(&untied, u, |_| {
        let w = keys.map(|k| untied.var(store.get(k).clone()));
        per_step.push(w);
        w
    });
    same(
        "tied vs untied loss",
        &loss.to_tensor(),
        &loss_u.to_tensor(),
    )?;
    let gu = loss_u.backward();

    for (j, &key) in keys.iter().enumerate() {
        let tied = g.param(key).expect("bound before backward");
        same("param(key) vs wrt(var)", tied, g.wrt(bound[j]))?;
        let n = tied.numel();
        let (mut sum, mut scale) = (vec![0.0; n], vec![0.0; n]);
        for w in &per_step {
            for (i, v) in as_f64(gu.wrt(w[j])).into_iter().enumerate() {
                sum[i] += v;
                scale[i] += v.abs();
            }
        }
        within_rounding(store.name(key), tied, &sum, &scale)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// A weight bound at T steps is one leaf, and its gradient is the sum of
    /// the gradients of T untied copies (the BPTT identity).
    #[test]
    fn tied_parameter_gradient_is_the_sum_over_steps(u in unrolled()) {
        tied_weights_sum_over_steps::<f64>(&u)?;
        tied_weights_sum_over_steps::<f32>(&u)?;
    }
}

/// A weight whose gradient the sweep defers (left operands of ≤ 512 rows)
/// over uses of uneven sizes that hold more G elements than one deferral
/// block (2²¹ for a weight of 2²⁰ elements): the sweep flushes early, also
/// when a use does not fit in what is left of a block (1.5M elements in,
/// a 1.6M one next), and sizes the last block to what is left. The
/// gradient of `Σ_t (x_t·W ⊙ R_t).sum()` is `Σ_t x_tᵀ·R_t` exactly, summed
/// here element by element: equal to 1e-12 relative (f64, only the
/// summation order differs), in both orientations.
#[test]
fn deferred_weight_gradients_over_uneven_uses_flush_early_and_stay_exact() {
    let (k, n) = (128, 8192);
    let rows = [100usize, 200, 1, 150, 37];
    let xs: Vec<Tensor<f64>> = (0..rows.len())
        .map(|t| uniform(&[rows[t], k], 10 + t as u64))
        .collect();
    let rs: Vec<Tensor<f64>> = (0..rows.len())
        .map(|t| uniform(&[rows[t], n], 100 + t as u64))
        .collect();
    // want[a][b] = Σ_t Σ_r x_t[r][a]·R_t[r][b]
    let mut want = vec![0.0f64; k * n];
    for (x, r) in xs.iter().zip(&rs) {
        for (xr, rr) in x.data().chunks_exact(k).zip(r.data().chunks_exact(n)) {
            for a in 0..k {
                for b in 0..n {
                    want[a * n + b] += xr[a] * rr[b];
                }
            }
        }
    }
    for transposed in [false, true] {
        let tape = Tape::<f64>::new();
        let w = tape.var(if transposed {
            uniform(&[n, k], 1)
        } else {
            uniform(&[k, n], 1)
        });
        let mut loss: Option<Var<'_, f64>> = None;
        for (x, r) in xs.iter().zip(&rs) {
            let x = tape.constant(x.clone());
            let y = if transposed {
                x.matmul_t(w)
            } else {
                x.matmul(w)
            };
            let term = weighted(y, r);
            loss = Some(loss.map_or(term, |l| l + term));
        }
        let g = loss.expect("five uses").backward();
        let got = g.wrt(w).data();
        let mut worst = 0.0f64;
        for a in 0..k {
            for b in 0..n {
                let v = if transposed {
                    got[b * k + a]
                } else {
                    got[a * n + b]
                };
                let e = want[a * n + b];
                worst = worst.max((v - e).abs() / e.abs().max(1.0));
            }
        }
        assert!(
            worst <= 1e-12,
            "W{}: worst relative error {worst:e}",
            if transposed { "ᵀ" } else { "" }
        );
    }
}

/// A reordered weight Wᵀ (a transpose node) as the right operand of every
/// product form — `a·Wᵀ`, `a·(Wᵀ)ᵀ`, `aᵀ·Wᵀ`, `c + a·Wᵀ`, with small left
/// operands (deferred) and tall ones (not) — passes its gradient straight
/// on to W; Wᵀ also feeding an elementwise op keeps a slot of its own,
/// whose transpose adds into W's. All of it against central differences
/// (L is linear in W: exact at ε = 1e-2, 1e-6 relative), and with
/// `retain_grad` on Wᵀ its gradient is the transpose of W's when Wᵀ is
/// W's only route.
#[test]
fn products_with_a_reordered_weight_pass_its_gradient_to_the_source() {
    for (rows, cols, m) in [(3, 4, 2), (4, 4, 5), (2, 6, 600)] {
        let inputs = [
            uniform(&[rows, cols], 1), // W
            uniform(&[m, cols], 2),    // a for a·Wᵀ
            uniform(&[m, rows], 3),    // a for a·(Wᵀ)ᵀ
            uniform(&[cols, m], 4),    // a for aᵀ·Wᵀ
        ];
        let opts = GradcheckOptions {
            eps: 1e-2,
            ..GradcheckOptions::default()
        };
        let report = gradcheck_with(&inputs, opts, |tape, v| {
            let (w, a, b, c) = (v[0], v[1], v[2], v[3]);
            let wt = w.transpose(); // [cols, rows]
            let p1 = a.matmul(wt); // [m, rows]
            let p2 = b.matmul_t(wt); // [m, cols]
            let p3 = c.t_matmul(wt); // [m, rows]
            let p4 = p1.addmm(a, wt); // p1 + a·Wᵀ
            let elementwise = wt * tape.constant(uniform(&[cols, rows], 9).cast());
            weighted(p1, &uniform(&[m, rows], 5))
                + weighted(p2, &uniform(&[m, cols], 6))
                + weighted(p3, &uniform(&[m, rows], 7))
                + weighted(p4, &uniform(&[m, rows], 8))
                + elementwise.sum()
        });
        let err = report.max_rel_error();
        assert!(
            err <= 1e-6,
            "W [{rows}×{cols}], m = {m}: relative error {err:e}: {report:?}"
        );

        // retain_grad on Wᵀ: it keeps its own slot, and it is (∂W)ᵀ.
        let tape = Tape::<f64>::new();
        let w = tape.var(uniform(&[rows, cols], 1));
        let wt = w.transpose().retain_grad();
        let a = tape.constant(uniform(&[m, cols], 2));
        let g = weighted(a.matmul(wt), &uniform(&[m, rows], 5)).backward();
        let (gw, gwt) = (g.wrt(w), g.wrt(wt));
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(gw.data()[r * cols + c], gwt.data()[c * rows + r]);
            }
        }
    }
}

/// A weight used both as `x·W` and as `v·Wᵀ` in one graph (square and not):
/// each use's contribution keeps its own orientation.
#[test]
fn weight_used_plain_and_transposed() {
    for (rows, cols) in [(3, 3), (3, 2), (2, 5)] {
        let inputs = [
            uniform(&[rows, cols], 1),
            uniform(&[4, rows], 2),
            uniform(&[5, cols], 3),
        ];
        // L is linear in W: central differences are exact at ε = 1e-2.
        let opts = GradcheckOptions {
            eps: 1e-2,
            ..GradcheckOptions::default()
        };
        let report = gradcheck_with(&inputs, opts, |_, v| {
            let (w, x, u) = (v[0], v[1], v[2]);
            let plain = x.matmul(w); // [4, cols]
            let transposed = u.matmul_t(w); // [5, rows]
            let again = x.matmul(w).mul_scalar(0.5); // a second plain use
            weighted(plain, &uniform(&[4, cols], 4))
                + weighted(transposed, &uniform(&[5, rows], 5))
                + again.sum()
        });
        let err = report.max_rel_error();
        assert!(
            err <= 1e-6,
            "W [{rows}×{cols}]: relative error {err:e}: {report:?}"
        );
    }
}
