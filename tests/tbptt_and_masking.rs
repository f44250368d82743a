//! Truncated BPTT, carried state, variable lengths and initial states,
//! through the public API, in f64.
//!
//! - **Carried state stops the gradient.** State handed from one chunk to
//!   the next as [`StateTensors`] and bound with `bind` is a constant: no
//!   gradient for it, the parameter gradients of a chunk are exactly those
//!   of the chunk alone with `detach()` at its start, and a reused tape
//!   records the same number of nodes (and holds the same number of
//!   elements) for chunk 2 as for chunk 12.
//! - **Truncated BPTT = the full graph of the truncated objective.** Running
//!   [`Tbptt::windows`] on separate tapes (state carried as `StateTensors`
//!   at `carry_at`, each window's forward split into `start..carry_at` and
//!   `carry_at..end` chained through the `State`) and summing the parameter
//!   gradients gives, to |Δ| ≤ 1e-12·max(1, |g|), the gradient of ONE tape
//!   that builds every window with `step()` from the `detach()`ed true state
//!   at the window's start and sums the window losses (steps
//!   `loss_from..end`). Deterministic cases cover k1 = k2 and k2 > k1 for
//!   `Rnn` and `Lstm`; a proptest draws 64 random (kind, layers, T, k1, k2,
//!   B, I, H) cases.
//! - **Variable lengths.** A padded batch run with `RunOptions::lengths` and
//!   a 0/1-masked loss equals (|Δ| ≤ 1e-12·max(1, |v|)) the sum of running
//!   each sequence alone at its own length — loss, outputs, final state,
//!   parameter gradients, ∂L/∂x and ∂L/∂h(0) — for Rnn, Lstm and Gru,
//!   stacked and bidirectional (whose reverse direction must start at each
//!   sequence's own last step). Padded outputs are exactly zero, and
//!   changing the padded input values changes nothing (exact equality).
//! - **Zero initial state.** `Some(&zeros)` is exactly `None`.

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestRunner};
use std::cell::Cell;
use std::collections::HashMap;
use tapegrad::layers::tbptt::Tbptt;
use tapegrad::layers::{
    Gru, Linear, Lstm, RecurrentConfig, Rnn, RunOptions, SeqOutput, State, StateTensors,
};
use tapegrad::{
    ErrorKind, Grads, Nonlinearity, ParamKey, ParamStore, Reduction, Tape, Tensor, Var,
};

/// Agreement required between two computations of the same f64 quantity
/// that differ only in summation order: |a − b| ≤ TOL·max(1, |b|).
const TOL: f64 = 1e-12;

// ----- a layer of any kind ----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rnn(Nonlinearity),
    Lstm,
    Gru,
}

enum Layer {
    Rnn(Rnn),
    Lstm(Lstm),
    Gru(Gru),
}

impl Layer {
    fn new(kind: Kind, store: &mut ParamStore<f64>, cfg: RecurrentConfig, seed: u64) -> Self {
        match kind {
            Kind::Rnn(phi) => Layer::Rnn(Rnn::new(store, "rnn", cfg.nonlinearity(phi), seed)),
            Kind::Lstm => Layer::Lstm(Lstm::new(store, "lstm", cfg, seed)),
            Kind::Gru => Layer::Gru(Gru::new(store, "gru", cfg, seed)),
        }
    }

