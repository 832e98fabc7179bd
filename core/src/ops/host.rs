//! `HostTensor`: a plain f64 array on the CPU. Every op's CPU reference is written against
//! it, in the most obvious loops, so that the GPU kernels have something trustworthy to
//! be compared with and finite differences have precision to spare.

use crate::shape::{numel, strides};

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl HostTensor {
    pub fn new(shape: &[usize], data: Vec<f64>) -> Self {
        assert_eq!(numel(shape), data.len(), "HostTensor: {} values for shape {:?}", data.len(), shape);
        HostTensor { shape: shape.to_vec(), data }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        HostTensor::new(shape, vec![0.0; numel(shape)])
    }

    pub fn from_f32(shape: &[usize], data: &[f32]) -> Self {
        HostTensor::new(shape, data.iter().map(|&v| v as f64).collect())
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn strides(&self) -> Vec<usize> {
        strides(&self.shape).to_vec()
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Self {
        HostTensor::new(&self.shape, self.data.iter().map(|&v| f(v)).collect())
    }

    /// The element at a multi-index.
    pub fn at(&self, index: &[usize]) -> f64 {
        let offset: usize = index.iter().zip(self.strides()).map(|(i, s)| i * s).sum();
        self.data[offset]
    }
}

/// Multi-index of the flat position `flat` in a row-major `shape`.
pub fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        index[d] = flat % shape[d];
        flat /= shape[d];
    }
    index
}
