//! The recurrent engine every cell runs in ([`Recurrent`]): parameters in
//! PyTorch's layout and names, stacking, bidirectional runs, variable
//! lengths, dropout between layers, the per-step API for decoders — the
//! same for [`Rnn`](super::Rnn), [`Lstm`](super::Lstm),
//! [`Gru`](super::Gru) and any [`Cell`] written outside the crate.
//!
//! A forward pass, in the order `Recurrent::forward_with` reads: layers one
//! after another, each layer's directions (`run_direction`), and in a
//! direction the steps, each `cell.step(…)` on its rows of the input
//! projection (`step_cell`). That projection is hoisted out of the step
//! loop (`ProjectionChunks`):
//! one GEMM (`x·W_ihᵀ + b`) per chunk of steps holding about
//! `PROJECTION_ELEMS` projected values and at least `PROJECTION_MIN_ROWS`
//! rows (the whole sequence unless it is long or wide). Chunks rather than
//! all T at once so the projected inputs — four gate blocks per step for an
//! LSTM, as large as everything BPTT keeps — never live all at once: each
//! chunk is released when its steps have run. After each step the engine
//! releases every value the step recorded and did not return, unless a
//! backward rule reads it ([`Tape::release_since`]). Padded steps of
//! shorter sequences keep the state unchanged through `select`, so they
//! change neither the final state nor any gradient.

use super::cell::{Cell, CellSpec, Projected, Sequence, Step, StepPosition, Weight};
use super::derive_seed;
use super::state::State;
use crate::error::{fail, Error, ErrorKind};
use crate::tensor::gemm::REORDER_MIN_ROWS;
use crate::{Nonlinearity, ParamKey, ParamStore, Real, Tape, Var};
use std::sync::Arc;

/// One layer-direction's parameters bound on a tape (see `Recurrent::bind`).
struct Bound<'t, F: Real> {
    w_ih: Option<Weight<'t, F>>,
    w_hh: Option<Weight<'t, F>>,
    /// b_ih (+ b_hh when folded), added by the input projection.
    bias: Option<Var<'t, F>>,
    /// b_hh when the cell keeps it in its step.
    step_b_hh: Option<Var<'t, F>>,
    /// The cell's further parameters, in declared order.
    extra: Vec<Var<'t, F>>,
}

/// One layer-direction's parameters bound on a tape, the input bias
/// folded but the weights not reordered: the inputs of a checkpointed
/// segment, in this order. (The folded bias is summed on the outer tape,
/// so its gradient accumulates over the segments as over the plain run's
/// chunks.)
struct DirVars<'t, F: Real> {
    w_ih: Option<Var<'t, F>>,
    w_hh: Option<Var<'t, F>>,
    /// b_ih (+ b_hh when folded).
    bias: Option<Var<'t, F>>,
    /// b_hh when the cell keeps it in its step.
    step_b_hh: Option<Var<'t, F>>,
    extra: Vec<Var<'t, F>>,
}

impl<'t, F: Real> DirVars<'t, F> {
    /// Which of W_ih, W_hh, the bias, the step's b_hh there are.
    fn present(&self) -> [bool; 4] {
        [&self.w_ih, &self.w_hh, &self.bias, &self.step_b_hh].map(Option::is_some)
    }

    /// The vars in order: those of W_ih, W_hh, the bias, the step's b_hh
    /// there are, then the further parameters.
    fn into_list(self) -> Vec<Var<'t, F>> {
        [self.w_ih, self.w_hh, self.bias, self.step_b_hh]
            .into_iter()
            .flatten()
            .chain(self.extra)
            .collect()
    }

    /// The inverse of [`DirVars::into_list`].
    fn from_list(present: [bool; 4], list: &[Var<'t, F>]) -> Self {
        let mut it = list.iter().copied();
        let mut next = |p: bool| if p { it.next() } else { None };
        let (w_ih, w_hh, bias, step_b_hh) = (
            next(present[0]),
            next(present[1]),
            next(present[2]),
            next(present[3]),
        );
        DirVars {
            w_ih,
            w_hh,
            bias,
            step_b_hh,
            extra: it.collect(),
        }
    }
}

/// Projected elements (steps × batch × gates·hidden) of one hoisted input
/// projection by default, 1 MiB in f32, unless that is fewer than
/// `PROJECTION_MIN_ROWS` rows: a chunk this size stays in cache while its
/// steps read it and while their gradients are added into it, and is a
/// small part of what a long sequence keeps (measurements:
/// docs/performance.md, "projection chunks").
pub(crate) const PROJECTION_ELEMS: usize = 1 << 18;

/// The fewest rows (steps × batch) one projection chunk has by default, so
/// each chunk's GEMM stays large (thin chunks made the LSTM L step slower;
/// docs/performance.md, "projection chunks").
pub(crate) const PROJECTION_MIN_ROWS: usize = 512;

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
    /// Variational ("locked") dropout (AWD-LSTM): one mask per sequence,
    /// the same at every step, on the input, between layers and on the top
    /// layer's outputs (applied only when [`RunOptions::dropout_seed`] is
    /// set).
    pub locked_dropout: LockedDropout,
    /// DropConnect on every `weight_hh` (AWD-LSTM's weight drop): one mask
    /// on the weight per forward pass, shared by every step (applied only
    /// when [`RunOptions::dropout_seed`] is set; not by the per-step API
    /// [`Recurrent::step`], whose calls would each draw a new mask).
    pub weight_drop: f64,
    /// Steps per hoisted input projection; `None` (the default) sizes the
    /// chunks to about 2¹⁸ projected elements, at least 512 rows. A memory
    /// knob: fewer steps keep less alive at once, more steps make fewer,
    /// larger GEMMs. Results agree up to rounding whatever the value.
    pub projection_chunk: Option<usize>,
    /// Checkpointed BPTT over time: keep only the state at segment
    /// boundaries and recompute each segment's steps in backward (see
    /// [`Checkpointing`]). Off by default.
    pub checkpoint: Checkpointing,
}