    fn forward<'t>(
        &self,
        tape: &'t Tape<f64>,
        store: &ParamStore<f64>,
        x: Var<'t, f64>,
        init: Option<&State<'t, f64>>,
        opts: RunOptions<'_>,
    ) -> SeqOutput<'t, f64> {
        match self {
            Layer::Rnn(l) => l.forward_with(tape, store, x, init, opts),
            Layer::Lstm(l) => l.forward_with(tape, store, x, init, opts),
            Layer::Gru(l) => l.forward_with(tape, store, x, init, opts),
        }
    }

    fn step<'t>(
        &self,
        tape: &'t Tape<f64>,
        store: &ParamStore<f64>,
        x: Var<'t, f64>,
        state: &State<'t, f64>,
    ) -> State<'t, f64> {
        match self {
            Layer::Rnn(l) => l.step(tape, store, x, state),
            Layer::Lstm(l) => l.step(tape, store, x, state),
            Layer::Gru(l) => l.step(tape, store, x, state),
        }
    }

    fn zero_state<'t>(&self, tape: &'t Tape<f64>, batch: usize) -> State<'t, f64> {
        match self {
            Layer::Rnn(l) => l.zero_state(tape, batch),
            Layer::Lstm(l) => l.zero_state(tape, batch),
            Layer::Gru(l) => l.zero_state(tape, batch),
        }
    }
}

// ----- helpers ------------------------------------------------------------------

/// SplitMix64 for targets and lengths.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Tracks the worst relative disagreement seen and fails beyond [`TOL`].
#[derive(Default)]
struct Agreement {
    worst: f64,
}

impl Agreement {
    fn check(&mut self, what: &str, got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths differ");
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            let rel = (a - b).abs() / b.abs().max(1.0);
            assert!(
                rel <= TOL,
                "{what}[{i}]: {a} vs {b} (relative {rel:e} > {TOL:e})"
            );
            self.worst = self.worst.max(rel);
        }
    }
}

fn add_into(sum: &mut HashMap<ParamKey, Tensor<f64>>, grads: &Grads<f64>) {
    for (k, g) in grads.params() {
        match sum.get_mut(&k) {
            Some(acc) => acc
                .data_mut()
                .iter_mut()
                .zip(g.data())
                .for_each(|(a, b)| *a += b),
            None => {
                sum.insert(k, g.clone());
            }
        }
    }
}

/// Rows t0..t1 of a [T×B×I] tensor as a new tensor.
fn time_slice(x: &Tensor<f64>, t0: usize, t1: usize) -> Tensor<f64> {
    let (b, i) = (x.shape()[1], x.shape()[2]);
    Tensor::from_slice(&x.data()[t0 * b * i..t1 * b * i], &[t1 - t0, b, i]).unwrap()
}

// ----- carried state ------------------------------------------------------------

