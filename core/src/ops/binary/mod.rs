//! Element-wise binary ops with numpy broadcasting (add, sub, mul, div), and the two ops
//! broadcasting needs: `broadcast_to` (forward) and `sum_to` (its backward, which sums a
//! gradient over the broadcast dimensions).

pub mod zip;

use crate::shape::{numel, strides};
use crate::{elementwise_grid, record, DType, Tensor};
use zip::{repeats_within, zip};

use crate::ops::host::{unravel, HostTensor};
use crate::ops::reduce::sum_middle;
use crate::ops::strided::{pack_dims, strided};
use crate::ops::unary::{unary, UnaryOp};

const SUM_TO_SHADER: &str = include_str!("sum_to.wgsl");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

impl BinaryOp {
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }

    fn wgsl(self) -> &'static str {
        match self {
            BinaryOp::Add => "a + b",
            BinaryOp::Sub => "a - b",
            BinaryOp::Mul => "a * b",
            BinaryOp::Div => "a / b",
        }
    }

    fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }

    /// The CPU reference, with its own broadcasting loop.
    pub fn reference(self, a: &HostTensor, b: &HostTensor) -> HostTensor {
        let shape = broadcast_shape(self.name(), &a.shape, &b.shape);
        let pick = |t: &HostTensor, index: &[usize]| {
            let skip = index.len() - t.shape.len();
            let own: Vec<usize> = t.shape.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { index[skip + d] }).collect();
            t.at(&own)
        };
        let data = (0..numel(&shape))
            .map(|flat| {
                let index = unravel(flat, &shape);
                self.apply(pick(a, &index), pick(b, &index))
            })
            .collect();
        HostTensor::new(&shape, data)
    }
}

/// The numpy broadcast of two shapes; panics, naming the op and both shapes, if there is none.
pub fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Vec<usize> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], d: usize| if d + s.len() >= rank { s[d + s.len() - rank] } else { 1 };
    (0..rank)
        .map(|d| match (dim(a, d), dim(b, d)) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => panic!("{op}: shapes {a:?} and {b:?} cannot be broadcast together"),
        })
        .collect()
}

/// Strides that read an input of shape `shape` at every index of the broadcast `out`.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = strides(shape);
    let skip = out.len() - shape.len();
    (0..out.len()).map(|d| if d < skip || shape[d - skip] == 1 { 0 } else { own[d - skip] }).collect()
}

pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Tensor {
    let shape = broadcast_shape(op.name(), a.shape(), b.shape());
    // Equal shapes, or one operand repeating along the other's leading dimensions (a bias),
    // need no index arithmetic: the contiguous kernel, a load of four floats a thread where
    // it can.
    let out = if a.shape() == b.shape() || repeats_within(a.shape(), b.shape()) || repeats_within(b.shape(), a.shape()) {
        zip(op.name(), op.wgsl(), a, b).alias(&shape)
    } else {
        strided(op.name(), op.wgsl(), &shape, a, &broadcast_strides(a.shape(), &shape), b, &broadcast_strides(b.shape(), &shape))
    };
    let (sa, sb) = (a.clone(), b.clone());
    let (need_a, need_b) = (a.is_tracked(), b.is_tracked());
    let saved_out = out.clone();
    record(op.name(), out, &[a, b], move |g| {
        let (ga, gb) = match op {
            BinaryOp::Add => (g.clone(), g.clone()),
            BinaryOp::Sub => (g.clone(), unary(UnaryOp::Neg, g)),
            BinaryOp::Mul => (if need_a { binary(BinaryOp::Mul, g, &sb) } else { g.clone() }, if need_b { binary(BinaryOp::Mul, g, &sa) } else { g.clone() }),
            // d(a/b)/db = -(a/b)/b
            BinaryOp::Div => (
                if need_a { binary(BinaryOp::Div, g, &sb) } else { g.clone() },
                if need_b { unary(UnaryOp::Neg, &binary(BinaryOp::Div, &binary(BinaryOp::Mul, g, &saved_out), &sb)) } else { g.clone() },
            ),
        };
        vec![need_a.then(|| sum_to(&ga, sa.shape())), need_b.then(|| sum_to(&gb, sb.shape()))]
    })
}

