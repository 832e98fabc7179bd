//! A multi-layer perceptron: linear layers with an activation between them.

use moegrad_core::{Device, Module, Result, Tensor, Visitor};
use rand::Rng;

use crate::linear::Linear;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Relu,
    Gelu,
    Silu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
            Activation::Silu => x.silu(),
        }
    }
}

pub struct Mlp {
    pub layers: Vec<Linear>,
    pub activation: Activation,
}

impl Mlp {
    /// `widths` lists every layer's width, input first and output last.
    pub fn new(device: &Device, widths: &[usize], activation: Activation, rng: &mut impl Rng) -> Result<Self> {
        assert!(widths.len() >= 2, "Mlp: need at least an input and an output width, got {widths:?}");
        let layers = widths.windows(2).map(|w| Linear::new(device, w[0], w[1], true, rng)).collect::<Result<_>>()?;
        Ok(Mlp { layers, activation })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x.clone(), |h, (i, layer)| {
            let h = layer.forward(&h);
            if i < last {
                self.activation.apply(&h)
            } else {
                h
            }
        })
    }
}

impl Module for Mlp {
    fn visit(&self, v: &mut Visitor) {
        v.module("layers", self.layers.as_slice());
    }
}
