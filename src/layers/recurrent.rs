//! The recurrent engine shared by [`Rnn`], [`Lstm`] and [`Gru`]: parameters
//! in PyTorch's layout, stacking, bidirectional runs, variable lengths,
//! dropout between layers, and the per-step API for decoders.
//!
//! For each layer and direction the input projection is hoisted out of the
//! step loop: one GEMM (`x·W_ihᵀ + b`, still two primitives) per chunk of
//! steps holding about [`PROJECTION_ELEMS`] projected values and at least
//! [`PROJECTION_MIN_ROWS`] rows (the whole sequence, unless it is long or
//! wide), then the steps
//! slice their rows out of it and run the cell (`cells.rs`). Chunks rather
//! than all T at once so the projected inputs — four gate blocks per step
//! for an LSTM, as large as everything BPTT keeps — never live all at
//! once: each chunk is released when its steps have run. Padded steps of
//! shorter sequences keep the state unchanged through `select`, so they
//! change neither the final state nor any gradient.

use super::cells::{CellKind, Projected, Weight};
use super::state::State;
use super::{derive_seed, init_bound};
use crate::error::{or_panic, Error, ErrorKind};
use crate::tensor::gemm::REORDER_MIN_ROWS;
use crate::{Nonlinearity, ParamKey, ParamStore, Real, Tape, Tensor, Var};

/// One layer-direction's parameters bound on a tape (see `Recurrent::bind`).
struct Bound<'t, F: Real> {
    w_ih: Weight<'t, F>,
    w_hh: Weight<'t, F>,
    bias: Option<Var<'t, F>>,
    step_b_hh: Option<Var<'t, F>>,
}

/// Projected elements (steps × batch × gates·hidden) of one hoisted input
/// projection by default, 1 MiB in f32, unless that is fewer than
/// [`PROJECTION_MIN_ROWS`] rows: a chunk this size stays in cache while
/// its steps read it and while their gradients are added into it, and is
/// a small part of what a long sequence keeps. Alternating runs, LSTM
/// B = 32, H = 128, T = 50 (the M benchmark): 13.86 → 13.20 ms per step
/// with these chunks instead of 2²⁰ elements (four chunks of 16 steps
/// instead of one).
pub const PROJECTION_ELEMS: usize = 1 << 18;

/// The fewest rows (steps × batch) one projection chunk has by default,
/// so each chunk's GEMM stays large: at B = 64, H = 512 (the L benchmark)
/// 2¹⁸ elements are two steps, 128 rows, and such thin chunks made the
/// LSTM step 4–8% slower than eight steps (512 rows).
pub const PROJECTION_MIN_ROWS: usize = 512;

/// Sizes and options of a recurrent layer, as PyTorch's constructor takes
/// them.
///
/// ```
/// use tapegrad::layers::RecurrentConfig;
/// let cfg = RecurrentConfig::new(16, 32).layers(2).bidirectional(true).dropout(0.1);
/// assert_eq!((cfg.num_layers, cfg.directions()), (2, 2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecurrentConfig {
    /// Features of x(t).
    pub input_size: usize,
    /// Features of h(t).
    pub hidden_size: usize,
    /// Stacked layers (layer k > 0 reads layer k−1's outputs).
    pub num_layers: usize,
    /// Also run each layer backwards in time and concatenate.
    pub bidirectional: bool,
    /// φ of the vanilla RNN (ignored by LSTM and GRU).
    pub nonlinearity: Nonlinearity,
    /// Whether the layer has `bias_ih`/`bias_hh`.
    pub bias: bool,
    /// Dropout probability on the outputs of every layer but the last
    /// (applied only when [`RunOptions::dropout_seed`] is set).
    pub dropout: f64,
    /// Steps per hoisted input projection; `None` (the default) sizes the
    /// chunks to about [`PROJECTION_ELEMS`] projected elements, at least
    /// [`PROJECTION_MIN_ROWS`] rows. A memory
    /// knob: fewer steps keep less alive at once, more steps make fewer,
    /// larger GEMMs. Results agree up to rounding whatever the value.
    pub projection_chunk: Option<usize>,
}

