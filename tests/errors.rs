//! Every error case of the core, through the public API: the `ErrorKind`
//! where a `try_` form exists, and the message text of the panicking form
//! (caught with `catch_unwind`, payload downcast to `String`).
//!
//! The policy under test (crate docs): programmer errors inside an
//! expression panic with a message naming the op, the tape label and the
//! shapes; data-driven failures return `Result`, and the panicking entry
//! points a caller may want to probe have `try_` twins whose error's
//! `Display` is exactly the panic message.

use std::panic::{catch_unwind, AssertUnwindSafe};
use tapegrad::{ErrorKind, ParamStore, Reduction, Tape, Tensor, Var};

/// The message of the panic `f` raises.
#[track_caller]
fn panic_message<R>(f: impl FnOnce() -> R) -> String {
    let payload = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic"),
        Err(p) => p,
    };
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => panic!("panic payload is not a string"),
        },
    }
}

/// Asserts `message` contains every one of `parts`.
#[track_caller]
fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(
            message.contains(p),
            "message {message:?} does not mention {p:?}"
        );
    }
}

fn t(shape: &[usize]) -> Tensor<f64> {
    Tensor::from_fn(shape, |i| i as f64 * 0.25 - 1.0)
}

// ----- tensors: shapes and sizes -----------------------------------------------

#[test]
fn from_vec_length_mismatch() {
    let e = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_eq!(e.op(), "Tensor::from_vec");
    assert_mentions(
        &e.to_string(),
        &["Tensor::from_vec", "3 elements", "[2, 2]"],
    );
}

#[test]
fn shape_overflow_is_a_size_error() {
    // 2⁴⁰ · 2³⁰ = 2⁷⁰ elements: the count itself overflows usize.
    let e = Tensor::<f32>::try_full(&[1 << 40, 1 << 30], 0.0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Size);
    assert_mentions(
        &e.to_string(),
        &["overflows usize", "[1099511627776, 1073741824]"],
    );
    let msg = panic_message(|| Tensor::<f32>::full(&[1 << 40, 1 << 30], 0.0));
    assert_eq!(msg, e.to_string());

    let e = Tensor::<f64>::from_vec(vec![], &[usize::MAX, 2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Size);
    assert_mentions(&e.to_string(), &["overflows usize"]);
    let msg = panic_message(|| Tensor::<f64>::zeros(&[usize::MAX, 2]));
    assert_mentions(&msg, &["overflows usize"]);
}

#[test]
fn absurd_allocation_is_a_size_error() {
    // 2⁶⁰ f32 = 2⁶² bytes: a valid count no allocator can satisfy (beyond
    // any address space), refused before anything is touched.
    let e = Tensor::<f32>::try_full(&[1 << 40, 1 << 20], 0.0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Size);
    assert_mentions(
        &e.to_string(),
        &[
            "cannot allocate",
            "1152921504606846976 elements",
            "4611686018427387904 bytes",
        ],
    );
    let msg = panic_message(|| Tensor::<f32>::ones(&[1 << 40, 1 << 20]));
    assert_eq!(msg, e.to_string());
}

#[test]
fn reshape_to_a_different_count() {
    let e = Tensor::<f64>::zeros(&[2, 3]).reshape(&[4]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_mentions(&e.to_string(), &["[2, 3]", "[4]"]);

    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[2, 3]));
    let msg = panic_message(|| x.reshape(&[4, 2]));
    assert_mentions(&msg, &["reshape", "[2, 3]", "[4, 2]"]);
}

// ----- shape errors inside expressions (panics) ------------------------------

#[test]
fn matmul_inner_dimension_mismatch_names_both_shapes() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 3]));
    let b = tape.var(t(&[4, 5]));
    let msg = panic_message(|| a.matmul(b));
    assert_mentions(
        &msg,
        &["matmul", "inner dimensions differ", "[2, 3]", "[4, 5]"],
    );

    let w = tape.var(t(&[5, 4]));
    let msg = panic_message(|| a.matmul_t(w));
    assert_mentions(&msg, &["matmul_t", "[2, 3]", "[5, 4]ᵀ"]);
    let msg = panic_message(|| a.t_matmul(w));
    assert_mentions(&msg, &["t_matmul", "[2, 3]ᵀ", "[5, 4]"]);
}