/// State carried between chunks through `to_tensors()`/`bind()`:
/// - the bound state does not require a gradient and asking for its
///   gradient is a `NoGradient` error;
/// - the chunk's parameter gradients equal (exactly) those of a fresh tape
///   that runs the previous chunk and this one with `detach()` at the
///   boundary, and differ from the undetached two-chunk graph — so the cut
///   is real and sits exactly at the boundary;
/// - binding the same values with `bind_var` shows ∂L/∂h(0) ≠ 0: a gradient
///   would reach the previous chunk if the boundary let it;
/// - the reused tape records the same number of nodes and holds the same
///   number of elements for chunk 2 as for chunk 12.
#[test]
fn carried_state_stops_the_gradient_at_the_boundary() {
    const T: usize = 4; // steps per chunk
    const CHUNKS: usize = 12;
    const B: usize = 2;
    const I: usize = 3;
    const H: usize = 4;
    let mut store = ParamStore::<f64>::new();
    let cfg = RecurrentConfig::new(I, H).layers(2);
    let lstm = Layer::new(Kind::Lstm, &mut store, cfg, 5);
    let head = Linear::new(&mut store, "head", H, 3, true, 6);
    let mut rng = Rng(7);
    let xs: Vec<Tensor<f64>> = (0..CHUNKS)
        .map(|c| Tensor::randn(&[T, B, I], 100 + c as u64))
        .collect();
    let ys: Vec<Vec<usize>> = (0..CHUNKS)
        .map(|_| (0..T * B).map(|_| rng.below(3)).collect())
        .collect();

    fn chunk_loss<'t>(
        (layer, head): (&Layer, &Linear),
        tape: &'t Tape<f64>,
        store: &ParamStore<f64>,
        x: &Tensor<f64>,
        y: &[usize],
        init: &State<'t, f64>,
    ) -> (Var<'t, f64>, State<'t, f64>) {
        // constant_from_slice: the input comes from the tape's pool, so a
        // reused tape allocates nothing new per chunk
        let xv = tape.constant_from_slice(x.data(), x.shape());
        let out = layer.forward(tape, store, xv, Some(init), RunOptions::default());
        let loss = head
            .forward(tape, store, out.stacked_rows())
            .cross_entropy(y, Reduction::Sum);
        (loss, out.state)
    }
    let model = (&lstm, &head);

    let mut tape = Tape::<f64>::new();
    let mut carried: StateTensors<f64> = lstm.zero_state(&tape, B).to_tensors();
    tape.reset();
    let mut lens = Vec::new();
    let mut held = Vec::new();
    for c in 0..CHUNKS {
        let grads = {
            let init = carried.bind(&tape);
            for v in init.h.iter().chain(init.c.as_ref().unwrap()) {
                assert!(!v.requires_grad(), "a carried state must be a constant");
            }
            let (loss, state) = chunk_loss(model, &tape, &store, &xs[c], &ys[c], &init);
            let grads = loss.backward();
            for v in init.h.iter().chain(init.c.as_ref().unwrap()) {
                assert_eq!(grads.try_wrt(*v).unwrap_err().kind(), ErrorKind::NoGradient);
            }
            carried = state.to_tensors();
            grads
        };
        lens.push(tape.len());
        held.push(tape.held_elements());

        if c > 0 {
            // the same chunk on one fresh tape after the previous chunk, cut
            // with detach() — and not cut
            let prev_in = {
                // the state that entered chunk c−1: rerun chunks 0..c−1 (values only)
                let t2 = Tape::<f64>::new();
                let mut s = lstm.zero_state(&t2, B);
                for k in 0..c - 1 {
                    s = chunk_loss(model, &t2, &store, &xs[k], &ys[k], &s).1;
                }
                s.to_tensors()
            };
            let fresh = Tape::<f64>::new();
            let s0 = prev_in.bind(&fresh);
            let (_, s1) = chunk_loss(model, &fresh, &store, &xs[c - 1], &ys[c - 1], &s0);
            let (cut_loss, _) = chunk_loss(model, &fresh, &store, &xs[c], &ys[c], &s1.detach());
            let cut = cut_loss.backward();
            let whole = Tape::<f64>::new();
            let s0 = prev_in.bind(&whole);
            let (_, s1) = chunk_loss(model, &whole, &store, &xs[c - 1], &ys[c - 1], &s0);
            let (uncut_loss, _) = chunk_loss(model, &whole, &store, &xs[c], &ys[c], &s1);
            let uncut = uncut_loss.backward();
            let mut differs = false;
            for key in store.keys() {
                let g = grads.param(key).unwrap().data();
                // the carried values are the rerun ones bit for bit (the same
                // computation), so the gradients agree exactly
                assert_eq!(g, cut.param(key).unwrap().data(), "{}", store.name(key));
                differs |= g != uncut.param(key).unwrap().data();
            }
            assert!(
                differs,
                "without the cut the gradient reaches chunk {}",
                c - 1
            );
            // a path into the previous chunk exists: bind_var sees it
            let probe = Tape::<f64>::new();
            let s =
                carried_before(&prev_in, model, &store, &xs[c - 1], &ys[c - 1]).bind_var(&probe);
            let (l, _) = chunk_loss(model, &probe, &store, &xs[c], &ys[c], &s);
            let g = l.backward();
            assert!(g.wrt(s.h[0]).norm() > 1e-6 && g.wrt(s.c.as_ref().unwrap()[1]).norm() > 1e-6);
        }
        tape.reset_with(grads);
    }
    println!("tape.len() per chunk: {lens:?}; held elements: {held:?}");
    assert!(lens.iter().all(|&n| n == lens[0]), "{lens:?}");
    assert!(held[1..].iter().all(|&n| n == held[1]), "{held:?}");

    /// The state after running one chunk from `from` (values only).
    fn carried_before(
        from: &StateTensors<f64>,
        model: (&Layer, &Linear),
        store: &ParamStore<f64>,
        x: &Tensor<f64>,
        y: &[usize],
    ) -> StateTensors<f64> {
        let tape = Tape::<f64>::new();
        let s0 = from.bind(&tape);
        chunk_loss(model, &tape, store, x, y, &s0).1.to_tensors()
    }
}

