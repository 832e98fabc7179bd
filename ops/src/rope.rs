//! Rotary position embedding (`shaders/rope.wgsl`). The cos/sin table is computed once in
//! f64 on the host, so long contexts keep their angles exact. Backward rotates back.

use moegrad_engine::{grid, record, render_template, DType, Device, Result, Tensor};

use crate::host::HostTensor;

const SHADER: &str = include_str!("../../shaders/rope.wgsl");

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

fn launch(x: &Tensor, table: &RopeTable, offset: usize, sign: &str) -> Tensor {
    let dev = x.device();
    let y = Tensor::empty(dev, x.shape(), DType::F32).unwrap_or_else(|e| panic!("rope: {e}"));
    let pairs = x.numel() / 2;
    if pairs > 0 {
        let t = x.shape()[x.rank() - 2];
        let pipeline = dev.pipeline(&format!("rope/{sign}"), "main", || render_template(SHADER, &[("SIGN", sign)]));
        let params = [pairs, t, table.head_dim, offset].map(|v| v as u32);
        dev.launch(&pipeline, &params, &[x, &table.cos, &table.sin, &y], grid(pairs.div_ceil(256)));
    }
    y
}

/// Rotates `x` `[..., T, head_dim]`; row t is position `offset + t`.
pub fn rope(x: &Tensor, table: &RopeTable, offset: usize) -> Tensor {
    assert!(x.rank() >= 2 && x.shape()[x.rank() - 1] == table.head_dim, "rope: input {:?} must be [..., T, {}]", x.shape(), table.head_dim);
    let t = x.shape()[x.rank() - 2];
    assert!(offset + t <= table.positions, "rope: positions {offset}..{} exceed the table's {}", offset + t, table.positions);
    let y = launch(x, table, offset, "1.0");
    let table = table.clone();
    record("rope", y, &[x], move |g| vec![Some(launch(g, &table, offset, "-1.0"))])
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
