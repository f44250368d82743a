//! The tape: an append-only list of nodes, one per recorded operation.
//!
//! Invariant: a node's index is its push order, and every input of a node
//! was pushed before it, so **index order is a topological order** of the
//! graph. Backward is therefore one reverse loop over the list
//! ([`backward`]); nothing is sorted and nothing recurses, so a graph of a
//! million nodes needs no more stack than a graph of three.
//!
//! A node holds its op (a closed enum, printable, see [`crate::ops`]), the
//! ids of its inputs, and its value. Backward rules read the values of a
//! node's inputs and output from the tape itself, so an op saves nothing
//! beyond the few extras only it has (a dropout mask, class targets).
//!
//! Why a `RefCell`: [`Var`] is a `Copy` handle — a reference to its tape plus
//! an index — so that formulas read like math (`(x.matmul(u) + b).tanh()`).
//! Many handles share the tape, so recording goes through interior
//! mutability; borrows last for one op and never escape. [`Tape::reset`]
//! takes `&mut self`, so the borrow checker guarantees that no handle
//! survives a reset. All buffers (values and gradients) come from a
//! [`pool::Pool`] that a reset refills, so a training loop that replays the
//! same shapes allocates nothing after its first step — but for the large
//! buffers a concat frees by re-seating its inputs as views
//! (`Tape::reseat_as_views`, 2¹⁵ elements and more), which trade an
//! allocation per step for holding the elements once.

pub(crate) mod backward;
mod graph;
pub(crate) mod pool;
pub(crate) mod scope;
mod var;

pub use backward::Grads;
pub use var::Var;

use crate::error::{fail, or_panic, Error, ErrorKind, Result};
use crate::ops::Op;
use crate::params::{ParamKey, ParamStore};
use crate::tensor::{Shape, Tensor};
use crate::Real;
use pool::Pool;
use scope::Scopes;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Node index on a tape.
pub(crate) type NodeId = u32;

/// Input ids of a node: up to four inline (every op but a wide concat or
/// stack), so recording allocates nothing for them. With smallvec's `union`
/// feature this is 24 bytes, the size the two-inline form had: the two
/// extra ids cost nothing, while a three-input op (an `addmm`) no longer
/// spills to the heap and frees at every reset.
pub(crate) type Inputs = SmallVec<[NodeId; 4]>;

/// The ids of `vars`, inline for up to four (no `SmallVec::extend`, whose
/// generic path was a visible share of recording a small op).
#[inline]
fn ids_of<F: Real>(vars: &[Var<'_, F>]) -> Inputs {
    if vars.len() <= 4 {
        let mut buf = [0; 4];
        for (d, v) in buf.iter_mut().zip(vars) {
            *d = v.id();
        }
        Inputs::from_buf_and_len(buf, vars.len())
    } else {
        vars.iter().map(|v| v.id()).collect()
    }
}

/// The values of nodes `ids`, inline for up to four (as [`ids_of`]): what
/// an op's forward (recording) and its rule (the sweep) read.
#[inline(always)]
pub(crate) fn values_of<'a, F>(
    nodes: &'a [Node<F>],
    ids: &[NodeId],
) -> SmallVec<[&'a Tensor<F>; 4]> {
    match ids.first() {
        Some(&first) if ids.len() <= 4 => {
            let mut buf = [&nodes[first as usize].value; 4];
            for (d, &i) in buf.iter_mut().zip(ids).skip(1) {
                *d = &nodes[i as usize].value;
            }
            SmallVec::from_buf_and_len(buf, ids.len())
        }
        _ => ids.iter().map(|&i| &nodes[i as usize].value).collect(),
    }
}

/// One recorded operation.
pub(crate) struct Node<F> {
    pub(crate) op: Op<F>,
    pub(crate) inputs: Inputs,
    pub(crate) value: Tensor<F>,
    /// Some input (transitively) requires a gradient; otherwise backward
    /// skips this node entirely (requires-grad pruning).
    pub(crate) requires_grad: bool,
    /// Keep this node's gradient after backward (leaves that require
    /// gradients always keep theirs).
    pub(crate) retain: bool,
    /// A recorded backward rule reads this value (its own, or a
    /// consumer's): it cannot be released.
    pub(crate) pinned: bool,
    /// The value's buffer went back to the pool ([`Var::release`]); the
    /// shape stays, the data is empty.
    pub(crate) released: bool,
    /// Scope frame open when the node was recorded.
    pub(crate) label: u32,
}

