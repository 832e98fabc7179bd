//! Causal multi-head self-attention with rotary positions and an optional KV cache.

use moegrad_engine::{Device, Result, Tensor};
use moegrad_ops::{attention, concat, rope, RopeTable, TensorOps};
use rand::Rng;

use crate::init;

pub struct SelfAttention {
    /// `[d, 3 * heads * head_dim]`: queries, keys and values in one matmul.
    pub wqkv: Tensor,
    /// `[heads * head_dim, d]`.
    pub wo: Tensor,
    pub heads: usize,
    pub head_dim: usize,
}

/// Keys and values of the positions seen so far, `[batch * heads, S, head_dim]`.
#[derive(Default, Clone)]
pub struct LayerCache {
    pub k: Option<Tensor>,
    pub v: Option<Tensor>,
}

impl LayerCache {
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.shape()[1])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SelfAttention {
    pub fn new(device: &Device, d: usize, heads: usize, head_dim: usize, out_std: f32, rng: &mut impl Rng) -> Result<Self> {
        Ok(SelfAttention {
            wqkv: init::normal(device, &[d, 3 * heads * head_dim], init::STD, rng)?,
            wo: init::normal(device, &[heads * head_dim, d], out_std, rng)?,
            heads,
            head_dim,
        })
    }

    /// `x` is `[batch * t, d]` for `batch` sequences of `t` new positions; with a cache,
    /// the positions continue after the cached ones and the cache grows.
    pub fn forward(&self, x: &Tensor, batch: usize, t: usize, table: &RopeTable, cache: Option<&mut LayerCache>) -> Tensor {
        let (h, hd) = (self.heads, self.head_dim);
        let qkv = x.matmul(&self.wqkv).reshape(&[batch, t, 3 * h, hd]).transpose(1, 2); // [B, 3H, T, hd]
        let part = |i: usize| qkv.slice(1, i * h, h).reshape(&[batch * h, t, hd]);
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let (q, mut k, mut v) = (rope(&part(0), table, offset), rope(&part(1), table, offset), part(2));
        if let Some(cache) = cache {
            if let (Some(pk), Some(pv)) = (&cache.k, &cache.v) {
                k = concat(&[pk, &k], 1);
                v = concat(&[pv, &v], 1);
            }
            cache.k = Some(k.clone());
            cache.v = Some(v.clone());
        }
        let out = attention(&q, &k, &v, true); // [B*H, T, hd]
        out.reshape(&[batch, h, t, hd]).transpose(1, 2).reshape(&[batch * t, h * hd]).matmul(&self.wo)
    }

    pub fn parameters(&self) -> Vec<(&'static str, Tensor)> {
        vec![("wqkv", self.wqkv.clone()), ("wo", self.wo.clone())]
    }
}
