//! The reverse sweep and the gradients it returns.
//!
//! One loop over the node list from the root down to 0 (index order is
//! topological order, see the module docs of `tape`). Each node that holds
//! a gradient hands it to its op's backward rule once per input that
//! requires a gradient; the rule adds its contribution into that input's
//! slot **in place** (the first contribution writes, the rest accumulate),
//! which is how a weight used at every time step sums its gradient over t.
//! A node's gradient buffer goes back to the pool as soon as the node is
//! done, unless it is a leaf that requires a gradient or was marked with
//! `retain_grad`.
//!
//! Lent windows: a rule whose gradient for an input is a window of its own
//! gy, unchanged (a concat along the leading axis — the readout's stacked
//! rows of every step), does not copy the window into a fresh slot when
//! the input (an op's output) has none yet: the sweep lends it
//! ([`Loans`]), and copies it into the input's slot only when another
//! gradient is about to be added there or the sweep reaches the input,
//! whichever comes first. The window is still the slot's first term, so
//! every sum is the copying sweep's, term for term, bitwise.
//! So the T per-step gradients of a stacked readout are not all allocated
//! at once next to the stacked gradient (at the L benchmark, 12.5 MiB of
//! the peak), and gy goes back to the pool once its last window is repaid.
//!
//! The sweep knows no op family. The one piece of op-specific speed work on
//! its path — the products' weight gradients: a reordered weight's Wᵀ
//! routed straight to W, and the gradients of a weight used at every step
//! deferred and summed as one GEMM — is reached through one hook,
//! `ops::WeightGrads` (`ops/linalg/sweep.rs`): before the sweep, as it
//! reaches each node, where each input's gradient goes, and after. Anomaly
//! mode takes the same path, with every gradient checked as it is produced.
//!
//! Why dense gradients: slots are a `Vec` indexed by node id, so finding an
//! input's slot is an index, not a hash lookup. Nodes that do not require a
//! gradient never get a slot (requires-grad pruning), and nodes the root
//! does not depend on never receive one, so they cost nothing either. The
//! slot vector is kept on the tape between sweeps (a fresh one of a few MB
//! per sweep cost page faults on every backward of a long sequence), and
//! [`Grads`] keeps only the gradients asked for — sorted by node id, found
//! by binary search — not one entry per node.

use super::pool::Pool;
use super::{check_finite, NodeId, Tape, Var};
use crate::error::{or_panic, Error, ErrorKind, Result};
use crate::ops::{BackwardCtx, CheckGrad, GradSlot, Op, WeightGrads};
use crate::params::ParamKey;
use crate::tensor::{Shape, Tensor};
use crate::Real;

/// The gradients from one backward pass, keyed by var and by parameter.
///
/// ```
/// use tapegrad::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let a = tape.var(Tensor::scalar(2.0));
/// let b = tape.var(Tensor::scalar(5.0));
/// let g = (a * b).backward();
/// assert_eq!((g.wrt(a).item(), g.wrt(b).item()), (5.0, 2.0));
/// ```
#[derive(Debug)]
pub struct Grads<F: Real> {
    tape_id: u64,
    generation: u64,
    /// The kept gradients (leaves that require one, retained vars), by
    /// increasing node id.
    kept: Vec<(NodeId, Tensor<F>)>,
    params: Vec<(ParamKey, NodeId)>,
}

impl<F: Real> Grads<F> {
    /// The kept gradient of node `id`, if any.
    fn kept(&self, id: NodeId) -> Option<&Tensor<F>> {
        let at = self.kept.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        Some(&self.kept[at].1)
    }

