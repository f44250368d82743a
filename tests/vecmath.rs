//! The slice kernels of `tensor::vecmath` (`Real::tanh_in_place`,
//! `sigmoid_in_place`, `exp_in_place` and their out-of-place `*_extend`
//! forms): SIMD for f32, scalar for f64.
//!
//! Tolerances: f32 results within 3 ULP (tanh), 4 ULP (σ) and 1 ULP (exp) of
//! the f64 function rounded to f32 — `rten-vecmath`'s stated bounds (against
//! the f32 standard library; worst seen here against f64: 2, 2 and 1 ULP);
//! results below the smallest normal f32 within `f32::MIN_POSITIVE`
//! absolutely (σ flushes them to 0). f64 results equal the standard
//! library's exactly. Every element's result is independent of where it
//! sits in the slice (vector body or tail), bit for bit.

use proptest::prelude::*;
use tapegrad::tensor::vecmath;
use tapegrad::Real;

/// Distance in units in the last place between two finite f32 values.
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 {
            i32::MIN - i
        } else {
            i
        }
    };
    key(a).abs_diff(key(b))
}

#[derive(Clone, Copy, Debug)]
enum Kernel {
    Tanh,
    Sigmoid,
    Exp,
}

impl Kernel {
    const ALL: [Kernel; 3] = [Kernel::Tanh, Kernel::Sigmoid, Kernel::Exp];

    /// The out-of-place form (`Real::*_extend`), appended to `dst`.
    fn extend<F: Real>(self, dst: &mut Vec<F>, xs: &[F]) {
        match self {
            Kernel::Tanh => F::tanh_extend(dst, xs),
            Kernel::Sigmoid => F::sigmoid_extend(dst, xs),
            Kernel::Exp => F::exp_extend(dst, xs),
        }
    }

    fn in_place<F: Real>(self, xs: &mut [F]) {
        match self {
            Kernel::Tanh => F::tanh_in_place(xs),
            Kernel::Sigmoid => F::sigmoid_in_place(xs),
            Kernel::Exp => F::exp_in_place(xs),
        }
    }

    fn exact(self, x: f64) -> f64 {
        match self {
            Kernel::Tanh => x.tanh(),
            Kernel::Sigmoid => vecmath::sigmoid_scalar(x),
            Kernel::Exp => x.exp(),
        }
    }

    fn max_ulps(self) -> u32 {
        match self {
            Kernel::Tanh => 3,
            Kernel::Sigmoid => 4,
            Kernel::Exp => 1,
        }
    }
}

/// Checks every element of `xs` against the f64 function; returns the worst
/// ULP distance seen among normal results.
fn check_f32(k: Kernel, xs: &[f32]) -> u32 {
    let mut ys = xs.to_vec();
    k.in_place(&mut ys);
    let mut worst = 0;
    for (&x, &y) in xs.iter().zip(&ys) {
        let want = k.exact(x as f64) as f32;
        if x.is_nan() {
            assert!(y.is_nan(), "{k:?}({x}) = {y}, want NaN");
        } else if want.is_infinite() || want.abs() < f32::MIN_POSITIVE {
            let ok = if want.is_infinite() {
                y == want
            } else {
                (y - want).abs() <= f32::MIN_POSITIVE
            };
            assert!(ok, "{k:?}({x}) = {y:e}, want {want:e}");
        } else {
            let d = ulps(y, want);
            assert!(
                d <= k.max_ulps(),
                "{k:?}({x:e}) = {y:e}, want {want:e}: {d} ULP > {}",
                k.max_ulps()
            );
            worst = worst.max(d);
        }
    }
    worst
}

#[test]
fn f32_kernels_are_within_their_ulp_bounds_on_a_dense_grid() {
    // Every 997th f32 bit pattern of the ranges that matter (|x| up to 100,
    // tiny values included): about 2 million inputs per kernel.
    let xs: Vec<f32> = (0..u32::MAX / 997)
        .map(|k| f32::from_bits(k * 997))
        .filter(|x| x.is_finite() && x.abs() <= 100.0)
        .flat_map(|x| [x, -x])
        .collect();
    for k in Kernel::ALL {
        let worst = check_f32(k, &xs);
        eprintln!("{k:?}: worst {worst} ULP over {} inputs", xs.len());
    }
}

