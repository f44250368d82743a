//! [`CharModel`]: a character-level language model over any recurrent
//! cell (an LSTM unless another [`Cell`] is chosen).

use super::{sample_index, Batch, CharStreams, Sampling, Vocab};
use crate::checkpoint::{self, Checkpoint};
use crate::error::{Error, ErrorKind, Result};
use crate::layers::RunOptions;
use crate::layers::{derive_seed, Cell, Embedding, Linear, LstmCell, Recurrent, RecurrentConfig};
use crate::layers::{State, StateTensors};
use crate::optim::{finite_grad_norm, Optimizer};
use crate::parallel::{mean_weight, shard_ranges, shard_targets, DataParallel};
use crate::tensor::Tensor;
use crate::{Grads, ParamStore, Real, Reduction, Tape, Var};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// Sizes of a [`CharModel`] (the vocabulary size comes from its
/// [`Vocab`]).
///
/// ```
/// use tapegrad::models::CharModelConfig;
/// let cfg = CharModelConfig::default().hidden_size(128).layers(3);
/// assert_eq!((cfg.embed_size, cfg.hidden_size, cfg.num_layers), (64, 128, 3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CharModelConfig {
    /// Size of a character's embedding vector.
    pub embed_size: usize,
    /// Features of each LSTM layer's h.
    pub hidden_size: usize,
    /// Stacked LSTM layers.
    pub num_layers: usize,
    /// Dropout probability on the embeddings, between the LSTM layers and
    /// on the top layer's outputs, in training steps only.
    pub dropout: f64,
    /// AWD-LSTM's regularisers (Merity et al. 2017), in training steps
    /// only: locked (variational) dropout on the embeddings, between the
    /// layers and on the top layer's outputs, one mask per sequence.
    pub locked_dropout: f64,
    /// DropConnect on every `weight_hh`, one mask per training step.
    pub weight_drop: f64,
    /// Embedding dropout: whole characters' rows of the encoder dropped.
    pub embed_dropout: f64,
}

impl Default for CharModelConfig {
    /// 64-wide embeddings, two LSTM layers of 256, no dropout.
    fn default() -> Self {
        CharModelConfig {
            embed_size: 64,
            hidden_size: 256,
            num_layers: 2,
            dropout: 0.0,
            locked_dropout: 0.0,
            weight_drop: 0.0,
            embed_dropout: 0.0,
        }
    }
}

impl CharModelConfig {
    /// Sets the embedding size.
    pub fn embed_size(mut self, n: usize) -> Self {
        self.embed_size = n;
        self
    }

    /// Sets the hidden size.
    pub fn hidden_size(mut self, n: usize) -> Self {
        self.hidden_size = n;
        self
    }

    /// Sets the number of LSTM layers.
    pub fn layers(mut self, n: usize) -> Self {
        self.num_layers = n;
        self
    }

    /// Sets the dropout probability.
    pub fn dropout(mut self, p: f64) -> Self {
        self.dropout = p;
        self
    }

    /// Sets AWD-LSTM's regularisers: locked dropout, weight drop on
    /// `weight_hh`, embedding dropout.
    ///
    /// ```
    /// use tapegrad::models::CharModelConfig;
    /// let cfg = CharModelConfig::default().awd(0.3, 0.5, 0.1);
    /// assert_eq!((cfg.locked_dropout, cfg.weight_drop, cfg.embed_dropout), (0.3, 0.5, 0.1));
    /// ```
    pub fn awd(mut self, locked_dropout: f64, weight_drop: f64, embed_dropout: f64) -> Self {
        self.locked_dropout = locked_dropout;
        self.weight_drop = weight_drop;
        self.embed_dropout = embed_dropout;
        self
    }
}

/// What one training step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy per predicted character, in nats (÷ ln 2 for
    /// bits per character).
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Metadata keys a [`CharModel`] checkpoint carries.
const META_VOCAB: &str = "char_model.vocab";
const META_EMBED: &str = "char_model.embed_size";
const META_HIDDEN: &str = "char_model.hidden_size";
const META_LAYERS: &str = "char_model.num_layers";
const META_DROPOUT: &str = "char_model.dropout";
/// AWD-LSTM's regularisers; absent (0) in older checkpoints.
const META_AWD: [&str; 3] = [
    "char_model.locked_dropout",
    "char_model.weight_drop",
    "char_model.embed_dropout",
];
/// The cell's name; absent in checkpoints written before the model was
/// generic over its cell, which were all LSTMs.
const META_CELL: &str = "char_model.cell";
const META_PREFIX: &str = "char_model.";