impl<F: Real> Node<F> {
    /// Whether the value may go back to the pool: no recorded backward rule
    /// reads it, it is not a bound parameter, and it holds data.
    fn releasable(&self) -> bool {
        !(self.pinned
            || self.released
            || self.value.buffer_len() == 0
            || matches!(self.op, Op::Param(_)))
    }

    /// Gives the value's buffer back to `pool` if it is releasable; returns
    /// the elements freed (0 if it was kept).
    fn release_into(&mut self, pool: &mut Pool<F>) -> usize {
        if !self.releasable() {
            return 0;
        }
        let freed = self.value.buffer_len();
        self.released = true;
        pool.give(self.value.take_data());
        freed
    }
}

/// Everything behind the tape's `RefCell`.
pub(crate) struct Inner<F> {
    pub(crate) nodes: Vec<Node<F>>,
    pub(crate) pool: Pool<F>,
    pub(crate) scopes: Scopes,
    /// Parameters bound on this tape, so a parameter used at every time step
    /// is one leaf.
    pub(crate) bound: HashMap<ParamKey, NodeId>,
    /// The store's name of every parameter ever bound on this tape, for the
    /// listing and DOT (kept across resets: a key names one parameter for
    /// good, so a training loop copies each name once, not every step).
    pub(crate) param_names: HashMap<ParamKey, String>,
    /// Check every value and gradient for NaN/Inf as it is produced.
    pub(crate) anomaly: bool,
    /// The reverse sweep's per-node gradient slots, kept (empty, with its
    /// capacity) between sweeps so a backward allocates none (see
    /// `backward.rs`).
    pub(crate) sweep_slots: Vec<Option<Vec<F>>>,
    /// The sweep's lent gradient windows per node (`backward.rs`,
    /// `Loans`), kept like `sweep_slots`.
    pub(crate) sweep_lent: Vec<Option<(u32, usize)>>,
    /// The lending nodes' gradients of `sweep_lent` (all handed back to the
    /// pool after a sweep), kept for their capacity.
    pub(crate) sweep_loans: Vec<(Vec<F>, usize)>,
    /// The scratch tape of a checkpointed function: every parameter it may
    /// read was bound by the checkpoint from its inputs, so binding another
    /// one is refused (its gradient would not reach the outer tape).
    pub(crate) sealed: bool,
    /// Spare scratch tapes for checkpointed functions (their forward runs
    /// and their re-runs in backward), kept with their pools so a training
    /// loop's recomputations allocate nothing after its first step.
    pub(crate) scratch: Scratch,
}

/// Spare scratch tapes (each a `Tape<F>` of the tape's own `F`), shared
/// with the checkpoint nodes that use them in backward (the sweep holds
/// this tape's `RefCell` then).
pub(crate) type Scratch = std::sync::Arc<std::sync::Mutex<Vec<Box<dyn std::any::Any + Send>>>>;

/// A tape that records operations on [`Var`]s and differentiates them.
///
/// ```
/// use tapegrad::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::scalar(3.0));   // a leaf that wants its gradient
/// let y = &x * &x + x * 2.0;               // y = x² + 2x
/// let grads = y.backward();
/// assert_eq!(grads.wrt(x).item(), 8.0);    // dy/dx = 2x + 2
/// ```
pub struct Tape<F: Real> {
    id: u64,
    generation: std::cell::Cell<u64>,
    pub(crate) inner: RefCell<Inner<F>>,
}

static NEXT_TAPE_ID: AtomicU64 = AtomicU64::new(1);

/// Short: the id, the generation (resets so far) and the node count.
///
/// ```
/// let mut tape = tapegrad::Tape::<f32>::new();
/// let _ = tape.constant(tapegrad::Tensor::zeros(&[2]));
/// let id = tape.id();
/// assert_eq!(format!("{tape:?}"), format!("Tape {{ id: {id}, generation: 0, nodes: 1 }}"));
/// tape.reset();
/// assert_eq!(format!("{tape:?}"), format!("Tape {{ id: {id}, generation: 1, nodes: 0 }}"));
/// ```
impl<F: Real> std::fmt::Debug for Tape<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Tape");
        d.field("id", &self.id)
            .field("generation", &self.generation());
        match self.inner.try_borrow() {
            Ok(inner) => d.field("nodes", &inner.nodes.len()),
            // (Only while an op is being recorded.)
            Err(_) => d.field("nodes", &format_args!("<recording>")),
        };
        d.finish()
    }
}

