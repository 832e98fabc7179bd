//! The README's Library example, as a program of its own: an MLP fitted to random targets
//! with SGD. It exits non-zero if the loss does not fall, so CI can run it as a check.

use moegrad_core::ops::Sgd;
use moegrad_core::{no_grad, Device, Module, Tensor};
use moegrad_models::{Activation, Mlp};
use rand::SeedableRng;

fn main() -> moegrad_core::Result<()> {
    let dev = Device::new()?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let model = Mlp::new(&dev, &[4, 64, 1], Activation::Gelu, &mut rng)?;
    let mut opt = Sgd::new(&model, 0.1);

    let x = Tensor::randn(&dev, &[128, 4], 1.0, &mut rng)?;
    let y = Tensor::randn(&dev, &[128, 1], 1.0, &mut rng)?;
    let mut losses = Vec::new();
    for _ in 0..100 {
        let loss = (&model.forward(&x) - &y).square().mean_all();
        loss.backward();
        opt.step();
        opt.zero_grad();
        losses.push(loss.item()?);
    }
    let prediction = no_grad(|| model.forward(&x));
    assert_eq!(prediction.shape(), &[128, 1]);
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    println!("{} parameters on {}: loss {first:.4} -> {last:.4}", model.parameter_count(), dev.name());
    if !(last < 0.9 * first) {
        eprintln!("the loss did not fall by a tenth");
        std::process::exit(1);
    }
    Ok(())
}
