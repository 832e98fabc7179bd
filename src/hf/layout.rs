//! Where each Hugging Face tensor lies in moegrad's parameters. One table, `pieces`,
//! drives both directions, so export and import cannot disagree.
//!
//! moegrad stores a linear layer as `[in, out]` (the forward pass is `x W`); PyTorch's
//! `nn.Linear` as `[out, in]`. moegrad fuses queries, keys and values into one `wqkv`
//! (`[d, 3 H hd]`, each part head after head) and a SwiGLU input projection into one
//! `w_in` (gate then up); Hugging Face keeps them apart. Both use the same rotary
//! convention (the two halves of a head rotated together, `rotate_half`), so no head
//! permutation is needed.

use std::ops::Range;

use anyhow::{bail, Result};
use moegrad_models::{FfnKind, ModelConfig};

use crate::hf::config::Architecture;

/// One Hugging Face tensor: columns `cols` of matrix `batch` of moegrad parameter `ours`,
/// viewed as `[batches, rows, cols]` (a matrix is one batch, a vector one row).
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub hf: String,
    pub ours: String,
    pub batch: usize,
    pub cols: Range<usize>,
    /// Stored transposed there (`nn.Linear`'s `[out, in]`).
    pub transposed: bool,
}

/// `[batches, rows, cols]` of a parameter's shape.
fn as_batches(shape: &[usize]) -> [usize; 3] {
    match *shape {
        [c] => [1, 1, c],
        [r, c] => [1, r, c],
        [b, r, c] => [b, r, c],
        _ => panic!("hf layout: a parameter of shape {shape:?} is neither a vector, a matrix nor a stack of matrices"),
    }
}

impl Piece {
    fn whole(hf: String, ours: String, width: usize, transposed: bool) -> Piece {
        Piece { hf, ours, batch: 0, cols: 0..width, transposed }
    }

    /// The shape the Hugging Face tensor has, for a moegrad parameter of `ours_shape`.
    pub fn hf_shape(&self, ours_shape: &[usize]) -> Vec<usize> {
        let [_, rows, _] = as_batches(ours_shape);
        let n = self.cols.len();
        match (ours_shape.len(), self.transposed) {
            (1, _) => vec![n],
            (_, true) => vec![n, rows],
            (_, false) => vec![rows, n],
        }
    }

    /// The piece's values, in the Hugging Face layout, from a moegrad parameter's.
    pub fn gather(&self, ours_shape: &[usize], ours: &[f32]) -> Vec<f32> {
        let [_, rows, cols] = as_batches(ours_shape);
        let base = self.batch * rows * cols;
        let at = |r: usize, c: usize| ours[base + r * cols + c];
        if self.transposed {
            self.cols.clone().flat_map(|c| (0..rows).map(move |r| at(r, c))).collect()
        } else {
            (0..rows).flat_map(|r| self.cols.clone().map(move |c| at(r, c))).collect()
        }
    }

    /// Writes the piece's values (`hf`, in the Hugging Face layout) into a moegrad
    /// parameter's.
    pub fn scatter(&self, ours_shape: &[usize], ours: &mut [f32], hf: &[f32]) {
        let [_, rows, cols] = as_batches(ours_shape);
        let base = self.batch * rows * cols;
        let n = self.cols.len();
        for r in 0..rows {
            for (j, c) in self.cols.clone().enumerate() {
                ours[base + r * cols + c] = if self.transposed { hf[j * rows + r] } else { hf[r * n + j] };
            }
        }
    }
}