#[test]
fn addmm_addend_of_the_wrong_shape_names_what_it_must_be() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 3]));
    let b = tape.var(t(&[3, 4]));
    // Neither [2, 4] nor a bias row [4].
    let c = tape.var(t(&[3, 4]));
    let msg = panic_message(|| c.addmm(a, b));
    assert_mentions(&msg, &["addmm", "[3, 4]", "[2, 4]", "bias row [4]"]);
    let row = tape.var(t(&[5]));
    let msg = panic_message(|| row.addmm(a, b));
    assert_mentions(&msg, &["addmm", "[5]", "bias row [4]"]);
    // A window past the end of c: rows 2..4 of a [3, 4] matrix.
    let msg = panic_message(|| c.addmm_rows(2, a, b));
    assert_mentions(&msg, &["addmm", "[3, 4]", "rows 2..4"]);
    // The window fits, the columns do not.
    let wide = tape.var(t(&[6, 5]));
    let msg = panic_message(|| wide.addmm_rows(1, a, b));
    assert_mentions(&msg, &["addmm", "[6, 5]", "rows 1..3", "[R, 4]"]);
    // And the same windows that fit are accepted.
    assert_eq!(c.addmm_rows(1, a, b).shape().as_slice(), &[2, 4]);
}

#[test]
fn column_window_activations_name_the_window_and_shape() {
    let tape = Tape::<f64>::new();
    let z = tape.var(t(&[2, 8]));
    let msg = panic_message(|| z.sigmoid_cols(6, 4));
    assert_mentions(&msg, &["sigmoid", "columns 6..10", "[2, 8]", "at least 10"]);
    let v = tape.var(t(&[8]));
    let msg = panic_message(|| v.tanh_cols(0, 2));
    assert_mentions(&msg, &["tanh", "columns 0..2", "[8]", "2-D"]);
    assert_eq!(z.tanh_cols(6, 2).shape().as_slice(), &[2, 2]);
}

#[test]
fn matmul_of_non_2d_operands() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 3]));
    let cube = tape.var(t(&[3, 4, 5]));
    let msg = panic_message(|| a.matmul(cube));
    assert_mentions(&msg, &["matmul", "2-D", "[2, 3]", "[3, 4, 5]"]);
    let v = tape.var(t(&[3]));
    let msg = panic_message(|| v.matmul(a.transpose()));
    assert_mentions(&msg, &["matmul", "2-D", "[3]", "[3, 2]"]);
    let msg = panic_message(|| cube.t_matmul(a));
    assert_mentions(&msg, &["t_matmul", "2-D", "[3, 4, 5]", "[2, 3]"]);
    let msg = panic_message(|| v.transpose());
    assert_mentions(&msg, &["transpose", "2-D", "[3]"]);
}

#[test]
fn broadcast_mismatch_names_both_shapes() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 3]));
    let b = tape.var(t(&[4]));
    for name in ["add", "sub", "mul", "div"] {
        let msg = panic_message(|| match name {
            "add" => a + b,
            "sub" => a - b,
            "mul" => a * b,
            _ => a / b,
        });
        assert_mentions(&msg, &[name, "do not broadcast", "[2, 3]", "[4]"]);
    }
    let c = tape.var(t(&[2, 1, 3]));
    let d = tape.var(t(&[4, 2]));
    let msg = panic_message(|| c * d);
    assert_mentions(&msg, &["[2, 1, 3]", "[4, 2]", "3 vs 2"]);
}

#[test]
fn concat_and_stack_with_disagreeing_shapes() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 3]));
    let b = tape.var(t(&[3, 3]));
    let msg = panic_message(|| Var::concat(&[a, b], 1));
    assert_mentions(
        &msg,
        &["concat", "disagree off axis 1", "[2, 3] and [3, 3]"],
    );
    let msg = panic_message(|| Var::stack(&[a, b], 0));
    assert_mentions(&msg, &["stack", "[2, 3] and [3, 3]"]);
    let msg = panic_message(|| Var::concat(&[a, a], 2));
    assert_mentions(&msg, &["concat", "axis 2 out of range", "[2, 3]"]);
    let msg = panic_message(|| Var::stack(&[a, a], 3));
    assert_mentions(&msg, &["stack", "axis 3 out of range"]);
    let msg = panic_message(|| Var::<f64>::concat(&[], 0));
    assert_mentions(&msg, &["concat", "at least one input"]);
}

#[test]
fn slice_out_of_range() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[2, 4]));
    let msg = panic_message(|| x.slice(1, 2, 3));
    assert_mentions(&msg, &["slice", "2..5", "axis 1", "[2, 4]"]);
    let msg = panic_message(|| x.slice(2, 0, 1));
    assert_mentions(&msg, &["slice", "axis 2 out of range", "[2, 4]"]);
    let msg = panic_message(|| x.slice(0, usize::MAX, 2));
    assert_mentions(&msg, &["slice", "out of range"]);
}

