//! Parameter initialisers, as PyTorch's `torch.nn.init` and its layers'
//! defaults, for models (and custom cells) that build their own weights.
//!
//! - [`uniform_bound`] / [`uniform_fan`]: U(−1/√fan, 1/√fan), the default
//!   of PyTorch's `Linear` (fan = in features) and `RNN`/`LSTM`/`GRU`
//!   (fan = hidden size, every weight and bias). tapegrad's own layers
//!   draw their weights with exactly this bound.
//! - [`xavier_uniform`], [`xavier_normal`]: Glorot & Bengio's
//!   U(±gain·√(6/(fan_in + fan_out))) and N(0, gain²·2/(fan_in + fan_out)).
//! - [`orthogonal`]: a (semi-)orthogonal matrix, the usual choice for a
//!   recurrent weight W_hh (Saxe et al.): its singular values are all
//!   `gain`, so h·W_hhᵀ neither grows nor shrinks h at initialisation.
//!
//! Shapes follow PyTorch's [out × in] weight layout: fan_out = `shape[0]`,
//! fan_in = `shape[1]` (times the size of any further axes). Each function
//! is deterministic in its seed. To replace a layer's weight, write into
//! the store:
//!
//! ```
//! use tapegrad::layers::{Lstm, RecurrentConfig};
//! use tapegrad::{init, ParamStore};
//! let mut store = ParamStore::<f32>::new();
//! let _lstm = Lstm::new(&mut store, "lstm", RecurrentConfig::new(8, 16), 0);
//! let w_hh = store.key("lstm.weight_hh_l0").unwrap();
//! // one orthogonal [H × H] block per gate (i, f, g, o), stacked: [4H × H]
//! let blocks: Vec<f32> = (0..4)
//!     .flat_map(|g| init::orthogonal::<f32>(&[16, 16], 1.0, 100 + g).data().to_vec())
//!     .collect();
//! store.get_mut(w_hh).data_mut().copy_from_slice(&blocks);
//! ```

use crate::error::Error;
use crate::{Real, Tensor};

/// The bound of PyTorch's default uniform initialisation, 1/√fan (fan 0
/// counts as 1).
///
/// ```
/// assert_eq!(tapegrad::init::uniform_bound(256), 1.0 / 16.0);
/// ```
pub fn uniform_bound(fan: usize) -> f64 {
    1.0 / (fan.max(1) as f64).sqrt()
}

/// A tensor drawn from U(−1/√fan, 1/√fan): PyTorch's default for
/// `Linear` (fan = in features) and the recurrent layers (fan = hidden
/// size).
///
/// ```
/// use tapegrad::init;
/// let w = init::uniform_fan::<f64>(&[12, 4], 4, 1);
/// assert!(w.data().iter().all(|x| x.abs() <= 0.5));
/// ```
pub fn uniform_fan<F: Real>(shape: &[usize], fan: usize, seed: u64) -> Tensor<F> {
    let k = uniform_bound(fan);
    Tensor::uniform(shape, -k, k, seed).expect("a finite bound")
}

/// fan_in and fan_out of a weight of `shape` as PyTorch computes them:
/// fan_out = `shape[0]`·r, fan_in = `shape[1]`·r with r the product of the
/// further axes; a 1-D shape has fan_in = fan_out = its length.
///
/// ```
/// assert_eq!(tapegrad::init::fans(&[64, 32]), (32, 64));
/// ```
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [out, inp, rest @ ..] => {
            let r: usize = rest.iter().product();
            (inp * r, out * r)
        }
    }
}