/// Checkpointed BPTT (Chen et al. 2016; Gruslys et al. 2016): each
/// direction's sequence is cut into segments of k steps; each segment is
/// one checkpoint node ([`Tape::checkpoint`]) from the state at its start,
/// its inputs and the parameters to its outputs h(t) and its final state.
/// The tape keeps the boundary states, the segments' inputs and outputs;
/// the activations inside a segment (an LSTM's gates, c, tanh c) live only
/// while the reverse sweep re-runs that segment — about one extra forward
/// pass for O(T/k + k) instead of O(T) steps of them.
///
/// The forward values, the gradients with respect to the inputs and the
/// initial state, and the biases' gradients are bitwise those of the
/// uncheckpointed run whose input projection is chunked as the segments are
/// (`projection_steps(k)`; the same ops on the same values — another
/// chunking rounds the projection's GEMM differently, checkpointed or not).
/// The gradients of the weights whose per-step products the sweep defers
/// and batches (W_hh, W_ih) are the same sums grouped by segment, so they
/// agree up to that regrouping's rounding (`tests/checkpointing.rs` states
/// and checks the tolerance; measured ≤ 2e-15 relative).
///
/// ```
/// use tapegrad::layers::{Checkpointing, RecurrentConfig};
/// let cfg = RecurrentConfig::new(8, 16).checkpoint(Checkpointing::Auto);
/// assert_eq!(cfg.checkpoint.segment_steps(100), Some(10));
/// assert_eq!(Checkpointing::Every(7).segment_steps(5), Some(5));
/// assert_eq!(Checkpointing::Off.segment_steps(100), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpointing {
    /// Full BPTT: every step's activations stay on the tape.
    #[default]
    Off,
    /// Segments of ⌈√T⌉ steps: O(√T) steps' activations at the peak.
    Auto,
    /// Segments of k steps (k ≥ 1; k ≥ T checkpoints the whole sequence).
    Every(usize),
}

impl Checkpointing {
    /// Steps per segment for a sequence of `steps` steps, or `None` when
    /// off.
    ///
    /// # Panics
    /// For `Every(0)`.
    #[track_caller]
    pub fn segment_steps(self, steps: usize) -> Option<usize> {
        match self {
            Checkpointing::Off => None,
            Checkpointing::Auto => {
                Some(((steps as f64).sqrt().ceil() as usize).clamp(1, steps.max(1)))
            }
            Checkpointing::Every(0) => fail(Error::new(
                ErrorKind::InvalidArgument,
                "checkpoint",
                "Checkpointing::Every(0): a segment needs at least one step",
            )),
            Checkpointing::Every(k) => Some(k.min(steps.max(1))),
        }
    }
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
            locked_dropout: LockedDropout::default(),
            weight_drop: 0.0,
            projection_chunk: None,
            checkpoint: Checkpointing::Off,
        }
    }

    /// Locked dropout probabilities on the input, between layers and on
    /// the outputs (see [`RecurrentConfig::locked_dropout`]).
    ///
    /// ```
    /// use tapegrad::layers::RecurrentConfig;
    /// let cfg = RecurrentConfig::new(8, 16).locked_dropout(0.1, 0.25, 0.4).weight_drop(0.5);
    /// assert_eq!((cfg.locked_dropout.hidden, cfg.weight_drop), (0.25, 0.5));
    /// ```
    pub fn locked_dropout(mut self, input: f64, hidden: f64, output: f64) -> Self {
        self.locked_dropout = LockedDropout {
            input,
            hidden,
            output,
        };
        self
    }

    /// DropConnect probability on `weight_hh` (see
    /// [`RecurrentConfig::weight_drop`]).
    pub fn weight_drop(mut self, p: f64) -> Self {
        self.weight_drop = p;
        self
    }

    /// Checkpointed BPTT over time (see [`Checkpointing`]).
    ///
    /// ```
    /// use tapegrad::layers::{Checkpointing, Lstm, RecurrentConfig};
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let cfg = RecurrentConfig::new(3, 4).projection_steps(3);
    /// assert_eq!(cfg.checkpoint(Checkpointing::Every(3)).checkpoint, Checkpointing::Every(3));
    /// let plain = Lstm::new(&mut store, "lstm", cfg, 1);
    /// let mut ckpt = plain.clone(); // same parameters
    /// ckpt.set_checkpoint(Checkpointing::Every(3));
    /// let x = Tensor::randn(&[9, 2, 3], 2);
    /// let run = |layer: &Lstm| {
    ///     let tape = Tape::new();
    ///     let xv = tape.var(x.clone());
    ///     let out = layer.forward(&tape, &store, xv, None);
    ///     let g = out.stacked().sum().backward();
    ///     g.wrt(xv).clone()
    /// };
    /// assert_eq!(run(&plain), run(&ckpt)); // bitwise
    /// ```
    pub fn checkpoint(mut self, how: Checkpointing) -> Self {
        self.checkpoint = how;
        self
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

/// Variational ("locked") dropout probabilities of a recurrent layer
/// (Gal & Ghahramani 2016; Merity et al. 2017): each draws one
/// [B × features] mask per sequence and applies it at every step.
///
/// ```
/// use tapegrad::layers::{LockedDropout, RecurrentConfig};
/// let cfg = RecurrentConfig::new(4, 8).locked_dropout(0.2, 0.3, 0.4);
/// assert_eq!(cfg.locked_dropout, LockedDropout { input: 0.2, hidden: 0.3, output: 0.4 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LockedDropout {
    /// On the input x(t) of the first layer.
    pub input: f64,
    /// On the outputs of every layer but the last (the next layer's input).
    pub hidden: f64,
    /// On the top layer's outputs.
    pub output: f64,
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
    /// The outputs as one [T·B × O] var when a whole-sequence cell
    /// ([`Cell::sequence`]) made them so (unidirectional top layer).
    rows: Option<Var<'t, F>>,
}

impl<'t, F: Real> SeqOutput<'t, F> {
    /// All outputs as one [T·B × D·H] var (rows ordered by time, then
    /// batch), ready for a readout over every step in one GEMM.
    ///
    /// # Panics
    /// If there are no steps.
    pub fn stacked_rows(&self) -> Var<'t, F> {
        assert!(!self.outputs.is_empty(), "stacked_rows: no time steps");
        match self.rows {
            Some(rows) => rows,
            None => Var::concat(&self.outputs, 0),
        }
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
    w_ih: Option<ParamKey>,
    w_hh: Option<ParamKey>,
    b_ih: Option<ParamKey>,
    b_hh: Option<ParamKey>,
    /// The cell's further parameters, in declared order.
    extra: Vec<ParamKey>,
}

