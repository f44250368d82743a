//! Gradient checkpointing (rematerialisation): a function of some vars
//! recorded as **one** node that keeps only its inputs and outputs, and
//! re-runs the function during the reverse sweep to differentiate it
//! (Chen et al. 2016, "Training deep nets with sublinear memory cost";
//! Gruslys et al. 2016, "Memory-efficient backpropagation through time").
//!
//! Forward: `f` runs on a scratch tape whose leaves are copies of the input
//! values; its outputs are flattened and concatenated into the node's one
//! value, and the scratch tape — every intermediate `f` recorded — is
//! dropped. The outputs the caller sees are slices of that value.
//!
//! Backward, when the sweep reaches the node (all gradients of its outputs
//! are complete, since every consumer comes later on the tape): `f` runs
//! again on a fresh scratch tape from the same input values — bitwise the
//! same forward, as every op is deterministic — the packed output is seeded
//! with the node's output gradient gy, and the scratch tape's own sweep
//! adds ∂L/∂x_k = J_kᵀ·gy, the exact vector–Jacobian product of `f`, onto
//! each input's gradient. The rule takes all its inputs' slots at once
//! (`Op::takes_all_slots`): each input leaf's gradient on the scratch
//! tape starts as the outer slot's buffer, so the scratch sweep continues
//! the outer sums in the plain run's order and nothing is copied.
//!
//! Memory: the outer tape keeps the inputs and the packed outputs only; the
//! recomputation lives while its node is differentiated, then goes. Time:
//! one more forward pass of `f`. The recurrent engine uses this for its
//! checkpointed segments (`layers::Checkpointing`); [`Tape::checkpoint`] is
//! the same for any user function.
//!
//! Why a boxed function in a closed op enum: the node must be able to run
//! code the crate does not know (a user's cell) again at backward time. The
//! function is `'static` and owns what it needs; values that may carry a
//! gradient come in as inputs, never by capture (a captured var of the
//! outer tape could not be read on the scratch tape: that is refused as a
//! foreign-tape operand).

use super::{BackwardCtx, Op};
use crate::error::{fail, Error, ErrorKind, Result};
use crate::params::ParamKey;
use crate::tape::Scratch;
use crate::tensor::{Shape, Tensor};
use crate::{Real, Tape, Var};
use std::sync::Arc;

/// A function a checkpoint node runs (forward) and re-runs (backward): from
/// vars on a scratch tape to vars on the same tape.
///
/// Implemented for every `Fn(&Tape<F>, &[Var<F>]) -> Vec<Var<F>>` that is
/// `Send + Sync + 'static`; pass a closure to [`Tape::checkpoint`].
pub(crate) trait Segment<F>: Send + Sync + 'static {
    /// Records the function on `tape` from `inputs` (leaves on `tape`).
    fn run<'s>(&self, tape: &'s Tape<F>, inputs: &[Var<'s, F>]) -> Vec<Var<'s, F>>
    where
        F: Real;
}

