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
//! - [`Cell`]: the open cell interface — one time step written with tape
//!   ops, plus a declaration of its gates, states and parameters
//!   (`cell.rs`). [`Recurrent`] runs any cell stacked, bidirectional, with
//!   variable lengths (`recurrent.rs`).
//! - [`Rnn`], [`Lstm`], [`Gru`]: [`Recurrent`] with the built-in cells
//!   [`RnnCell`], [`LstmCell`], [`GruCell`] (`rnn.rs`, `lstm.rs`, `gru.rs`).
//! - LSTM variants, one file each: [`ProjLstm`] (PyTorch's `proj_size`,
//!   `proj_lstm.rs`), [`LayerNormLstm`] (Ba et al. 2016, `ln_lstm.rs`),
//!   [`PeepholeLstm`] (Gers & Schmidhuber 2000, `peephole_lstm.rs`).
//! - [`MinGru`], [`MinLstm`]: the cells without recurrent weight of Feng et
//!   al. 2024 (`mingru.rs`, `minlstm.rs`), run stepwise or over the whole
//!   sequence as one scan node ([`ScanMode`], [`Cell::sequence`]).
//! - [`State`], [`StateTensors`]: recurrent state on a tape and detached
//!   between tapes (truncated BPTT: [`tbptt`]).

mod cell;
mod embedding;
mod gru;
mod linear;
mod ln_lstm;
mod lstm;
mod mingru;
mod minlstm;
mod peephole_lstm;
mod proj_lstm;
mod recurrent;
mod rnn;
mod state;
pub mod tbptt;

pub use cell::{Cell, CellSpec, Init, ParamSpec, Sequence, StateSpec, Step, StepPosition};
pub use embedding::Embedding;
pub use gru::{Gru, GruCell};
pub use linear::Linear;
pub use ln_lstm::{LayerNormLstm, LayerNormLstmCell};
pub use lstm::{Lstm, LstmCell};
pub use mingru::{MinGru, MinGruCell, ScanMode};
pub use minlstm::{MinLstm, MinLstmCell};
pub use peephole_lstm::{PeepholeLstm, PeepholeLstmCell};
pub use proj_lstm::{ProjLstm, ProjLstmCell};
pub use recurrent::{
    Checkpointing, LockedDropout, Recurrent, RecurrentConfig, RunOptions, SeqOutput,
};
pub use rnn::{Rnn, RnnCell};
pub use state::{State, StateTensors};

/// A seed for parameter `index` of a layer seeded with `seed` (shared with
/// the reference).
pub(crate) use crate::tensor::derive_seed;