/// A character-level language model: Embedding → stacked recurrent layer of
/// cell `C` (an LSTM by default) → Linear, with the parameter names of
/// PyTorch's word-language-model example (`encoder.weight`,
/// `lstm.weight_ih_l0` … `lstm.bias_hh_l{L−1}`, `decoder.weight`,
/// `decoder.bias`; the recurrent layer is named after its cell: `gru.…`,
/// `mingru.…`). [`CharModel::with_cell`] builds one with any [`Cell`]:
///
/// ```text
/// e(t) = E[x(t)]                          (encoder, [V×E])
/// h¹(t), …, hᴸ(t) = LSTM(e(t), state)     (lstm, L layers of H)
/// p(x(t+1) | x(≤t)) = softmax(W·hᴸ(t) + b) (decoder, [V×H])
/// ```
///
/// The model owns its [`ParamStore`] and [`Vocab`]. Training runs truncated
/// BPTT over [`CharStreams`]: each [`CharModel::train_step`] takes the
/// state the previous chunk ended in ([`StateTensors`], a plain value, so
/// the gradient stops at the chunk boundary). Checkpoints
/// ([`CharModel::save`]) carry the vocabulary and sizes in their metadata,
/// so [`CharModel::load`] needs nothing else.
///
/// ```
/// use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Sampling, Vocab};
/// use tapegrad::optim::Adam;
/// use tapegrad::Tape;
///
/// let text = "abcabcabcabcabcabcabcabc";
/// let vocab = Vocab::from_text(text);
/// let cfg = CharModelConfig::default().embed_size(4).hidden_size(16).layers(1);
/// let mut model = CharModel::<f32>::new(vocab.clone(), cfg, 1);
/// assert!(model.store().key("lstm.weight_hh_l0").is_some());
/// let streams = CharStreams::new(&vocab.encode(text).unwrap(), 2).unwrap();
/// let (mut tape, mut opt) = (Tape::new(), Adam::new(0.05));
/// let mut state = model.zero_state(2);
/// let mut losses = Vec::new();
/// for step in 0..60 {
///     if step % streams.chunks(5) == 0 {
///         state = model.zero_state(2); // a new epoch starts from zeros
///     }
///     let batch = streams.batch(step, 5);
///     let stats = model
///         .train_step(&mut tape, &mut opt, &batch, &mut state, Some(1.0), step as u64)
///         .unwrap();
///     losses.push(stats.loss);
/// }
/// assert!(losses[59] < 0.5 * losses[0]);
/// let greedy = Sampling { temperature: 0.0, top_k: 0, seed: 0 };
/// assert_eq!(model.sample("ab", 4, &greedy).unwrap(), "cabc");
/// ```
#[derive(Debug, Clone)]
pub struct CharModel<F: Real, C: Cell = LstmCell> {
    config: CharModelConfig,
    vocab: Vocab,
    store: ParamStore<F>,
    encoder: Embedding,
    rnn: Recurrent<C>,
    decoder: Linear,
}

impl<F: Real, C: Cell + Default> CharModel<F, C> {
    /// A model for `vocab` with the default cell `C` (an LSTM unless the
    /// type says otherwise), initialised as PyTorch initialises its layers,
    /// from `seed`.
    ///
    /// # Panics
    /// If the vocabulary is empty, a size is 0 or the dropout probability
    /// is outside [0, 1); see [`CharModel::try_new`].
    #[track_caller]
    pub fn new(vocab: Vocab, config: CharModelConfig, seed: u64) -> Self {
        crate::error::or_panic(Self::try_new(vocab, config, seed))
    }

    /// [`CharModel::new`] returning an error for what usually comes from
    /// data or a command line: an empty vocabulary (an empty corpus), a
    /// size of 0, a dropout probability outside [0, 1).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] saying which.
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, Vocab};
    /// use tapegrad::ErrorKind;
    /// let empty = Vocab::from_text(""); // an empty corpus
    /// let err = CharModel::<f32>::try_new(empty, CharModelConfig::default(), 0).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    /// assert!(err.message().contains("empty"));
    /// assert!(CharModel::<f32>::try_new(Vocab::from_text("ab"), CharModelConfig::default().hidden_size(4), 0).is_ok());
    /// ```
    pub fn try_new(vocab: Vocab, config: CharModelConfig, seed: u64) -> Result<Self> {
        Self::try_with_cell(C::default(), vocab, config, seed)
    }

    /// Rebuilds a model with the default cell `C` from checkpoint bytes
    /// (see [`CharModel::from_bytes_with`]).
    ///
    /// # Errors
    /// As [`CharModel::from_bytes_with`].
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, Vocab};
    /// use tapegrad::optim::Adam;
    /// let model = CharModel::<f64>::new(Vocab::from_text("xyz"), CharModelConfig::default().hidden_size(4), 1);
    /// let bytes = model.to_bytes(Some(&Adam::new(0.01)), 3, &Default::default()).unwrap();
    /// let mut opt = Adam::new(0.5);
    /// let (back, info) = CharModel::<f64>::from_bytes(&bytes, Some(&mut opt)).unwrap();
    /// assert_eq!((info.step, opt.lr), (3, 0.01));
    /// assert_eq!(back.vocab().as_string(), "xyz");
    /// ```
    pub fn from_bytes(
        bytes: &[u8],
        optimizer: Option<&mut dyn Optimizer<F>>,
    ) -> Result<(Self, Checkpoint)> {
        Self::from_bytes_with(C::default(), bytes, optimizer)
    }

    /// [`CharModel::from_bytes`] on a file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be read; otherwise as
    /// [`CharModel::from_bytes`].
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, Sampling, Vocab};
    /// let cfg = CharModelConfig::default().embed_size(3).hidden_size(5);
    /// let model = CharModel::<f32>::new(Vocab::from_text("ab\n"), cfg, 7);
    /// let path = std::env::temp_dir().join(format!("tapegrad-charmodel-{}.safetensors", std::process::id()));
    /// model.save(&path, None, 42, &Default::default()).unwrap();
    /// let (back, info) = CharModel::<f32>::load(&path, None).unwrap();
    /// std::fs::remove_file(&path).unwrap();
    /// assert_eq!((info.step, back.config(), back.vocab()), (42, model.config(), model.vocab()));
    /// let s = Sampling { temperature: 1.0, top_k: 0, seed: 3 };
    /// assert_eq!(back.sample("a", 20, &s).unwrap(), model.sample("a", 20, &s).unwrap());
    /// ```
    pub fn load(
        path: impl AsRef<Path>,
        optimizer: Option<&mut dyn Optimizer<F>>,
    ) -> Result<(Self, Checkpoint)> {
        Self::load_with(C::default(), path, optimizer)
    }
}

