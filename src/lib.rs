//! # tapegrad
//!
//! A reverse-mode, tape-based automatic differentiation engine for
//! recurrent networks on the CPU.
//!
//! ## What it is
//!
//! A [`Tape`] records every operation once, as a node, in the order it
//! happens. Because an op's inputs always exist before the op, that order is
//! a topological order, and [`Var::backward`] is a single reverse loop over
//! the list that hands each node's gradient to its op's rule
//! (symbol-to-number differentiation, as Torch does it). Unroll an RNN for T
//! steps and the tape holds the unrolled graph; its reverse sweep *is*
//! backpropagation through time — no recursion, no graph sorting, no special
//! case for recurrence.
//!
//! ```
//! use tapegrad::{Reduction, Tape, Tensor};
//!
//! // h(t) = tanh(x(t)·Uᵀ + h(t−1)·Wᵀ + b), loss = Σ_t CE(h(t)·Vᵀ, y(t))
//! let tape = Tape::<f64>::new();
//! let u = tape.var(Tensor::randn(&[4, 3], 1));
//! let w = tape.var(Tensor::randn(&[4, 4], 2));
//! let b = tape.var(Tensor::zeros(&[4]));
//! let v = tape.var(Tensor::randn(&[2, 4], 3));
//! let mut h = tape.constant(Tensor::zeros(&[1, 4]));
//! let mut loss = tape.scalar(0.0);
//! for t in 0..3 {
//!     let _s = tape.scope_at("t", t);
//!     let x = tape.constant(Tensor::randn(&[1, 3], 10 + t as u64));
//!     h = (x.matmul_t(u) + h.matmul_t(w) + b).tanh();
//!     loss = loss + h.matmul_t(v).cross_entropy(&[t % 2], Reduction::Sum);
//! }
//! let grads = loss.backward();            // BPTT: one reverse sweep
//! assert_eq!(grads.wrt(w).shape(), &[4, 4]);
//! assert!(tape.listing().contains("t=2"));
//! ```
//!
//! ## The pieces
//!
//! - [`Tensor`]: dense row-major values of any [`Real`] (`f32`, `f64`).
//! - [`Tape`], [`Var`], [`Grads`]: recording, handles, the reverse sweep.
//!   Values no backward rule reads can be released early
//!   ([`Var::release`], [`Tape::release_unneeded`]); the layers do so, so
//!   a training step keeps about what hand-written BPTT keeps.
//!   [`Tape::checkpoint`] records a function as one node that is re-run in
//!   backward (gradient checkpointing: O(√T) memory for long sequences).
//! - `ops` (methods on [`Var`]): arithmetic with broadcasting, matmul,
//!   activations, reductions, reshape/concat/chunk/slice/gather, softmax
//!   family, losses, dropout, select — each op's forward and backward in one
//!   place. Scalars combine with vars in both orders (`x * 3.0`,
//!   `1.0 - x` for f32 and f64); code generic over `F` writes
//!   `x.scale(3.0)`, `x.shift(1.0)`.
//! - [`ParamStore`], [`ParamKey`]: parameters that outlive a tape.
//! - [`layers`]: `Linear`, `Embedding`, `Rnn`, `Lstm`, `Gru` and the LSTM
//!   variants `ProjLstm`, `LayerNormLstm`, `PeepholeLstm` from the
//!   primitives, with PyTorch's parameter names; any recurrent cell of your
//!   own through [`layers::Cell`] (one `step` written with tape ops), run by
//!   the same engine with stacking, directions, lengths, checkpointing over
//!   time ([`layers::Checkpointing`]) and truncated BPTT, and the
//!   truncated-BPTT training loop for any model closure
//!   ([`layers::tbptt::Tbptt::train`]).
//! - [`optim`]: SGD, Adagrad, RMSprop, Adam/AdamW with exportable state,
//!   gradient clipping, learning-rate schedules.
//! - [`checkpoint`]: safetensors files with PyTorch `state_dict` names, the
//!   optimizer state and the step; loading is checked and all-or-nothing.
//! - [`models`]: a character-level LSTM language model ([`models::CharModel`]:
//!   training, evaluation, sampling) and an encoder–decoder with greedy
//!   decoding ([`models::Seq2Seq`]).
//! - [`parallel`]: data-parallel training over batch shards, one tape per
//!   core, gradients summed ([`DataParallel`]).
//! - [`distributed`]: the same data-parallel training across processes and
//!   hosts — an all-reduce of the gradients per step — over MPI with the
//!   `mpi` feature (`mpirun -np N …`).
//! - [`gradcheck`]: finite-difference checks of any function of vars, or
//!   of a model's parameters in a [`ParamStore`]
//!   ([`gradcheck::gradcheck_params`], [`gradcheck::gradcheck_store`]).
//! - [`init`]: PyTorch's initialisers (uniform ±1/√fan, Xavier/Glorot,
//!   orthogonal) for weights you build yourself.
//! - [`forward`]: forward mode — the [`forward::Dual`] scalar and
//!   Jacobian–vector products of any tape program.
//! - [`second_order`]: Hessian–vector and Gauss–Newton–vector products
//!   through time, on [`ParamVec`]s (vectors shaped like the parameters).
//!
//! ## Error policy
//!
//! One rule, followed everywhere:
//!
//! - **Programmer errors panic** with a message naming the op, the tape
//!   label and the shapes: a shape mismatch inside an expression, operands
//!   from two tapes, `backward()` on a non-scalar, a stale parameter key.
//!   This keeps formulas free of `?` (`(x.matmul_t(w) + b).tanh()`), the way
//!   slice indexing and ndarray behave. Each such method documents it under
//!   `# Panics`.
//! - **Data-driven failures return `Result<_, `[`Error`]`>`**: building a
//!   tensor from a `Vec`, allocating an absurd shape, reading a checkpoint.
//!   The panicking entry points a caller may want to probe at run time have
//!   a `try_` form ([`Tensor::try_full`], [`Tape::try_param`],
//!   [`Var::try_backward`], [`Var::try_retain_grad`], [`Grads::try_wrt`],
//!   [`models::CharModel::try_new`]). Panics carry the caller's location
//!   (`#[track_caller]`), not a line inside tapegrad.
//!
//! Either way the message is the [`Error`]'s `Display`, and its
//! [`ErrorKind`] says which class it is. There is no undefined behaviour:
//! the crate denies `unsafe` except in `tensor/gemm.rs`, whose two `unsafe`
//! blocks call the GEMM kernels (`gemm`, and `matrixmultiply` for the
//! shapes where its packing is faster) after checking in safe code that
//! every index they can touch lies inside the borrowed slices.
//!
//! ## Numerics
//!
//! NaN and ±∞ propagate as IEEE says and nothing panics on them, unless
//! anomaly detection is on ([`Tape::set_anomaly_detection`]), which names
//! the first op that produced one. A zero incoming gradient is a
//! structural zero: the untaken branch of [`Var::select`] cannot leak NaN.

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

pub mod checkpoint;
pub mod distributed;
mod error;
pub mod forward;
pub mod gradcheck;
pub mod init;
pub mod layers;
pub mod models;
mod nonlinearity;
mod ops;
pub mod optim;
pub mod parallel;
mod param_vec;
mod params;
mod real;
pub mod reference;
pub mod second_order;
mod tape;
pub mod tensor;

pub use error::{Error, ErrorKind, Result};
pub use nonlinearity::Nonlinearity;
pub use ops::{dropout_mask, Reduction};
pub use parallel::DataParallel;
pub use param_vec::ParamVec;
pub use params::{Param, ParamKey, ParamStore};
pub use real::Real;
pub use tape::{Grads, ScopeGuard, Tape, Var};
pub use tensor::gemm::{num_threads, set_num_threads};
pub use tensor::{Shape, Tensor};

/// The README's example, compiled and run as a doc-test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
