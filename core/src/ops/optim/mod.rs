//! Optimizers update parameters in place on the GPU, so a training step allocates nothing
//! and reads nothing back.

use crate::{elementwise_grid, no_grad, render_template, Module, Result, Tensor};

use crate::ops::common::{floats_per_load, with_load_type};

const SGD_SHADER: &str = include_str!("sgd.wgsl");
const ADAMW_SHADER: &str = include_str!("adamw.wgsl");

fn check_params(name: &str, params: &[Tensor]) {
    assert!(params.iter().all(Tensor::is_param), "{name}: every tensor must be a parameter (requires_grad)");
}

/// Plain stochastic gradient descent: `p <- p - lr * grad`.
pub struct Sgd {
    params: Vec<Tensor>,
    pub lr: f32,
}

impl Sgd {
    /// Updates `module`'s parameters (a model, or a list of tensors).
    pub fn new<M: Module + ?Sized>(module: &M, lr: f32) -> Self {
        let params = module.parameters();
        check_params("Sgd", &params);
        Sgd { params, lr }
    }

    /// Applies the accumulated gradients; parameters without one are left alone.
    pub fn step(&mut self) {
        no_grad(|| {
            for p in &self.params {
                let Some(g) = p.grad() else { continue };
                let dev = p.device();
                let vec = floats_per_load(p.numel());
                let loads = p.numel() / vec;
                let pipeline = dev.pipeline(&format!("sgd/vec{vec}"), "main", || with_load_type(SGD_SHADER.to_string(), vec));
                dev.launch(&pipeline, &[loads as u32, self.lr.to_bits()], &[p, &g], elementwise_grid(loads));
            }
        });
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(Tensor::zero_grad);
    }
}

/// AdamW's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// Adam with decoupled weight decay, one fused kernel per parameter
/// (`adamw.wgsl`), four floats a thread where the parameter's length allows. Its
/// moments are tensors kept under their parameter's name, so checkpoints save and restore
/// them by name.
pub struct AdamW {
    params: Vec<Tensor>,
    slots: Vec<AdamWSlot>,
    pub config: AdamWConfig,
    /// Steps taken (the bias correction needs it).
    pub step_count: u64,
}

/// One parameter's optimizer state: its name in the module, and its first and second
/// moments.
pub struct AdamWSlot {
    pub name: String,
    pub m: Tensor,
    pub v: Tensor,
}

impl AdamW {
    /// Updates `module`'s parameters (a model, or a list of tensors), with zero moments.
    pub fn new<M: Module + ?Sized>(module: &M, config: AdamWConfig) -> Result<Self> {
        let named = module.named_parameters();
        let params: Vec<Tensor> = named.iter().map(|(_, p)| p.clone()).collect();
        check_params("AdamW", &params);
        let slots = named
            .into_iter()
            .map(|(name, p)| Ok(AdamWSlot { name, m: Tensor::zeros(p.device(), p.shape())?, v: Tensor::zeros(p.device(), p.shape())? }))
            .collect::<Result<_>>()?;
        Ok(AdamW { params, slots, config, step_count: 0 })
    }

    pub fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// Each parameter's moments, in `parameters` order.
    pub fn slots(&self) -> &[AdamWSlot] {
        &self.slots
    }

    /// One update with learning rate `lr` (schedules change it per step).
    pub fn step_with_lr(&mut self, lr: f32) {
        self.update(lr, None);
    }

    /// `step_with_lr` on the gradients times `norm[1]`, `norm` being `grad_norm`'s
    /// `[norm, scale]`: the same update as `clip_grad_norm_scaled` then `step_with_lr`,
    /// without a pass that rewrites every gradient first.
    pub fn step_clipped(&mut self, lr: f32, norm: &Tensor) {
        assert_eq!(norm.shape(), &[2], "AdamW::step_clipped: expects grad_norm's [norm, scale], got shape {:?}", norm.shape());
        self.update(lr, Some(norm));
    }

    fn update(&mut self, lr: f32, norm: Option<&Tensor>) {
        self.step_count += 1;
        let c = self.config;
        let t = self.step_count as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        no_grad(|| {
            for (p, AdamWSlot { m, v, .. }) in self.params.iter().zip(&self.slots) {
                let Some(g) = p.grad() else { continue };
                let dev = p.device();
                let vec = floats_per_load(p.numel());
                let loads = p.numel() / vec;
                let params =
                    [loads as u32, lr.to_bits(), c.beta1.to_bits(), c.beta2.to_bits(), c.eps.to_bits(), c.weight_decay.to_bits(), bc1.to_bits(), bc2.to_bits()];
                let (name, scale_code, buffers) = match norm {
                    Some(norm) => (
                        "adamw/clipped",
                        "@group(0) @binding(5) var<storage, read> norm: array<f32>;\nfn grad_scale() -> f32 { return norm[1]; }",
                        vec![p, &g, m, v, norm],
                    ),
                    None => ("adamw", "fn grad_scale() -> f32 { return 1.0; }", vec![p, &g, m, v]),
                };
                let pipeline =
                    dev.pipeline(&format!("{name}/vec{vec}"), "main", || with_load_type(render_template(ADAMW_SHADER, &[("GRAD_SCALE", scale_code)]), vec));
                dev.launch(&pipeline, &params, &buffers, elementwise_grid(loads));
            }
        });
    }

    pub fn step(&mut self) {
        self.step_with_lr(self.config.lr);
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(Tensor::zero_grad);
    }
}

/// CPU reference of one SGD step on one parameter: the new p.
pub fn sgd_reference(p: &[f64], g: &[f64], lr: f32) -> Vec<f64> {
    p.iter().zip(g).map(|(p, g)| p - lr as f64 * g).collect()
}

/// CPU reference of one AdamW step on one parameter: (new p, new m, new v).
pub fn adamw_reference(p: &[f64], g: &[f64], m: &[f64], v: &[f64], c: AdamWConfig, step: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (b1, b2) = (c.beta1 as f64, c.beta2 as f64);
    let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
    let m2: Vec<f64> = m.iter().zip(g).map(|(m, g)| b1 * m + (1.0 - b1) * g).collect();
    let v2: Vec<f64> = v.iter().zip(g).map(|(v, g)| b2 * v + (1.0 - b2) * g * g).collect();
    let p2 = p
        .iter()
        .zip(m2.iter().zip(&v2))
        .map(|(p, (m, v))| p - c.lr as f64 * ((m / bc1) / ((v / bc2).sqrt() + c.eps as f64) + c.weight_decay as f64 * p))
        .collect();
    (p2, m2, v2)
}
