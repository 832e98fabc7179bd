//! Optimizers update parameters in place on the GPU, so a training step allocates nothing.

use moegrad_engine::{grid, no_grad, Tensor};

const SGD_SHADER: &str = include_str!("../../shaders/sgd.wgsl");

/// Plain stochastic gradient descent: `p <- p - lr * grad`.
pub struct Sgd {
    params: Vec<Tensor>,
    pub lr: f32,
}

impl Sgd {
    pub fn new(params: Vec<Tensor>, lr: f32) -> Self {
        assert!(params.iter().all(Tensor::is_param), "Sgd: every tensor must be a parameter (requires_grad)");
        Sgd { params, lr }
    }

    /// Applies the accumulated gradients; parameters without one are left alone.
    pub fn step(&mut self) {
        no_grad(|| {
            for p in &self.params {
                let Some(g) = p.grad() else { continue };
                let dev = p.device();
                let pipeline = dev.pipeline("sgd", "main", || SGD_SHADER.to_string());
                dev.launch(&pipeline, &[p.numel() as u32, self.lr.to_bits()], &[p, &g], grid(p.numel().div_ceil(256)));
            }
        });
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(Tensor::zero_grad);
    }
}