// ----- truncated BPTT vs the full graph -------------------------------------------

/// One truncated-BPTT comparison case.
#[derive(Debug, Clone, Copy)]
struct TbpttCase {
    kind: Kind,
    layers: usize,
    len: usize,
    k1: usize,
    k2: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    seed: u64,
}

const CLASSES: usize = 3;

/// Runs `case` both ways, asserts agreement, returns the worst relative
/// difference seen.
fn tbptt_matches_full_graph(case: TbpttCase, check_truncation_matters: bool) -> f64 {
    let TbpttCase {
        kind,
        layers,
        len,
        k1,
        k2,
        batch: b,
        input: i,
        hidden: h,
        seed,
    } = case;
    let mut store = ParamStore::<f64>::new();
    let layer = Layer::new(
        kind,
        &mut store,
        RecurrentConfig::new(i, h).layers(layers),
        seed,
    );
    let head = Linear::new(&mut store, "head", h, CLASSES, true, seed + 1);
    let x = Tensor::<f64>::randn(&[len, b, i], seed + 2);
    let mut rng = Rng(seed + 3);
    let y: Vec<usize> = (0..len * b).map(|_| rng.below(CLASSES)).collect();
    let windows = Tbptt::new(k1, k2).unwrap().windows(len);
    assert_eq!(
        windows.iter().map(|w| w.end - w.loss_from).sum::<usize>(),
        len
    );

    // --- truncated BPTT: one tape per window, state carried as values ---
    let mut tbptt: HashMap<ParamKey, Tensor<f64>> = HashMap::new();
    let mut tbptt_loss = 0.0;
    let mut tape = Tape::<f64>::new();
    let mut carried = layer.zero_state(&tape, b).to_tensors();
    tape.reset();
    for (n, w) in windows.iter().enumerate() {
        if n > 0 {
            assert_eq!(w.start, windows[n - 1].carry_at, "{windows:?}");
        }
        assert!(w.end - w.start <= k2);
        let grads = {
            let s0 = carried.bind(&tape);
            let mut outs: Vec<Var<'_, f64>> = Vec::new();
            let mut state = s0.clone();
            if w.carry_at > w.start {
                let xs = tape.constant(time_slice(&x, w.start, w.carry_at));
                let o = layer.forward(&tape, &store, xs, Some(&state), RunOptions::default());
                outs.extend(&o.outputs);
                state = o.state;
            }
            let next = state.to_tensors();
            if w.end > w.carry_at {
                let xs = tape.constant(time_slice(&x, w.carry_at, w.end));
                let o = layer.forward(&tape, &store, xs, Some(&state), RunOptions::default());
                outs.extend(&o.outputs);
            }
            assert_eq!(outs.len(), w.end - w.start);
            let counted = Var::concat(&outs[w.loss_from - w.start..], 0);
            let loss = head
                .forward(&tape, &store, counted)
                .cross_entropy(&y[w.loss_from * b..w.end * b], Reduction::Sum);
            tbptt_loss += loss.item();
            carried = next;
            loss.backward()
        };
        add_into(&mut tbptt, &grads);
        tape.reset_with(grads);
    }

    // --- reference: one tape, every window rebuilt with step() from the
    //     detached true state at its start, window losses summed ---
    let reference = Tape::<f64>::new();
    let xv = reference.constant(x.clone());
    let x_at = |t: usize| xv.slice(0, t, 1).reshape(&[b, i]);
    let mut states = vec![layer.zero_state(&reference, b)];
    for t in 0..len {
        let next = layer.step(&reference, &store, x_at(t), &states[t]);
        states.push(next);
    }
    let mut total = reference.scalar(0.0);
    for w in &windows {
        let mut s = states[w.start].detach();
        for t in w.start..w.end {
            s = layer.step(&reference, &store, x_at(t), &s);
            if t >= w.loss_from {
                let l = head
                    .forward(&reference, &store, s.last_h())
                    .cross_entropy(&y[t * b..(t + 1) * b], Reduction::Sum);
                total = total + l;
            }
        }
    }
    let grads = total.backward();

    let mut agree = Agreement::default();
    agree.check("loss", &[tbptt_loss], &[total.item()]);
    for key in store.keys() {
        let want = grads.param(key).expect("every parameter is used");
        let got = &tbptt[&key];
        agree.check(
            &format!("{case:?} {}", store.name(key)),
            got.data(),
            want.data(),
        );
    }
    // the truncation matters: once a window starts after step 0 the
    // full-BPTT gradient differs (checked for the deterministic cases; a
    // random case may have dropped terms below rounding)
    if check_truncation_matters && len > k2 {
        let full = Tape::<f64>::new();
        let out = layer.forward(
            &full,
            &store,
            full.constant(x.clone()),
            None,
            RunOptions::default(),
        );
        let g = head
            .forward(&full, &store, out.stacked_rows())
            .cross_entropy(&y, Reduction::Sum)
            .backward();
        let key = store.keys().next().unwrap(); // weight_ih_l0
        let diff = g.param(key).unwrap().max_abs_diff(&tbptt[&key]);
        assert!(
            diff > 1e-9,
            "{case:?}: truncation changed nothing ({diff:e})"
        );
    }
    agree.worst
}