impl RecurrentConfig {
    /// One unidirectional layer with biases, tanh, no dropout.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        RecurrentConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bidirectional: false,
            nonlinearity: Nonlinearity::Tanh,
            bias: true,
            dropout: 0.0,
            projection_chunk: None,
        }
    }

    /// Sets the number of stacked layers.
    pub fn layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// Makes the layer bidirectional.
    pub fn bidirectional(mut self, yes: bool) -> Self {
        self.bidirectional = yes;
        self
    }

    /// Sets φ (vanilla RNN only).
    pub fn nonlinearity(mut self, phi: Nonlinearity) -> Self {
        self.nonlinearity = phi;
        self
    }

    /// With or without biases.
    pub fn bias(mut self, yes: bool) -> Self {
        self.bias = yes;
        self
    }

    /// Dropout between stacked layers.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Steps per hoisted input projection (see
    /// [`RecurrentConfig::projection_chunk`]; 0 means the default).
    ///
    /// ```
    /// use tapegrad::layers::RecurrentConfig;
    /// let cfg = RecurrentConfig::new(8, 16).projection_steps(10);
    /// assert_eq!(cfg.projection_chunk, Some(10));
    /// ```
    pub fn projection_steps(mut self, steps: usize) -> Self {
        self.projection_chunk = (steps > 0).then_some(steps);
        self
    }

    /// 2 for a bidirectional layer, else 1.
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// Per-call options of a recurrent forward pass.
///
/// ```
/// use tapegrad::layers::RunOptions;
/// let lengths = [3, 1];
/// let opts = RunOptions { lengths: Some(&lengths), dropout_seed: Some(7) };
/// assert!(opts.lengths.is_some());
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions<'a> {
    /// Valid length of each sequence in the batch (≤ T); steps past it are
    /// padding: they leave the state unchanged and output zeros.
    pub lengths: Option<&'a [usize]>,
    /// Training mode: draw the inter-layer dropout masks from this seed
    /// (use a new seed every step). `None` = evaluation, no dropout.
    pub dropout_seed: Option<u64>,
}

/// What a recurrent forward pass returns.
#[derive(Debug, Clone)]
pub struct SeqOutput<'t, F: Real> {
    /// The top layer's output at every step, each [B × D·H] (D = 2 for a
    /// bidirectional layer: forward then reverse features).
    pub outputs: Vec<Var<'t, F>>,
    /// The final state of every layer and direction (PyTorch's h_n, c_n).
    pub state: State<'t, F>,
}

impl<'t, F: Real> SeqOutput<'t, F> {
    /// All outputs as one [T·B × D·H] var (rows ordered by time, then
    /// batch), ready for a readout over every step in one GEMM.
    ///
    /// # Panics
    /// If there are no steps.
    pub fn stacked_rows(&self) -> Var<'t, F> {
        assert!(!self.outputs.is_empty(), "stacked_rows: no time steps");
        Var::concat(&self.outputs, 0)
    }

    /// All outputs as one [T × B × D·H] var.
    ///
    /// # Panics
    /// If there are no steps.
    pub fn stacked(&self) -> Var<'t, F> {
        Var::stack(&self.outputs, 0)
    }
}

/// The keys of one layer-direction.
#[derive(Debug, Clone)]
struct DirParams {
    w_ih: ParamKey,
    w_hh: ParamKey,
    b_ih: Option<ParamKey>,
    b_hh: Option<ParamKey>,
}

/// The engine behind the three layer types.
#[derive(Debug, Clone)]
pub(crate) struct Recurrent {
    kind: CellKind,
    cfg: RecurrentConfig,
    name: String,
    params: Vec<DirParams>,
}

/// `name.param` or `param` when the layer has no name.
fn qualified(name: &str, param: &str) -> String {
    if name.is_empty() {
        param.to_string()
    } else {
        format!("{name}.{param}")
    }
}