/// Xavier/Glorot uniform: U(−a, a) with a = gain·√(6/(fan_in + fan_out))
/// (PyTorch's `xavier_uniform_`; gain 1 for σ and tanh layers is the
/// common choice, 5/3 is PyTorch's recommended gain for tanh).
///
/// ```
/// use tapegrad::init;
/// let w = init::xavier_uniform::<f32>(&[30, 20], 1.0, 3);
/// let a = (6.0f64 / 50.0).sqrt() as f32;
/// assert!(w.data().iter().all(|x| x.abs() <= a));
/// ```
pub fn xavier_uniform<F: Real>(shape: &[usize], gain: f64, seed: u64) -> Tensor<F> {
    let (fan_in, fan_out) = fans(shape);
    let a = gain * (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    Tensor::uniform(shape, -a, a, seed).expect("a finite bound")
}

/// Xavier/Glorot normal: N(0, σ²) with σ = gain·√(2/(fan_in + fan_out))
/// (PyTorch's `xavier_normal_`).
///
/// ```
/// use tapegrad::init;
/// let w = init::xavier_normal::<f64>(&[200, 200], 1.0, 4);
/// let var = w.data().iter().map(|x| x * x).sum::<f64>() / 40_000.0;
/// assert!((var - 2.0 / 400.0).abs() < 0.1 * 2.0 / 400.0);
/// ```
pub fn xavier_normal<F: Real>(shape: &[usize], gain: f64, seed: u64) -> Tensor<F> {
    let (fan_in, fan_out) = fans(shape);
    let std = gain * (2.0 / (fan_in + fan_out).max(1) as f64).sqrt();
    let z = Tensor::<f64>::randn(shape, seed);
    Tensor::from_fn(shape, |i| F::of(std * z.data()[i]))
}

/// A (semi-)orthogonal [rows × cols] matrix times `gain` (PyTorch's
/// `orthogonal_`): the Q of the QR factorisation of a standard normal
/// matrix, with the signs that make R's diagonal positive. With rows ≥
/// cols the columns are orthonormal (QᵀQ = I); otherwise the rows are
/// (QQᵀ = I). Computed in f64 by twice-repeated modified Gram–Schmidt.
///
/// # Panics
/// If `shape` is not 2-D.
///
/// ```
/// use tapegrad::init;
/// let q = init::orthogonal::<f64>(&[3, 3], 1.0, 7);
/// let d = q.data();
/// for i in 0..3 {
///     for j in 0..3 {
///         let dot: f64 = (0..3).map(|k| d[k * 3 + i] * d[k * 3 + j]).sum();
///         assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
///     }
/// }
/// ```
#[track_caller]
pub fn orthogonal<F: Real>(shape: &[usize], gain: f64, seed: u64) -> Tensor<F> {
    let &[rows, cols] = shape else {
        crate::error::fail(Error::shape(
            "init::orthogonal",
            format!("needs a 2-D shape [rows, cols], got {shape:?}"),
        ));
    };
    // Orthonormalise the columns of a tall n×m Gaussian (n ≥ m), then
    // transpose back if the matrix is wide.
    let (n, m) = if rows >= cols {
        (rows, cols)
    } else {
        (cols, rows)
    };
    let z = Tensor::<f64>::randn(&[m, n], seed);
    // cols_[j] is column j of the tall matrix, contiguous.
    let mut q: Vec<Vec<f64>> = (0..m)
        .map(|j| z.data()[j * n..(j + 1) * n].to_vec())
        .collect();
    for j in 0..m {
        for _pass in 0..2 {
            for k in 0..j {
                let dot: f64 = q[k].iter().zip(&q[j]).map(|(a, b)| a * b).sum();
                let (done, rest) = q.split_at_mut(j);
                for (x, y) in rest[0].iter_mut().zip(&done[k]) {
                    *x -= dot * y;
                }
            }
        }
        let norm = q[j].iter().map(|x| x * x).sum::<f64>().sqrt();
        for x in &mut q[j] {
            *x /= norm;
        }
    }
    Tensor::from_fn(shape, |idx| {
        let (r, c) = (idx / cols, idx % cols);
        // tall: element (r, c) is row r of column c; wide: the transpose.
        let v = if rows >= cols { q[c][r] } else { q[r][c] };
        F::of(gain * v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gram(q: &Tensor<f64>, by_columns: bool) -> f64 {
        let (r, c) = (q.shape()[0], q.shape()[1]);
        let (n, m) = if by_columns { (c, r) } else { (r, c) };
        let at = |i: usize, k: usize| {
            if by_columns {
                q.data()[k * c + i]
            } else {
                q.data()[i * c + k]
            }
        };
        let mut worst = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..m).map(|k| at(i, k) * at(j, k)).sum();
                let want = if i == j { 4.0 } else { 0.0 }; // gain 2
                worst = worst.max((dot - want).abs());
            }
        }
        worst
    }

    #[test]
    fn orthogonal_tall_and_wide() {
        // tall [4H × H]-like: orthonormal columns; wide: orthonormal rows.
        let tall = orthogonal::<f64>(&[24, 6], 2.0, 1);
        assert!(gram(&tall, true) < 1e-12);
        let wide = orthogonal::<f64>(&[5, 9], 2.0, 2);
        assert!(gram(&wide, false) < 1e-12);
        assert_eq!(tall, orthogonal::<f64>(&[24, 6], 2.0, 1));
        assert_ne!(tall, orthogonal::<f64>(&[24, 6], 2.0, 3));
    }

    #[test]
    fn fan_conventions_match_pytorch() {
        assert_eq!(fans(&[8, 3, 5]), (15, 40));
        assert_eq!(fans(&[7]), (7, 7));
        let w = xavier_uniform::<f64>(&[40, 10], 1.0, 5);
        let a = (6.0f64 / 50.0).sqrt();
        let max = w.data().iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(max <= a && max > 0.9 * a, "{max} vs {a}");
    }
}
