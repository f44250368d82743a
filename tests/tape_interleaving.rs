//! Two tapes used in a random interleaving, with resets: every cross-tape
//! use is caught (a handle of one tape in an op of the other, gradients of
//! one tape — or of an earlier use of the same tape — asked for a var of
//! another), nothing is silently aliased, and nothing panics outside the
//! documented policy (the panics that happen are the documented
//! `ForeignTape` programmer errors, checked by message).
//!
//! A *stale* handle — a `Var` used after its tape was reset — cannot be
//! written: `Tape::reset` takes `&mut self`, so the borrow checker rejects
//! it. Gradients, which own their data and outlive a reset, carry the tape's
//! id and generation instead, and are checked on every lookup.

use proptest::prelude::*;
use tapegrad::{ErrorKind, Grads, Tape, Tensor};

#[derive(Debug, Clone)]
enum Step {
    /// Record a few ops on tape `t` and differentiate; keep the gradients.
    Record { t: usize, value: f64 },
    /// Combine a var of tape `t` with a var of the other tape.
    Cross { t: usize },
    /// Reset tape `t`.
    Reset { t: usize },
    /// Ask every kept gradient set for a fresh var of tape `t`.
    Query { t: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..2usize, -2.0..2.0f64).prop_map(|(t, value)| Step::Record { t, value }),
        (0..2usize).prop_map(|t| Step::Cross { t }),
        (0..2usize).prop_map(|t| Step::Reset { t }),
        (0..2usize).prop_map(|t| Step::Query { t }),
    ]
}

fn panic_text(f: impl FnOnce()) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .err()
        .map(|e| e.downcast_ref::<String>().cloned().unwrap_or_default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn interleaved_tapes_never_alias(steps in prop::collection::vec(step(), 1..40)) {
        let mut tapes = [Tape::<f64>::new(), Tape::<f64>::new()];
        // Kept gradient sets: (tape index, the tape's generation then, gradients).
        let mut kept: Vec<(usize, u64, Grads<f64>)> = Vec::new();
        for s in steps {
            match s {
                Step::Record { t, value } => {
                    let tape = &tapes[t];
                    let x = tape.var(Tensor::scalar(value));
                    let y = (x * x).sum();
                    let g = y.backward();
                    // d(x²)/dx = 2x: the gradient belongs to this var only.
                    prop_assert_eq!(g.wrt(x).item(), 2.0 * value);
                    kept.push((t, tape.generation(), g));
                }
                Step::Cross { t } => {
                    let (a, b) = (&tapes[t], &tapes[1 - t]);
                    let x = a.var(Tensor::scalar(1.0));
                    let y = b.var(Tensor::scalar(2.0));
                    let msg = panic_text(|| {
                        let _ = x + y;
                    });
                    let msg = msg.expect("mixing two tapes must not succeed");
                    prop_assert!(msg.contains("belongs to tape"), "{}", msg);
                }
                Step::Reset { t } => tapes[t].reset(),
                Step::Query { t } => {
                    let tape = &tapes[t];
                    let v = tape.var(Tensor::scalar(0.0));
                    for (kt, generation, g) in &kept {
                        // `v` was recorded after every kept root, so no kept
                        // set may answer for it: a set of another tape or of
                        // an earlier use is foreign, one of this use has no
                        // gradient for a var recorded after its root.
                        let e = g.try_wrt(v).expect_err("no gradient set may answer for a newer var");
                        let foreign = *kt != t || *generation != tape.generation();
                        let want_kind = if foreign { ErrorKind::ForeignTape } else { ErrorKind::NoGradient };
                        prop_assert_eq!(e.kind(), want_kind, "{}", e);
                    }
                }
            }
        }
    }
}
