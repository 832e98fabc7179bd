//! `TensorOps`: every op as a method, so model code reads `x.matmul(&w).add(&b).gelu()`.
//! The engine's `Tensor` lives in another crate, hence an extension trait (bring it in
//! with `use moegrad::prelude::*`).

use moegrad_engine::Tensor;

use crate::binary::{binary, broadcast_to, sum_to, BinaryOp};
use crate::embedding::embedding;
use crate::layout::{reshape, transpose};
use crate::matmul::{matmul, matmul_t};
use crate::reduce::{reduce, reduce_all, ReduceOp};
use crate::slice::slice;
use crate::unary::{unary, UnaryOp};

pub trait TensorOps {
    fn add(&self, other: &Tensor) -> Tensor;
    fn sub(&self, other: &Tensor) -> Tensor;
    fn mul(&self, other: &Tensor) -> Tensor;
    fn div(&self, other: &Tensor) -> Tensor;
    fn neg(&self) -> Tensor;
    fn exp(&self) -> Tensor;
    fn log(&self) -> Tensor;
    fn sqrt(&self) -> Tensor;
    fn square(&self) -> Tensor;
    fn relu(&self) -> Tensor;
    fn gelu(&self) -> Tensor;
    fn silu(&self) -> Tensor;
    fn sigmoid(&self) -> Tensor;
    fn add_scalar(&self, s: f32) -> Tensor;
    fn mul_scalar(&self, s: f32) -> Tensor;
    fn sum(&self, axis: usize) -> Tensor;
    fn sum_keepdim(&self, axis: usize) -> Tensor;
    fn mean(&self, axis: usize) -> Tensor;
    fn max(&self, axis: usize) -> Tensor;
    fn sum_all(&self) -> Tensor;
    fn mean_all(&self) -> Tensor;
    fn max_all(&self) -> Tensor;
    fn matmul(&self, other: &Tensor) -> Tensor;
    fn matmul_t(&self, other: &Tensor, trans_self: bool, trans_other: bool) -> Tensor;
    fn reshape(&self, shape: &[usize]) -> Tensor;
    fn transpose(&self, d0: usize, d1: usize) -> Tensor;
    fn slice(&self, axis: usize, start: usize, len: usize) -> Tensor;
    fn broadcast_to(&self, shape: &[usize]) -> Tensor;
    fn sum_to(&self, shape: &[usize]) -> Tensor;
    /// Rows of this `[rows, d]` table picked by `ids` (u32).
    fn embedding(&self, ids: &Tensor) -> Tensor;
}

impl TensorOps for Tensor {
    fn add(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Add, self, other)
    }
    fn sub(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Sub, self, other)
    }
    fn mul(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Mul, self, other)
    }
    fn div(&self, other: &Tensor) -> Tensor {
        binary(BinaryOp::Div, self, other)
    }
    fn neg(&self) -> Tensor {
        unary(UnaryOp::Neg, self)
    }
    fn exp(&self) -> Tensor {
        unary(UnaryOp::Exp, self)
    }
    fn log(&self) -> Tensor {
        unary(UnaryOp::Log, self)
    }
    fn sqrt(&self) -> Tensor {
        unary(UnaryOp::Sqrt, self)
    }
    fn square(&self) -> Tensor {
        unary(UnaryOp::Square, self)
    }
    fn relu(&self) -> Tensor {
        unary(UnaryOp::Relu, self)
    }
    fn gelu(&self) -> Tensor {
        unary(UnaryOp::Gelu, self)
    }
    fn silu(&self) -> Tensor {
        unary(UnaryOp::Silu, self)
    }
    fn sigmoid(&self) -> Tensor {
        unary(UnaryOp::Sigmoid, self)
    }
    fn add_scalar(&self, s: f32) -> Tensor {
        unary(UnaryOp::AddScalar(s), self)
    }
    fn mul_scalar(&self, s: f32) -> Tensor {
        unary(UnaryOp::MulScalar(s), self)
    }
    fn sum(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Sum, self, axis, false)
    }
    fn sum_keepdim(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Sum, self, axis, true)
    }
    fn mean(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Mean, self, axis, false)
    }
    fn max(&self, axis: usize) -> Tensor {
        reduce(ReduceOp::Max, self, axis, false)
    }
    fn sum_all(&self) -> Tensor {
        reduce_all(ReduceOp::Sum, self)
    }
    fn mean_all(&self) -> Tensor {
        reduce_all(ReduceOp::Mean, self)
    }
    fn max_all(&self) -> Tensor {
        reduce_all(ReduceOp::Max, self)
    }
    fn matmul(&self, other: &Tensor) -> Tensor {
        matmul(self, other)
    }
    fn matmul_t(&self, other: &Tensor, trans_self: bool, trans_other: bool) -> Tensor {
        matmul_t(self, other, trans_self, trans_other)
    }
    fn reshape(&self, shape: &[usize]) -> Tensor {
        reshape(self, shape)
    }
    fn transpose(&self, d0: usize, d1: usize) -> Tensor {
        transpose(self, d0, d1)
    }
    fn slice(&self, axis: usize, start: usize, len: usize) -> Tensor {
        slice(self, axis, start, len)
    }
    fn broadcast_to(&self, shape: &[usize]) -> Tensor {
        broadcast_to(self, shape)
    }
    fn sum_to(&self, shape: &[usize]) -> Tensor {
        sum_to(self, shape)
    }
    fn embedding(&self, ids: &Tensor) -> Tensor {
        embedding(self, ids)
    }
}
