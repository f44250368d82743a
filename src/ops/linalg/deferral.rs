//! Deferred weight gradients: the T thin contributions G_tᵀ·A_t of a weight
//! used at every time step (the recurrent `h(t−1)·W_hhᵀ`), held as the
//! sweep meets them and summed as one GEMM over stacked rows — the same sum,
//! in one call that runs near the kernel's peak, as hand-written BPTT does.
//!
//! Which uses qualify is [`LinalgOp::deferrable`]; the math of a flush is
//! [`flush_deferred`]; [`Deferrals`] is the bookkeeping. Each (weight,
//! orientation) the sweep will defer to has an entry: how many G elements
//! its uses are still to bring (counted before the sweep), and while uses
//! are held, a block with their G_t as stacked rows — each G_t is copied in
//! as it arrives, while it is still in cache, and its own buffer goes
//! straight back to the pool for the next step's gradients — and the node
//! ids of their A_t. A block is sized for the uses still to come, at most
//! [`defer_block_cap`] of the weight (twice its size, within 2¹⁸..=2²¹
//! elements; or one G_t if that is larger), and is flushed when it is full,
//! when the next G_t would not fit, or when the sweep reaches the weight,
//! before the weight's own rule runs (all its uses come later in the graph,
//! so earlier in the sweep).
//!
//! Entries are few — one per recurrent weight and orientation — so they sit
//! in a short `Vec` searched linearly: no hashing on the sweep's path.
//!
//! In anomaly mode every flushed gradient is checked (the hook's `check`),
//! named by the last use it holds.

use super::sweep::Sweep;
use super::{dims2, reorder, right_operand_grad, LinalgOp};
use crate::error::Result;
use crate::ops::{GradSlot, Op};
use crate::tape::pool::Pool;
use crate::tape::Node;
use crate::tensor::gemm::MatRef;
use crate::tensor::Tensor;
use crate::Real;

/// Largest left-operand row count for which a weight gradient is deferred:
/// beyond it the per-use GEMM is already efficient and deferring would only
/// keep G_t alive longer.
const DEFER_MAX_ROWS: usize = 512;

/// The most G_t elements one weight's deferred uses hold before the sweep
/// flushes them (8 MiB in f32; one G_t if that is larger): bounds the
/// memory deferral holds on long sequences, while each flush still stacks
/// ≥ 1024 rows at the batch sizes where that memory matters (B = 64,
/// 4H = 2048: 16 steps). Measured at LSTM L, 2 threads (B = 32 per
/// worker): flushing every 2²⁰ elements made the step about 10% slower
/// than 2²¹ (a GEMM per flush, each reading and writing the whole
/// [H × 4H] gradient), for 18 MiB less peak memory.
const DEFER_FLUSH_ELEMS: usize = 1 << 21;

/// The fewest G_t elements a deferral block is sized for (1 MiB in f32),
/// when the uses still to come hold that many. Between this and
/// [`DEFER_FLUSH_ELEMS`] a block holds twice the weight's own size
/// ([`defer_block_cap`]): small weights flush from a block that stays in
/// cache while it fills and is read back (LSTM M, alternating runs: 2²¹ →
/// 2¹⁸ elements took the tape step from 13.61 to 13.07 ms, and 7.24 to 7.02
/// at B = 16), large ones stack enough rows that the flush's read and write
/// of the whole gradient stays small against its GEMM.
const DEFER_BLOCK_MIN: usize = 1 << 18;

/// The cap on one deferral block for a weight of `weight_elems` elements:
/// 2·weight_elems within [`DEFER_BLOCK_MIN`, `DEFER_FLUSH_ELEMS`].
fn defer_block_cap(weight_elems: usize) -> usize {
    weight_elems
        .saturating_mul(2)
        .clamp(DEFER_BLOCK_MIN, DEFER_FLUSH_ELEMS)
}