impl<F: Real, C: Cell> CharModel<F, C> {
    /// A model for `vocab` whose recurrent layer runs `cell`, named after
    /// the cell in the store (`gru.weight_ih_l0`, …).
    ///
    /// # Panics
    /// As [`CharModel::new`].
    ///
    /// ```
    /// use tapegrad::layers::MinGruCell;
    /// use tapegrad::models::{CharModel, CharModelConfig, Vocab};
    /// let cfg = CharModelConfig::default().embed_size(4).hidden_size(8);
    /// let model = CharModel::<f32, _>::with_cell(MinGruCell::parallel(), Vocab::from_text("ab"), cfg, 0);
    /// assert!(model.store().key("mingru.weight_ih_l1").is_some());
    /// assert_eq!(model.cell_name(), "mingru");
    /// ```
    #[track_caller]
    pub fn with_cell(cell: C, vocab: Vocab, config: CharModelConfig, seed: u64) -> Self {
        crate::error::or_panic(Self::try_with_cell(cell, vocab, config, seed))
    }

    /// [`CharModel::try_new`] with a cell.
    ///
    /// # Errors
    /// As [`CharModel::try_new`].
    pub fn try_with_cell(
        cell: C,
        vocab: Vocab,
        config: CharModelConfig,
        seed: u64,
    ) -> Result<Self> {
        let invalid = |m: String| Error::new(ErrorKind::InvalidArgument, "CharModel::new", m);
        if vocab.is_empty() {
            return Err(invalid(
                "the vocabulary is empty (was the corpus empty?): a model needs at least one character"
                    .into(),
            ));
        }
        if config.embed_size == 0 || config.hidden_size == 0 || config.num_layers == 0 {
            return Err(invalid(format!("every size must be > 0, got {config:?}")));
        }
        for (what, p) in [
            ("dropout", config.dropout),
            ("locked dropout", config.locked_dropout),
            ("weight drop", config.weight_drop),
            ("embedding dropout", config.embed_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(invalid(format!(
                    "the {what} probability {p} is not in [0, 1)"
                )));
            }
        }
        let v = vocab.len();
        let mut store = ParamStore::new();
        let encoder = Embedding::new(&mut store, "encoder", v, config.embed_size, seed);
        let name = cell.name().to_string();
        let rnn = Recurrent::with_cell(
            cell,
            &mut store,
            &name,
            RecurrentConfig::new(config.embed_size, config.hidden_size)
                .layers(config.num_layers)
                .dropout(config.dropout)
                .locked_dropout(
                    config.locked_dropout,
                    config.locked_dropout,
                    config.locked_dropout,
                )
                .weight_drop(config.weight_drop),
            derive_seed(seed, 1),
        );
        let decoder = Linear::new(
            &mut store,
            "decoder",
            rnn.spec().output_size,
            v,
            true,
            derive_seed(seed, 2),
        );
        Ok(CharModel {
            config,
            vocab,
            store,
            encoder,
            rnn,
            decoder,
        })
    }

    /// The recurrent cell's name (`lstm`, `gru`, `mingru`, …), which
    /// prefixes its parameters and is recorded in checkpoints.
    pub fn cell_name(&self) -> &str {
        self.rnn.cell().name()
    }

    /// The recurrent layer.
    pub fn recurrent(&self) -> &Recurrent<C> {
        &self.rnn
    }

    /// The sizes.
    pub fn config(&self) -> &CharModelConfig {
        &self.config
    }

    /// The vocabulary.
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The parameters.
    pub fn store(&self) -> &ParamStore<F> {
        &self.store
    }