    /// The gradient of the root with respect to `v`, if backward kept one:
    /// every leaf that requires a gradient and every var marked with
    /// `retain_grad` has one (zeros if the root does not depend on it).
    ///
    /// # Errors
    /// [`ErrorKind::ForeignTape`] if `v` is from another tape or a later
    /// use of this one; [`ErrorKind::NoGradient`] if `v` did not ask for
    /// its gradient or was recorded after the root.
    pub fn try_wrt(&self, v: Var<'_, F>) -> Result<&Tensor<F>> {
        let tape = v.tape();
        if tape.id() != self.tape_id || tape.generation() != self.generation {
            return Err(Error::new(
                ErrorKind::ForeignTape,
                "grads",
                format!(
                    "var #{} is from tape #{} (use {}), these gradients from tape #{} (use {})",
                    v.id(),
                    tape.id(),
                    tape.generation(),
                    self.tape_id,
                    self.generation
                ),
            ));
        }
        self.kept(v.id()).ok_or_else(|| {
                Error::new(
                    ErrorKind::NoGradient,
                    "grads",
                    format!(
                        "var #{} ({}) has no gradient: only leaves that require one and vars marked \
                         with retain_grad() before backward (and recorded before the root) keep theirs",
                        v.id(),
                        tape.inner.borrow().nodes[v.id() as usize].op.name()
                    ),
                )
                .with_label(Some(v.label()))
            })
    }

    /// The gradient with respect to `v`.
    ///
    /// # Panics
    /// As [`Grads::try_wrt`] errs.
    #[track_caller]
    pub fn wrt(&self, v: Var<'_, F>) -> &Tensor<F> {
        or_panic(self.try_wrt(v))
    }

    /// The gradient of a bound parameter, or `None` if `key` was not bound
    /// on the tape before backward.
    ///
    /// ```
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let w = store.insert("w", Tensor::scalar(3.0));
    /// let tape = Tape::new();
    /// let g = tape.param(&store, w).powf(2.0).backward();
    /// assert_eq!(g.param(w).unwrap().item(), 6.0);
    /// ```
    pub fn param(&self, key: ParamKey) -> Option<&Tensor<F>> {
        self.params
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|&(_, id)| self.kept(id))
    }

    /// Every bound parameter with its gradient, in binding order.
    pub fn params(&self) -> impl Iterator<Item = (ParamKey, &Tensor<F>)> + '_ {
        self.params
            .iter()
            .filter_map(|&(k, id)| self.kept(id).map(|g| (k, g)))
    }

    /// Global L2 norm over all parameter gradients (f64 accumulation).
    pub fn params_norm(&self) -> f64 {
        self.params()
            .map(|(_, g)| g.norm().powi(2))
            .sum::<f64>()
            .sqrt()
    }

    /// Runs `f` on every parameter gradient, in place (clipping).
    pub fn for_each_param_mut(&mut self, mut f: impl FnMut(&mut Tensor<F>)) {
        for &(_, id) in &self.params {
            if let Ok(at) = self.kept.binary_search_by_key(&id, |(i, _)| *i) {
                f(&mut self.kept[at].1);
            }
        }
    }

    /// Adds `other`'s parameter gradients into this set's, key by key: the
    /// all-reduce of data-parallel training, where each shard of a batch
    /// runs on its own tape and the step uses the sum. Only parameter
    /// gradients are summed; var gradients stay this tape's own.
    ///
    /// # Errors
    /// [`ErrorKind::NoGradient`] if `other` has a gradient for a parameter
    /// this set does not; [`ErrorKind::Shape`] if a pair differs in shape.
    /// On error nothing has been added.
    ///
    /// ```
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f64>::new();
    /// let w = store.insert("w", Tensor::scalar(3.0));
    /// let (t1, t2) = (Tape::new(), Tape::new());
    /// let mut g = (tape_loss(&t1, &store, w, 1.0)).backward();
    /// let g2 = (tape_loss(&t2, &store, w, 2.0)).backward();
    /// g.try_accumulate_params(&g2)?;
    /// assert_eq!(g.param(w).unwrap().item(), 3.0); // d(w·1 + w·2)/dw
    /// # fn tape_loss<'t>(t: &'t Tape<f64>, s: &ParamStore<f64>, w: tapegrad::ParamKey, x: f64)
    /// #     -> tapegrad::Var<'t, f64> { t.param(s, w) * x }
    /// # Ok::<(), tapegrad::Error>(())
    /// ```
    pub fn try_accumulate_params(&mut self, other: &Grads<F>) -> Result<()> {
        let mut pairs = Vec::with_capacity(other.params.len());
        for (key, g) in other.params() {
            let Some(&(_, id)) = self.params.iter().find(|(k, _)| *k == key) else {
                return Err(Error::new(
                    ErrorKind::NoGradient,
                    "accumulate_params",
                    format!(
                        "the other set has a gradient for parameter {key:?}, this one does not"
                    ),
                ));
            };
            let Some(mine) = self.kept(id) else {
                return Err(Error::new(
                    ErrorKind::NoGradient,
                    "accumulate_params",
                    format!("parameter {key:?} has no gradient in this set"),
                ));
            };
            if mine.shape() != g.shape() {
                return Err(Error::new(
                    ErrorKind::Shape,
                    "accumulate_params",
                    format!(
                        "parameter {key:?}: gradient {:?} here, {:?} in the other set",
                        mine.shape(),
                        g.shape()
                    ),
                ));
            }
            pairs.push((id, g));
        }
        for (id, g) in pairs {
            let at = self
                .kept
                .binary_search_by_key(&id, |(i, _)| *i)
                .expect("checked above");
            let mine = &mut self.kept[at].1;
            for (a, &b) in mine.data_mut().iter_mut().zip(g.data()) {
                *a = *a + b;
            }
        }
        Ok(())
    }

    /// [`Grads::try_accumulate_params`], panicking with the error's message
    /// on a mismatch (a programmer error: shards of different models).
    ///
    /// ```
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f32>::new();
    /// let w = store.insert("w", Tensor::scalar(1.0));
    /// let (t1, t2) = (Tape::new(), Tape::new());
    /// let mut g = t1.param(&store, w).powf(2.0).backward();
    /// g.accumulate_params(&t2.param(&store, w).powf(2.0).backward());
    /// assert_eq!(g.param(w).unwrap().item(), 4.0);
    /// ```
    pub fn accumulate_params(&mut self, other: &Grads<F>) {
        or_panic(self.try_accumulate_params(other))
    }

    /// Moves the gradient of node `id` out (a checkpointed function's
    /// scratch tape hands its inputs' gradients back this way, no copy).
    pub(crate) fn take(&mut self, id: NodeId) -> Option<Vec<F>> {
        let at = self.kept.binary_search_by_key(&id, |(i, _)| *i).ok()?;
        Some(self.kept.remove(at).1.into_vec())
    }

    pub(crate) fn into_buffers(self) -> impl Iterator<Item = Vec<F>> {
        self.kept.into_iter().map(|(_, g)| g.into_vec())
    }
}

