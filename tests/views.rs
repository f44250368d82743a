//! Views: a reshape, a slice along the leading axis and a concat of
//! adjacent windows read their source's buffer instead of copying it
//! (`src/tensor/storage.rs`), and the sweep lends a concat's gradient
//! windows to its inputs instead of copying them all at once
//! (`src/tape/backward.rs`). These tests check both halves of the
//! promise: no copy where the layout allows (buffer addresses), and the
//! same values and gradients as the copying ops — bitwise, since a view
//! only moves where the elements live.

use proptest::prelude::*;
use tapegrad::layers::{Lstm, RecurrentConfig};
use tapegrad::{ParamStore, Tape, Tensor, Var};

/// The address range of a var's value.
fn range(v: Var<'_, f64>) -> std::ops::Range<usize> {
    let val = v.value();
    let d = val.data();
    let start = d.as_ptr() as usize;
    start..start + std::mem::size_of_val(d)
}

fn inside(inner: Var<'_, f64>, outer: Var<'_, f64>) -> bool {
    let (i, o) = (range(inner), range(outer));
    o.start <= i.start && i.end <= o.end
}

#[test]
fn leading_axis_slices_and_reshapes_share_their_source() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_fn(&[4, 3, 2], |i| i as f64));
    let s = x.slice(0, 1, 2);
    assert!(inside(s, x), "a slice along axis 0 is a view");
    assert_eq!(s.value().data(), &x.value().data()[6..18]);
    let r = s.reshape(&[2, 6]);
    assert!(
        inside(r, x),
        "a reshape of a view is a view of the same buffer"
    );
    // A window that is not contiguous is copied.
    let c = x.slice(1, 0, 2);
    assert!(!inside(c, x));
    // Leading dimensions of 1 keep a later axis contiguous.
    let y = tape.var(Tensor::from_fn(&[1, 5, 2], |i| i as f64));
    assert!(inside(y.slice(1, 2, 3), y));
}

#[test]
fn a_concat_of_adjacent_windows_is_a_view_and_others_copy() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_fn(&[6, 2], |i| i as f64));
    let parts: Vec<_> = (0..3).map(|k| x.slice(0, 2 * k, 2)).collect();
    let joined = Var::concat(&parts, 0);
    assert!(inside(joined, x));
    assert_eq!(joined.value().data(), x.value().data());
    let swapped = Var::concat(&[parts[1], parts[0]], 0);
    assert!(!inside(swapped, x), "out of order: copied");
    assert_eq!(&swapped.value().data()[..4], &x.value().data()[4..8]);
    // Gradients: d/dx of Σ w ⊙ joined + Σ v ⊙ swapped, against the
    // closed form.
    let w = Tensor::from_fn(&[6, 2], |i| 1.0 + i as f64);
    let v = Tensor::from_fn(&[4, 2], |i| 0.5 * i as f64);
    let loss =
        (joined * tape.constant(w.clone())).sum() + (swapped * tape.constant(v.clone())).sum();
    let g = loss.backward();
    // swapped's elements 0..4 are x's 4..8 (rows 2..4), its 4..8 are
    // x's 0..4 (rows 0..2).
    let mut want = w.data().to_vec();
    for i in 0..4 {
        want[i + 4] += v.data()[i];
        want[i] += v.data()[i + 4];
    }
    assert_eq!(g.wrt(x).data(), &want[..]);
}

#[test]
fn a_view_outlives_the_release_of_its_source() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_fn(&[4, 3], |i| 0.1 * i as f64));
    let y = x * 2.0; // read by no rule: releasable
    let s = y.slice(0, 2, 2);
    assert!(y.release());
    let want: Vec<f64> = (6..12).map(|i| 0.1 * i as f64 * 2.0).collect();
    assert_eq!(s.value().data(), &want[..]);
    let g = s.tanh().sum().backward();
    let want: Vec<f64> = (0..12)
        .map(|i| {
            if i < 6 {
                0.0
            } else {
                2.0 * (1.0 - (0.2 * i as f64).tanh().powi(2))
            }
        })
        .collect();
    for (a, b) in g.wrt(x).data().iter().zip(&want) {
        assert!((a - b).abs() < 1e-15, "{a} vs {b}");
    }
}

