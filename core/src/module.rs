//! `Module`: a layer or model seen as a tree of named tensors. Optimizers, checkpoints and
//! parameter counts all walk it the same way, so every tensor's name is made once, by the
//! module that owns it (`blocks.3.attn.qkv`), and nothing is ever paired by position.

use crate::Tensor;

/// What a tensor is to the module that holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Trained: optimizers update it, checkpoints save it (with its optimizer state).
    Parameter,
    /// Saved with the model but not trained (the Default MoE's default vectors).
    State,
}

/// A layer or model: its parameters and state, each under a name, and its submodules.
///
/// ```
/// use moegrad_core::{Module, Tensor, Visitor};
///
/// struct Affine {
///     weight: Tensor,
///     bias: Tensor,
/// }
///
/// impl Module for Affine {
///     fn visit(&self, v: &mut Visitor) {
///         v.parameter("weight", &self.weight);
///         v.parameter("bias", &self.bias);
///     }
/// }
/// ```
pub trait Module {
    /// Calls `visitor` with each of this module's tensors and submodules, in a fixed order.
    fn visit(&self, visitor: &mut Visitor);

    /// Every trainable tensor under its full name (`layers.0.weight`).
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        collect(self, Role::Parameter)
    }

    /// Every trainable tensor, in `named_parameters` order.
    fn parameters(&self) -> Vec<Tensor> {
        self.named_parameters().into_iter().map(|(_, t)| t).collect()
    }

    /// Every state tensor under its full name.
    fn named_state(&self) -> Vec<(String, Tensor)> {
        collect(self, Role::State)
    }

    /// The number of trainable values.
    fn parameter_count(&self) -> usize {
        self.parameters().iter().map(Tensor::numel).sum()
    }
}

fn collect<M: Module + ?Sized>(module: &M, role: Role) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    module.visit(&mut Visitor::new(&mut |name, t, r| {
        if r == role {
            out.push((name.to_string(), t.clone()));
        }
    }));
    out
}

/// Walks a module tree, handing each tensor with its dotted name to a callback.
pub struct Visitor<'a> {
    prefix: String,
    each: &'a mut dyn FnMut(&str, &Tensor, Role),
}

impl<'a> Visitor<'a> {
    /// A visitor calling `each(name, tensor, role)` for every tensor of a tree.
    pub fn new(each: &'a mut dyn FnMut(&str, &Tensor, Role)) -> Self {
        Visitor { prefix: String::new(), each }
    }

    /// A trainable tensor of the module being visited.
    pub fn parameter(&mut self, name: &str, tensor: &Tensor) {
        self.tensor(name, tensor, Role::Parameter);
    }

    /// A state tensor of the module being visited.
    pub fn state(&mut self, name: &str, tensor: &Tensor) {
        self.tensor(name, tensor, Role::State);
    }

    /// A submodule, whose tensors' names start with `name.`.
    pub fn module(&mut self, name: &str, module: &(impl Module + ?Sized)) {
        let outer = self.prefix.len();
        self.prefix += name;
        self.prefix.push('.');
        module.visit(self);
        self.prefix.truncate(outer);
    }

    fn tensor(&mut self, name: &str, tensor: &Tensor, role: Role) {
        let full = format!("{}{name}", self.prefix);
        (self.each)(&full, tensor, role);
    }
}

/// A plain list of tensors is a module whose parameters are named by position (`0`, `1`,
/// ...): for optimizing a few loose tensors.
impl Module for [Tensor] {
    fn visit(&self, v: &mut Visitor) {
        for (i, t) in self.iter().enumerate() {
            v.parameter(&i.to_string(), t);
        }
    }
}

impl<const N: usize> Module for [Tensor; N] {
    fn visit(&self, v: &mut Visitor) {
        self.as_slice().visit(v);
    }
}

impl Module for Vec<Tensor> {
    fn visit(&self, v: &mut Visitor) {
        self.as_slice().visit(v);
    }
}

impl<M: Module> Module for [M] {
    fn visit(&self, v: &mut Visitor) {
        for (i, m) in self.iter().enumerate() {
            v.module(&i.to_string(), m);
        }
    }
}