fn fail(op: &str, msg: String) -> ! {
    or_panic::<()>(Err(Error::new(ErrorKind::Shape, op, msg)));
    unreachable!()
}

impl Recurrent {
    pub(crate) fn new<F: Real>(
        kind: CellKind,
        store: &mut ParamStore<F>,
        name: &str,
        cfg: RecurrentConfig,
        seed: u64,
    ) -> Self {
        let (h, g) = (cfg.hidden_size, kind.gates());
        if h == 0 || cfg.num_layers == 0 {
            fail(
                kind.name(),
                format!(
                    "hidden_size = {h} and num_layers = {} must both be at least 1",
                    cfg.num_layers
                ),
            );
        }
        let k = init_bound(h);
        let mut counter = 0u64;
        let mut uniform = |shape: &[usize]| {
            counter += 1;
            Tensor::uniform(shape, -k, k, derive_seed(seed, counter)).expect("finite bounds")
        };
        let mut params = Vec::new();
        for l in 0..cfg.num_layers {
            let in_size = if l == 0 {
                cfg.input_size
            } else {
                cfg.directions() * h
            };
            for d in 0..cfg.directions() {
                let sfx = if d == 1 { "_reverse" } else { "" };
                let mut add = |p: &str, t: Tensor<F>| {
                    store.insert(qualified(name, &format!("{p}_l{l}{sfx}")), t)
                };
                let w_ih = add("weight_ih", uniform(&[g * h, in_size]));
                let w_hh = add("weight_hh", uniform(&[g * h, h]));
                let (b_ih, b_hh) = if cfg.bias {
                    (
                        Some(add("bias_ih", uniform(&[g * h]))),
                        Some(add("bias_hh", uniform(&[g * h]))),
                    )
                } else {
                    (None, None)
                };
                params.push(DirParams {
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                });
            }
        }
        Recurrent {
            kind,
            cfg,
            name: name.to_string(),
            params,
        }
    }

    pub(crate) fn config(&self) -> &RecurrentConfig {
        &self.cfg
    }

    fn scope_name(&self, layer: usize, dir: usize) -> String {
        let base = if self.name.is_empty() {
            self.kind.name()
        } else {
            &self.name
        };
        format!("{base}.l{layer}{}", if dir == 1 { "_reverse" } else { "" })
    }

    fn check_state<F: Real>(&self, s: &State<'_, F>, batch: usize) {
        let entries = self.cfg.num_layers * self.cfg.directions();
        let h = self.cfg.hidden_size;
        let op = self.kind.name();
        let check = |what: &str, list: &[Var<'_, F>]| {
            if list.len() != entries {
                fail(
                    op,
                    format!(
                        "initial {what} has {} entries, the layer needs {entries} (layers × directions)",
                        list.len()
                    ),
                );
            }
            for (i, v) in list.iter().enumerate() {
                let shape = v.shape();
                if shape.as_slice() != [batch, h] {
                    fail(
                        op,
                        format!(
                            "initial {what}[{i}] has shape {:?}, expected [{batch}, {h}] (batch × hidden)",
                            shape.as_slice()
                        ),
                    );
                }
            }
        };
        check("h", &s.h);
        match (&s.c, self.kind.has_cell_state()) {
            (Some(c), true) => check("c", c),
            (None, true) => fail(op, "an LSTM needs an initial cell state c".into()),
            (Some(_), false) => fail(op, format!("a {op} has no cell state, but c was given")),
            (None, false) => {}
        }
    }

