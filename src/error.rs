//! The crate's one error type.
//!
//! tapegrad follows a single policy (stated in the crate docs): *programmer
//! errors* inside an expression — a shape mismatch in `a.matmul(b)`, mixing two
//! tapes, `backward()` on a non-scalar — panic with the message of an [`Error`],
//! as slice indexing does; *data-driven* failures — building a tensor from a
//! `Vec`, looking up a parameter key, reading a checkpoint — return
//! `Result<_, Error>`, and the few panicking entry points a caller may want to
//! probe have a `try_` form. Every message names the operation, the tape label
//! where there is one, and the shapes involved.

use std::fmt;

/// What went wrong, with enough context to find the place.
///
/// ```
/// use tapegrad::{Error, ErrorKind, Tensor};
/// let err = Tensor::<f32>::from_vec(vec![1.0, 2.0, 3.0], &[2, 2]).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Shape);
/// assert!(err.to_string().contains("[2, 2]"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    op: String,
    label: Option<String>,
    message: String,
}

/// The class of an [`Error`], for matching in code and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Shapes do not fit the operation (including a bad axis or range).
    Shape,
    /// A shape whose element count overflows `usize`, or an allocation that
    /// cannot be satisfied.
    Size,
    /// Two operands (or a gradient set and a var) come from different tapes,
    /// or from an earlier use of a tape that has since been reset.
    ForeignTape,
    /// A parameter key that does not belong to this store (removed, or from
    /// another store).
    StaleKey,
    /// A gradient was asked for a var that did not request it.
    NoGradient,
    /// A var whose value was released ([`crate::Var::release`]) was used
    /// as an operand or read.
    Released,
    /// An invalid argument that is not about shapes (a probability outside
    /// [0, 1), a class index out of range, a bad option).
    InvalidArgument,
    /// A non-finite value found by the anomaly checker.
    NonFinite,
    /// A malformed or mismatching file (checkpoints).
    Format,
    /// An I/O failure.
    Io,
}

impl Error {
    /// Builds an error of `kind` raised by `op`.
    pub fn new(kind: ErrorKind, op: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            kind,
            op: op.into(),
            label: None,
            message: message.into(),
        }
    }

    /// A shape error raised by `op`.
    pub(crate) fn shape(op: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Shape, op, message)
    }

    /// Attaches the tape label of the node being recorded.
    pub(crate) fn with_label(mut self, label: Option<String>) -> Self {
        if self.label.is_none() {
            self.label = label.filter(|l| !l.is_empty());
        }
        self
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that raised it (`"matmul"`, `"backward"`, `"checkpoint"`, …).
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The tape label (scope path) of the node, where there is one.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The message without the op and label prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tapegrad: {}", self.op)?;
        if let Some(label) = &self.label {
            write!(f, " at `{label}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::new(ErrorKind::Io, "io", e.to_string())
    }
}

/// Shorthand for `Result<T, tapegrad::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Unwraps `r`, panicking with the error's message: the panicking half of the
/// error policy.
#[track_caller]
pub(crate) fn or_panic<T>(r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Panics with an [`Error`] of `kind` raised by `op`: the panicking half of
/// the error policy where there is no `Result` to unwrap.
#[track_caller]
pub(crate) fn fail(kind: ErrorKind, op: &str, message: impl Into<String>) -> ! {
    panic!("{}", Error::new(kind, op, message))
}