impl LinalgOp {
    /// Whether the gradient for input `k` of this node may be deferred and
    /// batched with the node's other uses of the same weight: a weight `b`
    /// (a leaf) multiplied by a small left operand, as the recurrent
    /// `h(t−1)·W_hhᵀ` is at every step. The T contributions Σ_t G_tᵀ·A_t
    /// then become one GEMM over the stacked rows [G_1; …; G_T]ᵀ·[A_1; …; A_T]
    /// instead of T thin ones — the same sum, in one call that runs near the
    /// kernel's peak. Returns `Some(tb)` when deferrable.
    fn deferrable<F: Real>(&self, k: usize, a: &Tensor<F>) -> Option<bool> {
        match *self {
            LinalgOp::Matmul { ta: false, tb, .. } if k == 1 && dims2(a).0 <= DEFER_MAX_ROWS => {
                Some(tb)
            }
            _ => None,
        }
    }
}

/// Adds Σ_t G_tᵀ·A_t (or Σ_t A_tᵀ·G_t when `!tb`) into `slot`, where `g`
/// holds the G_t already stacked (rows × n, in the order of `a`): the A_t
/// are stacked into one contiguous block too (unless there is one), so that
/// it is one GEMM.
fn flush_deferred<F: Real>(
    tb: bool,
    g: &[F],
    a: &[&Tensor<F>],
    slot: GradSlot<'_, F>,
    pool: &mut Pool<F>,
) -> Result<()> {
    let acc = !slot.fresh;
    let k = dims2(a[0]).1;
    let rows: usize = a.iter().map(|t| dims2(t).0).sum();
    if rows == 0 || k == 0 {
        // Empty batches contribute nothing: ∂L/∂W = 0.
        if !acc {
            slot.data.fill(F::zero());
        }
        return Ok(());
    }
    let n = slot.data.len() / k;
    let stacked = if a.len() == 1 {
        None
    } else {
        let mut buf = pool.take(rows * k, "backward")?;
        let mut at = 0;
        for t in a {
            buf[at..at + t.numel()].copy_from_slice(t.data());
            at += t.numel();
        }
        Some(buf)
    };
    {
        let gv = MatRef::row_major(&g[..rows * n], rows, n);
        let av = MatRef::row_major(stacked.as_deref().unwrap_or(a[0].data()), rows, k);
        right_operand_grad(tb, av, gv, slot);
    }
    if let Some(buf) = stacked {
        pool.give(buf);
    }
    Ok(())
}

/// `Some(tb)` if input `k`'s gradient from `node` may be deferred
/// ([`LinalgOp::deferrable`], with `node`'s left operand read from `nodes`).
pub(super) fn deferrable_use<F: Real>(node: &Node<F>, k: usize, nodes: &[Node<F>]) -> Option<bool> {
    match &node.op {
        Op::Linalg(o) => o.deferrable(k, &nodes[node.inputs[0] as usize].value),
        _ => None,
    }
}

/// One weight in one orientation (`tb`: used as `a·Wᵀ`). Uses as `a·W` and
/// as `a·Wᵀ` batch separately: their contributions are Aᵀ·G and Gᵀ·A, not
/// one stacked product.
struct Entry<F> {
    weight: usize,
    tb: bool,
    /// G elements the uses not yet deferred will bring.
    pending: usize,
    /// The held G_t as stacked rows (empty when none are held).
    block: Vec<F>,
    filled: usize,
    /// Node ids of the held uses (the products; their left operands are
    /// the A_t), in block order.
    uses: Vec<usize>,
}

/// The deferred weight gradients of one backward sweep.
pub(super) struct Deferrals<F> {
    entries: Vec<Entry<F>>,
    /// The largest weight id with an entry: the sweep checks no node above.
    max_weight: usize,
}

impl<F: Real> Deferrals<F> {
    /// Counts the deferrable uses among `nodes` (those up to the root),
    /// each under the weight and orientation the sweep will send it to.
    pub(super) fn count(nodes: &[Node<F>]) -> Self {
        let mut d = Deferrals {
            entries: Vec::new(),
            max_weight: 0,
        };
        for node in nodes {
            // Only products defer: every other node is passed over without
            // reading its inputs' nodes (scattered reads on a long tape).
            if !matches!(node.op, Op::Linalg(_)) {
                continue;
            }
            for (k, &j) in node.inputs.iter().enumerate() {
                if !nodes[j as usize].requires_grad {
                    continue;
                }
                if let Some(tb) = deferrable_use(node, k, nodes) {
                    // Where the sweep will send it (the same routing).
                    let (w, to_source) = reorder::target(nodes, node, k);
                    d.entry(w, tb != to_source).pending += node.value.numel();
                }
            }
        }
        d
    }