/// Gradient windows lent to inputs instead of copied (see the module doc).
struct Loans<F> {
    /// Per node: the lent window (which buffer of `bufs`, from which
    /// element), until the sweep reaches the node. Empty until the first
    /// loan; kept on the tape between sweeps (`Inner::sweep_lent`).
    lent: Vec<Option<(u32, usize)>>,
    /// The lending nodes' gradients, each with its count of windows not yet
    /// repaid (it goes back to the pool at 0).
    bufs: Vec<(Vec<F>, usize)>,
}

impl<F: Real> Loans<F> {
    /// Lends node `t` the window at `off` of the gradient the sweep pushes
    /// next onto `bufs`; `false` if `t` holds a window already (an input
    /// used twice by one concat: the second use is copied).
    fn lend(&mut self, t: usize, off: usize, root: usize) -> bool {
        if self.lent.len() <= root {
            self.lent.resize(root + 1, None);
        }
        if self.lent[t].is_some() {
            return false;
        }
        self.lent[t] = Some((self.bufs.len() as u32, off));
        true
    }

    /// Before node `i`'s slot is written or read: copies its lent window
    /// (of `n` elements) into a fresh slot (adds it, if a checkpoint's
    /// rule or the weight hook filled the slot meanwhile). A window of the
    /// gradient the sweep is processing now (an input the current node
    /// takes twice) stays lent: that gradient is kept only after the rule,
    /// so this use comes first, and a + b = b + a.
    #[inline]
    fn repay(
        &mut self,
        i: usize,
        slots: &mut [Option<Vec<F>>],
        n: usize,
        pool: &mut Pool<F>,
    ) -> Result<()> {
        let Some(&Some((b, off))) = self.lent.get(i) else {
            return Ok(());
        };
        if b as usize == self.bufs.len() {
            return Ok(());
        }
        self.lent[i] = None;
        let (buf, left) = &mut self.bufs[b as usize];
        let part = &buf[off..off + n];
        match &mut slots[i] {
            Some(s) => {
                for (d, &g) in s.iter_mut().zip(part) {
                    *d = *d + g;
                }
            }
            empty => *empty = Some(pool.copy_of(part, "backward")?),
        }
        *left -= 1;
        if *left == 0 {
            pool.give(std::mem::take(buf));
        }
        Ok(())
    }
}