#[test]
fn split_not_divisible() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[2, 4]));
    let msg = panic_message(|| x.split(1, 3));
    assert_mentions(&msg, &["split", "axis 1", "[2, 4]", "3 equal parts"]);
    let msg = panic_message(|| x.split(1, 0));
    assert_mentions(&msg, &["split", "0 equal parts"]);
    let msg = panic_message(|| x.split(5, 1));
    assert_mentions(&msg, &["split", "axis 5"]);
}

#[test]
fn gather_index_out_of_range() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[3, 2]));
    let msg = panic_message(|| x.gather(&[0, 2, 3]));
    assert_mentions(&msg, &["gather", "index 3", "3 rows", "[3, 2]"]);
    let s = tape.var(Tensor::scalar(1.0));
    let msg = panic_message(|| s.gather(&[0]));
    assert_mentions(&msg, &["gather", "scalar"]);
}

#[test]
fn sum_axis_out_of_range() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[2, 3]));
    let msg = panic_message(|| x.sum_axis(2));
    assert_mentions(&msg, &["sum", "axis 2", "[2, 3]"]);
    let msg = panic_message(|| x.mean_axis(7));
    assert_mentions(&msg, &["mean", "axis 7", "[2, 3]"]);
}

#[test]
fn cross_entropy_targets() {
    let tape = Tape::<f64>::new();
    let logits = tape.var(t(&[2, 3]));
    let msg = panic_message(|| logits.cross_entropy(&[0, 3], Reduction::Mean));
    assert_mentions(
        &msg,
        &["cross_entropy", "target class 3", "3 classes", "[2, 3]"],
    );
    let msg = panic_message(|| logits.cross_entropy(&[0], Reduction::Sum));
    assert_mentions(
        &msg,
        &[
            "cross_entropy",
            "[2, 3]",
            "one target per row",
            "got 1 targets",
        ],
    );
    let cube = tape.var(t(&[2, 2, 2]));
    let msg = panic_message(|| cube.cross_entropy(&[0, 1], Reduction::None));
    assert_mentions(&msg, &["cross_entropy", "[2, 2, 2]"]);
}

#[test]
fn mse_shape_mismatch() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 3]));
    let b = tape.constant(t(&[3, 2]));
    let msg = panic_message(|| a.mse(b, Reduction::Mean));
    assert_mentions(&msg, &["mse", "[2, 3] and [3, 2]"]);
}

#[test]
fn clamp_with_lo_above_hi() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[3]));
    let msg = panic_message(|| x.clamp(1.0, 0.0));
    assert_mentions(&msg, &["clamp", "lo ≤ hi", "lo = 1", "hi = 0"]);
    let msg = panic_message(|| x.clamp(f64::NAN, 1.0));
    assert_mentions(&msg, &["clamp", "NaN"]);
}

#[test]
fn dropout_probability_out_of_range() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[3]));
    for (p, shown) in [(1.0, "got 1"), (-0.1, "got -0.1"), (f64::NAN, "got NaN")] {
        let msg = panic_message(|| x.dropout(p, 7));
        assert_mentions(&msg, &["dropout", "[0, 1)", shown]);
    }
}

#[test]
fn select_length_mismatch() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 2]));
    let b = tape.var(t(&[2, 2]));
    let msg = panic_message(|| Var::select(&[true, false, true], a, b));
    assert_mentions(&msg, &["select", "[2, 2] and [2, 2]", "3 elements"]);
    let c = tape.var(t(&[4]));
    let msg = panic_message(|| Var::select(&[true; 4], a, c));
    assert_mentions(&msg, &["select", "[2, 2] and [4]"]);
}

// ----- tapes ----------------------------------------------------------------

#[test]
fn operands_from_two_tapes() {
    let one = Tape::<f64>::new();
    let two = Tape::<f64>::new();
    let a = one.var(t(&[2]));
    let b = two.var(t(&[2]));
    // `b` is the second operand of `a + b` (and node %0 of its own tape):
    // the message names its position, not only its node index.
    let msg = panic_message(|| a + b);
    assert_mentions(
        &msg,
        &[
            "add",
            "operand 1 (%0)",
            &format!("belongs to tape #{}", two.id()),
            &format!("recorded on tape #{}", one.id()),
        ],
    );
    let msg = panic_message(|| Var::concat(&[a, b], 0));
    assert_mentions(&msg, &["concat", &format!("tape #{}", two.id())]);
    let msg = panic_message(|| Var::select(&[true, false], a, b));
    assert_mentions(&msg, &["select", &format!("tape #{}", two.id())]);
    // Nothing was recorded by the failed ops.
    assert_eq!(one.len(), 1);
}

