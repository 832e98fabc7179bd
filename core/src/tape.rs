//! Reverse-mode autodiff with a tape, micrograd-style.
//!
//! Every differentiable op that touches a tracked tensor appends an entry (its output id,
//! its inputs, and a closure that maps the output's gradient to the inputs' gradients).
//! `backward` walks the tape from the newest entry to the oldest, summing gradients per
//! tensor, and adds each parameter's total to its `grad()` once no older entry reads it. It consumes the tape, so
//! the activations the closures saved are freed with it.
//!
//! The tape and the grad switch are per thread, like PyTorch's grad mode.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use smallvec::SmallVec;

use crate::ops::{binary, BinaryOp};
use crate::tensor::{Tensor, TensorId};

/// Maps the gradients of an op's outputs (`None` where an output got none) to the
/// gradients of its inputs, in input order (`None` for inputs that get none, such as
/// integer indices).
pub type BackwardFn = Box<dyn FnOnce(&[Option<Tensor>]) -> Vec<Option<Tensor>>>;

struct Entry {
    op: &'static str,
    outputs: SmallVec<[TensorId; 2]>,
    inputs: SmallVec<[Tensor; 3]>,
    backward: BackwardFn,
}

thread_local! {
    static TAPE: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Runs `f` with recording switched off (evaluation, optimizer updates, backward itself).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_mode(false, f)
}

/// Runs `f` with recording on or off, restoring the mode after (a panic included).
fn with_grad_mode<R>(on: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(on)));
    f()
}

/// Runs `f` with recording switched on, inside a backward pass (activation
/// checkpointing's recomputation).
pub(crate) fn with_grad<R>(f: impl FnOnce() -> R) -> R {
    with_grad_mode(true, f)
}

/// Entries on this thread's tape (for tests and leak hunting).
pub fn tape_len() -> usize {
    TAPE.with(|t| t.borrow().len())
}

/// Drops this thread's tape without computing gradients.
pub fn clear_tape() {
    TAPE.with(|t| t.borrow_mut().clear());
}

/// Records `output = op(inputs)` if gradients are on and any input is tracked; returns
/// `output`, now tracked in that case.
pub fn record(op: &'static str, output: Tensor, inputs: &[&Tensor], backward: impl FnOnce(&Tensor) -> Vec<Option<Tensor>> + 'static) -> Tensor {
    record_multi(op, &[&output], inputs, move |grads| backward(grads[0].as_ref().expect("a single-output op runs only when its output has a gradient")));
    output
}

/// Records an op with several differentiable outputs (a router's probabilities and
/// weights, say). Its backward runs once, after every consumer of every output, with
/// `None` for outputs that received no gradient.
pub fn record_multi(op: &'static str, outputs: &[&Tensor], inputs: &[&Tensor], backward: impl FnOnce(&[Option<Tensor>]) -> Vec<Option<Tensor>> + 'static) {
    if is_grad_enabled() && inputs.iter().any(|t| t.is_tracked()) {
        outputs.iter().for_each(|t| t.mark_tracked());
        let entry =
            Entry { op, outputs: outputs.iter().map(|t| t.id()).collect(), inputs: inputs.iter().map(|&t| t.clone()).collect(), backward: Box::new(backward) };
        TAPE.with(|t| t.borrow_mut().push(entry));
    }
}

impl Tensor {
    /// Backpropagates from this scalar loss.
    pub fn backward(&self) {
        self.backward_reporting(&mut |_| {});
    }

    /// Backpropagates from this scalar loss, calling `on_final` with each parameter as soon
    /// as its `grad()` is complete (no op left on the tape uses it), while the rest of the
    /// backward pass is still to be recorded: data-parallel training starts sending a
    /// bucket of gradients then, hiding the transfer behind the remaining work.
    pub fn backward_reporting(&self, on_final: &mut dyn FnMut(&Tensor)) {
        assert_eq!(self.numel(), 1, "backward: the loss must have one element, got shape {:?}", self.shape());
        let seed = Tensor::output_full(self.device(), self.shape(), 1.0, "backward");
        self.backward_with_reporting(&seed, on_final);
    }

    /// Backpropagates with `grad` as this tensor's gradient (vector-Jacobian product).
    pub fn backward_with(&self, grad: &Tensor) {
        self.backward_with_reporting(grad, &mut |_| {});
    }

    fn backward_with_reporting(&self, grad: &Tensor, on_final: &mut dyn FnMut(&Tensor)) {
        assert_eq!(grad.shape(), self.shape(), "backward_with: gradient shape {:?} != tensor shape {:?}", grad.shape(), self.shape());
        let entries = TAPE.with(|t| std::mem::take(&mut *t.borrow_mut()));
        assert!(self.is_tracked(), "backward: this tensor depends on no parameter (made under no_grad, or from tensors without requires_grad)");
        // A parameter's gradient is complete after the oldest entry that reads it.
        let mut oldest_use: HashMap<TensorId, usize> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            for input in entry.inputs.iter().filter(|t| t.is_param()) {
                oldest_use.entry(input.id()).or_insert(i);
            }
        }
        let mut grads: HashMap<TensorId, Tensor> = HashMap::from([(self.id(), grad.clone())]);
        no_grad(|| {
            for (i, entry) in entries.into_iter().enumerate().rev() {
                let output_grads: SmallVec<[Option<Tensor>; 2]> = entry.outputs.iter().map(|id| grads.remove(id)).collect();
                if output_grads.iter().any(Option::is_some) {
                    let input_grads = (entry.backward)(&output_grads);
                    assert_eq!(input_grads.len(), entry.inputs.len(), "{}: backward returned a wrong number of gradients", entry.op);
                    for (input, input_grad) in entry.inputs.iter().zip(input_grads) {
                        let Some(input_grad) = input_grad.filter(|_| input.is_tracked()) else { continue };
                        assert_eq!(
                            input_grad.shape(),
                            input.shape(),
                            "{}: backward made a gradient of shape {:?} for an input of shape {:?}",
                            entry.op,
                            input_grad.shape(),
                            input.shape()
                        );
                        let total = match grads.remove(&input.id()) {
                            Some(prev) => sum_grads(&prev, &input_grad),
                            None => input_grad,
                        };
                        grads.insert(input.id(), total);
                    }
                }
                for param in entry.inputs.iter().filter(|t| t.is_param() && oldest_use.get(&t.id()) == Some(&i)) {
                    if let Some(g) = grads.remove(&param.id()) {
                        accumulate(param, g);
                        on_final(param);
                    }
                }
            }
            // A loss that is itself a parameter.
            if self.is_param() {
                if let Some(g) = grads.remove(&self.id()) {
                    accumulate(self, g);
                    on_final(self);
                }
            }
        });
    }
}

/// Adds `g` to the parameter's `grad()`.
fn accumulate(param: &Tensor, g: Tensor) {
    let total = match param.grad() {
        Some(prev) => sum_grads(&prev, &g),
        None => g,
    };
    param.set_grad(total);
}

/// `a + b` for two gradients of one shape: the add op itself (recorded nowhere, since
/// `backward` runs under `no_grad`).
fn sum_grads(a: &Tensor, b: &Tensor) -> Tensor {
    binary(BinaryOp::Add, a, b)
}