    /// Binds one layer-direction's parameters: W_ih and W_hh (reordered to
    /// Wᵀ once when `reorder`, for a whole sequence: row-major products run
    /// 1.3–1.6× faster than `x·Wᵀ` with W in PyTorch's layout, and the
    /// transposes are one copy each per sequence, not per step), the input
    /// bias b = b_ih + b_hh (summed once as a [G·H] vector; b_ih alone for
    /// the GRU, whose b_hh stays inside the step), and that b_hh.
    fn bind<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        p: &DirParams,
        reorder: bool,
    ) -> Bound<'t, F> {
        let w_ih = tape.param(store, p.w_ih);
        let w_hh = tape.param(store, p.w_hh);
        let b_ih = p.b_ih.map(|k| tape.param(store, k));
        let b_hh = p.b_hh.map(|k| tape.param(store, k));
        let (folded, step_b_hh) = if self.kind.folds_hidden_bias() {
            (b_hh, None)
        } else {
            (None, b_hh)
        };
        let bias = match (b_ih, folded) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        let (w_ih, w_hh) = if reorder {
            (
                Weight::Transposed(w_ih.transpose()),
                Weight::Transposed(w_hh.transpose()),
            )
        } else {
            (Weight::Stored(w_ih), Weight::Stored(w_hh))
        };
        Bound {
            w_ih,
            w_hh,
            bias,
            step_b_hh,
        }
    }

    /// `xw = x·W_ihᵀ + b` for a [rows × I] (or [T × B × I]) input.
    fn project<'t, F: Real>(bound: &Bound<'t, F>, x: Var<'t, F>) -> Var<'t, F> {
        match bound.bias {
            // One addmm with the bias row broadcast: no separate add pass.
            Some(b) => bound.w_ih.times_onto(b, x),
            None => bound.w_ih.times(x),
        }
    }

    /// Runs the whole sequence `x` [T×B×I].
    #[track_caller]
    pub(crate) fn forward<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        init: Option<&State<'t, F>>,
        opts: RunOptions<'_>,
    ) -> SeqOutput<'t, F> {
        let op = self.kind.name();
        let shape = x.shape();
        if shape.len() != 3 || shape[2] != self.cfg.input_size {
            fail(
                op,
                format!(
                    "input of shape {:?}, expected [T, B, {}] (steps × batch × input_size)",
                    shape.as_slice(),
                    self.cfg.input_size
                ),
            );
        }
        let (steps, batch, h) = (shape[0], shape[1], self.cfg.hidden_size);
        let dirs = self.cfg.directions();
        let state = match init {
            Some(s) => {
                self.check_state(s, batch);
                s.clone()
            }
            None => State::zeros(
                tape,
                self.cfg.num_layers * dirs,
                batch,
                h,
                self.kind.has_cell_state(),
            ),
        };
        if let Some(lengths) = opts.lengths {
            if lengths.len() != batch || lengths.iter().any(|&l| l > steps) {
                fail(
                    op,
                    format!("lengths {lengths:?} must give one length ≤ T = {steps} per sequence of the batch (B = {batch})"),
                );
            }
        }
        if steps == 0 {
            return SeqOutput {
                outputs: Vec::new(),
                state,
            };
        }
        // Per-step validity masks over [B×H], shared by all layers.
        let masks: Option<Vec<Vec<bool>>> = opts.lengths.map(|lengths| {
            (0..steps)
                .map(|t| {
                    lengths
                        .iter()
                        .flat_map(|&len| std::iter::repeat_n(t < len, h))
                        .collect()
                })
                .collect()
        });

        let mut input = x;
        let mut final_h = Vec::with_capacity(state.h.len());
        let mut final_c = Vec::new();
        let mut layer_out: Vec<Var<'t, F>> = Vec::new();
        for l in 0..self.cfg.num_layers {
            // [T×B×In] is read as [T·B × In] by matmul: no reshape copy.
            let flat = input;
            let mut dir_outs: Vec<Vec<Var<'t, F>>> = Vec::with_capacity(dirs);
            for d in 0..dirs {
                let idx = l * dirs + d;
                let p = &self.params[idx];
                let _scope = tape.scope(self.scope_name(l, d));
                let mut hs = state.h[idx];
                let mut cs = state.c.as_ref().map(|c| c[idx]);
                let zeros = masks.as_ref().map(|_| tape.zeros(&[batch, h]));
                let mut outs = vec![None; steps];
                // Chunks of steps in run order, each projected in one GEMM.
                let per = self
                    .cfg
                    .projection_chunk
                    .unwrap_or_else(|| {
                        let by_elems =
                            PROJECTION_ELEMS.div_ceil((batch * self.kind.gates() * h).max(1));
                        by_elems.max(PROJECTION_MIN_ROWS.div_ceil(batch.max(1)))
                    })
                    .clamp(1, steps);
                let bound = self.bind(tape, store, p, batch >= REORDER_MIN_ROWS);
                let mut chunk = None;
                let mut t0 = 0;
                let order: Box<dyn Iterator<Item = usize>> = if d == 0 {
                    Box::new(0..steps)
                } else {
                    Box::new((0..steps).rev())
                };
                for t in order {
                    if chunk.is_none() || t < t0 || t >= t0 + per {
                        if let Some(done) = chunk {
                            Var::release(done);
                        }
                        t0 = t - t % per;
                        let len = per.min(steps - t0);
                        let _s = tape.scope("input_projection");
                        let x_c = if len == steps {
                            flat
                        } else {
                            flat.slice(0, t0, len)
                        };
                        chunk = Some(Self::project(&bound, x_c));
                    }
                    let xw = chunk.expect("projected above");
                    let _t = tape.scope_at("t", t);
                    let xw_t = Projected {
                        chunk: xw,
                        start: (t - t0) * batch,
                        rows: batch,
                    };
                    let (h_new, c_new) = self.kind.step(xw_t, hs, cs, bound.w_hh, bound.step_b_hh);
                    match (&masks, zeros) {
                        (Some(m), Some(z)) => {
                            let valid = &m[t];
                            hs = Var::select(valid, h_new, hs);
                            cs = match (c_new, cs) {
                                (Some(cn), Some(cp)) => Some(Var::select(valid, cn, cp)),
                                _ => None,
                            };
                            outs[t] = Some(Var::select(valid, h_new, z));
                        }
                        _ => {
                            hs = h_new;
                            cs = c_new;
                            outs[t] = Some(h_new);
                        }
                    }
                }
                if let Some(done) = chunk {
                    Var::release(done);
                }
                final_h.push(hs);
                if let Some(c) = cs {
                    final_c.push(c);
                }
                dir_outs.push(
                    outs.into_iter()
                        .map(|o| o.expect("every step ran"))
                        .collect(),
                );
            }
            layer_out = if dirs == 1 {
                dir_outs.pop().expect("one direction")
            } else {
                let _s = tape.scope(format!("{}.l{l}", self.kind.name()));
                (0..steps)
                    .map(|t| Var::concat(&[dir_outs[0][t], dir_outs[1][t]], 1))
                    .collect()
            };
            if l + 1 < self.cfg.num_layers {
                input = Var::stack(&layer_out, 0);
                if let (Some(seed), true) = (opts.dropout_seed, self.cfg.dropout > 0.0) {
                    input = input.dropout(self.cfg.dropout, derive_seed(seed, l as u64));
                }
            }
        }
        SeqOutput {
            outputs: layer_out,
            state: State {
                h: final_h,
                c: self.kind.has_cell_state().then_some(final_c),
            },
        }
    }

    /// One step through all layers for `x` [B×I] (unidirectional layers).
    #[track_caller]
    pub(crate) fn step<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        state: &State<'t, F>,
    ) -> State<'t, F> {
        let op = self.kind.name();
        if self.cfg.bidirectional {
            fail(op, "step() runs forward in time; a bidirectional layer needs the whole sequence (forward)".into());
        }
        let shape = x.shape();
        if shape.len() != 2 || shape[1] != self.cfg.input_size {
            fail(
                op,
                format!(
                    "step input of shape {:?}, expected [B, {}]",
                    shape.as_slice(),
                    self.cfg.input_size
                ),
            );
        }
        self.check_state(state, shape[0]);
        let mut input = x;
        let mut out = State {
            h: Vec::with_capacity(state.h.len()),
            c: state.c.as_ref().map(|_| Vec::new()),
        };
        for (l, p) in self.params.iter().enumerate() {
            let _scope = tape.scope(self.scope_name(l, 0));
            // One step: no reorder (it would copy the weights every step).
            let bound = self.bind(tape, store, p, false);
            let xw = Self::project(&bound, input);
            let c = state.c.as_ref().map(|c| c[l]);
            let rows = xw.shape()[0];
            let window = Projected {
                chunk: xw,
                start: 0,
                rows,
            };
            let (h, c) = self
                .kind
                .step(window, state.h[l], c, bound.w_hh, bound.step_b_hh);
            xw.release(); // no backward rule reads it
            out.h.push(h);
            if let (Some(list), Some(c)) = (out.c.as_mut(), c) {
                list.push(c);
            }
            input = h;
        }
        out
    }
}

