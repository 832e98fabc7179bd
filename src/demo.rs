//! The demo job: an MLP learns a smooth nonlinear function of four inputs with plain SGD.
//! It exercises the whole engine (forward ops, backward, optimizer, pooled buffers) and is
//! what `moegrad demo` runs until the transformer trainer replaces it as the main job.

use moegrad_core::ops::Sgd;
use moegrad_core::{no_grad, Device, Result, Tensor};
use moegrad_models::{Activation, Mlp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct DemoConfig {
    pub steps: usize,
    pub batch: usize,
    pub hidden: usize,
    pub lr: f32,
    pub seed: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { steps: 400, batch: 128, hidden: 64, lr: 0.1, seed: 0 }
    }
}

pub struct DemoResult {
    /// Mean squared error on the held-out batch before any training.
    pub initial_loss: f32,
    /// The same after the last step.
    pub final_loss: f32,
}

const INPUTS: usize = 4;

/// The function to learn: y = sin(3 x0) x1 + x2^2 - 0.5 x3, inputs uniform in [-1, 1].
fn batch(device: &Device, n: usize, rng: &mut StdRng) -> Result<(Tensor, Tensor)> {
    let x: Vec<f32> = (0..n * INPUTS).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<f32> = x.chunks(INPUTS).map(|v| (3.0 * v[0]).sin() * v[1] + v[2] * v[2] - 0.5 * v[3]).collect();
    Ok((Tensor::from_slice(device, &x, &[n, INPUTS])?, Tensor::from_slice(device, &y, &[n, 1])?))
}

fn mse(prediction: &Tensor, target: &Tensor) -> Tensor {
    prediction.sub(target).square().mean_all()
}

/// Trains the demo MLP; `on_step(step, train_loss)` sees every 50th step's loss.
pub fn train_mlp(device: &Device, cfg: &DemoConfig, mut on_step: impl FnMut(usize, f32)) -> Result<DemoResult> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let model = Mlp::new(device, &[INPUTS, cfg.hidden, cfg.hidden, 1], Activation::Gelu, &mut rng)?;
    let mut opt = Sgd::new(&model, cfg.lr);
    let (x_eval, y_eval) = batch(device, 512, &mut rng)?;
    let eval = |model: &Mlp| no_grad(|| mse(&model.forward(&x_eval), &y_eval).item());
    let initial_loss = eval(&model)?;
    for step in 1..=cfg.steps {
        let (x, y) = batch(device, cfg.batch, &mut rng)?;
        let loss = mse(&model.forward(&x), &y);
        loss.backward();
        opt.step();
        opt.zero_grad();
        if step % 50 == 0 || step == cfg.steps {
            on_step(step, loss.item()?);
        }
    }
    Ok(DemoResult { initial_loss, final_loss: eval(&model)? })
}
