//! Embedding lookup: gather rows of a table by integer id (`gather_rows.wgsl`).
//! Its backward is a deterministic scatter-add into the table's gradient
//! (`embedding_backward.wgsl`).

use crate::{elementwise_grid, grid, record, render_template, DType, Tensor};

use crate::ops::host::HostTensor;

const GATHER_SHADER: &str = include_str!("gather_rows.wgsl");
const BACKWARD_SHADER: &str = include_str!("embedding_backward.wgsl");
/// Table rows per backward workgroup: enough workgroups to fill a GPU at vocabulary
/// sizes, few enough that re-reading the ids stays cheap.
const BACKWARD_ROWS: usize = 64;

/// `table[ids]`: for ids of shape `[...]` and a `[rows, d]` table, a `[..., d]` tensor.
/// Ids past the table give zero rows (check ids on the host when they come from users).
pub fn embedding(table: &Tensor, ids: &Tensor) -> Tensor {
    assert_eq!(table.rank(), 2, "embedding: table must be [rows, dim], got {:?}", table.shape());
    assert_eq!(table.dtype(), DType::F32, "embedding: table must be f32, got {:?}", table.dtype());
    assert_eq!(ids.dtype(), DType::U32, "embedding: ids must be u32, got {:?}", ids.dtype());
    let (rows, d) = (table.shape()[0], table.shape()[1]);
    let mut shape = ids.shape().to_vec();
    shape.push(d);
    let dev = table.device();
    let out = Tensor::output(dev, &shape, DType::F32, "embedding");
    if out.numel() > 0 {
        let pipeline = dev.pipeline("gather_rows", "main", || GATHER_SHADER.to_string());
        let params = [out.numel(), d, rows].map(|v| v as u32);
        dev.launch(&pipeline, &params, &[table, ids, &out], elementwise_grid(out.numel()));
    }
    let saved_ids = ids.clone();
    record("embedding", out, &[table, ids], move |g| vec![Some(embedding_backward(g, &saved_ids, rows, d)), None])
}

fn embedding_backward(g: &Tensor, ids: &Tensor, rows: usize, d: usize) -> Tensor {
    let dev = g.device();
    let dtable = Tensor::output_zeros(dev, &[rows, d], DType::F32, "embedding backward");
    if ids.numel() > 0 && d > 0 {
        let pipeline = dev.pipeline("embedding_backward", "main", || render_template(BACKWARD_SHADER, &[("ROWS", &BACKWARD_ROWS.to_string())]));
        let params = [ids.numel(), d, rows].map(|v| v as u32);
        dev.launch(&pipeline, &params, &[g, ids, &dtable], grid(rows.div_ceil(BACKWARD_ROWS)));
    }
    dtable
}

/// CPU reference of `embedding`.
pub fn embedding_reference(table: &HostTensor, ids: &[u32], ids_shape: &[usize]) -> HostTensor {
    let (rows, d) = (table.shape[0], table.shape[1]);
    let mut shape = ids_shape.to_vec();
    shape.push(d);
    let data = ids
        .iter()
        .flat_map(|&id| {
            let id = id as usize;
            (0..d).map(move |c| if id < rows { table.data[id * d + c] } else { 0.0 })
        })
        .collect();
    HostTensor::new(&shape, data)
}
