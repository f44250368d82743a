//! [`Seq2Seq`]: an LSTM encoder–decoder (N vs M) with greedy decoding.

use crate::layers::{derive_seed, Embedding, Linear, Lstm, RecurrentConfig, State};
use crate::{ParamStore, Real, Tape, Var};

/// The encoder–decoder of the "N vs M" structure (docs/bptt.md): an LSTM
/// reads the source, its final state (h, c) is the context c handed to a
/// second LSTM as its initial state, and the decoder emits the target one
/// token at a time, each step reading the previous token.
///
/// ```text
/// c = LSTM_enc(E_src[x(1)], …, E_src[x(N)]).state
/// s(0) = c,  s(t) = LSTM_dec(E_tgt[y(t−1)], s(t−1)),  y(0) = BOS
/// p(y(t) | y(<t), x) = softmax(W·h(t) + b)
/// ```
///
/// Target ids are 0..K; the decoder's embedding has one more row, the
/// begin-of-sequence token BOS = K. Parameters (under `name.` when `name` is
/// not empty): `encoder.embedding.weight`, `encoder.lstm.*`,
/// `decoder.embedding.weight`, `decoder.lstm.*`, `decoder.out.weight`,
/// `decoder.out.bias`. Sequences are time-major: `src[t·B + b]` is step t of
/// sequence b.
///
/// ```
/// use tapegrad::models::Seq2Seq;
/// use tapegrad::{ParamStore, Tape};
/// let mut store = ParamStore::<f32>::new();
/// let model = Seq2Seq::new(&mut store, "", 5, 4, 8, 16, 1, 0);
/// assert_eq!(model.bos(), 4);
/// let tape = Tape::new();
/// // two source sequences of length 3: [0, 1, 2] and [4, 3, 2]
/// let out = model.greedy(&tape, &store, &[0, 4, 1, 3, 2, 2], 2, 6, None);
/// assert_eq!(out.len(), 2);
/// assert!(out.iter().all(|s| s.len() == 6 && s.iter().all(|&y| y < 4)));
/// ```
#[derive(Debug, Clone)]
pub struct Seq2Seq {
    src_embedding: Embedding,
    encoder: Lstm,
    tgt_embedding: Embedding,
    decoder: Lstm,
    out: Linear,
    targets: usize,
}

fn qualified(name: &str, part: &str) -> String {
    if name.is_empty() {
        part.to_string()
    } else {
        format!("{name}.{part}")
    }
}

impl Seq2Seq {
    /// Creates the parameters in `store`: source vocabulary of
    /// `src_vocab` ids, `targets` target ids (plus BOS), embeddings of
    /// `embed`, `layers` LSTM layers of `hidden` on each side.
    #[allow(clippy::too_many_arguments)]
    pub fn new<F: Real>(
        store: &mut ParamStore<F>,
        name: &str,
        src_vocab: usize,
        targets: usize,
        embed: usize,
        hidden: usize,
        layers: usize,
        seed: u64,
    ) -> Self {
        let cfg = RecurrentConfig::new(embed, hidden).layers(layers);
        let s = |i| derive_seed(seed, i);
        Seq2Seq {
            src_embedding: Embedding::new(
                store,
                &qualified(name, "encoder.embedding"),
                src_vocab,
                embed,
                s(0),
            ),
            encoder: Lstm::new(store, &qualified(name, "encoder.lstm"), cfg, s(1)),
            tgt_embedding: Embedding::new(
                store,
                &qualified(name, "decoder.embedding"),
                targets + 1,
                embed,
                s(2),
            ),
            decoder: Lstm::new(store, &qualified(name, "decoder.lstm"), cfg, s(3)),
            out: Linear::new(
                store,
                &qualified(name, "decoder.out"),
                hidden,
                targets,
                true,
                s(4),
            ),
            targets,
        }
    }

    /// The begin-of-sequence id fed to the decoder first (= the number of
    /// target ids K).
    pub fn bos(&self) -> usize {
        self.targets
    }

