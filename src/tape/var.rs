//! [`Var`]: a `Copy` handle to one node of a tape, and the operator
//! overloads that let formulas read like math.
//!
//! The methods that record operations live with their backward rules in
//! `crate::ops::*`; this file holds what every var has (value, shape, label,
//! gradient flags, backward entry points) and the `std::ops` impls, which
//! only route to those methods.

use super::{NodeId, Tape};
use crate::error::{fail, or_panic, Result};
use crate::tensor::{Shape, Tensor};
use crate::Real;
use std::cell::Ref;
use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};

/// A handle to a value recorded on a [`Tape`]: a reference to the tape and
/// a node index. Copying a var copies the handle, not the value.
///
/// ```
/// use tapegrad::{Tape, Tensor};
/// let tape = Tape::<f32>::new();
/// let a = tape.var(Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
/// let b = tape.constant(Tensor::from_vec(vec![3.0, 4.0], &[2]).unwrap());
/// let y = (a * b + 1.0).sum();
/// assert_eq!(y.item(), 13.0); // (1·3 + 1) + (2·4 + 1)
/// assert_eq!(y.backward().wrt(a).data(), &[3.0, 4.0]);
/// ```
#[derive(Clone, Copy)]
pub struct Var<'t, F: Real> {
    tape: &'t Tape<F>,
    id: NodeId,
}

impl<'t, F: Real> Var<'t, F> {
    pub(crate) fn new(tape: &'t Tape<F>, id: NodeId) -> Self {
        Var { tape, id }
    }

