//! The open cell interface: what a recurrent cell declares ([`CellSpec`])
//! and the one step it writes with ordinary tape ops ([`Cell::step`]),
//! given a [`Step`] that hands it the fast paths without it knowing why.
//!
//! Everything else — parameters under PyTorch's names, stacking,
//! directions, per-sequence lengths, the hoisted input projection, the
//! reordered weights, releasing what no backward rule reads, truncated
//! BPTT, [`State`](super::State) across tapes, data-parallel shards, labels
//! — is the recurrent engine's ([`Recurrent`](super::Recurrent)), the same
//! for every cell. [`RnnCell`](super::RnnCell),
//! [`LstmCell`](super::LstmCell) and [`GruCell`](super::GruCell) are three
//! implementations, one file each; a cell written outside the crate is a
//! fourth, with nothing less.
//!
//! What a step is handed, for a cell with G input gate blocks and G_h
//! recurrent ones (H = hidden size, O = width of h):
//!
//! ```text
//! Step::gates(h₋)     z = x(t)·W_ihᵀ + b_ih + h₋·W_hhᵀ + b_hh   [B × G·H]  (one GEMM onto the hoisted rows)
//! Step::input()       x(t)·W_ihᵀ + b_ih (+ b_hh when folded)     [B × G·H]
//! Step::recurrent(h₋) h₋·W_hhᵀ (+ b_hh when not folded)          [B × G_h·H]
//! Step::x()           x(t) itself, for a cell that projects it on its own (G = 0)
//! Step::param(name)   a further parameter the cell declared
//! ```
//!
//! The products use W_hh reordered once per sequence when the batch is
//! large enough, and the tape defers and batches W_hh's gradient over the
//! steps; both are invisible to the cell.

use super::RecurrentConfig;
use crate::tensor::Tensor;
use crate::{Real, Tape, Var};
use std::borrow::Cow;

/// A recurrent cell: one time step written with tape ops.
///
/// A cell says what it needs in [`Cell::spec`] and computes the new state
/// from the old in [`Cell::step`]; the engine
/// ([`Recurrent`](super::Recurrent)) does the rest for every cell alike.
/// The state is `h` (index 0) followed by the cell's further states in the
/// order [`CellSpec::state`] declared them; `step` returns them in the same
/// order, `h` first. Values a step records and does not return are released
/// as soon as the step ends unless a backward rule reads them, so a cell
/// needs no memory bookkeeping of its own.
///
/// A minimal gated unit (Zhou et al. 2016), `f = σ(x·W_fᵀ + b_f + h₋·U_fᵀ)`,
/// `n = tanh(x·W_nᵀ + b_n + (f⊙h₋)·U_nᵀ)`, `h = (1 − f)⊙h₋ + f⊙n`, with its
/// second recurrent product as a further parameter:
///
/// ```
/// use tapegrad::layers::{Cell, CellSpec, Init, Recurrent, RecurrentConfig, Step};
/// use tapegrad::{ParamStore, Real, Tape, Tensor, Var};
///
/// #[derive(Debug, Clone, Default)]
/// struct Mgu;
///
/// impl Cell for Mgu {
///     fn name(&self) -> &str { "mgu" }
///     fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
///         // x·W_ihᵀ has two blocks [f n]; W_hh holds U_f only.
///         CellSpec::new(hidden, 2)
///             .recurrent_gates(1)
///             .fold_hidden_bias(false)
///             .param("weight_hn", &[hidden, hidden], Init::Uniform)
///     }
///     fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
///         let (h, hs) = (state[0], s.hidden());
///         let x = s.input();                       // [B × 2H]
///         let f = (x.slice(1, 0, hs) + s.recurrent(h)).sigmoid();
///         let n = (x.slice(1, hs, hs) + (f * h).matmul_t(s.param("weight_hn"))).tanh();
///         vec![h + f * (n - h)]
///     }
/// }
///
/// let mut store = ParamStore::<f64>::new();
/// let cfg = RecurrentConfig::new(3, 4).layers(2).bidirectional(true);
/// let layer = Recurrent::new(&mut store, "mgu", cfg, 7);
/// # let _: &Recurrent<Mgu> = &layer;
/// assert!(store.key("mgu.weight_hn_l1_reverse").is_some());
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[5, 2, 3], 1));
/// let out = layer.forward(&tape, &store, x, None);
/// assert_eq!(out.outputs[4].shape().as_slice(), &[2, 8]);
/// let g = out.stacked().sum().backward();
/// assert!(g.param(store.key("mgu.weight_hh_l0").unwrap()).is_some());
/// ```
pub trait Cell: std::fmt::Debug + Send + Sync + 'static {
    /// The cell's name, for labels (`mgu.l0/t=3/…`) and error messages.
    fn name(&self) -> &str;

    /// What the cell needs in a layer whose input has `input` features and
    /// whose hidden size is `hidden`: gate blocks, further states and
    /// parameters. Only the parameters' shapes may depend on `input` (it
    /// differs between the first layer and the ones stacked on it).
    fn spec(&self, input: usize, hidden: usize) -> CellSpec;

    /// One step: the new state (`h` first, then the further states in
    /// declared order) from the old one. `s` gives the projected input, the
    /// recurrent products and the cell's parameters for this layer,
    /// direction and step.
    fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>>;

    /// A whole direction of a layer at once, for a cell whose steps depend
    /// on each other only through a recurrence the tape runs as one node
    /// (minGRU, minLSTM: [`Sequence::scan`]): every output h(1..T) as one
    /// [T·B × O] var (rows by time, then batch), and the final state (`h`
    /// first, as [`Cell::step`] returns it). `None`, the default, has the
    /// engine run [`Cell::step`] T times; the per-step API
    /// ([`Recurrent::step`](super::Recurrent::step)) always steps. The
    /// engine zeroes the outputs of padded steps; [`Sequence::scan`] keeps
    /// the state through them.
    fn sequence<'t, F: Real>(
        &self,
        s: &Sequence<'_, 't, F>,
        state: &[Var<'t, F>],
    ) -> Option<(Var<'t, F>, Vec<Var<'t, F>>)> {
        let _ = (s, state);
        None
    }
}