    /// The parameters, writable (to load or edit them; keep the shapes).
    pub fn store_mut(&mut self) -> &mut ParamStore<F> {
        &mut self.store
    }

    /// A zero recurrent state for `batch` streams.
    pub fn zero_state(&self, batch: usize) -> StateTensors<F> {
        let tape = Tape::new();
        self.rnn.zero_state(&tape, batch).to_tensors()
    }

    /// The logits [T·B × V] for the time-major input ids [T·B] of `batch`
    /// streams started from `state`, and the state after the last step.
    /// With `dropout_seed` (training), dropout is applied with the
    /// configured probability.
    ///
    /// # Panics
    /// If `inputs.len()` is not a positive multiple of `batch`, an id is
    /// out of range, or `state` does not fit (wrong batch or sizes).
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, Vocab};
    /// use tapegrad::Tape;
    /// let model = CharModel::<f32>::new(Vocab::from_text("abc"), CharModelConfig::default().hidden_size(8), 0);
    /// let tape = Tape::new();
    /// // T = 2 steps of B = 3 streams, time-major
    /// let (logits, state) = model.forward(&tape, &[0, 1, 2, 1, 2, 0], 3, &model.zero_state(3), None);
    /// assert_eq!(logits.shape().as_slice(), &[6, 3]);
    /// assert_eq!(state.h.len(), 2); // one per layer
    /// ```
    #[track_caller]
    pub fn forward<'t>(
        &self,
        tape: &'t Tape<F>,
        inputs: &[usize],
        batch: usize,
        state: &StateTensors<F>,
        dropout_seed: Option<u64>,
    ) -> (Var<'t, F>, State<'t, F>) {
        assert!(
            batch > 0 && !inputs.is_empty() && inputs.len().is_multiple_of(batch),
            "tapegrad: CharModel::forward: {} ids do not make whole steps of {batch} streams",
            inputs.len()
        );
        let steps = inputs.len() / batch;
        let p = self.config.dropout;
        let drop = |v: Var<'t, F>, i: u64| match dropout_seed {
            Some(seed) if p > 0.0 => v.dropout(p, derive_seed(seed, i)),
            _ => v,
        };
        let init = state.bind(tape);
        let e = match dropout_seed {
            Some(seed) => self.encoder.forward_dropout(
                tape,
                &self.store,
                inputs,
                self.config.embed_dropout,
                derive_seed(seed, 1_002),
            ),
            None => self.encoder.forward(tape, &self.store, inputs),
        };
        let e = drop(e, 1_000);
        let x = e.reshape(&[steps, batch, self.config.embed_size]);
        let opts = RunOptions {
            lengths: None,
            dropout_seed,
        };
        let out = self
            .rnn
            .forward_with(tape, &self.store, x, Some(&init), opts);
        let h = drop(out.stacked_rows(), 1_001);
        (self.decoder.forward(tape, &self.store, h), out.state)
    }

    /// One truncated-BPTT training step on `batch`, from `state`: mean
    /// cross-entropy over the chunk, one reverse sweep, optional clipping
    /// of the global gradient norm to `clip_norm`, one optimizer update.
    /// `state` becomes the state after the chunk; the tape is reset (its
    /// buffers reused by the next step). `dropout_seed` should differ
    /// between steps.
    ///
    /// # Errors
    /// [`ErrorKind::NonFinite`] if the gradient norm is NaN or ∞; the
    /// parameters, the optimizer and `state` are then unchanged.
    ///
    /// # Panics
    /// As [`CharModel::forward`], or if a target id is out of range.
    #[track_caller]
    pub fn train_step(
        &mut self,
        tape: &mut Tape<F>,
        optimizer: &mut dyn Optimizer<F>,
        batch: &Batch,
        state: &mut StateTensors<F>,
        clip_norm: Option<f64>,
        dropout_seed: u64,
    ) -> Result<StepStats> {
        let (loss, next, mut grads) = {
            let (logits, last) =
                self.forward(tape, &batch.inputs, batch.batch, state, Some(dropout_seed));
            let loss = logits.cross_entropy(&batch.targets, Reduction::Mean);
            logits.release(); // cross-entropy saved its probabilities
            let value = loss.item().to_f64_lossy();
            (value, last.to_tensors(), loss.backward())
        };
        // The tape lets go of the parameters first (it binds the store's
        // buffers, shared), so the update writes them in place.
        tape.reset();
        let updated = self.update(optimizer, &mut grads, clip_norm);
        tape.reset_with(grads);
        let grad_norm = updated?;
        *state = next;
        Ok(StepStats { loss, grad_norm })
    }

    /// [`CharModel::train_step`] data-parallel: the batch's streams (and
    /// their rows of `state`) are cut into one balanced shard per worker of
    /// `dp` ([`shard_ranges`]); each worker runs forward and backward on its
    /// own tape, its mean loss weighted by its share of the streams
    /// ([`mean_weight`]), so the summed gradients are the full batch's
    /// mean-loss gradients; then one clipped optimizer update as in
    /// `train_step`. Without dropout the result equals `train_step`'s up to
    /// rounding (the sums run in another order); with dropout each shard
    /// draws its own masks (seed derived from `dropout_seed` and the shard).
    ///
    /// # Errors
    /// As [`CharModel::train_step`].
    ///
    /// # Panics
    /// As [`CharModel::train_step`], or if `dp` has more workers than the
    /// batch has streams.
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Vocab};
    /// use tapegrad::optim::Sgd;
    /// use tapegrad::parallel::DataParallel;
    /// let vocab = Vocab::from_text("abcd");
    /// let cfg = CharModelConfig::default().embed_size(4).hidden_size(8).layers(1);
    /// let mut model = CharModel::<f64>::new(vocab.clone(), cfg, 0);
    /// let streams = CharStreams::new(&vocab.encode("abcdabcdabcdabcd").unwrap(), 4).unwrap();
    /// let batch = streams.batch(0, 3);
    /// let (mut dp, mut opt) = (DataParallel::new(2), Sgd::new(0.1));
    /// let mut state = model.zero_state(4);
    /// let stats = model.train_step_parallel(&mut dp, &mut opt, &batch, &mut state, Some(1.0), 7)?;
    /// assert!(stats.loss > 0.0 && stats.grad_norm > 0.0);
    /// # Ok::<(), tapegrad::Error>(())
    /// ```
    #[track_caller]
    pub fn train_step_parallel(
        &mut self,
        dp: &mut DataParallel<F>,
        optimizer: &mut dyn Optimizer<F>,
        batch: &Batch,
        state: &mut StateTensors<F>,
        clip_norm: Option<f64>,
        dropout_seed: u64,
    ) -> Result<StepStats> {
        let ranges = shard_ranges(batch.batch, dp.workers());
        assert!(
            ranges.len() == dp.workers(),
            "tapegrad: CharModel::train_step_parallel: {} workers for a batch of {} streams",
            dp.workers(),
            batch.batch
        );
        self.train_shards(
            dp,
            optimizer,
            batch,
            &ranges,
            0,
            state,
            clip_norm,
            dropout_seed,
            |_, _| {},
        )
    }

    /// The step of [`CharModel::train_step_parallel`] on the streams
    /// `ranges` (consecutive, one per worker of `dp`) of `batch`, whose rows
    /// `state` holds: shard `k` runs on worker `k` with dropout seed index
    /// `first_shard + k` and its mean loss weighted by its share of the
    /// **whole** batch; `reduce` then sees the summed gradients and loss
    /// (to add other processes' shards in) before the clipped update.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn train_shards(
        &mut self,
        dp: &mut DataParallel<F>,
        optimizer: &mut dyn Optimizer<F>,
        batch: &Batch,
        ranges: &[Range<usize>],
        first_shard: u64,
        state: &mut StateTensors<F>,
        clip_norm: Option<f64>,
        dropout_seed: u64,
        reduce: impl FnOnce(&mut Grads<F>, &mut f64),
    ) -> Result<StepStats> {
        let rows0 = ranges.first().map_or(0, |r| r.start);
        let shards: Vec<(Vec<usize>, Vec<usize>, StateTensors<F>)> = ranges
            .iter()
            .map(|r| {
                (
                    shard_targets(&batch.inputs, batch.batch, r.clone()),
                    shard_targets(&batch.targets, batch.batch, r.clone()),
                    state_rows(state, &(r.start - rows0..r.end - rows0)),
                )
            })
            .collect();
        let this = &*self;
        let (outs, mut grads) = dp.step(|k, tape| {
            let (inputs, targets, st) = &shards[k];
            let seed = derive_seed(dropout_seed, first_shard + k as u64);
            let (logits, last) = this.forward(tape, inputs, ranges[k].len(), st, Some(seed));
            let loss = logits
                .cross_entropy(targets, Reduction::Mean)
                .mul_scalar(mean_weight(&ranges[k], batch.batch));
            logits.release(); // cross-entropy saved its probabilities
            let value = loss.item().to_f64_lossy();
            ((value, last.to_tensors()), loss.backward())
        });
        let mut loss = outs.iter().map(|(l, _)| l).sum();
        reduce(&mut grads, &mut loss);
        dp.reset(); // as in `train_step`: the update then writes in place
        let updated = self.update(optimizer, &mut grads, clip_norm);
        dp.reset_with(grads);
        let grad_norm = updated?;
        let parts: Vec<StateTensors<F>> = outs.into_iter().map(|(_, s)| s).collect();
        *state = stack_state_rows(&parts);
        Ok(StepStats { loss, grad_norm })
    }

    /// Clips the gradients' global norm to `clip_norm` (if set) and applies
    /// one optimizer update; returns the norm before clipping. On a
    /// non-finite norm nothing is updated.
    fn update(
        &mut self,
        optimizer: &mut dyn Optimizer<F>,
        grads: &mut Grads<F>,
        clip_norm: Option<f64>,
    ) -> Result<f64> {
        let grad_norm = finite_grad_norm(grads, clip_norm).map_err(|n| {
            Error::new(
                ErrorKind::NonFinite,
                "CharModel::train_step",
                format!("the total gradient norm is {n}"),
            )
        })?;
        optimizer.step(&mut self.store, grads);
        Ok(grad_norm)
    }

    /// The mean cross-entropy (nats per character) on `batch` from `state`,
    /// without training; `state` advances to the end of the chunk.
    ///
    /// # Panics
    /// As [`CharModel::forward`].
    #[track_caller]
    pub fn loss(&self, tape: &mut Tape<F>, batch: &Batch, state: &mut StateTensors<F>) -> f64 {
        let (loss, next) = {
            let (logits, last) = self.forward(tape, &batch.inputs, batch.batch, state, None);
            let loss = logits.cross_entropy(&batch.targets, Reduction::Mean);
            (loss.item().to_f64_lossy(), last.to_tensors())
        };
        tape.reset();
        *state = next;
        loss
    }

    /// The mean cross-entropy in nats per predicted character over the
    /// whole of `streams`, read in chunks of `seq_len` with the state
    /// carried through (÷ ln 2 for bits per character).
    ///
    /// # Panics
    /// If `seq_len` is 0.
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Vocab};
    /// let vocab = Vocab::from_text("abcd");
    /// let cfg = CharModelConfig::default().embed_size(4).hidden_size(8).layers(1);
    /// let model = CharModel::<f64>::new(vocab.clone(), cfg, 0);
    /// let streams = CharStreams::new(&vocab.encode("abcdabcdabcd").unwrap(), 2).unwrap();
    /// let nats = model.evaluate(&streams, 4);
    /// assert!((nats - 4f64.ln()).abs() < 0.2); // untrained: close to uniform
    /// ```
    #[track_caller]
    pub fn evaluate(&self, streams: &CharStreams, seq_len: usize) -> f64 {
        let mut tape = Tape::new();
        let mut state = self.zero_state(streams.batch_size());
        let mut total = 0.0;
        let mut count = 0usize;
        for k in 0..streams.chunks(seq_len) {
            let b = streams.batch(k, seq_len);
            let n = b.targets.len();
            total += self.loss(&mut tape, &b, &mut state) * n as f64;
            count += n;
        }
        total / count as f64
    }

    /// Feeds `prompt` to the model, then samples `len` characters one at a
    /// time, each fed back as the next input, and returns them (without the
    /// prompt). [`Sampling`] sets the temperature, the top-k cut and the
    /// seed; temperature 0 is greedy decoding.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if the prompt is empty or holds a
    /// character outside the vocabulary.
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, Sampling, Vocab};
    /// let model = CharModel::<f32>::new(Vocab::from_text("ab "), CharModelConfig::default().hidden_size(8), 0);
    /// let s = Sampling { temperature: 1.0, top_k: 2, seed: 5 };
    /// let text = model.sample("ab", 10, &s).unwrap();
    /// assert_eq!(text.chars().count(), 10);
    /// assert_eq!(text, model.sample("ab", 10, &s).unwrap()); // seeded
    /// assert!(model.sample("abc", 10, &s).is_err());          // 'c' is unknown
    /// ```
    pub fn sample(&self, prompt: &str, len: usize, sampling: &Sampling) -> Result<String> {
        let ids = self.vocab.encode(prompt)?;
        if ids.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "CharModel::sample",
                "the prompt must hold at least one character",
            ));
        }
        let mut rng = crate::tensor::rng(sampling.seed);
        let mut tape = Tape::new();
        let mut state = self.zero_state(1);
        let mut input = ids;
        let mut out = String::with_capacity(len.min(1 << 16));
        let v = self.vocab.len();
        for _ in 0..len {
            let (logits, next) = {
                let (z, s) = self.forward(&tape, &input, 1, &state, None);
                let z = z.value();
                let last = &z.data()[z.numel() - v..];
                let logits: Vec<f64> = last.iter().map(|x| x.to_f64_lossy()).collect();
                (logits, s.to_tensors())
            };
            tape.reset();
            state = next;
            let id = sample_index(&logits, sampling, &mut rng);
            out.push(self.vocab.char(id).expect("sampled id < vocabulary size"));
            input = vec![id];
        }
        Ok(out)
    }

    /// The metadata a checkpoint of this model carries: the vocabulary and
    /// the sizes, under `char_model.*` keys.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        BTreeMap::from([
            (META_VOCAB.to_string(), self.vocab.as_string()),
            (META_EMBED.to_string(), c.embed_size.to_string()),
            (META_HIDDEN.to_string(), c.hidden_size.to_string()),
            (META_LAYERS.to_string(), c.num_layers.to_string()),
            (META_DROPOUT.to_string(), format!("{:?}", c.dropout)),
            (META_AWD[0].to_string(), format!("{:?}", c.locked_dropout)),
            (META_AWD[1].to_string(), format!("{:?}", c.weight_drop)),
            (META_AWD[2].to_string(), format!("{:?}", c.embed_dropout)),
            (META_CELL.to_string(), self.cell_name().to_string()),
        ])
    }

    fn all_metadata(&self, extra: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
        let mut meta = self.metadata();
        for (k, v) in extra {
            if k.starts_with(META_PREFIX) {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "CharModel::save",
                    format!("metadata key `{k}` is reserved for the model (`{META_PREFIX}…`)"),
                ));
            }
            meta.insert(k.clone(), v.clone());
        }
        Ok(meta)
    }

    /// The bytes of a checkpoint: the parameters, `optimizer`'s state, the
    /// training `step`, this model's [`metadata`](CharModel::metadata) and
    /// `extra` metadata (see [`checkpoint`]).
    ///
    /// # Errors
    /// As [`checkpoint::to_bytes`], and [`ErrorKind::InvalidArgument`] for
    /// an `extra` key starting with `char_model.`.
    pub fn to_bytes(
        &self,
        optimizer: Option<&dyn Optimizer<F>>,
        step: u64,
        extra: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>> {
        checkpoint::to_bytes(&self.store, optimizer, step, &self.all_metadata(extra)?)
    }

    /// Writes a checkpoint file (see [`CharModel::to_bytes`] and
    /// [`checkpoint::save`]).
    ///
    /// # Errors
    /// As [`CharModel::to_bytes`], and [`ErrorKind::Io`] if the file cannot
    /// be written.
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        optimizer: Option<&dyn Optimizer<F>>,
        step: u64,
        extra: &BTreeMap<String, String>,
    ) -> Result<()> {
        checkpoint::save(
            path,
            &self.store,
            optimizer,
            step,
            &self.all_metadata(extra)?,
        )
    }

    /// Rebuilds a model of `cell` from checkpoint bytes: the sizes and
    /// vocabulary from the metadata, the parameters (and `optimizer`'s
    /// state) from the tensors, all checked as [`checkpoint::from_bytes`]
    /// checks them. A checkpoint of another cell is refused by name.
    ///
    /// # Errors
    /// [`ErrorKind::Format`] if the metadata lacks a `char_model.*` key or
    /// holds a bad value, [`ErrorKind::InvalidArgument`] if the checkpoint
    /// was written by a model of another cell, or as
    /// [`checkpoint::from_bytes`].
    ///
    /// ```
    /// use tapegrad::layers::GruCell;
    /// use tapegrad::models::{CharModel, CharModelConfig, Vocab};
    /// let cfg = CharModelConfig::default().hidden_size(4);
    /// let gru = CharModel::<f64, _>::with_cell(GruCell, Vocab::from_text("xy"), cfg, 1);
    /// let bytes = gru.to_bytes(None, 0, &Default::default()).unwrap();
    /// assert!(CharModel::<f64, _>::from_bytes_with(GruCell, &bytes, None).is_ok());
    /// let err = CharModel::<f64>::from_bytes(&bytes, None).unwrap_err(); // an LSTM
    /// assert!(err.message().contains("`gru`"), "{err}");
    /// ```
    pub fn from_bytes_with(
        cell: C,
        bytes: &[u8],
        optimizer: Option<&mut dyn Optimizer<F>>,
    ) -> Result<(Self, Checkpoint)> {
        let info = checkpoint::inspect(bytes)?;
        let mut model = Self::from_metadata(cell, &info.metadata, bytes.len())?;
        let info = checkpoint::from_bytes(bytes, &mut model.store, optimizer)?;
        Ok((model, info))
    }

    /// [`CharModel::from_bytes_with`] on a file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the file cannot be read; otherwise as
    /// [`CharModel::from_bytes_with`].
    pub fn load_with(
        cell: C,
        path: impl AsRef<Path>,
        optimizer: Option<&mut dyn Optimizer<F>>,
    ) -> Result<(Self, Checkpoint)> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            Error::new(
                ErrorKind::Io,
                "CharModel::load",
                format!("cannot read `{}`: {e}", path.display()),
            )
        })?;
        Self::from_bytes_with(cell, &bytes, optimizer).map_err(|e| {
            Error::new(
                e.kind(),
                e.op(),
                format!("`{}`: {}", path.display(), e.message()),
            )
        })
    }

    /// A freshly initialised model of the sizes and vocabulary in
    /// checkpoint metadata, refused before anything is allocated if its
    /// parameters could not fit in a file of `file_len` bytes (so corrupt
    /// sizes cannot ask for a huge allocation).
    fn from_metadata(cell: C, meta: &BTreeMap<String, String>, file_len: usize) -> Result<Self> {
        let saved = meta.get(META_CELL).map_or("lstm", String::as_str);
        if saved != cell.name() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "CharModel::load",
                format!(
                    "the checkpoint holds a model of cell `{saved}`, but this model's cell is `{}` (choose the checkpoint's cell, e.g. `--cell {saved}`)",
                    cell.name()
                ),
            ));
        }
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| {
                Error::new(
                    ErrorKind::Format,
                    "CharModel::load",
                    format!("the checkpoint metadata has no `{k}`: not a CharModel checkpoint"),
                )
            })
        };
        let size = |k: &str| -> Result<usize> {
            let s = get(k)?;
            s.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                Error::new(
                    ErrorKind::Format,
                    "CharModel::load",
                    format!("metadata `{k}` is `{s}`, not a size > 0"),
                )
            })
        };
        let probability = |k: &str, s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|p| (0.0..1.0).contains(p))
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Format,
                        "CharModel::load",
                        format!("metadata `{k}` is `{s}`, not a probability in [0, 1)"),
                    )
                })
        };
        let dropout = probability(META_DROPOUT, get(META_DROPOUT)?)?;
        let awd = |i: usize| match meta.get(META_AWD[i]) {
            Some(s) => probability(META_AWD[i], s),
            None => Ok(0.0),
        };
        let vocab = Vocab::from_string(get(META_VOCAB)?)?;
        let config = CharModelConfig {
            embed_size: size(META_EMBED)?,
            hidden_size: size(META_HIDDEN)?,
            num_layers: size(META_LAYERS)?,
            dropout,
            locked_dropout: awd(0)?,
            weight_drop: awd(1)?,
            embed_dropout: awd(2)?,
        };
        let needed = num_params(&cell, vocab.len(), &config);
        if needed.is_none_or(|n| n > file_len / 4) {
            return Err(Error::new(
                ErrorKind::Format,
                "CharModel::load",
                format!(
                    "the metadata describes a model ({} characters, {config:?}) with more parameters than a {file_len}-byte file can hold",
                    vocab.len()
                ),
            ));
        }
        Self::try_with_cell(cell, vocab, config, 0).map_err(|e| {
            Error::new(
                ErrorKind::Format,
                "CharModel::load",
                format!("metadata: {}", e.message()),
            )
        })
    }
}

