//! Rotary position embedding (`rope.wgsl`). The cos/sin table is computed once in
//! f64 on the host, so long contexts keep their angles exact. Backward rotates back. The
//! kernel finds head vectors through a layout for each side, which lets `heads.rs` split a
//! fused QKV projection into rotated heads in the same pass, and merge heads back.

use crate::{elementwise_grid, record, render_template, DType, Device, Result, Tensor};

use crate::ops::host::HostTensor;

const SHADER: &str = include_str!("rope.wgsl");

/// cos and sin of `position * base^(-2j / head_dim)` for every position and pair j.
#[derive(Clone)]
pub struct RopeTable {
    pub positions: usize,
    pub head_dim: usize,
    cos: Tensor,
    sin: Tensor,
}

fn angles(positions: usize, head_dim: usize, base: f64) -> Vec<f64> {
    let half = head_dim / 2;
    (0..positions).flat_map(|pos| (0..half).map(move |j| pos as f64 * base.powf(-2.0 * j as f64 / head_dim as f64))).collect()
}

impl RopeTable {
    pub fn new(device: &Device, positions: usize, head_dim: usize, base: f64) -> Result<Self> {
        assert!(head_dim.is_multiple_of(2) && head_dim > 0, "rope: head_dim {head_dim} must be even");
        let a = angles(positions, head_dim, base);
        let cos: Vec<f32> = a.iter().map(|v| v.cos() as f32).collect();
        let sin: Vec<f32> = a.iter().map(|v| v.sin() as f32).collect();
        let shape = [positions, head_dim / 2];
        Ok(RopeTable { positions, head_dim, cos: Tensor::from_slice(device, &cos, &shape)?, sin: Tensor::from_slice(device, &sin, &shape)? })
    }
}

/// Where a kernel finds head vector (b, h, t) of a tensor: `base + b * batch + h * head +
/// t * position` floats.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HeadLayout {
    pub base: usize,
    pub batch: usize,
    pub head: usize,
    pub position: usize,
}

impl HeadLayout {
    /// `[batch, heads, t, head_dim]`, contiguous.
    pub fn contiguous(heads: usize, t: usize, head_dim: usize) -> Self {
        HeadLayout { base: 0, batch: heads * t * head_dim, head: t * head_dim, position: head_dim }
    }

    /// Part `part` of a fused projection `[batch, t, parts * heads * head_dim]`.
    pub fn packed(part: usize, parts: usize, heads: usize, t: usize, head_dim: usize) -> Self {
        let row = parts * heads * head_dim;
        HeadLayout { base: part * heads * head_dim, batch: t * row, head: head_dim, position: row }
    }

    fn params(&self) -> [usize; 4] {
        [self.base, self.batch, self.head, self.position]
    }
}

/// What `move_heads` does to each head vector on the way.
#[derive(Clone, Copy)]
pub(crate) enum Turn<'a> {
    /// Rotated by the angles of positions `offset..offset + t` of the table.
    Forward(&'a RopeTable, usize),
    /// Rotated back: the backward pass of `Forward`.
    Back(&'a RopeTable, usize),
    /// Moved unrotated: attention's values, and heads merged back side by side.
    Copy,
}

/// Moves the `batch * heads * t` head vectors of `head_dim` values of `src` (laid out as
/// `from`) to `dst` (as `to`), turned on the way.
pub(crate) fn move_heads(src: &Tensor, from: HeadLayout, dst: &Tensor, to: HeadLayout, [batch, heads, t, head_dim]: [usize; 4], turn: Turn) {
    let (sign, rope) = match turn {
        Turn::Forward(table, offset) => ("1.0", Some((table, offset))),
        Turn::Back(table, offset) => ("-1.0", Some((table, offset))),
        Turn::Copy => ("0.0", None),
    };
    // A thread per pair of values (j, j + head_dim / 2): rotated, or copied; a copy of
    // odd-sized heads takes a thread per value.
    let paired = rope.is_some() || head_dim.is_multiple_of(2);
    let threads = batch * heads * t * if paired { head_dim / 2 } else { head_dim };
    if threads == 0 {
        return;
    }
    if let Some((table, offset)) = rope {
        assert!(
            table.head_dim == head_dim && offset + t <= table.positions,
            "rope: table of {} positions x {} does not cover {t} positions from {offset} of {head_dim}",
            table.positions,
            table.head_dim
        );
    }
    let dev = src.device();
    let pipeline = dev.pipeline(&format!("rope/{sign}"), "main", || render_template(SHADER, &[("SIGN", sign)]));
    let mut params = vec![threads, t, heads, head_dim, rope.map_or(0, |(_, offset)| offset), 0, 0, 0];
    params.extend(from.params());
    params.extend(to.params());
    let params: Vec<u32> = params.into_iter().map(|v| u32::try_from(v).unwrap_or_else(|_| panic!("rope: index {v} does not fit in u32"))).collect();
    // A copy reads no table: `src` stands in for both.
    let (cos, sin) = rope.map_or((src, src), |(table, _)| (&table.cos, &table.sin));
    dev.launch(&pipeline, &params, &[src, cos, sin, dst], elementwise_grid(threads));
}

/// `x` `[..., T, head_dim]` turned as a whole.
fn rotate_all(x: &Tensor, turn: Turn) -> Tensor {
    let y = Tensor::output(x.device(), x.shape(), DType::F32, "rope");
    let [t, head_dim] = [x.shape()[x.rank() - 2], x.shape()[x.rank() - 1]];
    let layout = HeadLayout::contiguous(1, t, head_dim);
    move_heads(x, layout, &y, layout, [x.numel() / (t * head_dim).max(1), 1, t, head_dim], turn);
    y
}

/// Rotates `x` `[..., T, head_dim]`; row t is position `offset + t`.
pub fn rope(x: &Tensor, table: &RopeTable, offset: usize) -> Tensor {
    assert!(x.rank() >= 2 && x.shape()[x.rank() - 1] == table.head_dim, "rope: input {:?} must be [..., T, {}]", x.shape(), table.head_dim);
    let t = x.shape()[x.rank() - 2];
    assert!(offset + t <= table.positions, "rope: positions {offset}..{} exceed the table's {}", offset + t, table.positions);
    assert_eq!(x.dtype(), DType::F32, "rope: expects an f32 tensor, got {:?}", x.dtype());
    let y = rotate_all(x, Turn::Forward(table, offset));
    let table = table.clone();
    record("rope", y, &[x], move |g| vec![Some(rotate_all(g, Turn::Back(&table, offset)))])
}

/// CPU reference.
pub fn rope_reference(x: &HostTensor, base: f64, offset: usize) -> HostTensor {
    let d = *x.shape.last().unwrap();
    let t = x.shape[x.shape.len() - 2];
    let half = d / 2;
    let a = angles(offset + t, d, base);
    let mut y = x.clone();
    for (r, row) in y.data.chunks_mut(d).enumerate() {
        let pos = offset + r % t;
        for j in 0..half {
            let (c, s) = (a[pos * half + j].cos(), a[pos * half + j].sin());
            let (u, v) = (row[j], row[j + half]);
            row[j] = u * c - v * s;
            row[j + half] = u * s + v * c;
        }
    }
    y
}