/// A recurrent layer running cell `C`: stacked, optionally bidirectional,
/// with per-sequence lengths, dropout between layers and a per-step API.
/// [`Rnn`](super::Rnn), [`Lstm`](super::Lstm) and [`Gru`](super::Gru) are
/// this type with the built-in cells; a [`Cell`] of your own gets every
/// feature the same way (see [`Cell`] for a complete one).
///
/// Parameters live in the store under PyTorch's names, per layer k and
/// direction: `{name}.weight_ih_l{k}[_reverse]`, `weight_hh_…`,
/// `bias_ih_…`, `bias_hh_…`, then each further parameter the cell declares
/// as `{name}.{param}_l{k}[_reverse]`; all initialised as
/// [`Init`](super::Init) says (U(−1/√H, 1/√H) for the weights and biases,
/// as PyTorch does).
#[derive(Debug)]
pub struct Recurrent<C> {
    /// Shared, so a checkpointed segment can own the layer's settings.
    cell: Arc<C>,
    /// What the cell declared for each layer (equal but for the shapes of
    /// further parameters, which may depend on the layer's input width).
    specs: Vec<CellSpec>,
    cfg: RecurrentConfig,
    name: String,
    params: Vec<DirParams>,
}

impl<C> Clone for Recurrent<C> {
    fn clone(&self) -> Self {
        Recurrent {
            cell: Arc::clone(&self.cell),
            specs: self.specs.clone(),
            cfg: self.cfg,
            name: self.name.clone(),
            params: self.params.clone(),
        }
    }
}

/// `name.param` or `param` when the layer has no name.
fn qualified(name: &str, param: &str) -> String {
    if name.is_empty() {
        param.to_string()
    } else {
        format!("{name}.{param}")
    }
}

/// The hoisted input projection of one direction, one chunk of steps at a
/// time: `x·W_ihᵀ + b` for `per` steps in one GEMM, each step reading its
/// rows in place, the chunk released once the direction has left it.
struct ProjectionChunks<'a, 't, F: Real> {
    bound: &'a Bound<'t, F>,
    input: Var<'t, F>,
    steps: usize,
    batch: usize,
    per: usize,
    /// The first step of the chunk in hand, and its projection.
    current: Option<(usize, Var<'t, F>)>,
}

impl<'t, F: Real> ProjectionChunks<'_, 't, F> {
    /// Step `t`'s rows of its chunk (projecting the chunk when `t` leaves
    /// the one in hand), or `None` for a cell without input projection.
    fn rows(&mut self, tape: &'t Tape<F>, t: usize) -> Option<Projected<'t, F>> {
        let w_ih = self.bound.w_ih?;
        let (t0, chunk) = match self.current {
            Some((t0, chunk)) if (t0..t0 + self.per).contains(&t) => (t0, chunk),
            _ => {
                self.finish();
                let t0 = t - t % self.per;
                let len = self.per.min(self.steps - t0);
                let _s = tape.scope("input_projection");
                let x = if len == self.steps {
                    self.input
                } else {
                    self.input.slice(0, t0, len)
                };
                (t0, project(w_ih, self.bound.bias, x))
            }
        };
        self.current = Some((t0, chunk));
        Some(Projected {
            chunk,
            start: (t - t0) * self.batch,
            rows: self.batch,
        })
    }

    /// Releases the chunk in hand (no backward rule reads it).
    fn finish(&mut self) {
        if let Some((_, chunk)) = self.current.take() {
            chunk.release();
        }
    }
}

/// `xw = x·W_ihᵀ + b` for a [rows × I] (or [T × B × I]) input.
fn project<'t, F: Real>(
    w_ih: Weight<'t, F>,
    bias: Option<Var<'t, F>>,
    x: Var<'t, F>,
) -> Var<'t, F> {
    match bias {
        // One addmm with the bias row broadcast: no separate add pass.
        Some(b) => w_ih.times_onto(b, x),
        None => w_ih.times(x),
    }
}

/// One direction's outputs h(t) in time order, its final state, and, from
/// a cell that ran whole sequences, the outputs as one [T·B × O] var.
struct Direction<'t, F: Real> {
    outs: Vec<Var<'t, F>>,
    last: Vec<Var<'t, F>>,
    rows: Option<Var<'t, F>>,
}

impl<'t, F: Real> Direction<'t, F> {
    /// From the per-step outputs once every step has run.
    fn of_steps(outs: Vec<Option<Var<'t, F>>>, last: Vec<Var<'t, F>>) -> Self {
        let outs = outs
            .into_iter()
            .map(|o| o.expect("every step ran"))
            .collect();
        Direction {
            outs,
            last,
            rows: None,
        }
    }
}

/// Per-step validity masks of one state width: `masks[t]` is [B×width].
struct Masks {
    width: usize,
    by_step: Vec<Vec<bool>>,
}

impl<C: Cell + Default> Recurrent<C> {
    /// Creates the parameters in `store` under `name` (PyTorch's names:
    /// `{name}.weight_ih_l{k}[_reverse]`, …), initialised U(−1/√H, 1/√H)
    /// from `seed`.
    ///
    /// # Panics
    /// If `hidden_size` or `num_layers` is 0 (a layer with no state is
    /// refused by name rather than run as an empty product), the cell's
    /// spec is inconsistent, or a parameter name is already taken in
    /// `store`.
    #[track_caller]
    pub fn new<F: Real>(
        store: &mut ParamStore<F>,
        name: &str,
        cfg: RecurrentConfig,
        seed: u64,
    ) -> Self {
        Self::with_cell(C::default(), store, name, cfg, seed)
    }
}

