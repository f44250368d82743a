//! [`CharModel`]'s training step and evaluation across the ranks of a
//! [`Collective`].

use super::{all_reduce_sum, pack_grads, rank_streams, unpack_grads, Collective};
use super::{check_same_world, WorldDescription};
use crate::error::{fail, Error, ErrorKind, Result};
use crate::layers::{Cell, StateTensors};
use crate::models::{Batch, CharModel, CharStreams, StepStats};
use crate::optim::Optimizer;
use crate::parallel::{shard_ranges, shard_targets, DataParallel};
use crate::{Real, Tape};
use std::ops::Range;

impl<F: Real, K: Cell> CharModel<F, K> {
    /// [`CharModel::train_step_parallel`] across the ranks of `comm`: this
    /// rank trains on its share of the batch's streams
    /// ([`rank_streams`](super::rank_streams)), cut further into one shard
    /// per worker of `dp`; every shard's mean loss is weighted by its share
    /// of the **whole** batch, the ranks' summed gradients are added up in
    /// one all-reduce of a flat buffer, and every rank applies the same
    /// clipping and optimizer update, so the parameters stay identical on
    /// every rank. The reported loss is the whole batch's (reduced too).
    ///
    /// `batch` is the whole batch (every rank reads the same chunk; each
    /// uses its columns); `state` holds only this rank's streams (rows
    /// `rank_streams(B, rank, size)` of the full state, e.g.
    /// `model.zero_state(range.len())`). Shard `k` of rank `r` draws its
    /// dropout masks from seed index `r·W + k` (W workers per rank), so two
    /// ranks of one worker draw what `train_step_parallel` with two workers
    /// draws. A collective: every rank must call it with the same batch.
    ///
    /// # Errors
    /// As [`CharModel::train_step`]; the gradient norm is the reduced one,
    /// so every rank returns the same error.
    ///
    /// # Panics
    /// If the ranks outnumber the streams, `dp` has more workers than this
    /// rank has streams, `state` does not have this rank's row count, or as
    /// [`CharModel::train_step`].
    ///
    /// ```
    /// use tapegrad::distributed::{rank_streams, Solo};
    /// use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Vocab};
    /// use tapegrad::optim::Sgd;
    /// use tapegrad::parallel::DataParallel;
    /// let vocab = Vocab::from_text("abcd");
    /// let cfg = CharModelConfig::default().embed_size(4).hidden_size(8).layers(1);
    /// let mut a = CharModel::<f64>::new(vocab.clone(), cfg, 0);
    /// let mut b = a.clone();
    /// let streams = CharStreams::new(&vocab.encode("abcdabcdbcdaabcd").unwrap(), 4).unwrap();
    /// let batch = streams.batch(0, 3);
    /// // a group of one rank with two workers is train_step_parallel with two workers
    /// let (mut dp_a, mut dp_b) = (DataParallel::new(2), DataParallel::new(2));
    /// let (mut sa, mut sb) = (a.zero_state(4), b.zero_state(4));
    /// let (mut oa, mut ob) = (Sgd::new(0.1), Sgd::new(0.1));
    /// let x = a.train_step_distributed(&Solo, &mut dp_a, &mut oa, &batch, &mut sa, Some(1.0), 7)?;
    /// let y = b.train_step_parallel(&mut dp_b, &mut ob, &batch, &mut sb, Some(1.0), 7)?;
    /// assert_eq!(x, y);
    /// assert_eq!(a.store().get(a.store().key("decoder.weight").unwrap()),
    ///            b.store().get(b.store().key("decoder.weight").unwrap()));
    /// # Ok::<(), tapegrad::Error>(())
    /// ```
    #[allow(clippy::too_many_arguments)]
    #[track_caller]
    pub fn train_step_distributed<C: Collective + ?Sized>(
        &mut self,
        comm: &C,
        dp: &mut DataParallel<F>,
        optimizer: &mut dyn Optimizer<F>,
        batch: &Batch,
        state: &mut StateTensors<F>,
        clip_norm: Option<f64>,
        dropout_seed: u64,
    ) -> Result<StepStats> {
        let (rank, size) = (comm.rank(), comm.size());
        let mine = rank_streams(batch.batch, rank, size);
        let misuse = |msg: String| {
            fail(Error::new(
                ErrorKind::InvalidArgument,
                "CharModel::train_step_distributed",
                msg,
            ))
        };
        if !state.h.iter().all(|h| h.shape()[0] == mine.len()) {
            misuse(format!(
                "the state must hold rank {rank}'s {} streams ({mine:?} of {}), it holds {:?}",
                mine.len(),
                batch.batch,
                state.h.iter().map(|h| h.shape()[0]).collect::<Vec<_>>()
            ));
        }
        let local = shard_ranges(mine.len(), dp.workers());
        if local.len() != dp.workers() {
            misuse(format!(
                "{} workers for rank {rank}'s {} streams",
                dp.workers(),
                mine.len()
            ));
        }
        let global: Vec<Range<usize>> = local
            .iter()
            .map(|r| mine.start + r.start..mine.start + r.end)
            .collect();
        let first_shard = (rank * dp.workers()) as u64;
        self.train_shards(
            dp,
            optimizer,
            batch,
            &global,
            first_shard,
            state,
            clip_norm,
            dropout_seed,
            |grads, loss| {
                if size > 1 {
                    let mut flat = pack_grads(grads);
                    all_reduce_sum(comm, &mut flat);
                    unpack_grads(grads, &flat);
                    let mut l = [*loss];
                    comm.sum_f64(&mut l);
                    *loss = l[0];
                }
            },
        )
    }

