//! `zip`: an element-wise binary kernel over two contiguous tensors of one shape
//! (`shaders/zip.wgsl`). The engine needs it to sum the gradients a tensor receives, and
//! the ops crate's binary ops use it whenever no broadcasting is involved.

use crate::dtype::DType;
use crate::launch::grid;
use crate::pipeline::render_template;
use crate::tensor::Tensor;

const SHADER: &str = include_str!("../../shaders/zip.wgsl");

/// Floats a kernel's thread loads at once from runs of `n` floats (a whole tensor, or
/// each of its rows): a vec4 where `n` is a multiple of 4, so that every run starts
/// 16-byte aligned (buffers do), else one.
pub fn floats_per_load(n: usize) -> usize {
    if n.is_multiple_of(4) {
        4
    } else {
        1
    }
}

/// `expr` (a WGSL expression in `a` and `b`, valid on f32 and on vec4<f32>) applied to
/// each pair of elements of `a` and `b`, which must have one shape and be f32, as a new
/// tensor off the tape; `name` names the kernel in profiles (`zip/{name}/vec{n}`).
pub fn zip(name: &str, expr: &str, a: &Tensor, b: &Tensor) -> Tensor {
    assert_eq!(a.shape(), b.shape(), "{name}: element-wise operands must have one shape, got {:?} and {:?}", a.shape(), b.shape());
    assert!(
        a.dtype() == DType::F32 && b.dtype() == DType::F32,
        "{name}: expects f32 tensors, got {:?} and {:?}",
        a.dtype(),
        b.dtype()
    );
    assert!(a.device().same(b.device()), "{name}: tensors live on different devices");
    let dev = a.device();
    let out = Tensor::empty(dev, a.shape(), DType::F32).unwrap_or_else(|e| panic!("{name}: {e}"));
    let vec = floats_per_load(a.numel());
    let loads = a.numel() / vec;
    if loads > 0 {
        let value_type = if vec == 4 { "vec4<f32>" } else { "f32" };
        let pipeline = dev.pipeline(&format!("zip/{name}/vec{vec}"), "main", || render_template(SHADER, &[("V", value_type), ("EXPR", expr)]));
        dev.launch(&pipeline, &[loads as u32], &[a, b, &out], grid(loads.div_ceil(256)));
    }
    out
}