impl<C: Cell> Recurrent<C> {
    /// [`Recurrent::new`] for a cell value (a cell with settings of its
    /// own, such as a projection size).
    ///
    /// # Panics
    /// As [`Recurrent::new`].
    #[track_caller]
    pub fn with_cell<F: Real>(
        cell: C,
        store: &mut ParamStore<F>,
        name: &str,
        cfg: RecurrentConfig,
        seed: u64,
    ) -> Self {
        let (h, op) = (cfg.hidden_size, cell.name().to_string());
        if h == 0 || cfg.num_layers == 0 {
            fail(Error::new(
                ErrorKind::Shape,
                &op,
                format!(
                    "hidden_size = {h} and num_layers = {} must both be at least 1",
                    cfg.num_layers
                ),
            ));
        }
        let ld = cfg.locked_dropout;
        for (what, p) in [
            ("locked_dropout.input", ld.input),
            ("locked_dropout.hidden", ld.hidden),
            ("locked_dropout.output", ld.output),
            ("weight_drop", cfg.weight_drop),
        ] {
            if !(0.0..1.0).contains(&p) {
                fail(Error::new(
                    ErrorKind::InvalidArgument,
                    &op,
                    format!("{what} = {p} is not a probability in [0, 1)"),
                ));
            }
        }
        let first = cell.spec(cfg.input_size, h);
        check_spec(&op, &first, h);
        let (g, gh, out) = (first.input_gates, first.recurrent_gates, first.output_size);
        // Layer l reads the input, or the previous layer's directions side by side.
        let in_size = |l: usize| {
            if l == 0 {
                cfg.input_size
            } else {
                cfg.directions() * out
            }
        };
        let specs: Vec<CellSpec> = (0..cfg.num_layers)
            .map(|l| {
                if l == 0 {
                    return first.clone();
                }
                let spec = cell.spec(in_size(l), h);
                check_spec(&op, &spec, h);
                check_same_but_shapes(&op, &first, &spec);
                spec
            })
            .collect();
        let mut counter = 0u64;
        let mut params = Vec::new();
        for (l, spec) in specs.iter().enumerate() {
            let in_size = in_size(l);
            for d in 0..cfg.directions() {
                let sfx = if d == 1 { "_reverse" } else { "" };
                let mut add = |p: &str, shape: &[usize], init: super::Init| {
                    counter += 1;
                    let t = init.tensor(shape, h, derive_seed(seed, counter));
                    store.insert(qualified(name, &format!("{p}_l{l}{sfx}")), t)
                };
                let uniform = super::Init::Uniform;
                let w_ih = (g > 0).then(|| add("weight_ih", &[g * h, in_size], uniform));
                let w_hh = (gh > 0).then(|| add("weight_hh", &[gh * h, out], uniform));
                let b_ih = (cfg.bias && g > 0).then(|| add("bias_ih", &[g * h], uniform));
                let b_hh = (cfg.bias && gh > 0).then(|| add("bias_hh", &[gh * h], uniform));
                let extra = spec
                    .params
                    .iter()
                    .map(|p| add(&p.name, &p.shape, p.init))
                    .collect();
                params.push(DirParams {
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                    extra,
                });
            }
        }
        Recurrent {
            cell: Arc::new(cell),
            specs,
            cfg,
            name: name.to_string(),
            params,
        }
    }

    /// The layer's configuration.
    pub fn config(&self) -> &RecurrentConfig {
        &self.cfg
    }

    /// Turns checkpointed BPTT on or off for this layer (see
    /// [`Checkpointing`]); parameters and results are unchanged, only what
    /// the tape keeps.
    ///
    /// ```
    /// use tapegrad::layers::{Checkpointing, Lstm, RecurrentConfig};
    /// let mut lstm = Lstm::new(&mut tapegrad::ParamStore::<f32>::new(), "lstm", RecurrentConfig::new(2, 3), 0);
    /// lstm.set_checkpoint(Checkpointing::Every(50));
    /// assert_eq!(lstm.config().checkpoint, Checkpointing::Every(50));
    /// ```
    pub fn set_checkpoint(&mut self, how: Checkpointing) {
        self.cfg.checkpoint = how;
    }

    /// The cell.
    pub fn cell(&self) -> &C {
        &self.cell
    }

    /// What the cell declared for the first layer (the others differ at
    /// most in the shapes of further parameters).
    pub fn spec(&self) -> &CellSpec {
        &self.specs[0]
    }

