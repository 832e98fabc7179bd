//! The dense feed-forward block: `act(x W_in) W_out`, with GELU or SwiGLU.

use moegrad_core::ops::swiglu;
use moegrad_core::{Device, Module, Result, Tensor, Visitor};
use rand::Rng;

use crate::config::FfnActivation;
use crate::init;

#[derive(Clone)]
pub struct DenseFfn {
    /// `[d, hidden]`, or `[d, 2 * hidden]` for SwiGLU (gate then up).
    pub w_in: Tensor,
    pub w_out: Tensor,
    pub activation: FfnActivation,
}

/// Applies the activation to `[rows, width]` pre-activations (SwiGLU halves the width).
pub fn activate(h: &Tensor, activation: FfnActivation) -> Tensor {
    match activation {
        FfnActivation::Gelu => h.gelu(),
        FfnActivation::Swiglu => {
            let half = h.shape()[1] / 2;
            swiglu(&h.slice(1, 0, half), &h.slice(1, half, half))
        }
    }
}

/// Input projection width for `hidden` units.
pub fn input_width(hidden: usize, activation: FfnActivation) -> usize {
    match activation {
        FfnActivation::Gelu => hidden,
        FfnActivation::Swiglu => 2 * hidden,
    }
}

impl DenseFfn {
    pub fn new(device: &Device, d: usize, hidden: usize, activation: FfnActivation, out_std: f32, rng: &mut impl Rng) -> Result<Self> {
        Ok(DenseFfn {
            w_in: init::normal(device, &[d, input_width(hidden, activation)], init::STD, rng)?,
            w_out: init::normal(device, &[hidden, d], out_std, rng)?,
            activation,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        activate(&x.matmul(&self.w_in), self.activation).matmul(&self.w_out)
    }
}

impl Module for DenseFfn {
    fn visit(&self, v: &mut Visitor) {
        v.parameter("w_in", &self.w_in);
        v.parameter("w_out", &self.w_out);
    }
}
