//! Element-wise unary ops. Each is one row of `UnaryOp`: the WGSL forward expression, the
//! WGSL derivative (both in `x` and the scalar `s`), and the f64 CPU reference. The kernel
//! is `unary.wgsl`; its backward computes `g * f'(x)` in one pass.

use crate::{elementwise_grid, record, render_template, DType, Tensor};

use crate::ops::common::{each_float, floats_per_load, with_load_type};
use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("unary.wgsl");

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Square,
    Relu,
    Gelu,
    Silu,
    /// The gate of sigmoid routers.
    Sigmoid,
    AddScalar(f32),
    MulScalar(f32),
}

impl UnaryOp {
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Square => "square",
            UnaryOp::Relu => "relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::Silu => "silu",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::AddScalar(_) => "add_scalar",
            UnaryOp::MulScalar(_) => "mul_scalar",
        }
    }

    fn scalar(self) -> f32 {
        match self {
            UnaryOp::AddScalar(s) | UnaryOp::MulScalar(s) => s,
            _ => 0.0,
        }
    }

    /// (forward, derivative) as WGSL expressions.
    fn wgsl(self) -> (&'static str, &'static str) {
        match self {
            UnaryOp::Neg => ("-x", "-1.0"),
            UnaryOp::Exp => ("exp(x)", "exp(x)"),
            UnaryOp::Log => ("log(x)", "1.0 / x"),
            UnaryOp::Sqrt => ("sqrt(x)", "0.5 / sqrt(x)"),
            UnaryOp::Square => ("x * x", "2.0 * x"),
            UnaryOp::Relu => ("max(x, 0.0)", "select(0.0, 1.0, x > 0.0)"),
            UnaryOp::Gelu => ("gelu(x)", "gelu_grad(x)"),
            UnaryOp::Silu => ("x * sigmoid(x)", "sigmoid(x) * (1.0 + x * (1.0 - sigmoid(x)))"),
            UnaryOp::Sigmoid => ("sigmoid(x)", "sigmoid(x) * (1.0 - sigmoid(x))"),
            UnaryOp::AddScalar(_) => ("x + s", "1.0"),
            UnaryOp::MulScalar(_) => ("x * s", "s"),
        }
    }

    /// The CPU reference of the forward function.
    pub fn reference_scalar(self, x: f64) -> f64 {
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        match self {
            UnaryOp::Neg => -x,
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Square => x * x,
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Gelu => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x.powi(3))).tanh())
            }
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::AddScalar(s) => x + s as f64,
            UnaryOp::MulScalar(s) => x * s as f64,
        }
    }

    pub fn reference(self, x: &HostTensor) -> HostTensor {
        x.map(|v| self.reference_scalar(v))
    }
}

fn launch(op: UnaryOp, entry: &str, tensors: &[&Tensor], out: &Tensor) {
    let dev = out.device();
    let (forward, derivative) = op.wgsl();
    let vec = floats_per_load(out.numel());
    let pipeline = dev.pipeline(&format!("unary/{}/{entry}/vec{vec}", op.name()), entry, || {
        let kernel = render_template(SHADER, &[("FORWARD", forward), ("DERIVATIVE", derivative)]);
        with_load_type(kernel + &each_float("f", vec) + &each_float("df", vec), vec)
    });
    let loads = out.numel() / vec;
    dev.launch(&pipeline, &[loads as u32, op.scalar().to_bits()], tensors, elementwise_grid(loads));
}

/// `op` applied to every element of `x`.
pub fn unary(op: UnaryOp, x: &Tensor) -> Tensor {
    assert_eq!(x.dtype(), DType::F32, "{}: expects an f32 tensor, got {:?}", op.name(), x.dtype());
    let out = Tensor::output(x.device(), x.shape(), DType::F32, format_args!("{}", op.name()));
    if out.numel() > 0 {
        launch(op, "forward", &[x, &out], &out);
    }
    let saved = x.clone();
    record(op.name(), out, &[x], move |g| vec![Some(unary_backward(op, &saved, g))])
}

/// `g * f'(x)`.
fn unary_backward(op: UnaryOp, x: &Tensor, g: &Tensor) -> Tensor {
    let dx = Tensor::output(x.device(), x.shape(), DType::F32, format_args!("{} backward", op.name()));
    if dx.numel() > 0 {
        launch(op, "backward", &[x, &dx, g], &dx);
    }
    dx
}
