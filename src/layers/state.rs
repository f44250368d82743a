//! Recurrent state: [`State`] on a tape, [`StateTensors`] between tapes.
//!
//! Entries are ordered as PyTorch's `h_n`/`c_n`: index `layer·D + dir`
//! (D = 2 for bidirectional layers, dir 1 = reverse). A cell's state is h,
//! then the further states it declares: the first of them is `c` (an
//! LSTM's cell state), any more are in `extra`. Carrying state from
//! one truncated-BPTT chunk to the next goes through [`StateTensors`]:
//! plain values, bound on the next tape as constants, so the gradient stops
//! at the boundary and no node of the old tape is kept alive.

use crate::{Real, Tape, Tensor, Var};

/// Hidden state (and a cell's further states, such as an LSTM's cell
/// state) on a tape, one [B×width] var per layer and direction.
///
/// ```
/// use tapegrad::layers::State;
/// use tapegrad::Tape;
/// let tape = Tape::<f32>::new();
/// let s = State::zeros(&tape, 2, 3, 8, true);
/// assert_eq!((s.h.len(), s.c.as_ref().unwrap().len()), (2, 2));
/// ```
#[derive(Debug, Clone)]
pub struct State<'t, F: Real> {
    /// h per layer·direction, each [B×H].
    pub h: Vec<Var<'t, F>>,
    /// The cell's first further state per layer·direction (an LSTM's c);
    /// `None` for cells with h alone (RNN, GRU).
    pub c: Option<Vec<Var<'t, F>>>,
    /// Further states after `c`, each per layer·direction (empty for the
    /// built-in cells).
    pub extra: Vec<Vec<Var<'t, F>>>,
}

impl<'t, F: Real> State<'t, F> {
    /// Zeros for `entries` (= layers·directions) states of [batch×hidden];
    /// with a cell state when `cell`.
    pub fn zeros(
        tape: &'t Tape<F>,
        entries: usize,
        batch: usize,
        hidden: usize,
        cell: bool,
    ) -> Self {
        let z = || {
            (0..entries)
                .map(|_| tape.zeros(&[batch, hidden]))
                .collect::<Vec<_>>()
        };
        State {
            h: z(),
            c: cell.then(z),
            extra: Vec::new(),
        }
    }

    /// A state of `h` and, for a cell that has one, `c`.
    pub fn new(h: Vec<Var<'t, F>>, c: Option<Vec<Var<'t, F>>>) -> Self {
        State {
            h,
            c,
            extra: Vec::new(),
        }
    }

    /// State tensors per entry: 1 (h), 2 (h, c), or more.
    pub fn count(&self) -> usize {
        match &self.c {
            Some(_) => 2 + self.extra.len(),
            None => 1,
        }
    }

    /// State tensor `k` (0 = h, 1 = c, 2… = `extra`) of every entry.
    pub(crate) fn tensors(&self, k: usize) -> &[Var<'t, F>] {
        match (k, &self.c) {
            (0, _) => &self.h,
            (1, Some(c)) => c,
            _ => &self.extra[k - 2],
        }
    }

    /// The state tensors of entry `idx` (layer·D + dir), h first.
    pub(crate) fn entry(&self, idx: usize) -> Vec<Var<'t, F>> {
        (0..self.count()).map(|k| self.tensors(k)[idx]).collect()
    }

    /// The inverse of [`State::entry`]: entries, each h first, into a state.
    pub(crate) fn from_entries(entries: Vec<Vec<Var<'t, F>>>) -> Self {
        let count = entries.first().map_or(1, Vec::len);
        let column = |k: usize| entries.iter().map(|e| e[k]).collect::<Vec<_>>();
        State {
            h: column(0),
            c: (count > 1).then(|| column(1)),
            extra: (2..count).map(column).collect(),
        }
    }

    /// The same values as constants on the same tape (gradient stops).
    pub fn detach(&self) -> Self {
        let (h, c, extra) = map_parts(&self.h, self.c.as_deref(), &self.extra, |v| v.detach());
        State { h, c, extra }
    }

    /// Copies the values out, to carry into the next tape.
    ///
    /// ```
    /// use tapegrad::layers::State;
    /// use tapegrad::Tape;
    /// let mut tape = Tape::<f64>::new();
    /// let carried = State::zeros(&tape, 1, 2, 4, false).to_tensors();
    /// tape.reset();
    /// let s = carried.bind(&tape);
    /// assert!(!s.h[0].requires_grad());
    /// ```
    pub fn to_tensors(&self) -> StateTensors<F> {
        let (h, c, extra) = map_parts(&self.h, self.c.as_deref(), &self.extra, |v| v.to_tensor());
        StateTensors { h, c, extra }
    }

    /// The top layer's final hidden state (the forward direction's, for a
    /// bidirectional layer the last two entries are forward and reverse).
    pub fn last_h(&self) -> Var<'t, F> {
        *self.h.last().expect("a state has at least one entry")
    }
}

/// Recurrent state as plain tensors, independent of any tape.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTensors<F: Real> {
    /// h per layer·direction, each [B×H].
    pub h: Vec<Tensor<F>>,
    /// The first further state per layer·direction (an LSTM's c).
    pub c: Option<Vec<Tensor<F>>>,
    /// Further states after `c` (see [`State::extra`]).
    pub extra: Vec<Vec<Tensor<F>>>,
}

impl<F: Real> StateTensors<F> {
    /// Binds the values on `tape` as constants (no gradient flows into
    /// them): the detached state of truncated BPTT.
    pub fn bind<'t>(&self, tape: &'t Tape<F>) -> State<'t, F> {
        let (h, c, extra) = map_parts(&self.h, self.c.as_deref(), &self.extra, |t| {
            tape.constant_from_slice(t.data(), t.shape())
        });
        State { h, c, extra }
    }

    /// Binds the values on `tape` as leaves that require gradients, so
    /// ∂L/∂h(0) (and ∂L/∂c(0)) can be read from the gradients.
    pub fn bind_var<'t>(&self, tape: &'t Tape<F>) -> State<'t, F> {
        let (h, c, extra) = map_parts(&self.h, self.c.as_deref(), &self.extra, |t| {
            tape.var(t.clone())
        });
        State { h, c, extra }
    }
}

/// A state's parts: h, the first further state (`c`), the rest (`extra`).
type Parts<U> = (Vec<U>, Option<Vec<U>>, Vec<Vec<U>>);

/// Applies `f` to every state tensor, keeping the layout of [`Parts`].
fn map_parts<T, U>(h: &[T], c: Option<&[T]>, extra: &[Vec<T>], f: impl Fn(&T) -> U) -> Parts<U> {
    let each = |list: &[T]| list.iter().map(&f).collect::<Vec<U>>();
    (
        each(h),
        c.map(each),
        extra.iter().map(|e| each(e)).collect(),
    )
}