    /// The context: the encoder's final state for the time-major source
    /// ids of `batch` sequences.
    ///
    /// # Panics
    /// If `src.len()` is not a positive multiple of `batch`, or an id is out
    /// of range.
    #[track_caller]
    pub fn encode<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        src: &[usize],
        batch: usize,
    ) -> State<'t, F> {
        let steps = whole_steps(src.len(), batch, "encode");
        let e = self.src_embedding.forward(tape, store, src).reshape(&[
            steps,
            batch,
            self.src_embedding.dim,
        ]);
        self.encoder.forward(tape, store, e, None).state
    }

    /// Teacher-forced logits [M·B × K]: the decoder reads `tgt_in` (BOS,
    /// y(1), …, y(M−1), time-major) from the context of `src`. Train with
    /// `cross_entropy` against y(1), …, y(M).
    ///
    /// # Panics
    /// As [`Seq2Seq::encode`], for `tgt_in` too.
    ///
    /// ```
    /// use tapegrad::models::Seq2Seq;
    /// use tapegrad::{ParamStore, Reduction, Tape};
    /// let mut store = ParamStore::<f32>::new();
    /// let model = Seq2Seq::new(&mut store, "rev", 3, 3, 4, 8, 1, 0);
    /// let tape = Tape::new();
    /// // one sequence [0, 1] → target [1, 0]; decoder input [BOS, 1]
    /// let z = model.teacher_forced(&tape, &store, &[0, 1], &[model.bos(), 1], 1);
    /// assert_eq!(z.shape().as_slice(), &[2, 3]);
    /// let g = z.cross_entropy(&[1, 0], Reduction::Mean).backward();
    /// assert!(g.param(store.key("rev.encoder.lstm.weight_hh_l0").unwrap()).is_some());
    /// ```
    #[track_caller]
    pub fn teacher_forced<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        src: &[usize],
        tgt_in: &[usize],
        batch: usize,
    ) -> Var<'t, F> {
        let context = self.encode(tape, store, src, batch);
        let steps = whole_steps(tgt_in.len(), batch, "teacher_forced");
        let d = self.tgt_embedding.forward(tape, store, tgt_in).reshape(&[
            steps,
            batch,
            self.tgt_embedding.dim,
        ]);
        let out = self.decoder.forward(tape, store, d, Some(&context));
        self.out.forward(tape, store, out.stacked_rows())
    }

    /// Greedy decoding: from the context of `src`, feed BOS, then at every
    /// step the argmax of the previous step's logits, for `max_len` steps
    /// or, with `eos`, until every sequence has emitted `eos` (which is kept
    /// and ends that sequence). Returns one id sequence per source sequence.
    ///
    /// # Panics
    /// As [`Seq2Seq::encode`].
    #[track_caller]
    pub fn greedy<F: Real>(
        &self,
        tape: &Tape<F>,
        store: &ParamStore<F>,
        src: &[usize],
        batch: usize,
        max_len: usize,
        eos: Option<usize>,
    ) -> Vec<Vec<usize>> {
        let mut state = self.encode(tape, store, src, batch);
        let mut prev = vec![self.bos(); batch];
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); batch];
        let mut done = vec![false; batch];
        for _ in 0..max_len {
            let x = self.tgt_embedding.forward(tape, store, &prev);
            state = self.decoder.step(tape, store, x, &state);
            let z = self.out.forward(tape, store, state.last_h());
            let z = z.value();
            for (b, row) in z.data().chunks_exact(self.targets).enumerate() {
                let best = argmax(row);
                prev[b] = best;
                if !done[b] {
                    out[b].push(best);
                    done[b] = eos == Some(best);
                }
            }
            if eos.is_some() && done.iter().all(|&d| d) {
                break;
            }
        }
        out
    }
}

/// T for `len` ids of `batch` sequences, or a panic.
#[track_caller]
fn whole_steps(len: usize, batch: usize, op: &str) -> usize {
    assert!(
        batch > 0 && len > 0 && len.is_multiple_of(batch),
        "tapegrad: Seq2Seq::{op}: {len} ids do not make whole steps of {batch} sequences"
    );
    len / batch
}

/// The index of the largest value (the first on ties; NaN never wins).
fn argmax<F: Real>(row: &[F]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}
