//! Conversion to and from `ndarray::ArrayD` (cargo feature `ndarray`).

use super::Tensor;
use crate::Real;
use ndarray::{ArrayD, IxDyn};

impl<F: Real> From<Tensor<F>> for ArrayD<F> {
    /// Moves the data into a row-major `ArrayD` (no copy).
    fn from(t: Tensor<F>) -> Self {
        let (shape, data) = t.into_parts();
        ArrayD::from_shape_vec(IxDyn(&shape), data).expect("shape matches data by construction")
    }
}

impl<F: Real> From<ArrayD<F>> for Tensor<F> {
    /// Copies any `ArrayD` (of any memory order) into a row-major tensor.
    fn from(a: ArrayD<F>) -> Self {
        let shape = a.shape().to_vec();
        let data: Vec<F> = a.iter().copied().collect();
        Tensor::from_vec(data, &shape).expect("shape matches data by construction")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Tensor::<f64>::from_fn(&[2, 3], |i| i as f64);
        let a: ArrayD<f64> = t.clone().into();
        assert_eq!(a[[1, 2]], 5.0);
        let back: Tensor<f64> = a.reversed_axes().into();
        assert_eq!(back.shape(), &[3, 2]);
        assert_eq!(back.at(&[2, 1]), 5.0);
    }
}