impl<F: Real, G> Segment<F> for G
where
    G: for<'s> Fn(&'s Tape<F>, &[Var<'s, F>]) -> Vec<Var<'s, F>> + Send + Sync + 'static,
{
    fn run<'s>(&self, tape: &'s Tape<F>, inputs: &[Var<'s, F>]) -> Vec<Var<'s, F>>
    where
        F: Real,
    {
        self(tape, inputs)
    }
}

/// The node of a checkpointed function.
pub(crate) struct RecomputeOp<F> {
    f: Arc<dyn Segment<F>>,
    /// Whether input k requires its gradient (a leaf of the scratch tape
    /// that is a var, not a constant).
    needs: Vec<bool>,
    /// The key of each input that is a bound parameter (bound under the
    /// same key on the scratch tape).
    keys: Vec<Option<ParamKey>>,
    /// The outer tape's spare scratch tapes.
    scratch: Scratch,
}

impl<F: Real> RecomputeOp<F> {
    pub(crate) fn name(&self) -> &'static str {
        "checkpoint"
    }

    /// Adds ∂L/∂x_k = J_kᵀ·gy of the function onto `slots[k]` for every
    /// input that requires a gradient, from one re-run (see the module
    /// doc): the scratch tape's sweep starts each input leaf's gradient
    /// from the outer slot's buffer (moved in, moved back out), so the sums
    /// continue in the order the plain sweep makes them, with no copy.
    pub(crate) fn backward_all(&self, c: &BackwardCtx<'_, F>, slots: &mut [Option<Vec<F>>]) {
        or_fail(self.rerun(c, slots));
    }

    /// Re-runs the function on a scratch tape and back-propagates gy onto
    /// the input leaves.
    fn rerun(&self, c: &BackwardCtx<'_, F>, slots: &mut [Option<Vec<F>>]) -> Result<()> {
        let scratch = take_scratch(&self.scratch);
        let r = self.rerun_on(&scratch, c, slots);
        give_scratch(&self.scratch, scratch);
        r
    }

    fn rerun_on(
        &self,
        scratch: &Tape<F>,
        c: &BackwardCtx<'_, F>,
        slots: &mut [Option<Vec<F>>],
    ) -> Result<()> {
        let leaves = leaves_on(scratch, c.x, &self.needs, &self.keys);
        let (outs, _) = distinct_outputs(self.f.run(scratch, &leaves));
        let packed = pack(&outs);
        if packed.shape().as_slice() != c.gy.shape() {
            return Err(Error::new(
                ErrorKind::Shape,
                "checkpoint",
                format!(
                    "the function's outputs changed between forward and recompute: {} elements now, {} then",
                    packed.shape().as_slice()[0],
                    c.gy.numel()
                ),
            ));
        }
        if !packed.requires_grad() {
            return Ok(()); // no input's gradient depends on the outputs
        }
        let start = leaves
            .iter()
            .zip(&self.needs)
            .zip(slots.iter_mut())
            .filter(|((_, &need), _)| need)
            .filter_map(|((v, _), slot)| slot.take().map(|g| (v.id(), g)))
            .collect();
        // The seed from the scratch tape's pool (a clone would allocate
        // the segment's output gradient afresh at every re-run).
        let seed = scratch
            .inner
            .borrow_mut()
            .pool
            .window(c.gy, 0, c.gy.shape(), "checkpoint")?;
        let mut g = scratch.backward_onto(packed.id(), Some(seed), start)?;
        for ((v, &need), slot) in leaves.iter().zip(&self.needs).zip(slots.iter_mut()) {
            if need {
                *slot = g.take(v.id());
            }
        }
        Ok(())
    }
}

/// A spare scratch tape of `spare`, or a new one.
fn take_scratch<F: Real>(spare: &Scratch) -> Tape<F> {
    spare
        .lock()
        .ok()
        .and_then(|mut s| s.pop())
        .and_then(|t| t.downcast::<Tape<F>>().ok())
        .map(|t| *t)
        .unwrap_or_default()
}

/// Resets `tape` (its buffers go to its pool) and keeps it in `spare`.
fn give_scratch<F: Real>(spare: &Scratch, mut tape: Tape<F>) {
    tape.reset();
    if let Ok(mut s) = spare.lock() {
        s.push(Box::new(tape));
    }
}

#[track_caller]
fn or_fail<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| fail(e))
}

/// The inputs as leaves of `scratch`: vars where a gradient is needed,
/// constants elsewhere, parameters bound under their keys; then the
/// scratch tape is sealed (no other parameter may be bound on it).
fn leaves_on<'s, F: Real>(
    scratch: &'s Tape<F>,
    x: &[&Tensor<F>],
    needs: &[bool],
    keys: &[Option<ParamKey>],
) -> Vec<Var<'s, F>> {
    let leaves = x
        .iter()
        .zip(needs)
        .zip(keys)
        .map(|((&x, &need), key)| {
            // A view of the outer value (the checkpoint made every input
            // shareable when it recorded): parameters, the input rows and
            // the state are not copied onto the scratch tape. A value that
            // could not be shared (an empty one) is copied from the
            // scratch tape's pool.
            let copy = scratch
                .inner
                .borrow_mut()
                .pool
                .window(x, 0, x.shape(), "checkpoint");
            let copy = or_fail(copy);
            match key {
                Some(k) => scratch.bind_param_value(*k, copy, need),
                None if need => scratch.var(copy),
                None => scratch.constant(copy),
            }
        })
        .collect();
    scratch.seal();
    leaves
}

/// `f` of the inputs as the caller listed them, repeats included, from the
/// node's distinct inputs.
struct Expand<F> {
    f: Arc<dyn Segment<F>>,
    /// For each input the caller listed, its place among the distinct ones.
    index: Vec<usize>,
}