/// `x` repeated along its size-1 (or missing leading) dimensions to `shape`.
pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Tensor {
    let target = broadcast_shape("broadcast_to", x.shape(), shape);
    assert_eq!(target, shape, "broadcast_to: shape {:?} cannot be broadcast to {:?}", x.shape(), shape);
    let s = broadcast_strides(x.shape(), shape);
    let out = strided("broadcast_to", "a", shape, x, &s, x, &s);
    let in_shape = x.shape().to_vec();
    record("broadcast_to", out, &[x], move |g| vec![Some(sum_to(g, &in_shape))])
}

/// Sums `g` over the dimensions along which `shape` was broadcast to `g.shape()`.
pub fn sum_to(g: &Tensor, shape: &[usize]) -> Tensor {
    if g.shape() == shape {
        return g.clone();
    }
    let full = g.shape().to_vec();
    assert!(shape.len() <= full.len() && broadcast_shape("sum_to", shape, &full) == full, "sum_to: shape {full:?} is not a broadcast of {shape:?}");
    if g.numel() == 0 {
        // Nothing to sum: zeros, if a summed dimension is the empty one.
        let out = Tensor::output_zeros(g.device(), shape, DType::F32, "sum_to");
        return record("sum_to", out, &[g], move |gg| vec![Some(broadcast_to(gg, &full))]);
    }
    let skip = full.len() - shape.len();
    let reduced = |d: usize| d < skip || shape[d - skip] == 1;
    // The common case (a bias's gradient, summed over the rows; a per-row scale's, over
    // the columns): the summed dimensions are one run, so g is [outer, n, inner] summed
    // over n, which the reductions do with enough threads for any shape. A thread per
    // output, as below, leaves a GPU nearly idle when there are few outputs.
    let dims: Vec<usize> = (0..full.len()).filter(|&d| full[d] > 1).collect();
    let first = dims.iter().position(|&d| reduced(d));
    let last = dims.iter().rposition(|&d| reduced(d));
    if let (Some(first), Some(last)) = (first, last) {
        if dims[first..=last].iter().all(|&d| reduced(d)) {
            let size = |ds: &[usize]| ds.iter().map(|&d| full[d]).product::<usize>();
            let split = [size(&dims[..first]), size(&dims[first..=last]), size(&dims[last + 1..])];
            let out = sum_middle(g, split, 1.0, shape);
            return record("sum_to", out, &[g], move |gg| vec![Some(broadcast_to(gg, &full))]);
        }
    }
    let g_strides = strides(&full);
    let (mut kept, mut kept_s, mut red, mut red_s) = (vec![], vec![], vec![], vec![]);
    for d in 0..full.len() {
        let target = if d < skip { 1 } else { shape[d - skip] };
        if full[d] == 1 {
            continue;
        }
        if target == 1 {
            red.push(full[d]);
            red_s.push(g_strides[d]);
        } else {
            kept.push(full[d]);
            kept_s.push(g_strides[d]);
        }
    }
    let dev = g.device();
    let out = Tensor::output(dev, shape, DType::F32, "sum_to");
    if out.numel() > 0 {
        let mut params = vec![out.numel() as u32, numel(&red) as u32, kept.len() as u32, red.len() as u32];
        for dims in [&kept, &kept_s, &red, &red_s] {
            params.extend(pack_dims("sum_to", dims));
        }
        let pipeline = dev.pipeline("sum_to", "main", || SUM_TO_SHADER.to_string());
        dev.launch(&pipeline, &params, &[g, &out], elementwise_grid(out.numel()));
    }
    record("sum_to", out, &[g], move |gg| vec![Some(broadcast_to(gg, &full))])
}

/// CPU reference of `sum_to`.
pub fn sum_to_reference(g: &HostTensor, shape: &[usize]) -> HostTensor {
    let mut out = HostTensor::zeros(shape);
    let skip = g.shape.len() - shape.len();
    let out_strides = out.strides();
    for (flat, &v) in g.data.iter().enumerate() {
        let index = unravel(flat, &g.shape);
        let offset: usize = (0..shape.len()).map(|d| if shape[d] == 1 { 0 } else { index[skip + d] * out_strides[d] }).sum();
        out.data[offset] += v;
    }
    out
}