/// How a parameter is initialised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// U(−1/√H, 1/√H), PyTorch's initialisation of every recurrent weight.
    Uniform,
    /// All zeros.
    Zeros,
    /// All ones (layer-norm gains).
    Ones,
    /// Every element this value.
    Constant(f64),
}

/// A further parameter of a cell, created per layer and direction as
/// `{name}_l{k}[_reverse]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// The base name (`weight_hr`, `weight_ci`, `ln_gain_c`).
    pub name: Cow<'static, str>,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How it is initialised.
    pub init: Init,
}

/// A further state tensor of a cell (beyond h), [B × width].
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpec {
    /// Its name, for messages (`c`).
    pub name: Cow<'static, str>,
    /// Its width.
    pub width: usize,
}

/// What a cell declares for a layer's input width I and hidden size H.
///
/// ```
/// use tapegrad::layers::CellSpec;
/// // An LSTM: four gate blocks in W_ih and W_hh, b_hh folded into the
/// // hoisted projection, a cell state c of width H.
/// let spec = CellSpec::new(8, 4).state("c", 8);
/// assert_eq!((spec.input_gates, spec.recurrent_gates, spec.output_size), (4, 4, 8));
/// assert!(spec.fold_hidden_bias);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CellSpec {
    /// H: the rows of every gate block.
    pub hidden: usize,
    /// G: `weight_ih` is [G·H × I] and `bias_ih` [G·H]; the engine projects
    /// `x·W_ihᵀ + b_ih` for a chunk of steps in one GEMM. 0: no `weight_ih`,
    /// the step reads x(t) itself ([`Step::x`]).
    pub input_gates: usize,
    /// G_h: `weight_hh` is [G_h·H × O] and `bias_hh` [G_h·H]; 0: no
    /// recurrent weight. Defaults to G.
    pub recurrent_gates: usize,
    /// Add `b_hh` into the hoisted projection (one bias add per chunk, not
    /// per step). Needs G = G_h; false keeps `b_hh` inside
    /// [`Step::recurrent`] (the GRU, whose b_hn sits inside r⊙(·)).
    pub fold_hidden_bias: bool,
    /// O: the width of h, which the next layer reads (H unless the cell
    /// projects its output).
    pub output_size: usize,
    /// Further states after h.
    pub states: Vec<StateSpec>,
    /// Further parameters after `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`.
    pub params: Vec<ParamSpec>,
}