impl<F: 'static> Segment<F> for Expand<F> {
    fn run<'s>(&self, tape: &'s Tape<F>, inputs: &[Var<'s, F>]) -> Vec<Var<'s, F>>
    where
        F: Real,
    {
        let listed: Vec<Var<'s, F>> = self.index.iter().map(|&k| inputs[k]).collect();
        self.f.run(tape, &listed)
    }
}

/// The distinct vars among `outs` (in first-seen order) and, for each
/// output, its place among them. A var returned twice (an RNN's last h is
/// its last output and its final state) is one output of the node, one var
/// outside: its gradient then arrives whole, as in the plain run, instead
/// of in two parts summed in another order.
fn distinct_outputs<F: Real>(outs: Vec<Var<'_, F>>) -> (Vec<Var<'_, F>>, Vec<usize>) {
    let mut list: Vec<Var<'_, F>> = Vec::with_capacity(outs.len());
    let at = outs
        .iter()
        .map(|v| match list.iter().position(|u| u.id() == v.id()) {
            Some(k) => k,
            None => {
                list.push(*v);
                list.len() - 1
            }
        })
        .collect();
    (list, at)
}

/// Every output flattened and concatenated, in order: one var.
fn pack<'s, F: Real>(outs: &[Var<'s, F>]) -> Var<'s, F> {
    let flat: Vec<Var<'s, F>> = outs
        .iter()
        .map(|v| v.reshape(&[v.shape().iter().product()]))
        .collect();
    Var::concat(&flat, 0)
}