#[test]
fn a_shared_tensor_goes_on_the_tape_without_a_copy_and_copies_on_write() {
    let x = Tensor::<f64>::from_fn(&[8, 4], |i| i as f64).into_shared();
    let mut tape = Tape::new();
    let at = x.data().as_ptr();
    {
        let xv = tape.constant(x.clone());
        assert_eq!(xv.value().data().as_ptr(), at);
        let rows = xv.slice(0, 2, 3);
        assert_eq!(rows.value().data().as_ptr(), x.data()[8..].as_ptr());
    }
    tape.reset();
    let mut y = x.clone();
    y.data_mut()[0] = -1.0;
    assert_eq!(x.data()[0], 0.0, "the write copied y first");
    assert_ne!(y.data().as_ptr(), at);
}

/// The plain LSTM and its stacked readout: the readout's rows are a view
/// of nothing new (one concat of the steps, which are separate buffers),
/// but the backward lends the stacked gradient's windows; the gradients
/// must equal a run where every step's output is used separately (no
/// concat at all), to the last bit.
#[test]
fn lent_gradient_windows_give_the_copying_gradients_bitwise() {
    let (t, b, i, h) = (7, 3, 4, 5);
    let mut store = ParamStore::<f64>::new();
    let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(i, h), 3);
    let x = Tensor::from_fn(&[t, b, i], |k| ((k * 37 % 11) as f64 - 5.0) * 0.1);
    let w = Tensor::from_fn(&[t * b, h], |k| ((k * 13 % 7) as f64 - 3.0) * 0.2);
    let run = |stacked: bool| {
        let tape = Tape::<f64>::new();
        let xv = tape.var(x.clone());
        let out = lstm.forward(&tape, &store, xv, None);
        let loss = if stacked {
            (out.stacked_rows() * tape.constant(w.clone())).sum()
        } else {
            let parts: Vec<Var<'_, f64>> = out
                .outputs
                .iter()
                .enumerate()
                .map(|(s, o)| {
                    let ws = tape.constant(
                        Tensor::from_vec(w.data()[s * b * h..(s + 1) * b * h].to_vec(), &[b, h])
                            .unwrap(),
                    );
                    (*o * ws).sum()
                })
                .collect();
            parts.into_iter().reduce(|a, c| a + c).unwrap()
        };
        let g = loss.backward();
        let mut all = g.wrt(xv).data().to_vec();
        for (_, gp) in g.params() {
            all.extend_from_slice(gp.data());
        }
        all
    };
    let (a, b2) = (run(true), run(false));
    assert_eq!(a.len(), b2.len());
    // The parameter gradients are summed in the same order; the sums of
    // the per-step losses differ from one sum over all rows in their last
    // bits only through the loss, not the gradients: equal here because
    // each gradient element receives exactly one readout term.
    for (k, (p, q)) in a.iter().zip(&b2).enumerate() {
        assert!(
            p == q || (p - q).abs() <= 1e-15 * p.abs().max(1.0),
            "element {k}: {p} vs {q}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Slicing a [T, B, W] value into steps along axis 0 and joining the
    /// steps back in order is a view of the value all the way; the join's
    /// gradient arrives at the value in full, whether the pieces are lent
    /// (joined) or copied (a permuted join).
    #[test]
    fn split_and_join_round_trips_share_and_differentiate(
        t in 1usize..6, b in 1usize..4, w in 1usize..5, seed in 0u64..1000,
    ) {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::randn(&[t, b, w], seed));
        let steps: Vec<_> = (0..t).map(|s| x.slice(0, s, 1)).collect();
        let joined = Var::concat(&steps, 0);
        prop_assert!(inside(joined, x));
        let rev: Vec<_> = steps.iter().rev().copied().collect();
        let back = Var::concat(&rev, 0);
        let wts = Tensor::randn(&[t, b, w], seed + 1);
        let loss = (joined * tape.constant(wts.clone())).sum() + (back * 2.0).sum();
        let g = loss.backward();
        for (k, (&gx, &wk)) in g.wrt(x).data().iter().zip(wts.data()).enumerate() {
            prop_assert_eq!(gx, wk + 2.0, "element {}", k);
        }
    }
}