    /// [`CharModel::evaluate`] across the ranks of `comm`: each rank reads
    /// its share of the streams ([`rank_streams`](super::rank_streams);
    /// ranks beyond the number of streams read none) and the ranks' nats
    /// and counts are summed, so every rank returns the mean over all of
    /// `streams`. A collective. With one rank it is `evaluate`, bit for
    /// bit.
    ///
    /// # Panics
    /// If `seq_len` is 0.
    ///
    /// ```
    /// use tapegrad::distributed::Solo;
    /// use tapegrad::models::{CharModel, CharModelConfig, CharStreams, Vocab};
    /// let vocab = Vocab::from_text("abcd");
    /// let cfg = CharModelConfig::default().embed_size(4).hidden_size(8).layers(1);
    /// let model = CharModel::<f64>::new(vocab.clone(), cfg, 0);
    /// let streams = CharStreams::new(&vocab.encode("abcdabcdabcd").unwrap(), 2).unwrap();
    /// assert_eq!(model.evaluate_distributed(&Solo, &streams, 4), model.evaluate(&streams, 4));
    /// ```
    #[track_caller]
    pub fn evaluate_distributed<C: Collective + ?Sized>(
        &self,
        comm: &C,
        streams: &CharStreams,
        seq_len: usize,
    ) -> f64 {
        if comm.size() == 1 {
            return self.evaluate(streams, seq_len);
        }
        let b = streams.batch_size();
        let mine = shard_ranges(b, comm.size())
            .get(comm.rank())
            .cloned()
            .unwrap_or(b..b);
        let mut sums = [0.0, 0.0];
        if !mine.is_empty() {
            let mut tape = Tape::new();
            let mut state = self.zero_state(mine.len());
            for k in 0..streams.chunks(seq_len) {
                let full = streams.batch(k, seq_len);
                let part = Batch {
                    inputs: shard_targets(&full.inputs, b, mine.clone()),
                    targets: shard_targets(&full.targets, b, mine.clone()),
                    steps: full.steps,
                    batch: mine.len(),
                };
                let n = part.targets.len() as f64;
                sums[0] += self.loss(&mut tape, &part, &mut state) * n;
                sums[1] += n;
            }
        }
        comm.sum_f64(&mut sums);
        sums[0] / sums[1]
    }

    /// What the ranks of a job training this model must agree on: the
    /// sizes, the vocabulary (its characters, in order) and the
    /// parameters' names, dtype and shapes ([`WorldDescription::params`]),
    /// in that order (the order [`compare_worlds`](super::compare_worlds)
    /// reports differences in).
    ///
    /// ```
    /// use tapegrad::models::{CharModel, CharModelConfig, Vocab};
    /// let m = CharModel::<f32>::new(Vocab::from_text("ab"), CharModelConfig::default().hidden_size(4), 0);
    /// let d = m.world_description();
    /// assert_eq!(d.get("parameter `decoder.weight`"), Some("f32 [2, 4]"));
    /// assert_eq!(d.get("vocabulary"), Some("2 characters \"ab\""));
    /// ```
    pub fn world_description(&self) -> WorldDescription {
        let c = self.config();
        WorldDescription::new()
            .entry(
                "sizes",
                format!(
                    "embed {}, hidden {}, layers {}, dropout {:?}",
                    c.embed_size, c.hidden_size, c.num_layers, c.dropout
                ),
            )
            .entry(
                "vocabulary",
                format!(
                    "{} characters {:?}",
                    self.vocab().len(),
                    self.vocab().as_string()
                ),
            )
            .params(self.store())
    }

    /// Prepares the ranks of `comm` to train this model together: checks
    /// that every rank describes the same job — `extra` entries (corpus,
    /// settings) followed by this model's
    /// [`world_description`](CharModel::world_description) — and then makes every rank's parameters
    /// rank 0's ([`broadcast_params`](super::broadcast_params)). A
    /// collective.
    ///
    /// # Errors
    /// As [`check_same_world`]: the same error on every rank, naming the
    /// ranks and entries that differ; the parameters are then unchanged.
    ///
    /// ```
    /// use tapegrad::distributed::{Solo, WorldDescription};
    /// use tapegrad::models::{CharModel, CharModelConfig, Vocab};
    /// let mut m = CharModel::<f32>::new(Vocab::from_text("ab"), CharModelConfig::default().hidden_size(4), 0);
    /// m.join_world(&Solo, WorldDescription::new().entry("corpus", "2 characters"))?;
    /// # Ok::<(), tapegrad::Error>(())
    /// ```
    pub fn join_world<C: Collective + ?Sized>(
        &mut self,
        comm: &C,
        extra: WorldDescription,
    ) -> Result<()> {
        let mut mine = extra;
        for (k, v) in self.world_description().entries() {
            mine = mine.entry(k.clone(), v.clone());
        }
        check_same_world(comm, &mine)?;
        super::broadcast_params(comm, self.store_mut());
        Ok(())
    }
}
