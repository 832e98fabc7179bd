//! End to end through the public API: an MLP learns a nonlinear function with SGD.

use moegrad::demo::{train_mlp, DemoConfig};

use crate::common::device;

#[test]
fn mlp_learns_what_it_could_not_do_untrained() {
    let cfg = DemoConfig { steps: 300, ..DemoConfig::default() };
    let mut logged = Vec::new();
    let r = train_mlp(&device(), &cfg, |step, loss| logged.push((step, loss))).unwrap();
    // The target's variance is about 0.4; predicting it well needs the hidden layers.
    assert!(r.initial_loss > 0.2, "untrained loss {} is suspiciously low", r.initial_loss);
    assert!(r.final_loss < 0.08, "trained loss {} did not reach 0.08 (untrained {})", r.final_loss, r.initial_loss);
    assert_eq!(logged.len(), 6);
}