impl<F: Real> Tape<F> {
    /// The reverse sweep from node `root`, seeded with ones or `seed`.
    pub(crate) fn backward_from(&self, root: NodeId, seed: Option<Tensor<F>>) -> Result<Grads<F>> {
        self.backward_onto(root, seed, Vec::new())
    }

    /// [`Tape::backward_from`] with leaves whose gradients start from
    /// `start` (id, buffer) instead of nothing: the sweep adds onto them,
    /// in its own order — a checkpointed function's re-run continuing the
    /// sums the outer sweep has begun.
    pub(crate) fn backward_onto(
        &self,
        root: NodeId,
        seed: Option<Tensor<F>>,
        start: Vec<(NodeId, Vec<F>)>,
    ) -> Result<Grads<F>> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let root = root as usize;
        let nodes = &inner.nodes[..=root];
        let pool = &mut inner.pool;
        let scopes = &inner.scopes;
        // The slot vector of the last sweep (all `None`), reused.
        let mut slots = std::mem::take(&mut inner.sweep_slots);
        slots.resize_with(root + 1, || None);
        for (id, buf) in start {
            slots[id as usize] = Some(buf);
        }

        if nodes[root].requires_grad {
            slots[root] = Some(match seed {
                Some(s) => s.into_vec(),
                None => {
                    let mut b = pool.take(1, "backward")?;
                    b[0] = F::one();
                    b
                }
            });
        }

        // Anomaly mode: every gradient the sweep or the hook produces is
        // checked, named by the node that produced it.
        let check = |g: &[F], of: usize, by: usize| {
            check_finite(
                g,
                nodes[of].value.shape(),
                "backward",
                &nodes[by].op,
                || scopes.path(nodes[by].label),
            )
        };
        let check: Option<CheckGrad<'_, F>> = inner.anomaly.then_some(&check);
        // The products' weight gradients (Wᵀ routed to W, shared weights'
        // gradients deferred and batched) — the sweep's one hook.
        let mut weights = WeightGrads::before_sweep(nodes, check);
        let mut loans = Loans {
            lent: std::mem::take(&mut inner.sweep_lent),
            bufs: std::mem::take(&mut inner.sweep_loans),
        };
        loans.lent.clear();
        loans.bufs.clear();

