//! Parameter initialisation: N(0, 0.02) as in GPT-2, scaled down for the projections that
//! write into the residual stream.

use moegrad_core::{Device, Result, Tensor};
use rand::Rng;

pub const STD: f32 = 0.02;

pub fn normal(device: &Device, shape: &[usize], std: f32, rng: &mut impl Rng) -> Result<Tensor> {
    Ok(Tensor::randn(device, shape, std, rng)?.requires_grad())
}

pub fn ones(device: &Device, shape: &[usize]) -> Result<Tensor> {
    Ok(Tensor::ones(device, shape)?.requires_grad())
}
