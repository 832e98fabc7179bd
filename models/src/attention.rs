//! Causal multi-head self-attention with rotary positions and an optional KV cache.

use moegrad_core::ops::{attention, concat, merge_heads, split_heads, RopeTable};
use moegrad_core::{Device, Module, Result, Tensor, Visitor};
use rand::Rng;

use crate::init;

#[derive(Clone)]
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
    pub fn forward(&self, x: &Tensor, batch: usize, table: &RopeTable, cache: Option<&mut LayerCache>) -> Tensor {
        let h = self.heads;
        let offset = cache.as_ref().map_or(0, |c| c.len());
        let [q, mut k, mut v] = split_heads(&x.matmul(&self.wqkv), batch, h, table, offset); // each [B*H, T, hd]
        if let Some(cache) = cache {
            if let (Some(pk), Some(pv)) = (&cache.k, &cache.v) {
                k = concat(&[pk, &k], 1);
                v = concat(&[pv, &v], 1);
            }
            cache.k = Some(k.clone());
            cache.v = Some(v.clone());
        }
        merge_heads(&attention(&q, &k, &v, true), batch).matmul(&self.wo)
    }
}

impl Module for SelfAttention {
    fn visit(&self, v: &mut Visitor) {
        v.parameter("wqkv", &self.wqkv);
        v.parameter("wo", &self.wo);
    }
}