/// The number of parameters of a model of `cell`, or `None` on overflow:
/// V·E for the encoder, per layer what the cell declares (`weight_ih`
/// [G·H × in], `weight_hh` [G_h·H × O], both biases, further parameters),
/// V·O + V for the decoder.
fn num_params<C: Cell>(cell: &C, v: usize, c: &CharModelConfig) -> Option<usize> {
    let (e, h) = (c.embed_size, c.hidden_size);
    let mut total = v.checked_mul(e)?;
    let mut input = e;
    let mut out = h;
    for _ in 0..c.num_layers {
        let spec = cell.spec(input, h);
        out = spec.output_size;
        let (g, gh) = (
            spec.input_gates.checked_mul(h)?,
            spec.recurrent_gates.checked_mul(h)?,
        );
        let layer = g
            .checked_mul(input)?
            .checked_add(gh.checked_mul(out)?)?
            .checked_add(g)?
            .checked_add(gh)?;
        let extra = spec.params.iter().try_fold(0usize, |acc, p| {
            acc.checked_add(p.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?)
        })?;
        total = total.checked_add(layer)?.checked_add(extra)?;
        input = out;
    }
    total.checked_add(v.checked_mul(out)?)?.checked_add(v)
}

/// Rows `rows` (streams) of every [B×H] tensor of `state`.
fn state_rows<F: Real>(state: &StateTensors<F>, rows: &Range<usize>) -> StateTensors<F> {
    let pick = |ts: &Vec<Tensor<F>>| -> Vec<Tensor<F>> {
        ts.iter()
            .map(|t| {
                let h = t.shape()[1];
                let data = t.data()[rows.start * h..rows.end * h].to_vec();
                Tensor::from_vec(data, &[rows.len(), h]).expect("a row range of a [B×H] state")
            })
            .collect()
    };
    StateTensors {
        h: pick(&state.h),
        c: state.c.as_ref().map(pick),
        extra: state.extra.iter().map(pick).collect(),
    }
}

/// The shards' states stacked back by rows, in shard order (the inverse of
/// [`state_rows`] over consecutive ranges).
fn stack_state_rows<F: Real>(parts: &[StateTensors<F>]) -> StateTensors<F> {
    let stack = |get: &dyn Fn(&StateTensors<F>) -> &Vec<Tensor<F>>| -> Vec<Tensor<F>> {
        (0..get(&parts[0]).len())
            .map(|l| {
                let h = get(&parts[0])[l].shape()[1];
                let data: Vec<F> = parts
                    .iter()
                    .flat_map(|p| get(p)[l].data().to_vec())
                    .collect();
                let rows = data.len() / h.max(1);
                Tensor::from_vec(data, &[rows, h]).expect("shards of one [B×H] state")
            })
            .collect()
    };
    StateTensors {
        h: stack(&|p| &p.h),
        c: parts[0]
            .c
            .as_ref()
            .map(|_| stack(&|p| p.c.as_ref().expect("every shard has a cell state"))),
        extra: (0..parts[0].extra.len())
            .map(|k| stack(&|p| &p.extra[k]))
            .collect(),
    }
}
