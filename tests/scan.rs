//! The linear-recurrence primitive (`Var::linear_scan`,
//! `Var::linear_scan_reverse`) against independent judges: its values
//! against the recurrence written as a plain loop (exact: both do the same
//! multiply-adds), its gradients with respect to a, b and h0 against
//! central finite differences in f64 (relative error ≤ 1e-6, floor 1e-3,
//! ε = 1e-5), on random shapes [T, …] with T 1..=12 and 0..=2 further axes,
//! a ∈ (−1, 1) and of either sign, b and h0 of either sign, with and
//! without h0, in both directions. 128 cases per property
//! (`PROPTEST_CASES` overrides).

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use tapegrad::gradcheck::{gradcheck_with, GradcheckOptions};
use tapegrad::{Tape, Tensor, Var};

/// Relative error allowed against finite differences.
const TOL: f64 = 1e-6;

/// A random case: shape [T, rest…], a, b, h0 values.
#[derive(Debug, Clone)]
struct Case {
    shape: Vec<usize>,
    a: Vec<f64>,
    b: Vec<f64>,
    h0: Option<Vec<f64>>,
    reverse: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=12,
        prop::collection::vec(1usize..=3, 0..=2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_flat_map(|(t, rest, with_h0, reverse)| {
            let n: usize = rest.iter().product();
            let mut shape = vec![t];
            shape.extend(&rest);
            (
                Just(shape),
                prop::collection::vec(-0.99f64..0.99, t * n),
                prop::collection::vec(-2.0f64..2.0, t * n),
                prop::collection::vec(-2.0f64..2.0, n),
                Just(with_h0),
                Just(reverse),
            )
        })
        .prop_map(|(shape, a, b, h0, with_h0, reverse)| Case {
            shape,
            a,
            b,
            h0: with_h0.then_some(h0),
            reverse,
        })
}

fn scan<'t>(
    a: Var<'t, f64>,
    b: Var<'t, f64>,
    h0: Option<Var<'t, f64>>,
    reverse: bool,
) -> Var<'t, f64> {
    if reverse {
        Var::linear_scan_reverse(a, b, h0)
    } else {
        Var::linear_scan(a, b, h0)
    }
}

/// The recurrence as a plain loop over time.
fn by_loop(c: &Case) -> Vec<f64> {
    let t_len = c.shape[0];
    let n = c.a.len() / t_len;
    let mut h = c.h0.clone().unwrap_or(vec![0.0; n]);
    let mut out = vec![0.0; c.a.len()];
    for s in 0..t_len {
        let t = if c.reverse { t_len - 1 - s } else { s };
        for i in 0..n {
            h[i] = c.a[t * n + i] * h[i] + c.b[t * n + i];
            out[t * n + i] = h[i];
        }
    }
    out
}

fn config() -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(128),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn values_equal_the_loop(c in case()) {
        let tape = Tape::<f64>::new();
        let a = tape.constant(Tensor::from_vec(c.a.clone(), &c.shape).unwrap());
        let b = tape.constant(Tensor::from_vec(c.b.clone(), &c.shape).unwrap());
        let h0 = c.h0.as_ref().map(|h| tape.constant(Tensor::from_vec(h.clone(), &c.shape[1..]).unwrap()));
        let h = scan(a, b, h0, c.reverse);
        prop_assert_eq!(h.shape().to_vec(), c.shape.clone());
        prop_assert_eq!(h.value().data().to_vec(), by_loop(&c));
    }

    #[test]
    fn gradients_match_central_differences(c in case(), seed in 0u64..1000) {
        let mut inputs = vec![
            Tensor::from_vec(c.a.clone(), &c.shape).unwrap(),
            Tensor::from_vec(c.b.clone(), &c.shape).unwrap(),
        ];
        if let Some(h0) = &c.h0 {
            inputs.push(Tensor::from_vec(h0.clone(), &c.shape[1..]).unwrap());
        }
        // L = Σ h ⊙ R with a fixed random weighting, so every output counts.
        let r = Tensor::<f64>::randn(&c.shape, seed);
        let opts = GradcheckOptions { eps: 1e-5, floor: 1e-3 };
        let report = gradcheck_with(&inputs, opts, |tape, v| {
            let h = scan(v[0], v[1], v.get(2).copied(), c.reverse);
            (h * tape.constant(r.clone())).sum()
        });
        prop_assert!(report.max_rel_error() <= TOL, "{c:?}: {}", report.max_rel_error());
    }
}

#[test]
fn zero_steps_give_an_empty_output_and_zero_gradients() {
    let tape = Tape::<f64>::new();
    let a = tape.var(Tensor::zeros(&[0, 2]));
    let b = tape.var(Tensor::zeros(&[0, 2]));
    let h0 = tape.var(Tensor::ones(&[2]));
    let h = Var::linear_scan(a, b, Some(h0));
    assert_eq!(h.shape().as_slice(), &[0, 2]);
    let g = h.sum().backward();
    assert_eq!(g.wrt(h0).data(), &[0.0, 0.0]);
}

