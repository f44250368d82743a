//! Layers built only from tape primitives: no fused cell op and no
//! hand-written backward anywhere here. Every gradient a layer produces is
//! the reverse sweep over the primitives it recorded, so BPTT through an
//! LSTM is literally `loss.backward()` on the unrolled graph.
//!
//! Parameters live in a [`ParamStore`](crate::ParamStore) under PyTorch's
//! `state_dict` names (`lstm.weight_ih_l0`, `lstm.bias_hh_l1_reverse`,
//! `decoder.weight`), initialised as PyTorch does, so numbers copied from a
//! PyTorch model give the same outputs. A layer value holds only keys; its
//! `forward` binds them on the tape it is given.
//!
//! - [`Linear`], [`Embedding`]: the readout `o = V h + c` and the lookup.
//! - [`Rnn`], [`Lstm`], [`Gru`]: recurrent layers (stacked, bidirectional,
//!   variable lengths), sharing one engine (`recurrent.rs`) and differing
//!   only in their cell (`cells.rs`).
//! - [`State`], [`StateTensors`]: recurrent state on a tape and detached
//!   between tapes (truncated BPTT: [`tbptt`]).

mod cells;
mod embedding;
mod linear;
mod recurrent;
mod state;
pub mod tbptt;

pub use embedding::Embedding;
pub use linear::Linear;
pub use recurrent::{
    Gru, Lstm, RecurrentConfig, Rnn, RunOptions, SeqOutput, PROJECTION_ELEMS, PROJECTION_MIN_ROWS,
};
pub use state::{State, StateTensors};

/// The uniform bound PyTorch uses for recurrent and linear layers: 1/√fan
/// (the public [`crate::init::uniform_bound`]).
pub(crate) fn init_bound(fan: usize) -> f64 {
    crate::init::uniform_bound(fan)
}

/// A seed for parameter `index` of a layer seeded with `seed`.
pub(crate) fn derive_seed(seed: u64, index: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        ^ 0x94D0_49BB_1331_11EB
}