impl CellSpec {
    /// `gates` blocks of H rows in both W_ih and W_hh, b_hh folded, h of
    /// width H, no further state or parameter.
    pub fn new(hidden: usize, gates: usize) -> Self {
        CellSpec {
            hidden,
            input_gates: gates,
            recurrent_gates: gates,
            fold_hidden_bias: true,
            output_size: hidden,
            states: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Sets G_h, the gate blocks of W_hh (0: no recurrent weight).
    pub fn recurrent_gates(mut self, gates: usize) -> Self {
        self.recurrent_gates = gates;
        self
    }

    /// Whether b_hh is added into the hoisted projection.
    pub fn fold_hidden_bias(mut self, yes: bool) -> Self {
        self.fold_hidden_bias = yes;
        self
    }

    /// Sets O, the width of h.
    pub fn output_size(mut self, width: usize) -> Self {
        self.output_size = width;
        self
    }

    /// Declares a further state of `width` columns.
    pub fn state(mut self, name: impl Into<Cow<'static, str>>, width: usize) -> Self {
        self.states.push(StateSpec {
            name: name.into(),
            width,
        });
        self
    }

    /// Declares a further parameter.
    pub fn param(
        mut self,
        name: impl Into<Cow<'static, str>>,
        shape: &[usize],
        init: Init,
    ) -> Self {
        self.params.push(ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init,
        });
        self
    }

    /// Widths of the whole state: O, then each further state's.
    pub(crate) fn widths(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.output_size).chain(self.states.iter().map(|s| s.width))
    }
}

impl Init {
    /// A tensor of `shape` initialised this way (uniform over ±1/√`hidden`,
    /// seeded by `seed`).
    pub(crate) fn tensor<F: Real>(self, shape: &[usize], hidden: usize, seed: u64) -> Tensor<F> {
        match self {
            Init::Uniform => crate::init::uniform_fan(shape, hidden, seed),
            Init::Zeros => Tensor::zeros(shape),
            Init::Ones => Tensor::ones(shape),
            Init::Constant(v) => Tensor::full(shape, F::of(v)),
        }
    }
}

/// A weight W [out × in] as a product reads it: `x·Wᵀ`.
#[derive(Clone, Copy)]
pub(crate) enum Weight<'t, F: Real> {
    /// W in PyTorch's layout: `x·Wᵀ` by `matmul_t` (the per-step API,
    /// where reordering would copy the weight every step).
    Stored(Var<'t, F>),
    /// Wᵀ [in × out], reordered once per sequence by `transpose`: `x·Wᵀ` as
    /// a row-major product by `matmul`.
    Transposed(Var<'t, F>),
}

impl<'t, F: Real> Weight<'t, F> {
    /// `x·Wᵀ`.
    pub(crate) fn times(self, x: Var<'t, F>) -> Var<'t, F> {
        match self {
            Weight::Stored(w) => x.matmul_t(w),
            Weight::Transposed(wt) => x.matmul(wt),
        }
    }

    /// `c + x·Wᵀ` in one GEMM (c [m×n], or a bias row [n]).
    pub(crate) fn times_onto(self, c: Var<'t, F>, x: Var<'t, F>) -> Var<'t, F> {
        match self {
            Weight::Stored(w) => c.addmm_t(x, w),
            Weight::Transposed(wt) => c.addmm(x, wt),
        }
    }

    /// `xw + x·Wᵀ` in one GEMM, reading the window `xw` in place.
    fn times_onto_rows(self, xw: Projected<'t, F>, x: Var<'t, F>) -> Var<'t, F> {
        match self {
            Weight::Stored(w) => xw.chunk.addmm_rows_t(xw.start, x, w),
            Weight::Transposed(wt) => xw.chunk.addmm_rows(xw.start, x, wt),
        }
    }
}

/// A step's projected input: rows `start..start + rows` of `chunk`, the
/// input projection of a chunk of steps ([T_c·B × G·H]). The engine keeps
/// and releases the chunk.
#[derive(Clone, Copy)]
pub(crate) struct Projected<'t, F: Real> {
    pub(crate) chunk: Var<'t, F>,
    pub(crate) start: usize,
    pub(crate) rows: usize,
}

