//! The everyday ops as methods of `Tensor`, and arithmetic operators on `&Tensor`, so
//! model code reads `x.matmul(&w).gelu()` or `&(&x * &w) + &b`, and every op shows on
//! `Tensor`'s rustdoc page. Each method is the family's function; the families' modules
//! hold the kernels, backward rules and CPU references.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::ops::binary::{binary, broadcast_to, sum_to, BinaryOp};
use crate::ops::embedding::embedding;
use crate::ops::layout::{reshape, transpose};
use crate::ops::matmul::{matmul, matmul_t};
use crate::ops::reduce::{reduce, reduce_all, ReduceOp};
use crate::ops::slice::slice;
use crate::ops::softmax::{log_softmax, softmax};
use crate::ops::unary::{unary, UnaryOp};
use crate::Tensor;

/// Element-wise arithmetic with numpy broadcasting; shapes that cannot be broadcast panic
/// naming both.
impl Tensor {
    /// `self + other`, broadcast.
    pub fn add(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Add, self, other)
    }
    /// `self - other`, broadcast.
    pub fn sub(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Sub, self, other)
    }
    /// `self * other` element by element, broadcast.
    pub fn mul(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Mul, self, other)
    }
    /// `self / other` element by element, broadcast.
    pub fn div(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Div, self, other)
    }
    /// `self + s` for a scalar `s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        unary(UnaryOp::AddScalar(s), self)
    }
    /// `self * s` for a scalar `s`.
    pub fn mul_scalar(&self, s: f32) -> Tensor {
        unary(UnaryOp::MulScalar(s), self)
    }
    /// This tensor repeated to `shape` (numpy rules); its gradient sums the copies.
    pub fn broadcast_to(&self, shape: &[usize]) -> Tensor {
        broadcast_to(self, shape)
    }
    /// Sums the broadcast dimensions away, to `shape`: the gradient of `broadcast_to`.
    pub fn sum_to(&self, shape: &[usize]) -> Tensor {
        sum_to(self, shape)
    }
}

/// Element-wise functions, each with its derivative in the same kernel template.
impl Tensor {
    /// `-self`.
    pub fn neg(&self) -> Tensor {
        unary(UnaryOp::Neg, self)
    }
    /// `e^self`.
    pub fn exp(&self) -> Tensor {
        unary(UnaryOp::Exp, self)
    }
    /// The natural logarithm.
    pub fn log(&self) -> Tensor {
        unary(UnaryOp::Log, self)
    }
    /// The square root.
    pub fn sqrt(&self) -> Tensor {
        unary(UnaryOp::Sqrt, self)
    }
    /// `self * self`.
    pub fn square(&self) -> Tensor {
        unary(UnaryOp::Square, self)
    }
    /// `max(self, 0)`.
    pub fn relu(&self) -> Tensor {
        unary(UnaryOp::Relu, self)
    }
    /// GELU, in its tanh form (GPT-2's).
    pub fn gelu(&self) -> Tensor {
        unary(UnaryOp::Gelu, self)
    }
    /// `self * sigmoid(self)`.
    pub fn silu(&self) -> Tensor {
        unary(UnaryOp::Silu, self)
    }
    /// `1 / (1 + e^-self)`.
    pub fn sigmoid(&self) -> Tensor {
        unary(UnaryOp::Sigmoid, self)
    }
}

/// Reductions over one axis or over everything. A mean or maximum over an empty axis has
/// no value and panics; a sum over one is 0.
impl Tensor {
    /// The sum over `axis`, which is dropped.
    pub fn sum(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Sum, self, axis, false)
    }
    /// The sum over `axis`, which is kept with size 1.
    pub fn sum_keepdim(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Sum, self, axis, true)
    }
    /// The mean over `axis`, which is dropped.
    pub fn mean(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Mean, self, axis, false)
    }
    /// The maximum over `axis`, which is dropped; the gradient goes to the first argmax.
    pub fn max(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Max, self, axis, false)
    }
    /// The sum of every element, as a tensor of shape `[1]`.
    pub fn sum_all(&self) -> Tensor {
        reduce_all(ReduceOp::Sum, self)
    }
    /// The mean of every element, as a tensor of shape `[1]`.
    pub fn mean_all(&self) -> Tensor {
        reduce_all(ReduceOp::Mean, self)
    }
    /// The largest element, as a tensor of shape `[1]`.
    pub fn max_all(&self) -> Tensor {
        reduce_all(ReduceOp::Max, self)
    }
    /// Softmax over the last axis.
    pub fn softmax(&self) -> Tensor {
        softmax(self)
    }
    /// Log-softmax over the last axis.
    pub fn log_softmax(&self) -> Tensor {
        log_softmax(self)
    }
}

/// Products, layout and lookup.
impl Tensor {
    /// The matrix product: 2-D, batched, or batched against a shared 2-D right operand.
    pub fn matmul(&self, other: &Tensor) -> Tensor {
        matmul(self, other)
    }
    /// The matrix product of either operand or both transposed, without a transpose pass.
    pub fn matmul_t(&self, other: &Tensor, trans_self: bool, trans_other: bool) -> Tensor {
        matmul_t(self, other, trans_self, trans_other)
    }
    /// The same elements in `shape` (a view: no copy).
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        reshape(self, shape)
    }
    /// Dimensions `d0` and `d1` swapped (a copy).
    pub fn transpose(&self, d0: usize, d1: usize) -> Tensor {
        transpose(self, d0, d1)
    }
    /// `len` entries of `axis` from `start` (a copy).
    pub fn slice(&self, axis: usize, start: usize, len: usize) -> Tensor {
        slice(self, axis, start, len)
    }
    /// Rows of this `[rows, d]` table picked by `ids` (u32); the table's gradient sums each
    /// row's picks in order, so it is deterministic.
    pub fn embedding(&self, ids: &Tensor) -> Tensor {
        embedding(self, ids)
    }
}

/// `&a + &b` and the like, for the element-wise ops above (with broadcasting).
macro_rules! operator {
    ($trait:ident, $method:ident, $op:ident) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, other: &Tensor) -> Tensor {
                binary(BinaryOp::$op, self, other)
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, other: Tensor) -> Tensor {
                binary(BinaryOp::$op, &self, &other)
            }
        }
    };
}

operator!(Add, add, Add);
operator!(Sub, sub, Sub);
operator!(Mul, mul, Mul);
operator!(Div, div, Div);

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        unary(UnaryOp::Neg, self)
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        unary(UnaryOp::Neg, &self)
    }
}