macro_rules! recurrent_layer {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $ty {
            engine: Recurrent,
        }

        impl $ty {
            /// Creates the parameters in `store` under `name` (PyTorch's
            /// names: `{name}.weight_ih_l{k}[_reverse]`, …), initialised
            /// U(−1/√H, 1/√H) from `seed`.
            ///
            /// # Panics
            /// If `hidden_size` or `num_layers` is 0 (a layer with no state
            /// is refused by name rather than run as an empty product), or a
            /// parameter name is already taken in `store`.
            pub fn new<F: Real>(store: &mut ParamStore<F>, name: &str, cfg: RecurrentConfig, seed: u64) -> Self {
                #[allow(clippy::redundant_closure_call)]
                let kind = ($kind)(&cfg);
                $ty { engine: Recurrent::new(kind, store, name, cfg, seed) }
            }

            /// The layer's configuration.
            pub fn config(&self) -> &RecurrentConfig {
                self.engine.config()
            }

            /// Runs the sequence `x` [T×B×I] from `init` (zeros if `None`).
            /// T = 0 returns no outputs and the initial state; B = 0 runs
            /// on empty batches (empty outputs, zero gradients).
            ///
            /// # Panics
            /// If `x` is not [T×B×input_size] or the initial state has the
            /// wrong number of entries or shapes (the message names them).
            #[track_caller]
            pub fn forward<'t, F: Real>(
                &self,
                tape: &'t Tape<F>,
                store: &ParamStore<F>,
                x: Var<'t, F>,
                init: Option<&State<'t, F>>,
            ) -> SeqOutput<'t, F> {
                self.engine.forward(tape, store, x, init, RunOptions::default())
            }

            /// [`Self::forward`] with per-sequence lengths and/or training-mode
            /// dropout.
            ///
            /// # Panics
            /// As [`Self::forward`], and if `lengths` does not give one length
            /// ≤ T per sequence.
            #[track_caller]
            pub fn forward_with<'t, F: Real>(
                &self,
                tape: &'t Tape<F>,
                store: &ParamStore<F>,
                x: Var<'t, F>,
                init: Option<&State<'t, F>>,
                opts: RunOptions<'_>,
            ) -> SeqOutput<'t, F> {
                self.engine.forward(tape, store, x, init, opts)
            }

            /// One time step through every layer, for decoders that feed
            /// back their own output: `x` [B×I] and the state in, the new
            /// state out (its `last_h()` is the output).
            ///
            /// # Panics
            /// For a bidirectional layer, or on wrong shapes.
            #[track_caller]
            pub fn step<'t, F: Real>(
                &self,
                tape: &'t Tape<F>,
                store: &ParamStore<F>,
                x: Var<'t, F>,
                state: &State<'t, F>,
            ) -> State<'t, F> {
                self.engine.step(tape, store, x, state)
            }

            /// A zero initial state for a batch of `batch` sequences.
            pub fn zero_state<'t, F: Real>(&self, tape: &'t Tape<F>, batch: usize) -> State<'t, F> {
                let c = self.config();
                State::zeros(
                    tape,
                    c.num_layers * c.directions(),
                    batch,
                    c.hidden_size,
                    self.engine.kind.has_cell_state(),
                )
            }
        }
    };
}