/// Every Hugging Face tensor of `model` (which `arch` represents) and where it lies.
/// Together the pieces cover each of moegrad's parameters exactly once.
pub fn pieces(model: &ModelConfig, arch: Architecture) -> Result<Vec<Piece>> {
    let d = model.d_model;
    let inner = model.heads * model.head_dim();
    let mut out = vec![
        Piece::whole("model.embed_tokens.weight".into(), "embed".into(), d, false),
        Piece::whole("model.norm.weight".into(), "final_norm".into(), d, false),
    ];
    if !model.tied_embeddings {
        out.push(Piece::whole("lm_head.weight".into(), "lm_head".into(), model.vocab_size, true));
    }
    for (i, kind) in model.layer_kinds().into_iter().enumerate() {
        let (hf, ours) = (format!("model.layers.{i}"), format!("blocks.{i}"));
        out.push(Piece::whole(format!("{hf}.input_layernorm.weight"), format!("{ours}.attn_norm"), d, false));
        out.push(Piece::whole(format!("{hf}.post_attention_layernorm.weight"), format!("{ours}.ffn_norm"), d, false));
        for (part, name) in ["q_proj", "k_proj", "v_proj"].into_iter().enumerate() {
            let cols = part * inner..(part + 1) * inner;
            out.push(Piece { hf: format!("{hf}.self_attn.{name}.weight"), ours: format!("{ours}.attn.wqkv"), batch: 0, cols, transposed: true });
        }
        out.push(Piece::whole(format!("{hf}.self_attn.o_proj.weight"), format!("{ours}.attn.wo"), d, true));
        match (arch, kind) {
            (Architecture::Llama, FfnKind::Dense) => {
                let h = model.dense_hidden();
                out.push(Piece { hf: format!("{hf}.mlp.gate_proj.weight"), ours: format!("{ours}.ffn.w_in"), batch: 0, cols: 0..h, transposed: true });
                out.push(Piece { hf: format!("{hf}.mlp.up_proj.weight"), ours: format!("{ours}.ffn.w_in"), batch: 0, cols: h..2 * h, transposed: true });
                out.push(Piece::whole(format!("{hf}.mlp.down_proj.weight"), format!("{ours}.ffn.w_out"), d, true));
            }
            (Architecture::Mixtral, FfnKind::Topk | FfnKind::Densemixer) => {
                let (h, moe) = (model.expert_hidden(), format!("{hf}.block_sparse_moe"));
                out.push(Piece::whole(format!("{moe}.gate.weight"), format!("{ours}.ffn.router"), model.moe.experts, true));
                for e in 0..model.moe.experts {
                    let expert = format!("{moe}.experts.{e}");
                    out.push(Piece { hf: format!("{expert}.w1.weight"), ours: format!("{ours}.ffn.w_in"), batch: e, cols: 0..h, transposed: true });
                    out.push(Piece { hf: format!("{expert}.w3.weight"), ours: format!("{ours}.ffn.w_in"), batch: e, cols: h..2 * h, transposed: true });
                    out.push(Piece { hf: format!("{expert}.w2.weight"), ours: format!("{ours}.ffn.w_out"), batch: e, cols: 0..d, transposed: true });
                }
            }
            (arch, kind) => bail!("layer {i} is a {} layer, which {:?} has not", kind.name(), arch),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_then_scatter_gives_the_parameter_back() {
        let shape = [3, 4, 6];
        let ours: Vec<f32> = (0..72).map(|v| v as f32).collect();
        for transposed in [false, true] {
            let mut back = vec![0.0; 72];
            for batch in 0..3 {
                for cols in [0..2, 2..6] {
                    let p = Piece { hf: String::new(), ours: String::new(), batch, cols, transposed };
                    let hf = p.gather(&shape, &ours);
                    assert_eq!(hf.len(), p.hf_shape(&shape).iter().product::<usize>());
                    p.scatter(&shape, &mut back, &hf);
                }
            }
            assert_eq!(back, ours);
        }
    }

    #[test]
    fn a_transposed_piece_is_nn_linear_s_out_by_in() {
        // ours [in = 2, out = 3] = [[0, 1, 2], [3, 4, 5]]; nn.Linear's weight is [3, 2].
        let ours = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let p = Piece { hf: String::new(), ours: String::new(), batch: 0, cols: 1..3, transposed: true };
        assert_eq!(p.hf_shape(&[2, 3]), vec![2, 2]);
        assert_eq!(p.gather(&[2, 3], &ours), vec![1.0, 4.0, 2.0, 5.0]);
    }
}