    /// The node index on the tape (push order).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The tape this var lives on.
    pub fn tape(&self) -> &'t Tape<F> {
        self.tape
    }

    pub(crate) fn is_on(&self, tape: &Tape<F>) -> bool {
        std::ptr::eq(self.tape, tape)
    }

    /// A borrow of the value. Drop it before recording the next op (the
    /// tape is a `RefCell`: recording while it is held panics).
    ///
    /// ```
    /// let tape = tapegrad::Tape::<f64>::new();
    /// let x = tape.constant(tapegrad::Tensor::ones(&[3]));
    /// assert_eq!(x.value().data(), &[1.0; 3]);
    /// ```
    ///
    /// # Panics
    /// If the value was released ([`Var::release`]).
    #[track_caller]
    pub fn value(&self) -> Ref<'t, Tensor<F>> {
        self.check_not_released("value");
        Ref::map(self.tape.inner.borrow(), |i| {
            &i.nodes[self.id as usize].value
        })
    }

    #[track_caller]
    fn check_not_released(&self, what: &str) {
        let inner = self.tape.inner.borrow();
        let node = &inner.nodes[self.id as usize];
        if node.released {
            let e = crate::Error::new(
                crate::ErrorKind::Released,
                what,
                format!(
                    "var %{} ({:?}, recorded at '{}') had its value released",
                    self.id,
                    node.value.shape(),
                    inner.scopes.path(node.label)
                ),
            );
            drop(inner);
            fail(e);
        }
    }

    /// Frees this var's value now, if no backward rule recorded so far reads
    /// it; returns whether it did. Gradients are unaffected: backward routes
    /// through the node by its shape.
    ///
    /// PyTorch frees an intermediate when its last Python reference goes
    /// and autograd did not save it; a tape cannot see references, so the
    /// code that knows a value is dead says so. The recurrent layers release
    /// each step's pre-activations, gate slices and partial sums this way,
    /// which keeps a step's memory to what BPTT needs (docs/performance.md).
    /// Values stay when a rule reads them (tanh's output, a product's
    /// factors, a matmul's operands), as do bound parameters.
    ///
    /// # Panics
    /// A later use of a released var as an operand, or [`Var::value`], panics
    /// with [`crate::ErrorKind::Released`] naming it.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(0.5));
    /// let z = x * 3.0;       // tanh's backward reads tanh's output, not z
    /// let y = z.tanh();
    /// assert!(z.release());   // so z's buffer goes back to the pool now
    /// assert!(!y.release());  // tanh's backward reads y: kept
    /// let g = (y * 2.0).backward();
    /// assert!((g.wrt(x).item() - 6.0 * (1.0 - 1.5f64.tanh().powi(2))).abs() < 1e-12);
    /// ```
    pub fn release(self) -> bool {
        self.tape.release_node(self.id)
    }

    /// A copy of the value.
    pub fn to_tensor(&self) -> Tensor<F> {
        self.value().clone()
    }

    /// The value's shape.
    pub fn shape(&self) -> Shape {
        self.tape.with_value(self.id, super::shape_of)
    }

    /// The single value of a one-element var.
    ///
    /// # Panics
    /// If the value has more than one element.
    #[track_caller]
    pub fn item(&self) -> F {
        self.value().item()
    }

    /// The label path the node was recorded under (`""` outside any scope).
    pub fn label(&self) -> String {
        self.tape.label_of(self.id)
    }

    /// Whether backward computes a gradient that flows through this var.
    pub fn requires_grad(&self) -> bool {
        self.tape.inner.borrow().nodes[self.id as usize].requires_grad
    }

    /// Asks backward to keep this intermediate var's gradient (PyTorch's
    /// `retain_grad`). Returns the var for chaining.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(0.5));
    /// let h = x.tanh().retain_grad();
    /// let g = (h * 3.0).backward();
    /// assert_eq!(g.wrt(h).item(), 3.0);
    /// ```
    pub fn retain_grad(self) -> Self {
        self.tape.inner.borrow_mut().nodes[self.id as usize].retain = true;
        self
    }

    /// The same value as a constant: the gradient stops here. Used to carry
    /// state from one truncated-BPTT chunk into the next.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::scalar(2.0));
    /// let y = x * x.detach();          // d/dx treats the second factor as 2
    /// assert_eq!(y.backward().wrt(x).item(), 2.0);
    /// ```
    #[track_caller]
    pub fn detach(self) -> Var<'t, F> {
        self.check_not_released("detach");
        let value = {
            let mut inner = self.tape.inner.borrow_mut();
            let inner = &mut *inner;
            let src = &inner.nodes[self.id as usize].value;
            let buf = or_panic(inner.pool.copy_of(src.data(), "detach"));
            Tensor::from_parts(src.shape().into(), buf)
        };
        self.tape.constant(value)
    }

    /// Reverse sweep from this scalar: the gradients of every leaf that
    /// requires one, and of every var marked with [`Var::retain_grad`].
    ///
    /// The tape keeps its values until it is reset, so backward may run
    /// again (from this or another root) and gives bitwise the same
    /// gradients; each call returns its own [`Grads`](super::Grads).
    ///
    /// # Panics
    /// If the var has more than one element (see [`Var::backward_with`] and
    /// [`Var::try_backward`]).
    #[track_caller]
    pub fn backward(self) -> super::Grads<F> {
        or_panic(self.try_backward())
    }

    /// [`Var::backward`] returning an error instead of panicking (on a
    /// non-scalar, or a non-finite gradient in anomaly mode).
    ///
    /// ```
    /// use tapegrad::{ErrorKind, Tape, Tensor};
    /// let tape = Tape::<f32>::new();
    /// let x = tape.var(Tensor::ones(&[2]));
    /// assert_eq!(x.try_backward().unwrap_err().kind(), ErrorKind::Shape);
    /// ```
    pub fn try_backward(self) -> Result<super::Grads<F>> {
        let n = self.tape.with_value(self.id, |v| v.numel());
        if n != 1 {
            return Err(crate::Error::shape(
                "backward",
                format!(
                    "needs a scalar (one element) to start from, got shape {:?}; use backward_with(seed)",
                    self.shape().as_slice()
                ),
            )
            .with_label(Some(self.label())));
        }
        self.tape.backward_from(self.id, None)
    }

    /// Reverse sweep seeded with `seed` = ∂L/∂self (a vector-Jacobian
    /// product), for a var of any shape.
    ///
    /// # Panics
    /// If `seed`'s shape differs from the var's.
    ///
    /// ```
    /// use tapegrad::{Tape, Tensor};
    /// let tape = Tape::<f64>::new();
    /// let x = tape.var(Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
    /// let y = x * 3.0;
    /// let g = y.backward_with(Tensor::from_vec(vec![1.0, 10.0], &[2]).unwrap());
    /// assert_eq!(g.wrt(x).data(), &[3.0, 30.0]);
    /// ```
    #[track_caller]
    pub fn backward_with(self, seed: Tensor<F>) -> super::Grads<F> {
        or_panic(self.try_backward_with(seed))
    }

    /// [`Var::backward_with`] returning an error for a wrong-shaped seed.
    pub fn try_backward_with(self, seed: Tensor<F>) -> Result<super::Grads<F>> {
        let shape = self.shape();
        if seed.shape() != shape.as_slice() {
            return Err(crate::Error::shape(
                "backward",
                format!(
                    "seed of shape {:?} for a var of shape {:?}",
                    seed.shape(),
                    shape.as_slice()
                ),
            )
            .with_label(Some(self.label())));
        }
        self.tape.backward_from(self.id, Some(seed))
    }
}