/// k1 = k2 and k2 > k1, for Rnn (tanh) and Lstm, one and two layers.
#[test]
fn tbptt_gradients_equal_full_graph_of_truncated_objective() {
    let mut worst = 0f64;
    for kind in [Kind::Rnn(Nonlinearity::Tanh), Kind::Lstm] {
        for (k1, k2) in [(3, 3), (2, 5), (1, 3), (4, 4), (3, 4)] {
            for layers in [1, 2] {
                let case = TbpttCase {
                    kind,
                    layers,
                    len: 11,
                    k1,
                    k2,
                    batch: 2,
                    input: 3,
                    hidden: 4,
                    seed: 40 + k1 as u64 * 10 + k2 as u64,
                };
                worst = worst.max(tbptt_matches_full_graph(case, true));
            }
        }
    }
    println!("tbptt vs full graph (deterministic cases): worst relative difference {worst:e}");
}

fn tbptt_case() -> impl Strategy<Value = TbpttCase> {
    (
        prop_oneof![Just(Kind::Rnn(Nonlinearity::Tanh)), Just(Kind::Lstm)],
        1usize..=2,
        1usize..=14,
        1usize..=4,
        0usize..=4,
        1usize..=3,
        1usize..=3,
        1usize..=4,
        any::<u64>(),
    )
        .prop_map(
            |(kind, layers, len, k1, extra, batch, input, hidden, seed)| TbpttCase {
                kind,
                layers,
                len,
                k1,
                k2: k1 + extra,
                batch,
                input,
                hidden,
                seed: seed >> 8,
            },
        )
}

/// 64 random cases (`PROPTEST_CASES` overrides): T ≤ 14, k1 ≤ 4,
/// k2 − k1 ≤ 4 (k2 = k1 in about a fifth of them), B ≤ 3, I ≤ 3, H ≤ 4,
/// 1–2 layers, Rnn (tanh) or Lstm.
#[test]
fn tbptt_gradients_equal_full_graph_random() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    });
    let worst = Cell::new(0f64);
    let (equal, longer) = (Cell::new(0), Cell::new(0));
    runner
        .run(&tbptt_case(), |case| {
            let w = tbptt_matches_full_graph(case, false);
            worst.set(worst.get().max(w));
            let n = if case.k1 == case.k2 { &equal } else { &longer };
            n.set(n.get() + 1);
            Ok(())
        })
        .unwrap();
    println!(
        "tbptt vs full graph: {cases} random cases ({} with k1 = k2, {} with k2 > k1), \
         worst relative difference {:e}",
        equal.get(),
        longer.get(),
        worst.get()
    );
}

