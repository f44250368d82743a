//! The RNN cell's nonlinearity φ, shared by the tape layers and the
//! hand-derived reference so both sides mean the same function.

/// φ in `h(t) = φ(U x(t) + W h(t−1) + b)`.
///
/// ```
/// use tapegrad::Nonlinearity;
/// assert_eq!(Nonlinearity::default(), Nonlinearity::Tanh);
/// assert_eq!(Nonlinearity::Relu.apply(-2.0f64), 0.0);
/// assert_eq!(Nonlinearity::Tanh.derivative_from_output(0.5f64), 0.75);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Nonlinearity {
    /// tanh (PyTorch's default); φ' = 1 − h².
    #[default]
    Tanh,
    /// max(·, 0); φ' = 1 where h > 0, else 0.
    Relu,
}

impl Nonlinearity {
    /// φ(a).
    pub fn apply<F: num_traits::Float>(self, a: F) -> F {
        match self {
            Nonlinearity::Tanh => a.tanh(),
            Nonlinearity::Relu => a.max(F::zero()),
        }
    }

    /// φ'(a) written in terms of h = φ(a).
    pub fn derivative_from_output<F: num_traits::Float>(self, h: F) -> F {
        match self {
            Nonlinearity::Tanh => F::one() - h * h,
            Nonlinearity::Relu => {
                if h > F::zero() {
                    F::one()
                } else {
                    F::zero()
                }
            }
        }
    }

    /// PyTorch's name for it (`"tanh"`, `"relu"`).
    pub fn name(self) -> &'static str {
        match self {
            Nonlinearity::Tanh => "tanh",
            Nonlinearity::Relu => "relu",
        }
    }
}