/// The node id, the tape's id and the value — or, for a released var, its
/// shape (printing never panics).
///
/// ```
/// use tapegrad::{Tape, Tensor};
/// let tape = Tape::<f64>::new();
/// let x = tape.var(Tensor::ones(&[2]));
/// let z = x * 3.0;
/// let _y = z.tanh();
/// assert!(format!("{x:?}").starts_with(&format!("Var(#0 on tape {}, ", tape.id())));
/// assert!(z.release());
/// assert_eq!(format!("{z:?}"), format!("Var(#1 on tape {}, released [2])", tape.id()));
/// ```
impl<F: Real> fmt::Debug for Var<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(inner) = self.tape.inner.try_borrow() else {
            return write!(
                f,
                "Var(#{} on tape {}, <recording>)",
                self.id,
                self.tape.id()
            );
        };
        let node = &inner.nodes[self.id as usize];
        if node.released {
            write!(
                f,
                "Var(#{} on tape {}, released {:?})",
                self.id,
                self.tape.id(),
                node.value.shape()
            )
        } else {
            write!(
                f,
                "Var(#{} on tape {}, {:?})",
                self.id,
                self.tape.id(),
                node.value
            )
        }
    }
}

// ----- operator overloads: routing only ------------------------------------

macro_rules! binary_operator {
    ($trait:ident, $method:ident, $call:ident) => {
        impl<'t, F: Real> $trait<Var<'t, F>> for Var<'t, F> {
            type Output = Var<'t, F>;
            #[track_caller]
            fn $method(self, rhs: Var<'t, F>) -> Var<'t, F> {
                Var::$call(self, rhs)
            }
        }
        impl<'t, F: Real> $trait<&Var<'t, F>> for &Var<'t, F> {
            type Output = Var<'t, F>;
            #[track_caller]
            fn $method(self, rhs: &Var<'t, F>) -> Var<'t, F> {
                Var::$call(*self, *rhs)
            }
        }
        impl<'t, F: Real> $trait<&Var<'t, F>> for Var<'t, F> {
            type Output = Var<'t, F>;
            #[track_caller]
            fn $method(self, rhs: &Var<'t, F>) -> Var<'t, F> {
                Var::$call(self, *rhs)
            }
        }
        impl<'t, F: Real> $trait<Var<'t, F>> for &Var<'t, F> {
            type Output = Var<'t, F>;
            #[track_caller]
            fn $method(self, rhs: Var<'t, F>) -> Var<'t, F> {
                Var::$call(*self, rhs)
            }
        }
    };
}

binary_operator!(Add, add, add);
binary_operator!(Sub, sub, sub);
binary_operator!(Mul, mul, mul);
binary_operator!(Div, div, div);

impl<'t, F: Real> Neg for Var<'t, F> {
    type Output = Var<'t, F>;
    fn neg(self) -> Var<'t, F> {
        Var::neg(self)
    }
}

impl<'t, F: Real> Neg for &Var<'t, F> {
    type Output = Var<'t, F>;
    fn neg(self) -> Var<'t, F> {
        Var::neg(*self)
    }
}

// Scalars on either side, for the concrete element types (a generic `F` on
// the left would break the orphan rule).
macro_rules! scalar_operators {
    ($t:ty) => {
        impl<'t> Add<$t> for Var<'t, $t> {
            type Output = Var<'t, $t>;
            fn add(self, rhs: $t) -> Var<'t, $t> {
                self.add_scalar(rhs)
            }
        }
        impl<'t> Sub<$t> for Var<'t, $t> {
            type Output = Var<'t, $t>;
            fn sub(self, rhs: $t) -> Var<'t, $t> {
                self.add_scalar(-rhs)
            }
        }
        impl<'t> Mul<$t> for Var<'t, $t> {
            type Output = Var<'t, $t>;
            fn mul(self, rhs: $t) -> Var<'t, $t> {
                self.mul_scalar(rhs)
            }
        }
        impl<'t> Div<$t> for Var<'t, $t> {
            type Output = Var<'t, $t>;
            fn div(self, rhs: $t) -> Var<'t, $t> {
                self.mul_scalar(1.0 / rhs)
            }
        }
        impl<'t> Add<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            fn add(self, rhs: Var<'t, $t>) -> Var<'t, $t> {
                rhs.add_scalar(self)
            }
        }
        impl<'t> Sub<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            fn sub(self, rhs: Var<'t, $t>) -> Var<'t, $t> {
                rhs.mul_scalar(-1.0).add_scalar(self)
            }
        }
        impl<'t> Mul<Var<'t, $t>> for $t {
            type Output = Var<'t, $t>;
            fn mul(self, rhs: Var<'t, $t>) -> Var<'t, $t> {
                rhs.mul_scalar(self)
            }
        }
    };
}

scalar_operators!(f32);
scalar_operators!(f64);
