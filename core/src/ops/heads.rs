//! Moving attention's activations between token rows and heads. `x W_qkv` gives each
//! token's queries, keys and values side by side; attention wants them per head, `[batch *
//! heads, t, head_dim]`, with queries and keys rotated by their positions. One rotary
//! kernel per part (`rope::move_heads`) reads the projection where it lies and writes each
//! head in place, and the backward pass packs the three gradients straight back: no
//! transposed copy, no slices, no zero-filled gradient buffers to sum. `merge_heads` puts
//! attention's output back in token rows for the output projection, with the same kernel
//! (a layout per side is cheaper than a general strided transpose).

use crate::{record, record_multi, DType, Tensor};

use crate::ops::host::HostTensor;
use crate::ops::rope::{move_heads, rope_reference, HeadLayout, RopeTable, Turn};

/// Queries, keys and values: the parts of the projection, in order.
const PARTS: usize = 3;

/// `qkv` `[batch * t, 3 * heads * head_dim]` (each row: queries, keys, values, each head
/// after head) -> `[q, k, v]`, each `[batch * heads, t, head_dim]`; q and k are rotated
/// for positions `offset..offset + t`.
pub fn split_heads(qkv: &Tensor, batch: usize, heads: usize, table: &RopeTable, offset: usize) -> [Tensor; 3] {
    let hd = table.head_dim;
    assert!(
        qkv.rank() == 2 && batch > 0 && qkv.shape()[0].is_multiple_of(batch) && qkv.shape()[1] == PARTS * heads * hd,
        "split_heads: qkv {:?} is not [batch * t, 3 * heads * head_dim] for batch {batch}, {heads} heads of {hd}",
        qkv.shape()
    );
    assert_eq!(qkv.dtype(), DType::F32, "split_heads: expects an f32 tensor, got {:?}", qkv.dtype());
    let t = qkv.shape()[0] / batch;
    assert!(offset + t <= table.positions, "split_heads: positions {offset}..{} exceed the table's {}", offset + t, table.positions);
    let dims = [batch, heads, t, hd];
    let turns = [Turn::Forward(table, offset), Turn::Forward(table, offset), Turn::Copy];
    let parts: [Tensor; PARTS] = std::array::from_fn(|part| {
        let out = Tensor::output(qkv.device(), &[batch * heads, t, hd], DType::F32, "split_heads");
        move_heads(qkv, HeadLayout::packed(part, PARTS, heads, t, hd), &out, HeadLayout::contiguous(heads, t, hd), dims, turns[part]);
        out
    });
    let (table, qkv_shape) = (table.clone(), qkv.shape().to_vec());
    record_multi("split_heads", &parts.each_ref(), &[qkv], move |grads| {
        // Every column of the projection is written by one part; a part without a gradient
        // (values unused, say) leaves zeros.
        let device = grads.iter().flatten().next().expect("split_heads backward runs with a gradient").device().clone();
        let dqkv = if grads.iter().all(Option::is_some) {
            Tensor::output(&device, &qkv_shape, DType::F32, "split_heads backward")
        } else {
            Tensor::output_zeros(&device, &qkv_shape, DType::F32, "split_heads backward")
        };
        let back = [Turn::Back(&table, offset), Turn::Back(&table, offset), Turn::Copy];
        for (part, g) in grads.iter().enumerate() {
            if let Some(g) = g {
                move_heads(g, HeadLayout::contiguous(heads, t, hd), &dqkv, HeadLayout::packed(part, PARTS, heads, t, hd), dims, back[part]);
            }
        }
        vec![Some(dqkv)]
    });
    parts
}

/// `x` `[batch * heads, t, head_dim]` -> `[batch * t, heads * head_dim]`: each position's
/// heads side by side, as the output projection reads them.
pub fn merge_heads(x: &Tensor, batch: usize) -> Tensor {
    assert!(
        x.rank() == 3 && batch > 0 && x.shape()[0].is_multiple_of(batch),
        "merge_heads: input {:?} is not [batch * heads, t, head_dim] for batch {batch}",
        x.shape()
    );
    assert_eq!(x.dtype(), DType::F32, "merge_heads: expects an f32 tensor, got {:?}", x.dtype());
    let [heads, t, hd] = [x.shape()[0] / batch, x.shape()[1], x.shape()[2]];
    let (per_head, per_row) = (HeadLayout::contiguous(heads, t, hd), HeadLayout::packed(0, 1, heads, t, hd));
    let dims = [batch, heads, t, hd];
    let out = Tensor::output(x.device(), &[batch * t, heads * hd], DType::F32, "merge_heads");
    move_heads(x, per_head, &out, per_row, dims, Turn::Copy);
    let x_shape = x.shape().to_vec();
    record("merge_heads", out, &[x], move |g| {
        let dx = Tensor::output(g.device(), &x_shape, DType::F32, "merge_heads backward");
        move_heads(g, per_row, &dx, per_head, dims, Turn::Copy);
        vec![Some(dx)]
    })
}

/// CPU reference: the parts gathered head by head, then `rope_reference` on q and k.
pub fn split_heads_reference(qkv: &HostTensor, batch: usize, heads: usize, base: f64, offset: usize) -> [HostTensor; 3] {
    let (rows, width) = (qkv.shape[0], qkv.shape[1]);
    let (t, hd) = (rows / batch, width / (PARTS * heads));
    std::array::from_fn(|part| {
        let mut data = Vec::with_capacity(batch * heads * t * hd);
        for b in 0..batch {
            for h in 0..heads {
                for pos in 0..t {
                    let start = (b * t + pos) * width + (part * heads + h) * hd;
                    data.extend_from_slice(&qkv.data[start..start + hd]);
                }
            }
        }
        let x = HostTensor::new(&[batch * heads, t, hd], data);
        if part < 2 {
            rope_reference(&x, base, offset)
        } else {
            x
        }
    })
}

/// CPU reference of `merge_heads`.
pub fn merge_heads_reference(x: &HostTensor, batch: usize) -> HostTensor {
    let [heads, t, hd] = [x.shape[0] / batch, x.shape[1], x.shape[2]];
    let mut data = Vec::with_capacity(x.numel());
    for b in 0..batch {
        for pos in 0..t {
            for h in 0..heads {
                let start = ((b * heads + h) * t + pos) * hd;
                data.extend_from_slice(&x.data[start..start + hd]);
            }
        }
    }
    HostTensor::new(&[batch * t, heads * hd], data)
}