impl<F: Real> Default for Tape<F> {
    fn default() -> Self {
        Self::new()
    }
}

impl<F: Real> Tape<F> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
            generation: std::cell::Cell::new(0),
            inner: RefCell::new(Inner {
                nodes: Vec::new(),
                pool: Pool::default(),
                scopes: Scopes::default(),
                bound: HashMap::new(),
                param_names: HashMap::new(),
                anomaly: false,
                sweep_slots: Vec::new(),
                sweep_lent: Vec::new(),
                sweep_loans: Vec::new(),
                sealed: false,
                scratch: Scratch::default(),
            }),
        }
    }

    /// A process-unique id of this tape.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many times this tape has been reset.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// The number of recorded nodes.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let _ = tape.constant(tapegrad::Tensor::zeros(&[2]));
    /// assert_eq!(tape.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every node, keeping their buffers for reuse: the next step
    /// that records the same shapes allocates nothing. Taking `&mut self`
    /// means no [`Var`] of the old graph can still exist.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let mut tape = Tape::<f32>::new();
    /// for _ in 0..3 {
    ///     let x = tape.var(Tensor::ones(&[4]));
    ///     let _g = x.tanh().sum().backward();
    ///     tape.reset();
    /// }
    /// assert!(tape.is_empty());
    /// ```
    pub fn reset(&mut self) {
        let inner = self.inner.get_mut();
        // In place, then one clear: a node is not moved out to be dropped,
        // and only the ops that saved buffers are taken apart.
        for node in &mut inner.nodes {
            if !node.released {
                inner.pool.give(node.value.take_data());
            }
            if node.op.saves_buffers() {
                std::mem::replace(&mut node.op, Op::Leaf).recycle(&mut inner.pool);
            }
        }
        inner.nodes.clear();
        inner.scopes.clear();
        inner.bound.clear();
        self.generation.set(self.generation.get() + 1);
    }

    /// Resets the tape and also takes back the gradient buffers of `grads`.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let mut tape = Tape::<f32>::new();
    /// let g = tape.var(Tensor::ones(&[4])).sum().backward();
    /// tape.reset_with(g);
    /// ```
    pub fn reset_with(&mut self, grads: Grads<F>) {
        for buf in grads.into_buffers() {
            self.inner.get_mut().pool.give(buf);
        }
        self.reset();
    }

    /// Frees the pooled buffers too (the tape keeps nothing allocated).
    pub fn shrink(&mut self) {
        self.reset();
        let inner = self.inner.get_mut();
        inner.pool.clear();
        inner.sweep_slots = Vec::new();
        inner.sweep_lent = Vec::new();
        inner.sweep_loans = Vec::new();
        if let Ok(mut spare) = inner.scratch.lock() {
            spare.clear();
        }
    }

    /// Elements currently held by the tape: node values plus pooled buffers.
    /// A view counts its window, so elements several values share (a slice
    /// and its source, a bound parameter and the store) count once for
    /// each; the measure is for watching growth across steps, not for
    /// adding up bytes.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f32>::new();
    /// let x = tape.constant(Tensor::zeros(&[4, 2]));
    /// let _rows = x.slice(0, 1, 2); // a view of x's rows 1..3
    /// assert_eq!(tape.held_elements(), 8 + 4);
    /// ```
    pub fn held_elements(&self) -> usize {
        let inner = self.inner.borrow();
        inner
            .nodes
            .iter()
            .map(|n| n.value.buffer_len())
            .sum::<usize>()
            + inner.pool.held()
    }

    /// Turns anomaly checking on or off: when on, the first op whose value
    /// (forward) or gradient (backward) contains NaN or ±∞ panics with a
    /// message naming it and its label (`try_backward` returns the error).
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// tape.set_anomaly_detection(true);
    /// let x = tape.var(Tensor::scalar(-1.0));
    /// let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| x.sqrt()));
    /// assert!(r.is_err());
    /// ```
    pub fn set_anomaly_detection(&self, on: bool) {
        self.inner.borrow_mut().anomaly = on;
    }

    // ----- leaves ---------------------------------------------------------

    fn push_leaf(&self, op: Op<F>, value: Tensor<F>, requires_grad: bool) -> Var<'_, F> {
        let mut inner = self.inner.borrow_mut();
        let label = inner.scopes.current;
        let id = inner.nodes.len() as NodeId;
        inner.nodes.push(Node {
            op,
            inputs: Inputs::new(),
            value,
            requires_grad,
            retain: false,
            pinned: false,
            released: false,
            label,
        });
        Var::new(self, id)
    }

    /// A leaf that requires its gradient (an input you differentiate with
    /// respect to).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.var(tapegrad::Tensor::scalar(2.0));
    /// assert_eq!(x.exp().backward().wrt(x).item(), 2f64.exp());
    /// ```
    pub fn var(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push_leaf(Op::Leaf, value, true)
    }

    /// A leaf that does not require a gradient: data, targets, masks.
    /// Nothing is computed for it in backward.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let x = tape.constant(tapegrad::Tensor::ones(&[2]));
    /// assert!(!x.requires_grad());
    /// ```
    pub fn constant(&self, value: Tensor<F>) -> Var<'_, F> {
        self.push_leaf(Op::Leaf, value, false)
    }

    /// A constant copied from a slice into a pooled buffer (no allocation
    /// after the first training step).
    ///
    /// # Panics
    /// If `data.len()` does not match `shape`.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let x = tape.constant_from_slice(&[1.0, 2.0], &[1, 2]);
    /// assert_eq!(x.shape().as_slice(), &[1, 2]);
    /// ```
    #[track_caller]
    pub fn constant_from_slice(&self, data: &[F], shape: &[usize]) -> Var<'_, F> {
        let value = {
            let mut inner = self.inner.borrow_mut();
            let n = or_panic(crate::tensor::numel(shape));
            if n != data.len() {
                fail(Error::shape(
                    "constant_from_slice",
                    format!("{} elements do not fill {shape:?}", data.len()),
                ));
            }
            let buf = or_panic(inner.pool.copy_of(data, "constant_from_slice"));
            Tensor::from_parts(Shape::from_slice(shape), buf)
        };
        self.constant(value)
    }

    /// A constant of zeros from a pooled buffer.
    ///
    /// # Panics
    /// If the shape overflows or cannot be allocated.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// assert_eq!(tape.zeros(&[2, 3]).value().data(), &[0.0; 6]);
    /// ```
    #[track_caller]
    pub fn zeros(&self, shape: &[usize]) -> Var<'_, F> {
        let value = {
            let mut inner = self.inner.borrow_mut();
            let n = or_panic(crate::tensor::numel(shape));
            let buf = or_panic(inner.pool.zeroed(n, "zeros"));
            Tensor::from_parts(Shape::from_slice(shape), buf)
        };
        self.constant(value)
    }

    /// A scalar constant.
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// assert_eq!(tape.scalar(2.0).item(), 2.0);
    /// ```
    pub fn scalar(&self, value: F) -> Var<'_, F> {
        self.constant(Tensor::scalar(value))
    }

    /// Binds parameter `key` of `store` as a leaf that requires its
    /// gradient. Binding the same key twice on one tape returns the same
    /// var, so a weight used at every time step is one leaf whose gradient
    /// sums over the steps.
    ///
    /// The leaf's value is the store's own buffer, shared, not a copy (the
    /// store keeps its values shareable, see [`Tensor::into_shared`]).
    /// Writing to the parameter in the store while this tape still holds
    /// it copies the parameter first (copy on write), so the tape's value
    /// never changes under it; reset the tape before the optimizer step
    /// and the update writes in place.
    ///
    /// # Panics
    /// If `key` is not in `store`; see [`Tape::try_param`].
    ///
    /// ```
    /// use tapegrad::{ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f32>::new();
    /// let w = store.insert("w", Tensor::ones(&[2]));
    /// let tape = Tape::new();
    /// let wv = tape.param(&store, w);
    /// let g = (wv * 3.0).sum().backward();
    /// assert_eq!(g.param(w).unwrap().data(), &[3.0, 3.0]);
    /// ```
    #[track_caller]
    pub fn param(&self, store: &ParamStore<F>, key: ParamKey) -> Var<'_, F> {
        or_panic(self.try_param(store, key))
    }

    /// [`Tape::param`] returning an error for a key the store does not hold.
    ///
    /// ```
    /// use tapegrad::{ErrorKind, ParamStore, Tape, Tensor};
    /// let mut store = ParamStore::<f32>::new();
    /// let w = store.insert("w", Tensor::ones(&[2]));
    /// store.remove(w);
    /// let tape = Tape::new();
    /// assert_eq!(tape.try_param(&store, w).unwrap_err().kind(), ErrorKind::StaleKey);
    /// ```
    pub fn try_param(&self, store: &ParamStore<F>, key: ParamKey) -> Result<Var<'_, F>> {
        if let Some(&id) = self.inner.borrow().bound.get(&key) {
            return Ok(Var::new(self, id));
        }
        if self.inner.borrow().sealed {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "param",
                format!(
                    "parameter '{}' is read inside a checkpointed function but is not among its \
                     inputs: pass tape.param(store, key) in the inputs of Tape::checkpoint, or its \
                     gradient would be lost",
                    store
                        .try_param(key)
                        .map(|p| p.name.clone())
                        .unwrap_or_else(|_| format!("{key:?}"))
                ),
            ));
        }
        let src = store.try_get(key)?;
        // The store's buffer itself when it is shareable (the store makes
        // its values so): no copy, and a write to the store while this tape
        // holds it copies on write. Otherwise a pooled copy.
        let value = self
            .inner
            .borrow_mut()
            .pool
            .window(src, 0, src.shape(), "param")?;
        let v = self.push_leaf(Op::Param(key), value, true);
        let mut inner = self.inner.borrow_mut();
        inner.bound.insert(key, v.id());
        inner
            .param_names
            .entry(key)
            .or_insert_with(|| store.name(key).to_string());
        Ok(v)
    }

    /// Binds `value` as parameter `key` (a leaf, requiring its gradient if
    /// `requires_grad`) without reading a store: the scratch tape of a
    /// checkpointed function, whose parameters come in as inputs.
    pub(crate) fn bind_param_value(
        &self,
        key: ParamKey,
        value: Tensor<F>,
        requires_grad: bool,
    ) -> Var<'_, F> {
        let v = self.push_leaf(Op::Param(key), value, requires_grad);
        self.inner.borrow_mut().bound.insert(key, v.id());
        v
    }

    /// Refuses to bind any further parameter from a store (see
    /// `Inner::sealed`).
    pub(crate) fn seal(&self) {
        self.inner.borrow_mut().sealed = true;
    }

    /// The key of node `id` if it is a bound parameter.
    pub(crate) fn param_key(&self, id: NodeId) -> Option<ParamKey> {
        match self.inner.borrow().nodes[id as usize].op {
            Op::Param(k) => Some(k),
            _ => None,
        }
    }

    // ----- scopes ---------------------------------------------------------

    /// Opens a label scope; nodes recorded while the guard lives carry the
    /// path of all open scopes (`"lstm.l0/t=3/gates"`).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let y = {
    ///     let _s = tape.scope("rnn");
    ///     let _t = tape.scope_at("t", 1);
    ///     tape.var(tapegrad::Tensor::zeros(&[1])).tanh()
    /// };
    /// assert_eq!(y.label(), "rnn/t=1");
    /// ```
    pub fn scope(&self, name: impl Into<Cow<'static, str>>) -> ScopeGuard<'_, F> {
        let prev = self.inner.borrow_mut().scopes.push_name(name.into());
        ScopeGuard { tape: self, prev }
    }

    /// Opens a scope named `name=index` (formatted only when printed, so
    /// labelling every time step is cheap).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f32>::new();
    /// let _s = tape.scope_at("t", 37);
    /// assert_eq!(tape.constant(tapegrad::Tensor::zeros(&[1])).label(), "t=37");
    /// ```
    pub fn scope_at(&self, name: &'static str, index: usize) -> ScopeGuard<'_, F> {
        let prev = self.inner.borrow_mut().scopes.push_indexed(name, index);
        ScopeGuard { tape: self, prev }
    }

    // ----- recording ------------------------------------------------------

    /// Records one operation: checks that all inputs live on this tape,
    /// runs `forward` on their values (it returns the op with anything it
    /// saves, and the output value), and pushes the node. A forward error
    /// becomes a panic naming the op and the current label.
    #[track_caller]
    pub(crate) fn record<'t>(
        &'t self,
        op_name: &str,
        inputs: &[Var<'t, F>],
        forward: impl FnOnce(&[&Tensor<F>], &mut Pool<F>) -> Result<(Op<F>, Tensor<F>)>,
    ) -> Var<'t, F> {
        or_panic(self.try_record(op_name, inputs, forward))
    }

    /// The `Result` form of [`Tape::record`].
    pub(crate) fn try_record<'t>(
        &'t self,
        op_name: &str,
        inputs: &[Var<'t, F>],
        forward: impl FnOnce(&[&Tensor<F>], &mut Pool<F>) -> Result<(Op<F>, Tensor<F>)>,
    ) -> Result<Var<'t, F>> {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let label = inner.scopes.current;
        for (k, v) in inputs.iter().enumerate() {
            if v.is_on(self) && inner.nodes[v.id() as usize].released {
                return Err(Error::new(
                    ErrorKind::Released,
                    op_name,
                    format!(
                        "operand {k} (%{}, {:?}, recorded at '{}') had its value released",
                        v.id(),
                        inner.nodes[v.id() as usize].value.shape(),
                        inner.scopes.path(inner.nodes[v.id() as usize].label),
                    ),
                )
                .with_label(Some(inner.scopes.path(label))));
            }
            if !v.is_on(self) {
                return Err(Error::new(
                    ErrorKind::ForeignTape,
                    op_name,
                    format!(
                        "operand {k} (%{}) belongs to tape #{}, but the op is recorded on tape #{}",
                        v.id(),
                        v.tape().id(),
                        self.id
                    ),
                )
                .with_label(Some(inner.scopes.path(label))));
            }
        }
        let ids = ids_of(inputs);
        let values = values_of(&inner.nodes, &ids);
        let requires_grad = ids.iter().any(|&i| inner.nodes[i as usize].requires_grad);
        let result = forward(&values, &mut inner.pool);
        drop(values);
        let (op, value) = result.map_err(|e| e.with_label(Some(inner.scopes.path(label))))?;
        if inner.anomaly {
            check_finite(value.data(), value.shape(), "forward", &op, || {
                inner.scopes.path(label)
            })
            .map_err(|e| with_operands_at(e, &value, &ids, &inner.nodes))?;
        }
        if requires_grad {
            for (k, &j) in ids.iter().enumerate() {
                if op.reads_input(k) {
                    inner.nodes[j as usize].pinned = true;
                }
            }
        }
        let id = inner.nodes.len() as NodeId;
        inner.nodes.push(Node {
            pinned: requires_grad && op.reads_output(),
            op,
            inputs: ids,
            value,
            requires_grad,
            retain: false,
            released: false,
            label,
        });
        Ok(Var::new(self, id))
    }

    /// Releases node `id`'s value unless a recorded backward rule reads it
    /// (or it is a bound parameter, or already released, or empty);
    /// returns whether it did.
    pub(crate) fn release_node(&self, id: NodeId) -> bool {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        inner.nodes[id as usize].release_into(&mut inner.pool) > 0
    }

    /// Releases every value no recorded backward rule reads, except those
    /// of `keep`: after the forward pass, this frees what only the forward
    /// pass needed, and backward runs as before. Returns the number of
    /// elements freed.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::ones(&[1000]));
    /// let h = (x * 2.0 + 1.0).tanh();         // x·2 and +1 are not read by backward
    /// let loss = h.sum();
    /// let freed = tape.release_unneeded(&[x, loss]);
    /// assert_eq!(freed, 2000);                 // x·2 and +1; tanh's output is read, x and loss kept
    /// assert!((loss.item() - 1000.0 * 3f64.tanh()).abs() < 1e-9);
    /// let dx = loss.backward().wrt(x).data()[0];
    /// assert!((dx - 2.0 * (1.0 - 3f64.tanh().powi(2))).abs() < 1e-12);
    /// ```
    pub fn release_unneeded(&self, keep: &[Var<'_, F>]) -> usize {
        self.release_since(0, keep)
    }

    /// [`Tape::release_unneeded`] for the nodes recorded since the tape held
    /// `start` nodes (`start = tape.len()` taken before): a scope whose
    /// intermediate values go back to the pool as soon as it ends, unless a
    /// backward rule reads them or they are in `keep`. The recurrent layers
    /// run every cell step this way, so a cell needs no releases of its own.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let h0 = tape.var(Tensor::ones(&[1, 4]));
    /// let start = tape.len();
    /// let z = h0 * 3.0 + 1.0;                  // read by no backward rule
    /// let h1 = z.tanh();                       // tanh's backward reads h1
    /// assert_eq!(tape.release_since(start, &[h1]), 8); // h0·3 and z
    /// assert!(!z.release());                 // already back in the pool
    /// let g = h1.sum().backward();
    /// assert!((g.wrt(h0).data()[0] - 3.0 * (1.0 - 4f64.tanh().powi(2))).abs() < 1e-12);
    /// ```
    pub fn release_since(&self, start: usize, keep: &[Var<'_, F>]) -> usize {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let mut freed = 0;
        for id in start..inner.nodes.len() {
            if keep.iter().any(|v| v.is_on(self) && v.id() as usize == id) {
                continue;
            }
            freed += inner.nodes[id].release_into(&mut inner.pool);
        }
        freed
    }

    /// Makes the value of `v` shareable (see `tensor/storage.rs`), so ops
    /// can record views of it instead of copies. A no-op for a var of
    /// another tape (the op refuses it when it records).
    pub(crate) fn make_shareable(&self, v: Var<'_, F>) {
        if v.is_on(self) {
            self.inner.borrow_mut().nodes[v.id() as usize]
                .value
                .make_shareable();
        }
    }

    /// After `joined` (a concat along a contiguous axis that copied its
    /// inputs) was recorded: each input that is an op's output holding a
    /// buffer of its own of at least [`RESEAT_MIN`] elements becomes a view
    /// of its window of the joined value, and its own buffer is freed. The
    /// elements are equal, so no rule can tell; what changes is that the
    /// T step outputs of a recurrent layer and their stacked rows for the
    /// readout are held once instead of twice through backward.
    pub(crate) fn reseat_as_views(&self, joined: Var<'_, F>) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let id = joined.id() as usize;
        let movable = |input: &Node<F>| {
            !input.released
                && !input.inputs.is_empty()
                && !input.value.is_view()
                && input.value.numel() >= RESEAT_MIN
        };
        let nodes = &inner.nodes;
        if nodes[id].value.is_view()
            || !nodes[id]
                .inputs
                .iter()
                .any(|&j| movable(&nodes[j as usize]))
        {
            return;
        }
        inner.nodes[id].value.make_shareable();
        let mut at = 0;
        for k in 0..inner.nodes[id].inputs.len() {
            let j = inner.nodes[id].inputs[k] as usize;
            let n = inner.nodes[j].value.numel();
            if movable(&inner.nodes[j]) {
                let shape = shape_of(&inner.nodes[j].value);
                if let Some(view) = inner.nodes[id].value.view(at, &shape) {
                    let own = std::mem::replace(&mut inner.nodes[j].value, view).take_data();
                    inner.pool.forget(own.len());
                }
            }
            at += n;
        }
    }

    /// Runs `f` with the value of node `id`.
    pub(crate) fn with_value<R>(&self, id: NodeId, f: impl FnOnce(&Tensor<F>) -> R) -> R {
        f(&self.inner.borrow().nodes[id as usize].value)
    }

    /// The label path of node `id`.
    pub(crate) fn label_of(&self, id: NodeId) -> String {
        let inner = self.inner.borrow();
        inner.scopes.path(inner.nodes[id as usize].label)
    }
}

/// An error if `data` (a value of `shape` in the `forward` pass, or a
/// gradient in `backward`) holds NaN or ±∞ (anomaly mode), naming `op` and
/// the label `label()` builds (only on error).
pub(crate) fn check_finite<F: Real>(
    data: &[F],
    shape: &[usize],
    pass: &str,
    op: &Op<F>,
    label: impl FnOnce() -> String,
) -> Result<()> {
    if let Some(pos) = data.iter().position(|x| !x.is_finite()) {
        return Err(Error::new(
            ErrorKind::NonFinite,
            op.name(),
            format!(
                "{pass} produced {} at flat index {pos} of a {shape:?} {}",
                data[pos],
                if pass == "forward" {
                    "value"
                } else {
                    "gradient"
                }
            ),
        )
        .with_label(Some(label())));
    }
    Ok(())
}

/// Adds to a forward anomaly what the operands of the same size held at the
/// offending index (`log` of a 0, `exp` of a 1e300), so the message says
/// what the caller fed the op.
fn with_operands_at<F: Real>(
    e: Error,
    value: &Tensor<F>,
    ids: &[NodeId],
    nodes: &[Node<F>],
) -> Error {
    let Some(pos) = value.data().iter().position(|x| !x.is_finite()) else {
        return e;
    };
    let held: Vec<String> = ids
        .iter()
        .enumerate()
        .filter_map(|(k, &i)| {
            let n = &nodes[i as usize];
            (!n.released && n.value.numel() == value.numel())
                .then(|| format!("operand {k} is {}", n.value.data()[pos]))
        })
        .collect();
    if held.is_empty() {
        return e;
    }
    let label = e.label().map(str::to_string);
    Error::new(
        e.kind(),
        e.op(),
        format!("{} (there, {})", e.message(), held.join(", ")),
    )
    .with_label(label)
}

/// Closes a label scope when dropped (see [`Tape::scope`]).
#[must_use = "the scope closes when this guard is dropped"]
pub struct ScopeGuard<'t, F: Real> {
    tape: &'t Tape<F>,
    prev: u32,
}

