//! Deferred weight gradients: the reverse sweep's bookkeeping that turns the
//! T thin contributions G_tᵀ·A_t of a weight used at every time step into
//! one GEMM over stacked rows (the math and the GEMM are
//! `ops::linalg::flush_deferred`; which uses qualify is
//! `LinalgOp::deferrable`).
//!
//! Each (weight, orientation) the sweep will defer to has an entry: how many
//! G elements its uses are still to bring (counted before the sweep), and
//! while uses are held, a block with their G_t as stacked rows — each G_t is
//! copied in as it arrives, while it is still in cache, and its own buffer
//! goes straight back to the pool for the next step's gradients — and the
//! node ids of their A_t. A block is sized for the uses still to come, at
//! most `ops::linalg::defer_block_cap` of the weight (twice its size, within
//! 2¹⁸..=2²¹ elements; or one G_t if that is larger), and is flushed
//! when it is full, when the next G_t would not fit, or when the sweep
//! reaches the weight, before the weight's own rule runs (all its uses come
//! later in the graph, so earlier in the sweep).
//!
//! Entries are few — one per recurrent weight and orientation — so they sit
//! in a short `Vec` searched linearly: no hashing on the sweep's path.

use super::backward::grad_target;
use super::pool::Pool;
use super::Node;
use crate::error::Result;
use crate::ops::linalg::{defer_block_cap, flush_deferred};
use crate::ops::GradSlot;
use crate::tensor::Tensor;
use crate::Real;

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
    /// Node ids of the held uses' left operands A_t, in block order.
    a: Vec<usize>,
}

/// The deferred weight gradients of one backward sweep.
pub(super) struct Deferrals<F> {
    entries: Vec<Entry<F>>,
    /// The largest weight id with an entry: the sweep checks no node above.
    max_weight: usize,
}

impl<F: Real> Deferrals<F> {
    /// Counts the deferrable uses among `nodes` (those up to the root);
    /// `enabled: false` (anomaly mode) defers nothing.
    pub(super) fn count(nodes: &[Node<F>], enabled: bool) -> Self {
        let mut d = Deferrals {
            entries: Vec::new(),
            max_weight: 0,
        };
        if !enabled {
            return d;
        }
        for node in nodes {
            let Some(&a) = node.inputs.first() else {
                continue;
            };
            for (k, &j) in node.inputs.iter().enumerate() {
                if !nodes[j as usize].requires_grad {
                    continue;
                }
                if let Some(tb) = node.op.deferrable(k, &nodes[a as usize].value) {
                    // Where the sweep will send it (the same routing).
                    let (w, to_source) = grad_target(nodes, node, k);
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
                    a: Vec::new(),
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
        nodes: &[Node<F>],
        slots: &mut [Option<Vec<F>>],
        pool: &mut Pool<F>,
    ) -> Result<()> {
        if w > self.max_weight {
            return Ok(());
        }
        for e in self.entries.iter_mut().filter(|e| e.weight == w) {
            e.flush(nodes, slots, pool)?;
        }
        Ok(())
    }

    /// Holds one use's contribution: `gy` = G_t of a product whose right
    /// operand is weight `w` (in orientation `tb`) and whose left operand is
    /// node `a`. `gy` goes back to the pool.
    pub(super) fn defer(
        &mut self,
        (w, tb): (usize, bool),
        gy: Vec<F>,
        a: usize,
        nodes: &[Node<F>],
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
            e.flush(nodes, slots, pool)?;
            let len = to_come.min(defer_block_cap(nodes[w].value.numel())).max(n);
            if len == n {
                e.block = gy;
            } else {
                e.block = pool.take(len, "backward")?;
                e.block[..n].copy_from_slice(&gy);
                pool.give(gy);
            }
        }
        e.filled += n;
        e.a.push(a);
        if e.filled == e.block.len() {
            e.flush(nodes, slots, pool)?;
        }
        Ok(())
    }
}

impl<F: Real> Entry<F> {
    /// Adds the held uses into the weight's gradient slot as one GEMM and
    /// returns the block to the pool (nothing if none are held).
    fn flush(
        &mut self,
        nodes: &[Node<F>],
        slots: &mut [Option<Vec<F>>],
        pool: &mut Pool<F>,
    ) -> Result<()> {
        if self.a.is_empty() {
            // Nothing held (a block exists only while a use is held).
            return Ok(());
        }
        let w = self.weight;
        let fresh = slots[w].is_none();
        if fresh {
            slots[w] = Some(pool.take(nodes[w].value.numel(), "backward")?);
        }
        let a: Vec<&Tensor<F>> = self.a.iter().map(|&j| &nodes[j].value).collect();
        let data = slots[w].as_mut().expect("slot was just filled");
        flush_deferred(
            self.tb,
            &self.block[..self.filled],
            &a,
            GradSlot { data, fresh },
            pool,
        )?;
        pool.give(std::mem::take(&mut self.block));
        self.filled = 0;
        self.a.clear();
        Ok(())
    }
}