/// Where a step sits: layer, direction, time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepPosition {
    /// The layer (0 = reads the input).
    pub layer: usize,
    /// Whether this is the reverse direction of a bidirectional layer.
    pub reverse: bool,
    /// The time index t of x(t).
    pub t: usize,
}

/// What one step of a cell is handed: its projected input, the recurrent
/// products, its parameters, and where it is. Built by the engine; a cell
/// only reads it.
pub struct Step<'s, 't, F: Real> {
    pub(crate) tape: &'t Tape<F>,
    pub(crate) cell: &'s str,
    pub(crate) cfg: &'s RecurrentConfig,
    pub(crate) spec: &'s CellSpec,
    pub(crate) at: StepPosition,
    pub(crate) batch: usize,
    pub(crate) xw: Option<Projected<'t, F>>,
    pub(crate) x: Option<Var<'t, F>>,
    pub(crate) w_hh: Option<Weight<'t, F>>,
    pub(crate) b_hh: Option<Var<'t, F>>,
    pub(crate) params: &'s [Var<'t, F>],
}

impl<'s, 't, F: Real> Step<'s, 't, F> {
    /// The tape the step records on (for label scopes and constants).
    pub fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    /// H, the hidden size (rows of each gate block).
    pub fn hidden(&self) -> usize {
        self.spec.hidden
    }

    /// B, the rows of every state tensor.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The layer, direction and time of this step.
    pub fn position(&self) -> StepPosition {
        self.at
    }

    /// The layer's configuration (e.g. [`RecurrentConfig::nonlinearity`]).
    pub fn config(&self) -> &RecurrentConfig {
        self.cfg
    }

    /// `z = x(t)·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh`, [B × G·H], as one GEMM
    /// onto this step's rows of the hoisted projection (read in place).
    ///
    /// # Panics
    /// If the cell has no input projection or no recurrent weight, G ≠ G_h,
    /// or b_hh is not folded (then use [`Step::input`] + [`Step::recurrent`]).
    #[track_caller]
    pub fn gates(&self, h: Var<'t, F>) -> Var<'t, F> {
        let (Some(xw), Some(w)) = (self.xw, self.w_hh) else {
            self.misuse("gates", "needs both an input projection (input_gates > 0) and a recurrent weight (recurrent_gates > 0)");
        };
        if self.b_hh.is_some() || self.spec.input_gates != self.spec.recurrent_gates {
            self.misuse(
                "gates",
                "needs input_gates = recurrent_gates and fold_hidden_bias; use input() + recurrent(h)",
            );
        }
        w.times_onto_rows(xw, h)
    }

    /// `x(t)·W_ihᵀ + b_ih` (+ b_hh when folded), [B × G·H]: this step's rows
    /// of the hoisted projection (a copy unless the chunk is this one step).
    ///
    /// # Panics
    /// If the cell declared no input projection (input_gates = 0).
    #[track_caller]
    pub fn input(&self) -> Var<'t, F> {
        let Some(xw) = self.xw else {
            self.misuse(
                "input",
                "the cell declared input_gates = 0; read x(t) with x()",
            );
        };
        if xw.start == 0 && xw.rows == xw.chunk.shape()[0] {
            xw.chunk
        } else {
            xw.chunk.slice(0, xw.start, xw.rows)
        }
    }

    /// `h·W_hhᵀ` (+ b_hh unless folded), [B × G_h·H], with the reordered
    /// weight and its deferred gradient.
    ///
    /// # Panics
    /// If the cell declared no recurrent weight (recurrent_gates = 0).
    #[track_caller]
    pub fn recurrent(&self, h: Var<'t, F>) -> Var<'t, F> {
        let Some(w) = self.w_hh else {
            self.misuse("recurrent", "the cell declared recurrent_gates = 0");
        };
        match self.b_hh {
            Some(b) => w.times_onto(b, h),
            None => w.times(h),
        }
    }

    /// x(t) itself, [B × I], for a cell that declared no input projection.
    ///
    /// # Panics
    /// If the cell has an input projection (read it with [`Step::input`]).
    #[track_caller]
    pub fn x(&self) -> Var<'t, F> {
        match self.x {
            Some(x) => x,
            None => self.misuse(
                "x",
                "the cell projects its input (input_gates > 0); read it with input() or gates(h)",
            ),
        }
    }