recurrent_layer!(
    /// A vanilla (Elman) RNN, PyTorch's `nn.RNN`:
    ///
    /// ```text
    /// h(t) = φ(x(t)·W_ihᵀ + b_ih + h(t−1)·W_hhᵀ + b_hh)
    /// ```
    ///
    /// In the seed article's notation `h(t) = φ(U x(t) + W h(t−1) + b)`:
    /// U = `weight_ih_l0` [H×I], W = `weight_hh_l0` [H×H],
    /// b = `bias_ih_l0` + `bias_hh_l0`; the readout `o(t) = V h(t) + c` is a
    /// [`Linear`](super::Linear) with V = its `weight`, c = its `bias`.
    ///
    /// ```
    /// use tapegrad::layers::{RecurrentConfig, Rnn};
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let rnn = Rnn::new(&mut store, "rnn", RecurrentConfig::new(3, 5), 0);
    /// let tape = Tape::new();
    /// let x = tape.constant(Tensor::randn(&[4, 2, 3], 1)); // T=4, B=2, I=3
    /// let out = rnn.forward(&tape, &store, x, None);
    /// assert_eq!(out.outputs.len(), 4);
    /// assert_eq!(out.state.h[0].shape().as_slice(), &[2, 5]);
    /// let g = out.stacked().sum().backward(); // BPTT
    /// assert!(g.param(store.key("rnn.weight_hh_l0").unwrap()).is_some());
    /// ```
    Rnn,
    |cfg: &RecurrentConfig| CellKind::Rnn(cfg.nonlinearity)
);