// ----- variable lengths ------------------------------------------------------------

/// What one run reports, as plain values.
#[derive(Debug, PartialEq)]
struct Run {
    loss: f64,
    outputs: Vec<Tensor<f64>>,
    state: StateTensors<f64>,
    params: Vec<Tensor<f64>>,
    dx: Tensor<f64>,
    dh0: Option<Vec<Tensor<f64>>>,
}

struct VarLenModel {
    layer: Layer,
    head: Linear,
    store: ParamStore<f64>,
    dirs: usize,
    hidden: usize,
    entries: usize,
    lstm: bool,
}

impl VarLenModel {
    fn new(kind: Kind, layers: usize, bidirectional: bool, input: usize, hidden: usize) -> Self {
        let mut store = ParamStore::new();
        // Stacked models hoist their input projection two steps at a time,
        // so masking is also checked across projection chunks (the reverse
        // direction starting in a short last chunk).
        let cfg = RecurrentConfig::new(input, hidden)
            .layers(layers)
            .bidirectional(bidirectional)
            .projection_steps(if layers == 2 { 2 } else { 0 });
        let layer = Layer::new(kind, &mut store, cfg, 77);
        let dirs = cfg.directions();
        let head = Linear::new(&mut store, "head", dirs * hidden, CLASSES, true, 78);
        VarLenModel {
            layer,
            head,
            store,
            dirs,
            hidden,
            entries: layers * dirs,
            lstm: kind == Kind::Lstm,
        }
    }

    /// Runs `x` [T×B×I] (with `lengths`, masking the loss at padded steps,
    /// or at full length when `None`) from `h0` (zeros when `None`).
    fn run(
        &self,
        x: &Tensor<f64>,
        y: &[usize],
        lengths: Option<&[usize]>,
        h0: Option<&StateTensors<f64>>,
    ) -> Run {
        let (t_len, b) = (x.shape()[0], x.shape()[1]);
        let tape = Tape::<f64>::new();
        let xv = tape.var(x.clone());
        let init = h0.map(|s| s.bind_var(&tape));
        let out = self.layer.forward(
            &tape,
            &self.store,
            xv,
            init.as_ref(),
            RunOptions {
                lengths,
                dropout_seed: None,
            },
        );
        let ce = self
            .head
            .forward(&tape, &self.store, out.stacked_rows())
            .cross_entropy(y, Reduction::None);
        let loss = match lengths {
            Some(lens) => {
                let mask: Vec<f64> = (0..t_len)
                    .flat_map(|t| lens.iter().map(move |&l| if t < l { 1.0 } else { 0.0 }))
                    .collect();
                (ce * tape.constant(Tensor::from_vec(mask, &[t_len * b]).unwrap())).sum()
            }
            None => ce.sum(),
        };
        let grads = loss.backward();
        let dh0 = init.as_ref().map(|s| {
            s.h.iter()
                .chain(s.c.iter().flatten())
                .map(|v| grads.wrt(*v).clone())
                .collect()
        });
        Run {
            loss: loss.item(),
            outputs: out.outputs.iter().map(|o| o.to_tensor()).collect(),
            state: out.state.to_tensors(),
            params: self
                .store
                .keys()
                .map(|k| grads.param(k).expect("all parameters used").clone())
                .collect(),
            dx: grads.wrt(xv).clone(),
            dh0,
        }
    }
}

/// Row `b` of a [B×…] tensor.
fn row(t: &Tensor<f64>, b: usize) -> &[f64] {
    let n = t.numel() / t.shape()[0];
    &t.data()[b * n..(b + 1) * n]
}

