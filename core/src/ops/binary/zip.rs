//! `zip`: an element-wise binary kernel over two contiguous tensors of one shape, or one
//! repeating along the other's leading dimensions (`zip.wgsl`). Binary ops (and
//! so the tape's gradient sums) use it whenever their broadcast is no more than that
//! repetition (a bias): no division or remainder a dimension for each element.

use crate::ops::common::floats_per_load;
use crate::{elementwise_grid, render_template, DType, Tensor};

const SHADER: &str = include_str!("zip.wgsl");

/// Whether `small` repeats along the leading dimensions of `big`: its shape, less any
/// leading 1s, is `big`'s trailing dimensions (a bias over the rows of a matrix).
pub fn repeats_within(small: &[usize], big: &[usize]) -> bool {
    let own = &small[small.iter().position(|&d| d != 1).unwrap_or(small.len())..];
    own.len() <= big.len() && own == &big[big.len() - own.len()..]
}

/// `expr` (a WGSL expression in `a` and `b`, valid on f32 and on `vec4<f32>`) applied to
/// each pair of elements of two f32 tensors, as a new tensor off the tape, of the shape of
/// the larger; `name` names the kernel in profiles (`zip/{name}/...`). The operands have
/// one shape, or the smaller `repeats_within` the larger, and is read again for each of
/// its copies.
pub fn zip(name: &str, expr: &str, a: &Tensor, b: &Tensor) -> Tensor {
    // Which operand repeats is decided by the shapes, not the sizes: an empty tensor may
    // repeat a non-empty one zero times.
    let same = a.shape() == b.shape();
    let a_repeats = !same && repeats_within(a.shape(), b.shape());
    let b_repeats = !same && !a_repeats && repeats_within(b.shape(), a.shape());
    assert!(
        same || a_repeats || b_repeats,
        "{name}: element-wise operands must have one shape, or one the other's trailing dimensions, got {:?} and {:?}",
        a.shape(),
        b.shape()
    );
    let big = if a_repeats { b } else { a };
    assert!(a.dtype() == DType::F32 && b.dtype() == DType::F32, "{name}: expects f32 tensors, got {:?} and {:?}", a.dtype(), b.dtype());
    assert!(a.device().same(b.device()), "{name}: tensors live on different devices");
    let dev = a.device();
    let out = Tensor::output(dev, big.shape(), DType::F32, format_args!("{name}"));
    // Loads of four floats need every copy of the repeating operand to start 16-byte aligned.
    let vec = floats_per_load(a.numel().min(b.numel()));
    let loads = [out.numel(), a.numel(), b.numel()].map(|n| (n / vec) as u32);
    if loads[0] > 0 {
        let value_type = if vec == 4 { "vec4<f32>" } else { "f32" };
        let index = |repeats: bool, loads: &str| if repeats { format!("i % p.{loads}") } else { "i".to_string() };
        let (a_at, b_at) = (index(a_repeats, "a_loads"), index(b_repeats, "b_loads"));
        let key = format!(
            "zip/{name}/vec{vec}{}",
            if a_repeats {
                "/a_repeats"
            } else if b_repeats {
                "/b_repeats"
            } else {
                ""
            }
        );
        let pipeline = dev.pipeline(&key, "main", || render_template(SHADER, &[("V", value_type), ("EXPR", expr), ("A_AT", &a_at), ("B_AT", &b_at)]));
        dev.launch(&pipeline, &loads, &[a, b, &out], elementwise_grid(loads[0] as usize));
    }
    out
}