impl<F: Real> Drop for ScopeGuard<'_, F> {
    fn drop(&mut self) {
        self.tape.inner.borrow_mut().scopes.current = self.prev;
    }
}

/// The smallest buffer (in elements) [`Tape::reseat_as_views`] frees after
/// a concat copied it. Freed buffers are allocated afresh on the next
/// training step instead of coming from the pool; below 2¹⁵ elements
/// (128 KiB of `f32`: the L benchmark's [64 × 512] step outputs) that cost
/// is a larger share of a step than the memory is worth, so smaller inputs
/// keep their buffers.
pub(crate) const RESEAT_MIN: usize = 1 << 15;

/// Shape helper shared by tape code: the shape of a var's value.
pub(crate) fn shape_of<F: Real>(t: &Tensor<F>) -> Shape {
    Shape::from_slice(t.shape())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Releases node `id`'s value even though a backward rule reads it: the
    /// mistake an op makes when it does not declare what its rule reads.
    fn release_behind_the_rules_back(tape: &Tape<f64>, id: NodeId) {
        let mut inner = tape.inner.borrow_mut();
        let node = &mut inner.nodes[id as usize];
        node.released = true;
        let buf = node.value.take_data();
        inner.pool.give(buf);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "released [2, 3] value")]
    fn a_rule_reading_an_undeclared_released_value_panics_in_debug_builds() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::ones(&[2, 3]));
        let y = x.tanh(); // tanh's rule reads y
        let loss = y.sum();
        release_behind_the_rules_back(&tape, y.id());
        let _ = loss.backward();
    }

    #[test]
    fn release_since_keeps_what_rules_read_and_what_is_kept() {
        let tape = Tape::<f64>::new();
        let x = tape.var(Tensor::ones(&[2, 3]));
        let start = tape.len();
        let a = x * 2.0; // read by no rule
        let b = a.tanh(); // read by tanh's rule
        let c = b + 1.0; // read by no rule, but kept
        assert_eq!(tape.release_since(start, &[c]), 6);
        assert!(!a.release(), "a went back to the pool already");
        assert!(!b.release(), "b is pinned by tanh's rule");
        assert!(c.release(), "c was kept, so it was still held");
        let g = b.sum().backward();
        let want = 2.0 * (1.0 - 2f64.tanh().powi(2));
        assert!(g.wrt(x).data().iter().all(|&d| (d - want).abs() < 1e-15));
    }
}