    /// The further parameter `name` the cell declared, for this layer and
    /// direction.
    ///
    /// # Panics
    /// If the cell declared no parameter of that name.
    #[track_caller]
    pub fn param(&self, name: &str) -> Var<'t, F> {
        match self.spec.params.iter().position(|p| p.name == name) {
            Some(i) => self.params[i],
            None => {
                let declared: Vec<&str> = self.spec.params.iter().map(|p| &*p.name).collect();
                self.misuse(
                    "param",
                    &format!("no parameter '{name}' was declared (declared: {declared:?})"),
                )
            }
        }
    }

    /// Panics naming the cell, the layer, the direction and the step.
    #[track_caller]
    pub(crate) fn misuse(&self, what: &str, msg: &str) -> ! {
        crate::error::fail(crate::Error::new(
            crate::ErrorKind::InvalidArgument,
            format!("{}::step", self.cell),
            format!("{what}: {msg} ({})", self.at),
        ))
    }
}

/// What [`Cell::sequence`] is handed: one direction of one layer over the
/// whole sequence — the input projection of every step, the cell's
/// parameters, which steps are padding — and the one-node recurrence
/// ([`Sequence::scan`]) that runs in the right direction and carries the
/// state through padded steps. Built by the engine; a cell only reads it.
///
/// A leaky integrator, `h = λ⊙h₋ + (1 − λ)⊙(x·Wᵀ + b)` with a fixed
/// λ = 0.9, stepping and whole-sequence alike:
///
/// ```
/// use tapegrad::layers::{Cell, CellSpec, Recurrent, RecurrentConfig, Sequence, Step};
/// use tapegrad::{ParamStore, Real, Tape, Tensor, Var};
///
/// #[derive(Debug, Clone, Copy, Default)]
/// struct Leaky;
///
/// impl Cell for Leaky {
///     fn name(&self) -> &str { "leaky" }
///     fn spec(&self, _input: usize, hidden: usize) -> CellSpec {
///         CellSpec::new(hidden, 1).recurrent_gates(0)
///     }
///     fn step<'t, F: Real>(&self, s: &Step<'_, 't, F>, state: &[Var<'t, F>]) -> Vec<Var<'t, F>> {
///         vec![state[0].mul_scalar(F::of(0.9)) + s.input().mul_scalar(F::of(0.1))]
///     }
///     fn sequence<'t, F: Real>(
///         &self,
///         s: &Sequence<'_, 't, F>,
///         state: &[Var<'t, F>],
///     ) -> Option<(Var<'t, F>, Vec<Var<'t, F>>)> {
///         let b = s.input().mul_scalar(F::of(0.1)); // [T·B × H]
///         let a = s.tape().constant(Tensor::full(&b.shape(), F::of(0.9)));
///         let hs = s.scan(a, b, state[0]);
///         Some((hs, vec![s.last(hs)]))
///     }
/// }
///
/// let mut store = ParamStore::<f64>::new();
/// let layer = Recurrent::with_cell(Leaky, &mut store, "leaky", RecurrentConfig::new(2, 3), 1);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::randn(&[4, 2, 2], 0));
/// let out = layer.forward(&tape, &store, x, None);
/// // h(2) = 0.9·h(1) + 0.1·xw(2), from the one scan node
/// let xw = (x.reshape(&[8, 2]).matmul_t(tape.param(&store, store.key("leaky.weight_ih_l0").unwrap()))
///     + tape.param(&store, store.key("leaky.bias_ih_l0").unwrap())).mul_scalar(0.1);
/// let want = out.outputs[0].mul_scalar(0.9) + xw.slice(0, 2, 2);
/// let (got, want) = (out.outputs[1].value().data().to_vec(), want.value().data().to_vec());
/// assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
/// ```
pub struct Sequence<'s, 't, F: Real> {
    pub(crate) tape: &'t Tape<F>,
    pub(crate) cell: &'s str,
    pub(crate) cfg: &'s RecurrentConfig,
    pub(crate) spec: &'s CellSpec,
    /// Layer and direction (`t` is 0).
    pub(crate) at: StepPosition,
    pub(crate) steps: usize,
    pub(crate) batch: usize,
    /// The input [T × B × I].
    pub(crate) x: Var<'t, F>,
    /// `x·W_ihᵀ + b` for every step, recorded on first use.
    pub(crate) project: &'s dyn Fn(Var<'t, F>) -> Option<Var<'t, F>>,
    pub(crate) xw: std::cell::OnceCell<Option<Var<'t, F>>>,
    /// Per element of [T·B × O]: whether the step is within its
    /// sequence's length (`None`: every step is).
    pub(crate) valid: Option<&'s [bool]>,
    pub(crate) params: &'s [Var<'t, F>],
}