recurrent_layer!(
    /// A long short-term memory layer, PyTorch's `nn.LSTM` (gates i, f, g, o
    /// in that order in the 4H rows of `weight_ih_l{k}`):
    ///
    /// ```text
    /// z = x·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh = [z_i z_f z_g z_o]
    /// c = σ(z_f)⊙c₋ + σ(z_i)⊙tanh(z_g),   h = σ(z_o)⊙tanh(c)
    /// ```
    ///
    /// ```
    /// use tapegrad::layers::{Lstm, RecurrentConfig};
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f32>::new();
    /// let lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(3, 4).layers(2), 0);
    /// let tape = Tape::new();
    /// let x = tape.constant(Tensor::randn(&[5, 2, 3], 1));
    /// let out = lstm.forward(&tape, &store, x, None);
    /// assert_eq!(out.state.c.as_ref().unwrap().len(), 2);
    /// assert!(tape.listing().contains("lstm.l1/t=4/forget_gate"));
    /// ```
    Lstm,
    |_: &RecurrentConfig| CellKind::Lstm
);

recurrent_layer!(
    /// A gated recurrent unit, PyTorch's `nn.GRU` (gates r, z, n):
    ///
    /// ```text
    /// r = σ(x·W_irᵀ + b_ir + h₋·W_hrᵀ + b_hr)
    /// z = σ(x·W_izᵀ + b_iz + h₋·W_hzᵀ + b_hz)
    /// n = tanh(x·W_inᵀ + b_in + r⊙(h₋·W_hnᵀ + b_hn))
    /// h = (1 − z)⊙n + z⊙h₋
    /// ```
    ///
    /// ```
    /// use tapegrad::layers::{Gru, RecurrentConfig};
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let gru = Gru::new(&mut store, "gru", RecurrentConfig::new(2, 3).bidirectional(true), 0);
    /// let tape = Tape::new();
    /// let x = tape.constant(Tensor::randn(&[3, 1, 2], 1));
    /// let out = gru.forward(&tape, &store, x, None);
    /// assert_eq!(out.outputs[0].shape().as_slice(), &[1, 6]); // forward ‖ reverse
    /// assert!(store.key("gru.weight_hh_l0_reverse").is_some());
    /// ```
    Gru,
    |_: &RecurrentConfig| CellKind::Gru
);