impl<F: Real> Tape<F> {
    /// Runs `f` on `inputs` as one checkpointed node: only the inputs and
    /// the outputs stay on this tape; every intermediate value `f` records
    /// is dropped after the forward pass and recomputed (by running `f`
    /// once more) when the reverse sweep reaches the node. The gradients
    /// are those of `f` itself, computed by the same ops on the same values.
    ///
    /// `f` receives the inputs as leaves of a scratch tape and returns its
    /// outputs on that tape; it must be a pure function of them (values it
    /// captures are constants; anything that needs a gradient comes in
    /// `inputs`), and must record the same ops on every run (draw dropout
    /// masks from seeds it captures).
    ///
    /// Parameters: pass each one `f` reads as an input bound on this tape
    /// (`tape.param(store, key)`); on the scratch tape it is bound under
    /// the same key, so code in `f` that binds parameters from a store — a
    /// layer's `forward` — gets the input without reading the store (any
    /// store will do, an empty one included), and its gradient reaches this
    /// tape's parameter. Binding a parameter that is not among the inputs
    /// panics (`ErrorKind::InvalidArgument`, naming it) rather than lose its
    /// gradient.
    ///
    /// This is how a long sequence trains in O(√T) memory: split it into
    /// segments of about √T steps, each one checkpoint from the state at its
    /// start (plus the parameters) to the state at its end and the segment's
    /// loss. The recurrent layers do this for their own steps with
    /// [`RecurrentConfig::checkpoint`](crate::layers::RecurrentConfig::checkpoint).
    ///
    /// # Panics
    /// If `inputs` is empty or holds a var of another tape, or `f` returns
    /// no output.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let w = tape.var(Tensor::from_vec(vec![0.5, -0.3], &[1, 2]).unwrap());
    /// let mut h = tape.constant(Tensor::from_vec(vec![0.1, 0.2], &[1, 2]).unwrap());
    /// // Four steps h ← tanh(h ⊙ w + 1), two per checkpointed segment.
    /// for _ in 0..2 {
    ///     h = tape.checkpoint(&[h, w], |_, v| {
    ///         let (mut h, w) = (v[0], v[1]);
    ///         for _ in 0..2 {
    ///             h = (h * w + 1.0).tanh();
    ///         }
    ///         vec![h]
    ///     })[0];
    /// }
    /// let g = h.sum().backward();
    ///
    /// // The same four steps, plainly recorded: the same gradient, bit for bit.
    /// let plain = Tape::<f64>::new();
    /// let w2 = plain.var(Tensor::from_vec(vec![0.5, -0.3], &[1, 2]).unwrap());
    /// let mut h2 = plain.constant(Tensor::from_vec(vec![0.1, 0.2], &[1, 2]).unwrap());
    /// for _ in 0..4 {
    ///     h2 = (h2 * w2 + 1.0).tanh();
    /// }
    /// assert_eq!(h.value().data(), h2.value().data());
    /// // (w's gradient sums two segments' sums here: equal up to rounding.)
    /// let (a, b) = (g.wrt(w).data(), plain_grad(h2, w2));
    /// assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-15 * y.abs().max(1.0)));
    /// # fn plain_grad(h: tapegrad::Var<'_, f64>, w: tapegrad::Var<'_, f64>) -> Vec<f64> {
    /// #     h.sum().backward().wrt(w).data().to_vec()
    /// # }
    /// ```
    #[track_caller]
    pub fn checkpoint<'t, G>(&'t self, inputs: &[Var<'t, F>], f: G) -> Vec<Var<'t, F>>
    where
        G: for<'s> Fn(&'s Tape<F>, &[Var<'s, F>]) -> Vec<Var<'s, F>> + Send + Sync + 'static,
    {
        self.checkpoint_arc(inputs, Arc::new(f))
    }

    /// [`Tape::checkpoint`] with a shared function.
    #[track_caller]
    pub(crate) fn checkpoint_arc<'t>(
        &'t self,
        inputs: &[Var<'t, F>],
        f: Arc<dyn Segment<F>>,
    ) -> Vec<Var<'t, F>> {
        if inputs.is_empty() {
            fail(Error::new(
                ErrorKind::InvalidArgument,
                "checkpoint",
                "needs at least one input (a function of nothing has no gradient to recompute)",
            ));
        }
        // The node's inputs are distinct (its rule takes their slots): a var
        // passed twice is one input, handed to `f` at both places.
        let mut distinct: Vec<Var<'t, F>> = Vec::with_capacity(inputs.len());
        let index: Vec<usize> = inputs
            .iter()
            .map(|v| {
                match distinct
                    .iter()
                    .position(|u| u.id() == v.id() && u.tape().id() == v.tape().id())
                {
                    Some(at) => at,
                    None => {
                        distinct.push(*v);
                        distinct.len() - 1
                    }
                }
            })
            .collect();
        let (inputs, f): (&[Var<'t, F>], Arc<dyn Segment<F>>) = if distinct.len() == inputs.len() {
            (inputs, f)
        } else {
            (&distinct, Arc::new(Expand { f, index }))
        };
        let needs: Vec<bool> = inputs.iter().map(|v| v.requires_grad()).collect();
        let keys: Vec<Option<ParamKey>> = inputs
            .iter()
            .map(|v| {
                if v.is_on(self) {
                    self.param_key(v.id())
                } else {
                    None
                }
            })
            .collect();
        let mut shapes: Vec<Shape> = Vec::new();
        let mut places: Vec<usize> = Vec::new();
        for &v in inputs {
            // Shared with the scratch tapes instead of copied onto them.
            self.make_shareable(v);
        }
        let spare = self.inner.borrow().scratch.clone();
        let scratch = take_scratch(&spare);
        let packed = self.record("checkpoint", inputs, |x, pool| {
            let leaves = leaves_on(&scratch, x, &needs, &keys);
            let outs = f.run(&scratch, &leaves);
            if outs.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidArgument,
                    "checkpoint",
                    "the function returned no output",
                ));
            }
            let (outs, at) = distinct_outputs(outs);
            places = at;
            shapes = outs.iter().map(|v| v.shape()).collect();
            let packed = pack(&outs);
            let value = packed.value();
            let buf = pool.copy_of(value.data(), "checkpoint")?;
            let n = buf.len();
            Ok((
                Op::Recompute(RecomputeOp {
                    f: f.clone(),
                    needs: needs.clone(),
                    keys: keys.clone(),
                    scratch: spare.clone(),
                }),
                Tensor::from_parts([n][..].into(), buf),
            ))
        });
        give_scratch(&spare, scratch);
        let mut at = 0;
        let parts: Vec<Var<'t, F>> = shapes
            .iter()
            .map(|s| {
                let n: usize = s.iter().product();
                let part = packed.slice(0, at, n);
                at += n;
                if s.len() == 1 {
                    part
                } else {
                    let v = part.reshape(s);
                    part.release();
                    v
                }
            })
            .collect();
        // The packed value is read by no rule (its own reads its inputs).
        packed.release();
        places.iter().map(|&k| parts[k]).collect()
    }
}