    /// A zero initial state for a batch of `batch` sequences.
    pub fn zero_state<'t, F: Real>(&self, tape: &'t Tape<F>, batch: usize) -> State<'t, F> {
        let entries = self.cfg.num_layers * self.cfg.directions();
        State::from_entries(
            (0..entries)
                .map(|_| {
                    self.spec()
                        .widths()
                        .map(|w| tape.zeros(&[batch, w]))
                        .collect()
                })
                .collect(),
        )
    }

    /// Runs the sequence `x` [T×B×I] from `init` (zeros if `None`).
    /// T = 0 returns no outputs and the initial state; B = 0 runs on empty
    /// batches (empty outputs, zero gradients).
    ///
    /// # Panics
    /// If `x` is not [T×B×input_size] or the initial state has the wrong
    /// number of entries or shapes (the message names them).
    #[track_caller]
    pub fn forward<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        init: Option<&State<'t, F>>,
    ) -> SeqOutput<'t, F> {
        self.forward_with(tape, store, x, init, RunOptions::default())
    }

    /// [`Self::forward`] with per-sequence lengths and/or training-mode
    /// dropout.
    ///
    /// # Panics
    /// As [`Self::forward`], and if `lengths` does not give one length ≤ T
    /// per sequence, or a cell's step returns the wrong number of state
    /// tensors or a wrong shape (the message names the cell, layer,
    /// direction and step).
    #[track_caller]
    pub fn forward_with<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
        init: Option<&State<'t, F>>,
        opts: RunOptions<'_>,
    ) -> SeqOutput<'t, F> {
        let shape = x.shape();
        if shape.len() != 3 || shape[2] != self.cfg.input_size {
            self.fail(format!(
                "input of shape {:?}, expected [T, B, {}] (steps × batch × input_size)",
                shape.as_slice(),
                self.cfg.input_size
            ));
        }
        let (steps, batch) = (shape[0], shape[1]);
        let state = match init {
            Some(s) => {
                self.check_state(s, batch);
                s.clone()
            }
            None => self.zero_state(tape, batch),
        };
        if let Some(lengths) = opts.lengths {
            if lengths.len() != batch || lengths.iter().any(|&l| l > steps) {
                self.fail(format!("lengths {lengths:?} must give one length ≤ T = {steps} per sequence of the batch (B = {batch})"));
            }
        }
        if steps == 0 {
            return SeqOutput {
                outputs: Vec::new(),
                state,
                rows: None,
            };
        }
        let masks = opts
            .lengths
            .map(|lengths| Arc::new(self.masks(lengths, steps)));
        let dirs = self.cfg.directions();
        let ld = self.cfg.locked_dropout;
        // Seeds of the regularisers: derive_seed(seed, l) for the dropout
        // between layers, then these offsets.
        const LOCKED: u64 = 1 << 20;
        const WEIGHT: u64 = 1 << 21;
        let mut input = match opts.dropout_seed {
            Some(seed) => x.locked_dropout(ld.input, derive_seed(seed, LOCKED)),
            None => x,
        };
        let mut finals = Vec::with_capacity(self.params.len());
        let mut layer_out = Vec::new();
        let mut rows = None;
        for l in 0..self.cfg.num_layers {
            let mut by_dir = Vec::with_capacity(dirs);
            for d in 0..dirs {
                let idx = l * dirs + d;
                let weight_drop = opts
                    .dropout_seed
                    .filter(|_| self.cfg.weight_drop > 0.0)
                    .map(|seed| (self.cfg.weight_drop, derive_seed(seed, WEIGHT + idx as u64)));
                let dir = self.run_direction(
                    tape,
                    store,
                    (l, d),
                    input,
                    state.entry(idx),
                    masks.as_ref(),
                    weight_drop,
                );
                by_dir.push(dir.outs);
                finals.push(dir.last);
                rows = dir.rows.filter(|_| dirs == 1);
            }
            layer_out = self.join_directions(tape, l, by_dir);
            if l + 1 < self.cfg.num_layers {
                input = Var::stack(&layer_out, 0);
                if let (Some(seed), true) = (opts.dropout_seed, self.cfg.dropout > 0.0) {
                    input = input.dropout(self.cfg.dropout, derive_seed(seed, l as u64));
                }
                if let Some(seed) = opts.dropout_seed {
                    let seed = derive_seed(seed, LOCKED + 1 + l as u64);
                    input = input.locked_dropout(ld.hidden, seed);
                }
            }
        }
        if let (Some(seed), true) = (opts.dropout_seed, ld.output > 0.0) {
            let width = layer_out[0].shape()[1];
            let mask =
                crate::ops::dropout_mask(&[batch, width], ld.output, derive_seed(seed, LOCKED - 1));
            let mask = tape.constant(mask);
            for o in &mut layer_out {
                *o = *o * mask;
            }
            rows = None;
        }
        SeqOutput {
            outputs: layer_out,
            state: State::from_entries(finals),
            rows,
        }
    }

    /// One direction of layer `l` over the whole sequence `input`
    /// [T×B×In] from `state` (h first, then the further states): the outputs
    /// h(t) in time order and the final state — plainly, or in checkpointed
    /// segments ([`Checkpointing`]).
    #[allow(clippy::too_many_arguments)]
    fn run_direction<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        (l, d): (usize, usize),
        input: Var<'t, F>,
        state: Vec<Var<'t, F>>,
        masks: Option<&Arc<Vec<Masks>>>,
        weight_drop: Option<(f64, u64)>,
    ) -> Direction<'t, F> {
        let steps = input.shape()[0];
        let _scope = tape.scope(self.scope_name(l, d));
        let p = &self.params[l * self.cfg.directions() + d];
        let vars = self.bind_vars(tape, store, p, weight_drop);
        match self.cfg.checkpoint.segment_steps(steps) {
            None => {
                let reorder = input.shape()[1] >= REORDER_MIN_ROWS;
                let bound = self.bound_of(vars, reorder);
                self.run_steps(tape, &bound, (l, d), input, 0, state, masks.map(|m| &m[..]))
            }
            Some(k) => self.run_segments(tape, vars, (l, d), input, state, masks, k),
        }
    }

    /// [`Self::run_direction`] in checkpointed segments of `k` steps (in the
    /// direction's order): each segment one node from (its state, its
    /// input rows, the parameters) to (its outputs, its final state), whose
    /// steps run again in backward — except the last, whose backward
    /// follows at once: it runs on the tape as in the plain run.
    #[allow(clippy::too_many_arguments)]
    fn run_segments<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        vars: DirVars<'t, F>,
        (l, d): (usize, usize),
        input: Var<'t, F>,
        mut state: Vec<Var<'t, F>>,
        masks: Option<&Arc<Vec<Masks>>>,
        k: usize,
    ) -> Direction<'t, F> {
        let steps = input.shape()[0];
        let reorder = input.shape()[1] >= REORDER_MIN_ROWS;
        let present = vars.present();
        let params = vars.into_list();
        // The weights reordered once for the direction, on this tape: the
        // last segment multiplies by them here, and the checkpointed ones
        // bind views of their values (`Var::transpose_known`) instead of
        // transposing W_ih and W_hh again in each forward and re-run.
        let outer = self.bound_of(DirVars::from_list(present, &params), reorder);
        let known = |w: &Option<Weight<'t, F>>| match w {
            Some(Weight::Transposed(t)) => {
                tape.make_shareable(*t);
                Some(t.value().clone())
            }
            _ => None,
        };
        let known = Arc::new([known(&outer.w_ih), known(&outer.w_hh)]);
        let layer = Arc::new(self.clone());
        let n_state = state.len();
        let mut outs = vec![None; steps];
        let mut starts: Vec<usize> = (0..steps).step_by(k).collect();
        if d == 1 {
            starts.reverse();
        }
        let last = starts.len() - 1;
        for (n, t0) in starts.into_iter().enumerate() {
            let len = k.min(steps - t0);
            let x = if len == steps {
                input
            } else {
                input.slice(0, t0, len)
            };
            if n == last {
                // The last segment's backward comes right after the
                // forward pass: it runs on this tape and keeps its values
                // (k steps' worth, within the √T budget) instead of being
                // recomputed — one segment less of extra forward work.
                let masks = masks.map(|m| &m[..]);
                let dir = self.run_steps(tape, &outer, (l, d), x, t0, state, masks);
                for (o, v) in outs[t0..t0 + len].iter_mut().zip(dir.outs) {
                    *o = Some(v);
                }
                state = dir.last;
                break;
            }
            let mut inputs = state.clone();
            inputs.push(x);
            inputs.extend_from_slice(&params);
            let (layer, masks, known) = (Arc::clone(&layer), masks.cloned(), Arc::clone(&known));
            let res = tape.checkpoint(&inputs, move |t, v| {
                let _scope = t.scope(layer.scope_name(l, d));
                let (st, rest) = v.split_at(n_state);
                let vars = DirVars::from_list(present, &rest[1..]);
                let mut bound = layer.bound_of(vars, false);
                for (w, known) in [&mut bound.w_ih, &mut bound.w_hh].into_iter().zip(&*known) {
                    if let (Some(Weight::Stored(s)), Some(k)) = (&*w, known) {
                        *w = Some(Weight::Transposed(s.transpose_known(k)));
                    }
                }
                let masks = masks.as_deref().map(|m| &m[..]);
                let dir = layer.run_steps(t, &bound, (l, d), rest[0], t0, st.to_vec(), masks);
                let mut outs = dir.outs;
                outs.extend(dir.last);
                outs
            });
            for (o, &v) in outs[t0..t0 + len].iter_mut().zip(&res[..len]) {
                *o = Some(v);
            }
            state = res[len..].to_vec();
        }
        Direction::of_steps(outs, state)
    }

    /// Steps `t0..t0 + len` of one direction of layer `l` (in the
    /// direction's order) on `input` [len×B×In], the rows of those steps,
    /// from `state`: the outputs h(t) in time order and the final state.
    #[allow(clippy::too_many_arguments)]
    fn run_steps<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        bound: &Bound<'t, F>,
        (l, d): (usize, usize),
        input: Var<'t, F>,
        t0: usize,
        mut state: Vec<Var<'t, F>>,
        masks: Option<&[Masks]>,
    ) -> Direction<'t, F> {
        let shape = input.shape();
        let (steps, batch) = (shape[0], shape[1]);
        if let Some(done) = self.run_sequence(tape, bound, (l, d), input, t0, &state, masks) {
            return done;
        }
        let zeros = masks.map(|_| tape.zeros(&[batch, self.spec().output_size]));
        // A cell that reads x(t) itself gets rows of the input seen as
        // [T·B × I] (one reshape per direction, then one slice per step).
        let rows = bound
            .w_ih
            .is_none()
            .then(|| input.reshape(&[steps * batch, shape[2]]));
        let mut chunks = ProjectionChunks {
            bound,
            input,
            steps,
            batch,
            per: self.chunk_steps(batch, steps),
            current: None,
        };
        let mut outs = vec![None; steps];
        let order: Box<dyn Iterator<Item = usize>> = if d == 0 {
            Box::new(0..steps)
        } else {
            Box::new((0..steps).rev())
        };
        for i in order {
            let t = t0 + i;
            let xw = chunks.rows(tape, i);
            let _t = tape.scope_at("t", t);
            let x_t = rows.map(|r| r.slice(0, i * batch, batch));
            let at = StepPosition {
                layer: l,
                reverse: d == 1,
                t,
            };
            let new = self.step_cell(tape, bound, at, batch, xw, x_t, &state);
            if let Some(x_t) = x_t {
                x_t.release();
            }
            match (masks, zeros) {
                // Padded steps keep the state and output zeros.
                (Some(masks), Some(z)) => {
                    for (k, (s, n)) in state.iter_mut().zip(&new).enumerate() {
                        let m = mask_of(masks, self.width(k));
                        *s = Var::select(&m[t], *n, *s);
                    }
                    let m = mask_of(masks, self.spec().output_size);
                    outs[i] = Some(Var::select(&m[t], new[0], z));
                }
                _ => {
                    outs[i] = Some(new[0]);
                    state = new;
                }
            }
        }
        chunks.finish();
        if let Some(r) = rows {
            r.release();
        }
        Direction::of_steps(outs, state)
    }

    /// One direction through [`Cell::sequence`] when the cell runs whole
    /// sequences (`None` when it steps), one chunk of steps at a time (the
    /// projection chunks' size, so a chunk's values stay in cache; later
    /// chunks first in a reverse direction), each chunk's outputs split
    /// into steps, padded steps zeroed, and everything the cell recorded
    /// released that no backward rule reads. `input` holds steps
    /// `s0..s0 + T` of the sequence (`s0` > 0 in a checkpointed segment).
    #[allow(clippy::too_many_arguments)]
    fn run_sequence<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        bound: &Bound<'t, F>,
        (l, d): (usize, usize),
        input: Var<'t, F>,
        s0: usize,
        state: &[Var<'t, F>],
        masks: Option<&[Masks]>,
    ) -> Option<Direction<'t, F>> {
        let shape = input.shape();
        let (steps, batch, width) = (shape[0], shape[1], self.spec().output_size);
        let per = self.chunk_steps(batch, steps);
        let valid: Option<Vec<bool>> = masks.map(|m| mask_of(m, width)[s0..s0 + steps].concat());
        let projection = |x: Var<'t, F>| bound.w_ih.map(|w| project(w, bound.bias, x));
        let starts: Vec<usize> = if d == 0 {
            (0..steps).step_by(per).collect()
        } else {
            (0..steps).step_by(per).rev().collect()
        };
        let mut outs = vec![None; steps];
        let mut chunks = Vec::new();
        let mut state = state.to_vec();
        for t0 in starts {
            let len = per.min(steps - t0);
            let rows = batch * width;
            let seq = Sequence {
                tape,
                cell: self.cell.name(),
                cfg: &self.cfg,
                spec: &self.specs[l],
                at: StepPosition {
                    layer: l,
                    reverse: d == 1,
                    t: s0 + t0,
                },
                steps: len,
                batch,
                x: if len == steps {
                    input
                } else {
                    input.slice(0, t0, len)
                },
                project: &projection,
                xw: std::cell::OnceCell::new(),
                valid: valid.as_deref().map(|v| &v[t0 * rows..(t0 + len) * rows]),
                params: &bound.extra,
            };
            let mark = tape.len();
            let Some((hs, last)) = self.cell.sequence(&seq, &state) else {
                // A stepping cell (asked at the first chunk, before it records anything).
                if len < steps {
                    seq.x.release();
                }
                return None;
            };
            self.check_sequence(&seq, hs, &last);
            let hs = match &seq.valid {
                Some(v) => Var::select(v, hs, tape.zeros(&[len * batch, width])),
                None => hs,
            };
            // Release before splitting: `keep` stays short (release_since
            // compares every node with every kept var).
            let keep: Vec<Var<'t, F>> = std::iter::once(hs).chain(last.iter().copied()).collect();
            tape.release_since(mark, &keep);
            if len < steps {
                seq.x.release();
            }
            for t in 0..len {
                outs[t0 + t] = Some(hs.slice(0, t * batch, batch));
            }
            chunks.push((t0, hs));
            state = last;
        }
        // The chunks' outputs as one var, for `SeqOutput::stacked_rows`
        // without T slices and a concat in the backward pass.
        chunks.sort_by_key(|&(t0, _)| t0);
        let rows = match chunks.as_slice() {
            [(_, only)] => *only,
            many => Var::concat(&many.iter().map(|&(_, v)| v).collect::<Vec<_>>(), 0),
        };
        Some(Direction {
            rows: Some(rows),
            ..Direction::of_steps(outs, state)
        })
    }

    /// Refuses what a [`Cell::sequence`] returned unless it is outputs of
    /// [T·B × O] and one state tensor of [B × width] per declared state.
    fn check_sequence<F: Real>(
        &self,
        seq: &Sequence<'_, '_, F>,
        hs: Var<'_, F>,
        last: &[Var<'_, F>],
    ) {
        let (steps, batch, width) = (seq.steps, seq.batch, self.spec().output_size);
        if hs.shape().as_slice() != [steps * batch, width] {
            seq.misuse(
                "returned outputs",
                &format!(
                    "shape {:?}, expected [{}, {width}] (T·B × O)",
                    hs.shape().as_slice(),
                    steps * batch
                ),
            );
        }
        let expected = 1 + self.spec().states.len();
        if last.len() != expected
            || (0..expected).any(|k| last[k].shape().as_slice() != [batch, self.width(k)])
        {
            let got: Vec<Vec<usize>> = last.iter().map(|v| v.shape().to_vec()).collect();
            seq.misuse(
                "returned state",
                &format!("shapes {got:?}, the cell declared {expected} state tensors of [{batch}, width]"),
            );
        }
    }

    /// Runs `cell.step` for one step, checks what it returns, and releases
    /// every value it recorded that no backward rule reads and that is not
    /// part of the new state.
    #[allow(clippy::too_many_arguments)]
    fn step_cell<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        bound: &Bound<'t, F>,
        at: StepPosition,
        batch: usize,
        xw: Option<Projected<'t, F>>,
        x: Option<Var<'t, F>>,
        state: &[Var<'t, F>],
    ) -> Vec<Var<'t, F>> {
        let step = Step {
            tape,
            cell: self.cell.name(),
            cfg: &self.cfg,
            spec: &self.specs[at.layer],
            at,
            batch,
            xw,
            x,
            w_hh: bound.w_hh,
            b_hh: bound.step_b_hh,
            params: &bound.extra,
        };
        let mark = tape.len();
        let new = self.cell.step(&step, state);
        let expected = 1 + self.spec().states.len();
        if new.len() != expected {
            step.misuse(
                "returned state",
                &format!(
                    "{} state tensors returned, the cell declared {expected} (h and {})",
                    new.len(),
                    self.spec().states.len()
                ),
            );
        }
        for (k, v) in new.iter().enumerate() {
            let (s, w) = (v.shape(), self.width(k));
            if s.as_slice() != [batch, w] {
                step.misuse(
                    "returned state",
                    &format!(
                        "state tensor {k} ({}) has shape {:?}, expected [{batch}, {w}]",
                        self.state_name(k),
                        s.as_slice()
                    ),
                );
            }
        }
        tape.release_since(mark, &new);
        new
    }

    /// The outputs of one layer at every step: one direction's, or forward
    /// and reverse side by side.
    fn join_directions<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        l: usize,
        mut by_dir: Vec<Vec<Var<'t, F>>>,
    ) -> Vec<Var<'t, F>> {
        if by_dir.len() == 1 {
            return by_dir.pop().expect("one direction");
        }
        let _s = tape.scope(format!("{}.l{l}", self.cell.name()));
        by_dir[0]
            .iter()
            .zip(&by_dir[1])
            .map(|(&f, &r)| Var::concat(&[f, r], 1))
            .collect()
    }

    /// One time step through all layers for `x` [B×I] (unidirectional
    /// layers), for decoders that feed back their own output: `x` and the
    /// state in, the new state out (its `last_h()` is the output).
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
        if self.cfg.bidirectional {
            self.fail("step() runs forward in time; a bidirectional layer needs the whole sequence (forward)".into());
        }
        let shape = x.shape();
        if shape.len() != 2 || shape[1] != self.cfg.input_size {
            self.fail(format!(
                "step input of shape {:?}, expected [B, {}]",
                shape.as_slice(),
                self.cfg.input_size
            ));
        }
        let batch = shape[0];
        self.check_state(state, batch);
        let mut input = x;
        let mut out = Vec::with_capacity(self.params.len());
        for (l, p) in self.params.iter().enumerate() {
            let _scope = tape.scope(self.scope_name(l, 0));
            // One step: no reorder (it would copy the weights every step).
            let bound = self.bound_of(self.bind_vars(tape, store, p, None), false);
            let xw = bound.w_ih.map(|w| project(w, bound.bias, input));
            let window = xw.map(|xw| Projected {
                chunk: xw,
                start: 0,
                rows: batch,
            });
            let x_in = xw.is_none().then_some(input);
            let at = StepPosition {
                layer: l,
                reverse: false,
                t: 0,
            };
            let new = self.step_cell(tape, &bound, at, batch, window, x_in, &state.entry(l));
            if let Some(xw) = xw {
                xw.release(); // no backward rule reads it
            }
            input = new[0];
            out.push(new);
        }
        State::from_entries(out)
    }

    /// Binds one layer-direction's parameters on `tape`, with the input
    /// bias b = b_ih + b_hh (summed once as a [G·H] vector when the cell
    /// folds b_hh; b_ih alone otherwise), the b_hh a step adds itself, and
    /// the cell's further parameters. With `weight_drop` = (p, seed), W_hh
    /// is dropped out (DropConnect) on this tape, before any reorder: one
    /// mask for every step of the sequence (and every checkpointed segment).
    fn bind_vars<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        p: &DirParams,
        weight_drop: Option<(f64, u64)>,
    ) -> DirVars<'t, F> {
        let bind = |k: ParamKey| tape.param(store, k);
        let w_ih = p.w_ih.map(bind);
        let w_hh = p.w_hh.map(bind).map(|w| match weight_drop {
            Some((p, seed)) => w.dropout(p, seed),
            None => w,
        });
        let (b_ih, b_hh) = (p.b_ih.map(bind), p.b_hh.map(bind));
        let (folded, step_b_hh) = if self.folds_hidden_bias() {
            (b_hh, None)
        } else {
            (None, b_hh)
        };
        let bias = match (b_ih, folded) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        DirVars {
            w_ih,
            w_hh,
            bias,
            step_b_hh,
            extra: p.extra.iter().map(|&k| bind(k)).collect(),
        }
    }

    /// One layer-direction's parameters as the steps read them: W_ih and
    /// W_hh reordered to Wᵀ once when `reorder`, for a whole sequence
    /// (row-major products run 1.3–1.6× faster than `x·Wᵀ` with W in
    /// PyTorch's layout, and the transposes are one copy each per sequence,
    /// not per step).
    fn bound_of<'t, F: Real>(&self, p: DirVars<'t, F>, reorder: bool) -> Bound<'t, F> {
        let weight = |w: Var<'t, F>| {
            if reorder {
                Weight::Transposed(w.transpose())
            } else {
                Weight::Stored(w)
            }
        };
        Bound {
            w_ih: p.w_ih.map(weight),
            w_hh: p.w_hh.map(weight),
            bias: p.bias,
            step_b_hh: p.step_b_hh,
            extra: p.extra,
        }
    }

    /// Whether b_hh goes into the hoisted projection.
    fn folds_hidden_bias(&self) -> bool {
        self.spec().fold_hidden_bias && self.spec().input_gates > 0
    }

    /// Steps per projection chunk: the configured count, or about
    /// `PROJECTION_ELEMS` projected values per chunk, evened out over the
    /// run (a checkpointed segment of 10 steps projects 5 + 5, not 8 + 2).
    fn chunk_steps(&self, batch: usize, steps: usize) -> usize {
        if let Some(k) = self.cfg.projection_chunk {
            return k.clamp(1, steps.max(1));
        }
        let row = batch * self.spec().input_gates * self.spec().hidden;
        let by_elems = PROJECTION_ELEMS.div_ceil(row.max(1));
        let per = by_elems
            .max(PROJECTION_MIN_ROWS.div_ceil(batch.max(1)))
            .clamp(1, steps.max(1));
        steps.div_ceil(steps.div_ceil(per).max(1)).max(1)
    }

    /// Validity masks for every state width.
    fn masks(&self, lengths: &[usize], steps: usize) -> Vec<Masks> {
        let mut out: Vec<Masks> = Vec::new();
        for width in self.spec().widths() {
            if out.iter().any(|m| m.width == width) {
                continue;
            }
            let by_step = (0..steps)
                .map(|t| {
                    lengths
                        .iter()
                        .flat_map(|&len| std::iter::repeat_n(t < len, width))
                        .collect()
                })
                .collect();
            out.push(Masks { width, by_step });
        }
        out
    }

    /// The width of state tensor `k` (0 = h).
    fn width(&self, k: usize) -> usize {
        if k == 0 {
            self.spec().output_size
        } else {
            self.spec().states[k - 1].width
        }
    }

    /// The name of state tensor `k` (0 = h).
    fn state_name(&self, k: usize) -> &str {
        if k == 0 {
            "h"
        } else {
            &self.spec().states[k - 1].name
        }
    }

    fn scope_name(&self, layer: usize, dir: usize) -> String {
        let base = if self.name.is_empty() {
            self.cell.name()
        } else {
            &self.name
        };
        format!("{base}.l{layer}{}", if dir == 1 { "_reverse" } else { "" })
    }

    #[track_caller]
    fn fail(&self, msg: String) -> ! {
        fail(Error::new(ErrorKind::Shape, self.cell.name(), msg))
    }

    #[track_caller]
    fn check_state<F: Real>(&self, s: &State<'_, F>, batch: usize) {
        let entries = self.cfg.num_layers * self.cfg.directions();
        let given = s.count();
        let wanted = 1 + self.spec().states.len();
        if given != wanted {
            let names: Vec<&str> = (0..wanted).map(|k| self.state_name(k)).collect();
            self.fail(format!(
                "initial state has {given} state tensors per entry, the {} cell needs {wanted} ({})",
                self.cell.name(),
                names.join(", ")
            ));
        }
        for k in 0..wanted {
            let (what, w) = (self.state_name(k), self.width(k));
            let list = s.tensors(k);
            if list.len() != entries {
                self.fail(format!(
                    "initial {what} has {} entries, the layer needs {entries} (layers × directions)",
                    list.len()
                ));
            }
            for (i, v) in list.iter().enumerate() {
                let shape = v.shape();
                if shape.as_slice() != [batch, w] {
                    self.fail(format!(
                        "initial {what}[{i}] has shape {:?}, expected [{batch}, {w}] (batch × width)",
                        shape.as_slice()
                    ));
                }
            }
        }
    }
}