#[test]
fn gradients_asked_with_a_var_of_another_tape() {
    let one = Tape::<f64>::new();
    let two = Tape::<f64>::new();
    let x = one.var(t(&[2]));
    let y = two.var(t(&[2]));
    let g = x.sum().backward();
    let e = g.try_wrt(y).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForeignTape);
    assert_eq!(e.op(), "grads");
    assert_mentions(
        &e.to_string(),
        &[
            &format!("tape #{}", two.id()),
            &format!("tape #{}", one.id()),
        ],
    );
    assert_eq!(panic_message(|| g.wrt(y)), e.to_string());
}

#[test]
fn gradients_asked_after_a_reset() {
    let mut tape = Tape::<f64>::new();
    let g = {
        let x = tape.var(t(&[2]));
        x.sum().backward()
    };
    tape.reset();
    // The same node index on the same tape, one use later.
    let x = tape.var(t(&[2]));
    assert_eq!(x.id(), 0);
    let e = g.try_wrt(x).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ForeignTape);
    assert_mentions(&e.to_string(), &["(use 1)", "(use 0)"]);
    assert_eq!(panic_message(|| g.wrt(x)), e.to_string());
}

#[test]
fn gradient_of_a_constant() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[2]));
    let c = tape.constant(t(&[2]));
    let g = (x * c).sum().backward();
    let e = g.try_wrt(c).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NoGradient);
    assert_mentions(&e.to_string(), &["has no gradient", "retain_grad"]);
    assert_eq!(panic_message(|| g.wrt(c)), e.to_string());
}

#[test]
fn backward_on_a_non_scalar() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[2, 3]));
    let e = x.tanh().try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_eq!(e.op(), "backward");
    assert_mentions(&e.to_string(), &["scalar", "[2, 3]", "backward_with"]);
    assert_eq!(panic_message(|| x.tanh().backward()), e.to_string());
}

#[test]
fn backward_with_a_wrong_shaped_seed() {
    let tape = Tape::<f64>::new();
    let x = tape.var(t(&[2]));
    let y = x * 2.0;
    let e = y.try_backward_with(Tensor::ones(&[3])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_mentions(&e.to_string(), &["seed of shape [3]", "var of shape [2]"]);
    assert_eq!(
        panic_message(|| y.backward_with(Tensor::ones(&[3]))),
        e.to_string()
    );
    // A scalar seeded with a [1] tensor is a wrong shape too.
    let s = y.sum();
    let e = s.try_backward_with(Tensor::ones(&[1])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
}

// ----- parameters -------------------------------------------------------------

#[test]
fn stale_key_after_remove() {
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("w", t(&[2]));
    assert!(store.remove(w).is_some());
    let e = store.try_get(w).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleKey);
    assert_mentions(&e.to_string(), &["stale parameter key", "removed"]);
    assert_eq!(panic_message(|| store.get(w).clone()), e.to_string());
    assert_eq!(
        store.try_get_mut(w).unwrap_err().kind(),
        ErrorKind::StaleKey
    );
    assert!(store.remove(w).is_none());

    let tape = Tape::<f64>::new();
    let e = tape.try_param(&store, w).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleKey);
    assert_mentions(&e.to_string(), &["removed"]);
    assert_eq!(panic_message(|| tape.param(&store, w)), e.to_string());
    assert!(tape.is_empty());
}

#[test]
fn key_from_another_store() {
    let mut a = ParamStore::<f64>::new();
    let mut b = ParamStore::<f64>::new();
    let wa = a.insert("w", t(&[2]));
    let _wb = b.insert("w", t(&[2]));
    let e = b.try_get(wa).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleKey);
    assert_mentions(&e.to_string(), &["belongs to store"]);
    let e = Tape::<f64>::new().try_param(&b, wa).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StaleKey);
    assert_eq!(panic_message(|| b.name(wa).to_string()), e.to_string());
}

#[test]
fn duplicate_parameter_name() {
    let mut store = ParamStore::<f64>::new();
    store.insert("lstm.weight_ih_l0", t(&[2]));
    let e = store.try_insert("lstm.weight_ih_l0", t(&[3])).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_mentions(&e.to_string(), &["`lstm.weight_ih_l0`", "already exists"]);
    assert_eq!(
        panic_message(|| store.insert("lstm.weight_ih_l0", t(&[3]))),
        e.to_string()
    );
    assert_eq!(store.len(), 1);
}

// ----- labels and anomaly mode -------------------------------------------------

