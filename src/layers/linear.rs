//! `Linear`: `y = x·Wᵀ + b` with W stored [out×in] as in PyTorch.

use super::derive_seed;
use crate::{ParamKey, ParamStore, Real, Tape, Var};

/// A fully connected layer, `y = x·Wᵀ + b` (the seed's readout
/// `o(t) = V h(t) + c`, with V = `weight`, c = `bias`).
///
/// Parameters `{name}.weight` [out×in] and `{name}.bias` `[out]`, initialised
/// U(−1/√in, 1/√in) like PyTorch's `nn.Linear`.
///
/// ```
/// use tapegrad::layers::Linear;
/// use tapegrad::{ParamStore, Tape, Tensor};
/// let mut store = ParamStore::<f64>::new();
/// let lin = Linear::new(&mut store, "decoder", 3, 2, true, 7);
/// let tape = Tape::new();
/// let x = tape.constant(Tensor::ones(&[5, 3]));
/// let y = lin.forward(&tape, &store, x);
/// assert_eq!(y.shape().as_slice(), &[5, 2]);
/// assert!(store.key("decoder.weight").is_some());
/// ```
#[derive(Debug, Clone)]
pub struct Linear {
    /// `{name}.weight`, [out×in].
    pub weight: ParamKey,
    /// `{name}.bias`, `[out]`, if the layer has one.
    pub bias: Option<ParamKey>,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
}

impl Linear {
    /// Creates the parameters in `store` under `name`.
    pub fn new<F: Real>(
        store: &mut ParamStore<F>,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        seed: u64,
    ) -> Self {
        let uniform =
            |shape: &[usize], i| crate::init::uniform_fan(shape, in_features, derive_seed(seed, i));
        let weight = store.insert(
            format!("{name}.weight"),
            uniform(&[out_features, in_features], 0),
        );
        let bias = bias.then(|| store.insert(format!("{name}.bias"), uniform(&[out_features], 1)));
        Linear {
            weight,
            bias,
            in_features,
            out_features,
        }
    }

    /// `y = x·Wᵀ + b` for `x` of shape [N×in].
    ///
    /// # Panics
    /// If `x` is not [N×in] (the message names the shapes).
    #[track_caller]
    pub fn forward<'t, F: Real>(
        &self,
        tape: &'t Tape<F>,
        store: &ParamStore<F>,
        x: Var<'t, F>,
    ) -> Var<'t, F> {
        let w = tape.param(store, self.weight);
        match self.bias {
            // b + x·Wᵀ in one addmm, the bias row broadcast over the rows.
            Some(b) => tape.param(store, b).addmm_t(x, w),
            None => x.matmul_t(w),
        }
    }
}