#[test]
fn f32_kernels_handle_special_values() {
    let xs = [
        0.0f32,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-30,
        -1e-30,
        88.0,
        -88.0,
        89.0,
        -104.0,
    ];
    for k in Kernel::ALL {
        check_f32(k, &xs);
    }
    let mut t = [20.0f32, -20.0, 0.0];
    f32::tanh_in_place(&mut t);
    assert_eq!(t, [1.0, -1.0, 0.0]);
    let mut s = [0.0f32, 1000.0, -1000.0];
    f32::sigmoid_in_place(&mut s);
    assert_eq!(s, [0.5, 1.0, 0.0]);
}

#[test]
fn scalar_sigmoid_is_stable_and_symmetric() {
    use vecmath::sigmoid_scalar as sigmoid;
    assert_eq!(sigmoid(0.0f64), 0.5);
    assert_eq!(sigmoid(-1000.0f64), 0.0);
    assert_eq!(sigmoid(1000.0f64), 1.0);
    assert!(sigmoid(-100.0f32) > 0.0); // no 1/(1+∞) flush for moderate x
    for &x in &[0.3f64, 2.0, 17.0] {
        assert!((sigmoid(x) + sigmoid(-x) - 1.0).abs() < 1e-15);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Random slices of every length up to 70 (bodies and tails of the SIMD
    /// loop): within bounds, and each element's result bitwise the same as
    /// computing it alone.
    #[test]
    fn f32_results_do_not_depend_on_position(
        xs in prop::collection::vec(-30.0f32..30.0, 0..70),
    ) {
        for k in Kernel::ALL {
            check_f32(k, &xs);
            let mut whole = xs.clone();
            k.in_place(&mut whole);
            for (i, &x) in xs.iter().enumerate() {
                let mut one = [x];
                k.in_place(&mut one);
                prop_assert_eq!(one[0].to_bits(), whole[i].to_bits(), "{:?} at {}", k, i);
            }
        }
    }

    /// f64 takes the scalar loops: bitwise the standard library.
    #[test]
    fn f64_kernels_are_the_standard_library(
        xs in prop::collection::vec(-50.0f64..50.0, 0..40),
    ) {
        let (mut t, mut s, mut e) = (xs.clone(), xs.clone(), xs.clone());
        f64::tanh_in_place(&mut t);
        f64::sigmoid_in_place(&mut s);
        f64::exp_in_place(&mut e);
        for (i, &x) in xs.iter().enumerate() {
            prop_assert_eq!(t[i].to_bits(), x.tanh().to_bits());
            prop_assert_eq!(s[i].to_bits(), vecmath::sigmoid_scalar(x).to_bits());
            prop_assert_eq!(e[i].to_bits(), x.exp().to_bits());
        }
    }

    /// The out-of-place forms (`*_extend`, which write into a buffer's
    /// spare capacity) give bitwise the in-place forms' results, appended
    /// after what the buffer held, for f32 (SIMD) and f64 (scalar).
    #[test]
    fn extend_forms_equal_in_place_forms(
        xs in prop::collection::vec(-30.0f64..30.0, 0..70),
        held in 0usize..5,
    ) {
        let x32: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        for k in Kernel::ALL {
            let mut want32 = x32.clone();
            k.in_place(&mut want32);
            let mut got32 = vec![7.0f32; held];
            k.extend(&mut got32, &x32);
            prop_assert_eq!(&got32[..held], &vec![7.0f32; held][..]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got32[held..]), bits(&want32), "{:?}", k);

            let mut want64 = xs.clone();
            k.in_place(&mut want64);
            let mut got64 = vec![7.0f64; held];
            k.extend(&mut got64, &xs);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got64[held..]), bits(&want64), "{:?}", k);
        }
    }
}