#[test]
fn messages_carry_the_open_scope() {
    let tape = Tape::<f64>::new();
    let a = tape.var(t(&[2, 3]));
    let b = tape.var(t(&[4, 5]));
    let msg = {
        let _layer = tape.scope("lstm.l1");
        let _step = tape.scope_at("t", 37);
        panic_message(|| a.matmul(b))
    };
    assert_mentions(&msg, &["matmul", "`lstm.l1/t=37`", "[2, 3]", "[4, 5]"]);

    // Closed scopes leave no label behind.
    let msg = panic_message(|| a.matmul(b));
    assert!(!msg.contains("lstm.l1"), "{msg}");

    // Errors from backward carry the root's label.
    let y = {
        let _s = tape.scope("head");
        a.tanh()
    };
    let e = y.try_backward().unwrap_err();
    assert_eq!(e.label(), Some("head"));
    assert_mentions(&e.to_string(), &["backward at `head`"]);
}

#[test]
fn anomaly_mode_names_the_forward_op() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_vec(vec![4.0, -1.0], &[2]).unwrap());
    // Off: NaN propagates quietly.
    assert!(x.sqrt().value().data()[1].is_nan());
    tape.set_anomaly_detection(true);
    let msg = {
        let _s = tape.scope("norm");
        panic_message(|| x.sqrt())
    };
    assert_mentions(&msg, &["sqrt", "`norm`", "NaN", "flat index 1", "[2]"]);
    let msg = panic_message(|| x.log());
    assert_mentions(&msg, &["log", "NaN"]);
}

#[test]
fn anomaly_mode_reports_a_non_finite_gradient() {
    let tape = Tape::<f64>::new();
    tape.set_anomaly_detection(true);
    let x = tape.var(Tensor::from_vec(vec![1.0, 0.0], &[2]).unwrap());
    // √0 = 0 is finite; its gradient 1/(2·0) = +∞ is not.
    let y = {
        let _s = tape.scope("rms");
        x.sqrt().sum()
    };
    let e = y.try_backward().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NonFinite);
    assert_eq!(e.op(), "sqrt");
    assert_eq!(e.label(), Some("rms"));
    assert_mentions(&e.to_string(), &["sqrt", "backward", "inf", "flat index 1"]);
    assert_eq!(panic_message(|| y.backward()), e.to_string());

    // Off: the gradient is +∞, as IEEE says.
    tape.set_anomaly_detection(false);
    assert_eq!(y.backward().wrt(x).data()[1], f64::INFINITY);
}

#[test]
fn error_accessors() {
    let e = Tensor::<f32>::from_vec(vec![1.0], &[2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Shape);
    assert_eq!(e.op(), "Tensor::from_vec");
    assert_eq!(e.label(), None);
    assert_eq!(
        e.to_string(),
        format!("tapegrad: Tensor::from_vec: {}", e.message())
    );
}

// ----- released values ---------------------------------------------------------

/// A released value cannot be used again: as an operand the op panics with
/// a message naming itself, the operand, its shape and where it was
/// recorded; reading it panics likewise. Values a backward rule reads are
/// never released, and gradients are unaffected.
#[test]
fn released_values_are_refused_by_name() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::ones(&[2, 3]));
    let z = {
        let _s = tape.scope("pre");
        x * 2.0
    };
    let y = z.tanh();
    assert!(z.release(), "tanh does not read its input");
    assert!(!z.release(), "already released");
    assert!(!y.release(), "tanh's backward reads its output");
    let m = panic_message(|| z.exp());
    assert_mentions(&m, &["exp", "operand 0", "[2, 3]", "pre", "released"]);
    let m = panic_message(|| z.value().numel());
    assert_mentions(&m, &["value", "[2, 3]", "pre", "released"]);
    let m = panic_message(|| z.detach());
    assert_mentions(&m, &["detach", "released"]);
    // The shape is still known, and backward routes through the node.
    assert_eq!(z.shape().as_slice(), &[2, 3]);
    let g = y.sum().backward();
    let want = 2.0 * (1.0 - 2f64.tanh().powi(2));
    assert!(g.wrt(x).data().iter().all(|&v| (v - want).abs() < 1e-15));

    // Bound parameters and values read by a recorded rule stay.
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("w", Tensor::ones(&[3, 3]));
    let wv = tape.param(&store, w);
    assert!(!wv.release(), "a bound parameter");
    let p = x.matmul(wv);
    assert!(!x.release(), "matmul's backward reads x");
    assert!(p.release(), "nothing reads the product yet");
    let e = ErrorKind::Released;
    assert_eq!(format!("{e:?}"), "Released");
}