fn state_rows(s: &StateTensors<f64>, b: usize) -> StateTensors<f64> {
    let pick = |v: &Vec<Tensor<f64>>| {
        v.iter()
            .map(|t| Tensor::from_slice(row(t, b), &[1, t.shape()[1]]).unwrap())
            .collect()
    };
    StateTensors {
        h: pick(&s.h),
        c: s.c.as_ref().map(pick),
        extra: Vec::new(),
    }
}

/// The padded batch against per-sequence runs; returns the worst relative
/// difference.
fn check_variable_lengths(kind: Kind, layers: usize, bidirectional: bool, with_h0: bool) -> f64 {
    const I: usize = 3;
    const H: usize = 3;
    let lens = [5usize, 2, 4, 1, 5];
    let (t_len, b) = (*lens.iter().max().unwrap(), lens.len());
    let m = VarLenModel::new(kind, layers, bidirectional, I, H);
    let x = Tensor::<f64>::randn(&[t_len, b, I], 90);
    let mut rng = Rng(91);
    let y: Vec<usize> = (0..t_len * b).map(|_| rng.below(CLASSES)).collect();
    let h0 = with_h0.then(|| {
        let mk = |seed| {
            (0..m.entries)
                .map(|e| Tensor::randn(&[b, H], seed + e as u64))
                .collect::<Vec<_>>()
        };
        StateTensors {
            h: mk(200),
            c: m.lstm.then(|| mk(300)),
            extra: Vec::new(),
        }
    });
    let batched = m.run(&x, &y, Some(&lens), h0.as_ref());
    let mut agree = Agreement::default();
    let what = |s: &str| format!("{kind:?} layers={layers} bidi={bidirectional} h0={with_h0}: {s}");

    // padded outputs are exactly zero
    for (t, o) in batched.outputs.iter().enumerate() {
        assert_eq!(o.shape(), &[b, m.dirs * m.hidden]);
        for (s, &l) in lens.iter().enumerate() {
            if t >= l {
                assert!(
                    row(o, s).iter().all(|&v| v == 0.0),
                    "{}",
                    what("padded output")
                );
                // and no gradient reaches padded inputs
                assert!(row(
                    &batched.dx.clone().reshape(&[t_len * b, I]).unwrap(),
                    t * b + s
                )
                .iter()
                .all(|&v| v == 0.0));
            }
        }
    }

    // per-sequence runs at their own lengths, summed
    let mut loss = 0.0;
    let mut params: Vec<Tensor<f64>> = batched
        .params
        .iter()
        .map(|p| Tensor::zeros(p.shape()))
        .collect();
    for (s, &l) in lens.iter().enumerate() {
        let xs = Tensor::from_fn(&[l, 1, I], |k| x.data()[(k / I) * b * I + s * I + k % I]);
        let ys: Vec<usize> = (0..l).map(|t| y[t * b + s]).collect();
        let h0s = h0.as_ref().map(|h| state_rows(h, s));
        let single = m.run(&xs, &ys, None, h0s.as_ref());
        loss += single.loss;
        for (acc, g) in params.iter_mut().zip(&single.params) {
            acc.data_mut()
                .iter_mut()
                .zip(g.data())
                .for_each(|(a, b)| *a += b);
        }
        for t in 0..l {
            agree.check(
                &what("output"),
                row(&batched.outputs[t], s),
                single.outputs[t].data(),
            );
            let dx = batched.dx.clone().reshape(&[t_len * b, I]).unwrap();
            agree.check(
                &what("dL/dx"),
                row(&dx, t * b + s),
                row(&single.dx.clone().reshape(&[l, I]).unwrap(), t),
            );
        }
        // final state of every layer and direction: the reverse direction's
        // final state is its state after step 0, reached from the sequence's
        // own last step
        let mine = state_rows(&batched.state, s);
        for (a, bb) in mine.h.iter().zip(&single.state.h) {
            agree.check(&what("h_n"), a.data(), bb.data());
        }
        if let (Some(ca), Some(cb)) = (&mine.c, &single.state.c) {
            for (a, bb) in ca.iter().zip(cb) {
                agree.check(&what("c_n"), a.data(), bb.data());
            }
        }
        if let (Some(ga), Some(gb)) = (&batched.dh0, &single.dh0) {
            for (a, bb) in ga.iter().zip(gb) {
                agree.check(&what("dL/dh0"), row(a, s), bb.data());
            }
        }
    }
    agree.check(&what("loss"), &[batched.loss], &[loss]);
    for ((a, bb), key) in batched.params.iter().zip(&params).zip(m.store.keys()) {
        agree.check(&what(m.store.name(key)), a.data(), bb.data());
    }

    // other values at the padded positions change nothing, exactly
    let mut x2 = x.clone();
    for t in 0..t_len {
        for (s, &l) in lens.iter().enumerate() {
            if t >= l {
                for k in 0..I {
                    x2.data_mut()[(t * b + s) * I + k] = 1e3 * (k as f64 + 1.0) - 7.5 * t as f64;
                }
            }
        }
    }
    assert_ne!(x, x2);
    let changed = m.run(&x2, &y, Some(&lens), h0.as_ref());
    assert_eq!(changed, batched, "{}", what("padded inputs leaked"));
    agree.worst
}

