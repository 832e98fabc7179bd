//! A fully connected layer, `y = x W + b`, with W stored [in, out] so the forward pass is
//! one plain matmul.

use moegrad_core::{Device, Module, Result, Tensor, Visitor};
use rand::Rng;

pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Weights drawn from N(0, 1/in), which keeps activations' scale through the layer.
    pub fn new(device: &Device, inputs: usize, outputs: usize, bias: bool, rng: &mut impl Rng) -> Result<Self> {
        let weight = Tensor::randn(device, &[inputs, outputs], (inputs as f32).powf(-0.5), rng)?.requires_grad();
        let bias = if bias { Some(Tensor::zeros(device, &[outputs])?.requires_grad()) } else { None };
        Ok(Linear { weight, bias })
    }

    /// `x` is `[..., in]`; the result is `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let y = x.matmul(&self.weight);
        match &self.bias {
            Some(b) => y.add(b),
            None => y,
        }
    }
}

impl Module for Linear {
    fn visit(&self, v: &mut Visitor) {
        v.parameter("weight", &self.weight);
        if let Some(b) = &self.bias {
            v.parameter("bias", b);
        }
    }
}
