//! SwiGLU's gating, `silu(gate) * up`, fused forward and backward (`swiglu.wgsl`).

use crate::{elementwise_grid, record, DType, Tensor};

use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("swiglu.wgsl");

pub fn swiglu(gate: &Tensor, up: &Tensor) -> Tensor {
    assert_eq!(gate.shape(), up.shape(), "swiglu: gate {:?} and up {:?} must have one shape", gate.shape(), up.shape());
    assert!(gate.dtype() == DType::F32 && up.dtype() == DType::F32, "swiglu: expects f32 tensors");
    let dev = gate.device();
    let alloc = || Tensor::output(dev, gate.shape(), DType::F32, "swiglu");
    let y = alloc();
    let n = y.numel();
    if n > 0 {
        let pipeline = dev.pipeline("swiglu/forward", "forward", || SHADER.to_string());
        dev.launch(&pipeline, &[n as u32], &[gate, up, &y], elementwise_grid(n));
    }
    let (sg, su) = (gate.clone(), up.clone());
    record("swiglu", y, &[gate, up], move |g| {
        let (dgate, dup) = (alloc_like(&sg), alloc_like(&sg));
        if n > 0 {
            let dev = g.device();
            let pipeline = dev.pipeline("swiglu/backward", "backward", || SHADER.to_string());
            dev.launch(&pipeline, &[n as u32], &[&sg, &su, &dgate, g, &dup], elementwise_grid(n));
        }
        vec![Some(dgate), Some(dup)]
    })
}

fn alloc_like(t: &Tensor) -> Tensor {
    Tensor::output(t.device(), t.shape(), DType::F32, "swiglu backward")
}

/// CPU reference.
pub fn swiglu_reference(gate: &HostTensor, up: &HostTensor) -> HostTensor {
    HostTensor::new(&gate.shape, gate.data.iter().zip(&up.data).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect())
}