        for (i, node) in nodes.iter().enumerate().rev() {
            weights.reached(i, &mut slots, pool)?;
            loans.repay(i, &mut slots, node.value.numel(), pool)?;
            let Some(gy) = slots[i].take() else { continue };
            if node.inputs.is_empty() {
                // A leaf: keep its gradient.
                slots[i] = Some(gy);
                continue;
            }
            let gy = Tensor::from_parts(Shape::from_slice(node.value.shape()), gy);
            let x = super::values_of(nodes, &node.inputs);
            if node.op.takes_all_slots() {
                // A rule that computes every input's gradient at once (a
                // checkpointed function): it gets their slots, adds onto
                // them and hands them back. Its inputs are distinct.
                let ctx = BackwardCtx {
                    x: &x,
                    y: &node.value,
                    gy: &gy,
                    untransposed: &[],
                };
                for &j in &node.inputs {
                    let n = nodes[j as usize].value.numel();
                    loans.repay(j as usize, &mut slots, n, pool)?;
                }
                let mut held: smallvec::SmallVec<[Option<Vec<F>>; 8]> = node
                    .inputs
                    .iter()
                    .map(|&j| slots[j as usize].take())
                    .collect();
                node.op.backward_all(&ctx, &mut held);
                for (&j, g) in node.inputs.iter().zip(held) {
                    if let (Some(check), Some(g)) = (check, g.as_deref()) {
                        check(g, j as usize, i)?;
                    }
                    slots[j as usize] = g;
                }
                if node.retain {
                    slots[i] = Some(gy.into_vec());
                } else {
                    pool.give(gy.into_vec());
                }
                continue;
            }
            let untransposed = weights.untransposed(node);
            let ctx = BackwardCtx {
                x: &x,
                y: &node.value,
                gy: &gy,
                untransposed: &untransposed,
            };
            let mut held = false;
            let mut lent = 0;
            for (k, &j) in node.inputs.iter().enumerate() {
                if !nodes[j as usize].requires_grad {
                    continue;
                }
                let Some(route) = weights.route(node, k) else {
                    held = true;
                    continue;
                };
                let t = route.target;
                let lendable = !node.retain && t == j as usize && !nodes[t].inputs.is_empty();
                if lendable && slots[t].is_none() {
                    if let Some(off) = node.op.gradient_window(k, &ctx) {
                        if loans.lend(t, off, root) {
                            lent += 1;
                            continue;
                        }
                    }
                }
                // A window lent to this input is its first term, as if it
                // had been copied when lent: the sums are the copying
                // sweep's, term for term.
                loans.repay(t, &mut slots, nodes[t].value.numel(), pool)?;
                let fresh = slots[t].is_none();
                if fresh {
                    slots[t] = Some(pool.take(nodes[t].value.numel(), "backward")?);
                }
                let data = slots[t].as_mut().expect("slot was just filled");
                route.backward(&node.op, k, &ctx, GradSlot { data, fresh });
                if let Some(check) = check {
                    check(slots[t].as_deref().expect("just written"), t, i)?;
                }
            }
            let gy = gy.into_vec();
            if lent > 0 {
                // (Never with `held` or `retain`: no product lends, and a
                // retained node's gradient is not lent.)
                loans.bufs.push((gy, lent));
            } else if held {
                if node.retain {
                    slots[i] = Some(gy.clone());
                }
                weights.hold(i, gy, &mut slots, pool)?;
            } else if node.retain {
                slots[i] = Some(gy);
            } else {
                pool.give(gy);
            }
        }
        weights.after_sweep();
        debug_assert!(
            loans.bufs.iter().all(|(_, n)| *n == 0),
            "a lent gradient window was never repaid"
        );
        inner.sweep_lent = loans.lent;
        loans.bufs.clear();
        inner.sweep_loans = loans.bufs;

        // Leaves that require a gradient and retained vars the root does not
        // depend on get zeros, so `wrt` answers for every var that asked.
        let mut kept = Vec::new();
        let mut params = Vec::new();
        for (i, slot) in slots.iter_mut().enumerate() {
            let node = &nodes[i];
            let wanted = node.retain || (node.inputs.is_empty() && node.requires_grad);
            if let Op::Param(k) = node.op {
                params.push((k, i as NodeId));
            }
            let g = match (slot.take(), wanted) {
                (Some(g), true) => g,
                (None, true) => pool.zeroed(node.value.numel(), "backward")?,
                (Some(g), false) => {
                    pool.give(g);
                    continue;
                }
                (None, false) => continue,
            };
            let shape = Shape::from_slice(node.value.shape());
            kept.push((i as NodeId, Tensor::from_parts(shape, g)));
        }
        // Every slot is `None` again: the vector waits for the next sweep.
        slots.clear();
        inner.sweep_slots = slots;
        Ok(Grads {
            tape_id: self.id(),
            generation: self.generation(),
            kept,
            params,
        })
    }
}