impl<'s, 't, F: Real> Sequence<'s, 't, F> {
    /// The tape.
    pub fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    /// H, the hidden size.
    pub fn hidden(&self) -> usize {
        self.spec.hidden
    }

    /// B, the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// T, the steps.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// The layer and direction (`t` = 0).
    pub fn position(&self) -> StepPosition {
        self.at
    }

    /// The layer's configuration.
    pub fn config(&self) -> &RecurrentConfig {
        self.cfg
    }

    /// `x·W_ihᵀ + b_ih` (+ b_hh when folded) for every step, [T·B × G·H]
    /// (rows ordered by time, then batch), in one GEMM (recorded on the
    /// first call).
    ///
    /// # Panics
    /// If the cell declared no input projection (read x with
    /// [`Sequence::x`]).
    #[track_caller]
    pub fn input(&self) -> Var<'t, F> {
        let xw = *self.xw.get_or_init(|| {
            let _s = self.tape.scope("input_projection");
            (self.project)(self.x)
        });
        xw.unwrap_or_else(|| {
            self.misuse(
                "input",
                "the cell declared input_gates = 0; read x with x()",
            )
        })
    }

    /// The input itself, [T × B × I] (for a cell without input
    /// projection).
    pub fn x(&self) -> Var<'t, F> {
        self.x
    }

    /// The further parameter `name` the cell declared.
    ///
    /// # Panics
    /// If the cell declared no parameter of that name.
    #[track_caller]
    pub fn param(&self, name: &str) -> Var<'t, F> {
        match self.spec.params.iter().position(|p| p.name == name) {
            Some(i) => self.params[i],
            None => self.misuse("param", &format!("no parameter '{name}' was declared")),
        }
    }

    /// `h(t) = a(t) ⊙ h(t−1) + b(t)` over every step of this direction
    /// (backwards in time for a reverse direction) from `h0` [B × O], as
    /// one node ([`Var::linear_scan`]): a and b are [T·B × O] (rows by time,
    /// then batch, as [`Sequence::input`]), so is the result. On padded steps a = 1 and b = 0, so h keeps its value there
    /// and the final state is the state after each sequence's last valid
    /// step, as stepping gives.
    pub fn scan(&self, a: Var<'t, F>, b: Var<'t, F>, h0: Var<'t, F>) -> Var<'t, F> {
        let (a, b) = match self.valid {
            Some(valid) => {
                let shape = a.shape();
                let one = self.tape.constant(Tensor::ones(&shape));
                let zero = self.tape.constant(Tensor::zeros(&shape));
                (Var::select(valid, a, one), Var::select(valid, b, zero))
            }
            None => (a, b),
        };
        Var::linear_scan_rows(a, b, h0, self.steps, self.at.reverse)
    }

    /// The state after the last step taken, [B × O], from the outputs
    /// [T·B × O] of [`Sequence::scan`]: h(T), or h(1) in reverse.
    pub fn last(&self, hs: Var<'t, F>) -> Var<'t, F> {
        let t = if self.at.reverse { 0 } else { self.steps - 1 };
        hs.slice(0, t * self.batch, self.batch)
    }

    /// Panics naming the cell, the layer and the direction.
    #[track_caller]
    pub(crate) fn misuse(&self, what: &str, msg: &str) -> ! {
        crate::error::fail(crate::Error::new(
            crate::ErrorKind::InvalidArgument,
            format!("{}::sequence", self.cell),
            format!(
                "{what}: {msg} (layer {}, {} direction)",
                self.at.layer,
                if self.at.reverse {
                    "reverse"
                } else {
                    "forward"
                }
            ),
        ))
    }
}

impl std::fmt::Display for StepPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "layer {}, {} direction, step t = {}",
            self.layer,
            if self.reverse { "reverse" } else { "forward" },
            self.t
        )
    }
}
