//! Activation checkpointing: a function's forward pass run without keeping its
//! activations, and run again during the backward pass to get its gradients. The tape
//! holds one entry for the whole function, which keeps only its inputs; its backward rule
//! recomputes the function on detached copies of them with recording on, and
//! backpropagates `sum_i <output_i, grad_i>` through that, which gives the parameters
//! inside the function their gradients (into `grad()`, as any backward pass does) and the
//! inputs theirs. The recomputation runs the same kernels on the same values, so the
//! gradients equal those of the plain forward pass.

use crate::tape::{is_grad_enabled, no_grad, record_multi, with_grad};
use crate::Tensor;

/// `f(inputs)` with its activations recomputed in the backward pass instead of kept. `f`
/// returns differentiable outputs and anything else (statistics), which the first run
/// gives back and the recomputation discards; it must compute the same each time.
/// Without gradients recording, or with no tracked input, `f` simply runs.
pub fn checkpoint<E>(inputs: &[&Tensor], f: impl Fn(&[Tensor]) -> (Vec<Tensor>, E) + 'static) -> (Vec<Tensor>, E) {
    let saved: Vec<Tensor> = inputs.iter().map(|&t| t.clone()).collect();
    // The tape records an op only for tracked inputs; without one, `f` runs as it is, so
    // that parameters inside it still get their gradients.
    if !is_grad_enabled() || !inputs.iter().any(|t| t.is_tracked()) {
        return f(&saved);
    }
    let (outputs, extra) = no_grad(|| f(&saved));
    let recorded: Vec<&Tensor> = outputs.iter().collect();
    record_multi("checkpoint", &recorded, inputs, move |grads| {
        with_grad(|| {
            let leaves: Vec<Tensor> = saved.iter().map(|t| t.detach().requires_grad()).collect();
            let (again, _) = f(&leaves);
            let terms = again.iter().zip(grads).filter(|(o, g)| g.is_some() && o.is_tracked()).map(|(o, g)| o.mul(g.as_ref().expect("filtered")).sum_all());
            if let Some(total) = terms.reduce(|a, b| a.add(&b)) {
                total.backward();
            }
            leaves.iter().map(Tensor::grad).collect()
        })
    });
    (outputs, extra)
}