/// The masks of `width` (built for every width the cell's state has).
fn mask_of(masks: &[Masks], width: usize) -> &[Vec<bool>] {
    &masks
        .iter()
        .find(|m| m.width == width)
        .expect("a mask for every state width")
        .by_step
}

/// Refuses a cell whose spec for a stacked layer differs from the first
/// layer's in anything but the shapes of its further parameters.
#[track_caller]
fn check_same_but_shapes(op: &str, first: &CellSpec, other: &CellSpec) {
    let names = |s: &CellSpec| s.params.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let same = first.input_gates == other.input_gates
        && first.recurrent_gates == other.recurrent_gates
        && first.fold_hidden_bias == other.fold_hidden_bias
        && first.output_size == other.output_size
        && first.states == other.states
        && names(first) == names(other);
    if !same {
        fail(Error::new(
            ErrorKind::InvalidArgument,
            op,
            format!(
                "cell spec: a stacked layer's spec differs from the first layer's in more than parameter shapes ({first:?} vs {other:?})"
            ),
        ));
    }
}

/// Refuses a spec the engine cannot run, naming the cell.
#[track_caller]
fn check_spec(op: &str, spec: &CellSpec, hidden: usize) {
    let bad = |msg: String| {
        fail(Error::new(
            ErrorKind::InvalidArgument,
            op,
            format!("cell spec: {msg}"),
        ))
    };
    if spec.hidden != hidden {
        bad(format!(
            "hidden = {} but the layer's hidden_size is {hidden}",
            spec.hidden
        ));
    }
    if spec.output_size == 0 || spec.states.iter().any(|s| s.width == 0) {
        bad("every state tensor needs a width of at least 1".into());
    }
    if spec.fold_hidden_bias
        && spec.input_gates > 0
        && spec.recurrent_gates > 0
        && spec.input_gates != spec.recurrent_gates
    {
        bad(format!(
            "b_hh can be folded into the input projection only when input_gates = recurrent_gates (got {} and {})",
            spec.input_gates, spec.recurrent_gates
        ));
    }
    for (i, p) in spec.params.iter().enumerate() {
        if spec.params[..i].iter().any(|q| q.name == p.name)
            || ["weight_ih", "weight_hh", "bias_ih", "bias_hh"].contains(&&*p.name)
        {
            bad(format!("parameter name '{}' is declared twice", p.name));
        }
    }
}