/// The stacked readout rows of a stepping layer hold each step's output
/// once: at the L benchmark's width (B·H ≥ 2¹⁵ elements) the per-step
/// outputs become views of the stacked value after the concat copied them
/// (`Tape::reseat_as_views`); smaller outputs keep their own buffers.
#[test]
fn large_step_outputs_are_held_once_by_the_stacked_rows() {
    use tapegrad::layers::Rnn;
    for (b, h, shared) in [(64, 512, true), (4, 8, false)] {
        let mut store = ParamStore::<f32>::new();
        let rnn = Rnn::new(&mut store, "rnn", RecurrentConfig::new(3, h), 1);
        let tape = Tape::<f32>::new();
        let x = tape.constant(Tensor::randn(&[3, b, 3], 2));
        let out = rnn.forward(&tape, &store, x, None);
        let rows = out.stacked_rows();
        let inside = |v: Var<'_, f32>| {
            let (a, r) = (v.value(), rows.value());
            let (p, q) = (a.data().as_ptr() as usize, r.data().as_ptr() as usize);
            q <= p && p + std::mem::size_of_val(a.data()) <= q + std::mem::size_of_val(r.data())
        };
        for (t, o) in out.outputs.iter().enumerate() {
            assert_eq!(inside(*o), shared, "B = {b}, H = {h}, step {t}");
            assert_eq!(
                o.value().data(),
                &rows.value().data()[t * b * h..(t + 1) * b * h]
            );
        }
        // The gradients do not depend on where the values live.
        let g = rows.tanh().sum().backward();
        assert!(g
            .params()
            .all(|(_, g)| g.data().iter().all(|v| v.is_finite())));
    }
}

/// A parameter is bound on a tape as the store's own buffer; an update
/// while the tape holds it copies it first (the tape's value does not
/// change), and after a reset the update writes in place.
#[test]
fn parameters_are_bound_without_a_copy_and_updates_copy_on_write() {
    let mut store = ParamStore::<f64>::new();
    let w = store.insert("w", Tensor::from_fn(&[3], |i| i as f64));
    let mut tape = Tape::<f64>::new();
    let before = store.get(w).data().as_ptr();
    {
        let wv = tape.param(&store, w);
        assert_eq!(wv.value().data().as_ptr(), before, "bound without a copy");
        let g = (wv * 2.0).sum().backward();
        for (p, d) in store
            .get_mut(w)
            .data_mut()
            .iter_mut()
            .zip(g.param(w).unwrap().data())
        {
            *p -= d;
        }
        assert_eq!(
            wv.value().data(),
            &[0.0, 1.0, 2.0],
            "the tape's value is unchanged"
        );
        assert_eq!(store.get(w).data(), &[-2.0, -1.0, 0.0]);
        assert_ne!(
            store.get(w).data().as_ptr(),
            before,
            "the update copied first"
        );
    }
    tape.reset();
    let now = store.get(w).data().as_ptr();
    store.get_mut(w).data_mut()[0] = 5.0;
    assert_eq!(
        store.get(w).data().as_ptr(),
        now,
        "in place once the tape let go"
    );
    let wv = tape.param(&store, w);
    assert_eq!(wv.value().data(), &[5.0, -1.0, 0.0]);
}

/// An input a concat takes twice gets one window lent and the other
/// copied; both arrive.
#[test]
fn an_input_joined_twice_gets_both_windows() {
    let tape = Tape::<f64>::new();
    let x = tape.var(Tensor::from_fn(&[2, 3], |i| i as f64));
    let y = x * 1.0;
    let j = Var::concat(&[y, y, x], 0);
    let w = Tensor::from_fn(&[6, 3], |i| 1.0 + i as f64);
    let g = (j * tape.constant(w.clone())).sum().backward();
    let want: Vec<f64> = (0..6)
        .map(|i| w.data()[i] + w.data()[i + 6] + w.data()[i + 12])
        .collect();
    assert_eq!(g.wrt(x).data(), &want[..]);
}