#[test]
#[should_panic(expected = "linear_scan")]
fn mismatched_shapes_are_refused_by_name() {
    let tape = Tape::<f64>::new();
    let a = tape.constant(Tensor::zeros(&[3, 2]));
    let b = tape.constant(Tensor::zeros(&[3, 4]));
    let _ = Var::linear_scan(a, b, None);
}

#[test]
#[should_panic(expected = "h0 of shape")]
fn an_h0_of_the_wrong_shape_is_refused() {
    let tape = Tape::<f64>::new();
    let a = tape.constant(Tensor::zeros(&[3, 2]));
    let h0 = tape.constant(Tensor::zeros(&[3]));
    let _ = Var::linear_scan(a, a, Some(h0));
}

/// Long sequences stay exact: with a ∈ (0, 1) the recurrence is a
/// contraction, so after T = 10,000 steps in f64 the one-node scan and the
/// loop agree to the last bit, and the gradient of h0 (∏ a(t), about
/// 1e-300 here, not 0 nor NaN) is the product the loop gives.
#[test]
fn ten_thousand_steps_match_the_loop_exactly() {
    let (t, n) = (10_000, 3);
    let a: Vec<f64> = (0..t * n)
        .map(|i| 0.9 + 0.09 * ((i % 7) as f64 / 7.0))
        .collect();
    let b: Vec<f64> = (0..t * n).map(|i| ((i % 13) as f64 - 6.0) / 6.0).collect();
    let c = Case {
        shape: vec![t, n],
        a: a.clone(),
        b,
        h0: Some(vec![1.0, -1.0, 0.5]),
        reverse: false,
    };
    let tape = Tape::<f64>::new();
    let av = tape.constant(Tensor::from_vec(c.a.clone(), &c.shape).unwrap());
    let bv = tape.constant(Tensor::from_vec(c.b.clone(), &c.shape).unwrap());
    let h0 = tape.var(Tensor::from_vec(c.h0.clone().unwrap(), &[n]).unwrap());
    let h = Var::linear_scan(av, bv, Some(h0));
    assert_eq!(h.value().data(), by_loop(&c).as_slice());
    let last = h.slice(0, t - 1, 1).sum();
    let g = last.backward();
    for i in 0..n {
        let prod: f64 = (0..t).map(|s| a[s * n + i]).product();
        let got = g.wrt(h0).data()[i];
        assert!(
            got.is_finite() && (got - prod).abs() <= 1e-12 * prod.abs(),
            "{got} vs {prod}"
        );
    }
}

/// Forward mode runs through the scan (it is generic over `Real`, so
/// `Dual` numbers go through the same loop): the JVP of Σ h ⊙ R along
/// (ȧ, ḃ, ḣ0) equals the reverse-mode gradient dotted with the tangent,
/// to 1e-12 relative, in both directions.
#[test]
fn forward_mode_agrees_with_reverse_mode() {
    use tapegrad::forward::jvp;
    for reverse in [false, true] {
        let shape = [7, 2, 3];
        let a = Tensor::<f64>::from_fn(&shape, |i| 0.9 * ((i * 37 % 19) as f64 / 19.0 - 0.5));
        let b = Tensor::<f64>::randn(&shape, 1);
        let h0 = Tensor::<f64>::randn(&[2, 3], 2);
        let r = Tensor::<f64>::randn(&shape, 3);
        let tangents = [
            Tensor::randn(&shape, 4),
            Tensor::randn(&shape, 5),
            Tensor::randn(&[2, 3], 6),
        ];
        let rd = r.cast::<tapegrad::forward::Dual<f64>>();
        let out = jvp(&[a.clone(), b.clone(), h0.clone()], &tangents, |tape, v| {
            let h = if reverse {
                Var::linear_scan_reverse(v[0], v[1], Some(v[2]))
            } else {
                Var::linear_scan(v[0], v[1], Some(v[2]))
            };
            (h * tape.constant(rd.clone())).sum()
        });
        let tape = Tape::<f64>::new();
        let vars = [tape.var(a), tape.var(b), tape.var(h0)];
        let h = scan(vars[0], vars[1], Some(vars[2]), reverse);
        let g = (h * tape.constant(r)).sum().backward();
        let want: f64 = vars
            .iter()
            .zip(&tangents)
            .map(|(v, t)| {
                g.wrt(*v)
                    .data()
                    .iter()
                    .zip(t.data())
                    .map(|(p, q)| p * q)
                    .sum::<f64>()
            })
            .sum();
        let got = out.tangent.item();
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}