#[test]
fn variable_lengths_equal_per_sequence_runs() {
    let mut worst = 0f64;
    let mut cases = 0;
    for kind in [
        Kind::Rnn(Nonlinearity::Tanh),
        Kind::Rnn(Nonlinearity::Relu),
        Kind::Lstm,
        Kind::Gru,
    ] {
        for layers in [1, 2] {
            for bidirectional in [false, true] {
                for with_h0 in [false, true] {
                    worst = worst.max(check_variable_lengths(kind, layers, bidirectional, with_h0));
                    cases += 1;
                }
            }
        }
    }
    println!("variable lengths: {cases} configurations, worst relative difference {worst:e}");
}

// ----- initial state --------------------------------------------------------------

/// `Some(&zeros)` — from `zero_state` or bound zero tensors — is exactly
/// `None`: outputs, final state and every parameter gradient, for every
/// kind, stacked and bidirectional, with and without lengths.
#[test]
fn zero_initial_state_equals_none() {
    for kind in [Kind::Rnn(Nonlinearity::Tanh), Kind::Lstm, Kind::Gru] {
        for bidirectional in [false, true] {
            let mut store = ParamStore::<f64>::new();
            let cfg = RecurrentConfig::new(2, 3)
                .layers(2)
                .bidirectional(bidirectional);
            let layer = Layer::new(kind, &mut store, cfg, 9);
            let x = Tensor::<f64>::randn(&[4, 3, 2], 10);
            let lens = [4usize, 1, 3];
            for lengths in [None, Some(&lens[..])] {
                let opts = RunOptions {
                    lengths,
                    dropout_seed: None,
                };
                let run = |init: u8| {
                    let tape = Tape::<f64>::new();
                    let zeros = layer.zero_state(&tape, 3);
                    let bound = zeros.to_tensors().bind(&tape);
                    let init = match init {
                        0 => None,
                        1 => Some(&zeros),
                        _ => Some(&bound),
                    };
                    let out = layer.forward(&tape, &store, tape.constant(x.clone()), init, opts);
                    let w = tape.constant(Tensor::randn(&[4 * 3, cfg.directions() * 3], 11));
                    let g = (out.stacked_rows() * w).sum().backward();
                    let params: Vec<Tensor<f64>> =
                        store.keys().map(|k| g.param(k).unwrap().clone()).collect();
                    (
                        out.outputs
                            .iter()
                            .map(|o| o.to_tensor())
                            .collect::<Vec<_>>(),
                        out.state.to_tensors(),
                        params,
                    )
                };
                let none = run(0);
                assert_eq!(run(1), none, "{kind:?} bidi={bidirectional} zero_state");
                assert_eq!(run(2), none, "{kind:?} bidi={bidirectional} bound zeros");
            }
        }
    }
}