    fn entry(&mut self, weight: usize, tb: bool) -> &mut Entry<F> {
        let at = match self
            .entries
            .iter()
            .position(|e| e.weight == weight && e.tb == tb)
        {
            Some(at) => at,
            None => {
                self.max_weight = self.max_weight.max(weight);
                self.entries.push(Entry {
                    weight,
                    tb,
                    pending: 0,
                    block: Vec::new(),
                    filled: 0,
                    uses: Vec::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[at]
    }

    /// Flushes what is held for node `w` (a weight about to be reached by
    /// the sweep), in both orientations.
    pub(super) fn flush_weight(
        &mut self,
        w: usize,
        sweep: Sweep<'_, F>,
        slots: &mut [Option<Vec<F>>],
        pool: &mut Pool<F>,
    ) -> Result<()> {
        if w > self.max_weight {
            return Ok(());
        }
        for e in self.entries.iter_mut().filter(|e| e.weight == w) {
            e.flush(sweep, slots, pool)?;
        }
        Ok(())
    }

    /// Holds one use's contribution: `gy` = G_t of product node `at`, whose
    /// right operand's gradient goes to weight `w` (in orientation `tb`).
    /// `gy` goes back to the pool.
    pub(super) fn defer(
        &mut self,
        (w, tb): (usize, bool),
        gy: Vec<F>,
        at: usize,
        sweep: Sweep<'_, F>,
        slots: &mut [Option<Vec<F>>],
        pool: &mut Pool<F>,
    ) -> Result<()> {
        // (Counted before the sweep; a use the count missed still gets an
        // entry: the count only sizes blocks.)
        let e = self.entry(w, tb);
        let n = gy.len();
        // The G elements of this use and those still to come.
        let to_come = e.pending.max(n);
        e.pending = to_come - n;
        if e.block.len() - e.filled >= n {
            e.block[e.filled..e.filled + n].copy_from_slice(&gy);
            pool.give(gy);
        } else {
            // Does not fit (or nothing held): flush what is held; the next
            // block holds this use and those still to come, up to the cap —
            // and is this G_t itself when it would hold it alone (no copy).
            e.flush(sweep, slots, pool)?;
            let len = to_come
                .min(defer_block_cap(sweep.nodes[w].value.numel()))
                .max(n);
            if len == n {
                e.block = gy;
            } else {
                e.block = pool.take(len, "backward")?;
                e.block[..n].copy_from_slice(&gy);
                pool.give(gy);
            }
        }
        e.filled += n;
        e.uses.push(at);
        if e.filled == e.block.len() {
            e.flush(sweep, slots, pool)?;
        }
        Ok(())
    }

    /// Whether any use is still held (none is once the sweep has reached
    /// every weight).
    pub(super) fn holds_any(&self) -> bool {
        self.entries.iter().any(|e| !e.uses.is_empty())
    }
}

impl<F: Real> Entry<F> {
    /// Adds the held uses into the weight's gradient slot as one GEMM and
    /// returns the block to the pool (nothing if none are held). With a
    /// `check` (anomaly mode), the weight's gradient is checked after, named
    /// by the last use held.
    fn flush(
        &mut self,
        sweep: Sweep<'_, F>,
        slots: &mut [Option<Vec<F>>],
        pool: &mut Pool<F>,
    ) -> Result<()> {
        let nodes = sweep.nodes;
        let Some(&last) = self.uses.last() else {
            // Nothing held (a block exists only while a use is held).
            return Ok(());
        };
        let w = self.weight;
        let fresh = slots[w].is_none();
        if fresh {
            slots[w] = Some(pool.take(nodes[w].value.numel(), "backward")?);
        }
        let a: Vec<&Tensor<F>> = self
            .uses
            .iter()
            .map(|&u| &nodes[nodes[u].inputs[0] as usize].value)
            .collect();
        let data = slots[w].as_mut().expect("slot was just filled");
        flush_deferred(
            self.tb,
            &self.block[..self.filled],
            &a,
            GradSlot { data, fresh },
            pool,
        )?;
        if let Some(check) = sweep.check {
            check(slots[w].as_deref().expect("flushed into"), w, last)?;
        }
        pool.give(std::mem::take(&mut self.block));
        self.filled = 0;
        self.uses.clear();
        Ok(())
    }
}
