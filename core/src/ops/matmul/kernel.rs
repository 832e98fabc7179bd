//! How a matmul runs: the kernel variant (register tiles, or tensor cores), its tile shape,
//! its load width and its precision, chosen per call from the adapter and the shapes. All
//! variants come from `matmul_tiles.wgsl` (operands, grouping, staging) plus one
//! main: `matmul.wgsl` (portable) or `matmul_coop.wgsl` (cooperative
//! matrices). `matmul.rs` holds the ops built on it.

use std::str::FromStr;

use crate::{render_template, wgpu, DType, Device, Tensor, MAX_GROUPS_PER_DIM};

use crate::ops::reduce::sum_middle;

const TILES_SHADER: &str = include_str!("matmul_tiles.wgsl");
const REGISTER_SHADER: &str = include_str!("matmul.wgsl");
const COOP_SHADER: &str = include_str!("matmul_coop.wgsl");

/// The arithmetic of matmul products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 operands and sums.
    #[default]
    F32,
    /// Operands rounded to f16, sums in f32: mixed precision, on tensor cores where the
    /// adapter has them. Rounding is the same on every path, so results agree.
    F16,
}

/// Workgroups that keep a big GPU busy (about two per multiprocessor of an H100). A
/// product with fewer output tiles splits its depth to get there.
const BUSY_WORKGROUPS: usize = 256;
/// Depth each split keeps at least: shorter slices spend more on staging and on summing
/// the partial products than on multiplying.
const MIN_SPLIT_DEPTH: usize = 256;
const MAX_SPLITS: usize = 32;

/// A register-tiled kernel's shape: a `bm x bn` output tile per workgroup, `bk`-deep
/// slices in workgroup memory, a `tm x tn` block per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    pub bm: usize,
    pub bn: usize,
    pub bk: usize,
    pub tm: usize,
    pub tn: usize,
}

impl Tiles {
    /// Many small tiles, for outputs too small to fill a GPU with bigger ones.
    pub const SMALL: Tiles = Tiles { bm: 32, bn: 32, bk: 8, tm: 4, tn: 4 };
    pub const MEDIUM: Tiles = Tiles { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 };
    /// 8x8 per thread: 64 multiply-adds per 16 workgroup-memory reads.
    pub const LARGE: Tiles = Tiles { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 };
    pub const ALL: [Tiles; 3] = [Tiles::SMALL, Tiles::MEDIUM, Tiles::LARGE];

    fn threads(&self) -> usize {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// The share of the work a `m x n` product (`matrices` of them) tiled this way does
    /// that lands in the output: tiles overhanging the product's edges compute rows and
    /// columns that are thrown away, and so, grouped by rows, does the last tile of each
    /// of `row_blocks` blocks (half a tile each, expected).
    fn useful_fraction(&self, m: usize, n: usize, row_blocks: usize) -> f64 {
        let rows = if row_blocks > 0 { m + row_blocks * self.bm / 2 } else { m.div_ceil(self.bm) * self.bm };
        (m * n) as f64 / (rows * n.div_ceil(self.bn) * self.bn).max(1) as f64
    }

    /// TFLOP/s at 2048^3 on the H100 (`moegrad bench --suite kernels`): how much useful
    /// work a GPU gives up for each tile shape's rate.
    fn h100_rate(&self) -> f64 {
        match *self {
            Tiles::LARGE => 41.0,
            Tiles::MEDIUM => 27.0,
            _ => 21.0,
        }
    }

    /// The table. On GPUs: of the tile shapes that give every multiprocessor a few
    /// workgroups (counting the depth splits the product allows; SMALL always qualifies),
    /// the one whose H100 rate times its useful fraction is highest: LARGE on whole
    /// tiles, MEDIUM where LARGE would overhang by half (attention's products whose
    /// width is a 64-wide head). On a CPU adapter, where a workgroup runs on one core
    /// thread, LARGE is the fastest shape but loses wherever a tenth or more of its work
    /// is overhang, so it is taken only for products it fits to 90% (the measurements
    /// behind both rules: the README's "How matmuls are chosen").
    fn for_device(dev: &Device, m: usize, n: usize, matrices: usize, max_splits: usize, row_blocks: usize) -> Tiles {
        if let Some(t) = dev.policy().matmul_tiles {
            return t;
        }
        Tiles::choose(dev.tuned_for_cpu(), m, n, matrices * max_splits, row_blocks)
    }

    /// `for_device`'s table, for `copies` independent `m x n` products.
    fn choose(cpu: bool, m: usize, n: usize, copies: usize, row_blocks: usize) -> Tiles {
        let workgroups = |t: Tiles| m.div_ceil(t.bm) * n.div_ceil(t.bn) * copies;
        if cpu {
            let large = workgroups(Tiles::LARGE) >= 4 && Tiles::LARGE.useful_fraction(m, n, row_blocks) >= 0.9;
            return if large { Tiles::LARGE } else { Tiles::MEDIUM };
        }
        let busy = [(Tiles::LARGE, BUSY_WORKGROUPS), (Tiles::MEDIUM, BUSY_WORKGROUPS / 2), (Tiles::SMALL, 0)];
        let useful_rate = |t: &Tiles| t.useful_fraction(m, n, row_blocks) * t.h100_rate();
        let qualified = busy.into_iter().filter(|&(t, at_least)| workgroups(t) >= at_least).map(|(t, _)| t);
        qualified.max_by(|a, b| useful_rate(a).total_cmp(&useful_rate(b))).unwrap_or(Tiles::SMALL)
    }
}

impl std::fmt::Display for Tiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}/{}x{}", self.bm, self.bn, self.bk, self.tm, self.tn)
    }
}

impl FromStr for Tiles {
    type Err = String;

    /// `BMxBNxBK/TMxTN`, checked for shapes the kernel supports.
    fn from_str(s: &str) -> Result<Tiles, String> {
        let bad = || format!("matmul tiles {s:?}: expected BMxBNxBK/TMxTN, e.g. 128x128x8/8x8");
        let (nums, groups) = parse_groups(s).ok_or_else(bad)?;
        let (&[bm, bn, bk, tm, tn], [3, 2]) = (&nums[..], &groups[..]) else {
            return Err(bad());
        };
        let t = Tiles { bm, bn, bk, tm, tn };
        let ok = [bm, bn, bk, tm, tn].iter().all(|&v| v > 0)
            && bm % tm == 0
            && bn % tn == 0
            && [bk, tm, tn].iter().all(|v| v % 4 == 0)
            && (1..=1024).contains(&t.threads());
        if ok {
            Ok(t)
        } else {
            Err(format!("matmul tiles {s:?}: blocks must divide tiles, BK, TM and TN be multiples of 4, and 1..1024 threads"))
        }
    }
}

/// The tensor-core kernel's shape: `sg_m x sg_n` subgroups of 32 lanes, each owning
/// `qm x qn` accumulator matrices of 16 x 16, over `bk`-deep slices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopTiles {
    pub sg_m: usize,
    pub sg_n: usize,
    pub qm: usize,
    pub qn: usize,
    pub bk: usize,
}

impl CoopTiles {
    /// 128 x 128 tiles of four subgroups, each 64 x 64, over 16-deep slices: the fastest
    /// of the candidates on an H100 (the README's Performance section has the figures).
    pub const DEFAULT: CoopTiles = CoopTiles { sg_m: 2, sg_n: 2, qm: 4, qn: 4, bk: 16 };
    /// Shapes worth timing against it (`moegrad bench --suite kernels` times each where
    /// the adapter has tensor cores); every one is validated by naga in the unit tests.
    pub const CANDIDATES: [CoopTiles; 4] = [
        CoopTiles::DEFAULT,
        CoopTiles { sg_m: 4, sg_n: 2, qm: 2, qn: 4, bk: 32 },
        CoopTiles { sg_m: 2, sg_n: 2, qm: 4, qn: 4, bk: 32 },
        CoopTiles { sg_m: 4, sg_n: 2, qm: 4, qn: 4, bk: 16 },
    ];

    fn tiles(&self) -> Tiles {
        Tiles { bm: self.sg_m * 16 * self.qm, bn: self.sg_n * 16 * self.qn, bk: self.bk, tm: 0, tn: 0 }
    }

    fn threads(&self) -> usize {
        self.sg_m * self.sg_n * 32
    }

    /// The shape `dev`'s policy asks for, or the default.
    fn current(dev: &Device) -> CoopTiles {
        dev.policy().coop_tiles.unwrap_or(CoopTiles::DEFAULT)
    }

    /// The kernel's accumulators, its multiply step and its two ways of storing, written
    /// out per accumulator (see matmul_coop.wgsl).
    fn code(&self) -> [String; 4] {
        let pairs: Vec<(usize, usize)> = (0..self.qm).flat_map(|i| (0..self.qn).map(move |j| (i, j))).collect();
        let accumulators = pairs.iter().map(|(i, j)| format!("    var acc{i}_{j} = coop_mat16x16<f32, C>();\n")).collect();
        let mut multiply: String = (0..self.qn)
            .map(|j| {
                format!("            let ib{j} = kk * BS + sn + {}u;\n            let y{j} = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[ib{j}], sb);\n", 16 * j)
            })
            .collect();
        for i in 0..self.qm {
            multiply +=
                &format!("            let ia{i} = kk * AS + sm + {}u;\n            let x{i} = coopLoad<coop_mat16x16<f16, A>>(&a_tile[ia{i}], sa);\n", 16 * i);
            multiply += &(0..self.qn).map(|j| format!("            acc{i}_{j} = coopMultiplyAdd(x{i}, y{j}, acc{i}_{j});\n")).collect::<String>();
        }
        let store = pairs
            .iter()
            .map(|(i, j)| {
                format!(
                    "        let o{i}_{j} = rg.c_off + (gm + {}u) * p.n + gn + {}u;\n        coopStoreT(acc{i}_{j}, &c[o{i}_{j}], stride);\n",
                    16 * i,
                    16 * j
                )
            })
            .collect();
        let store_edge = pairs
            .iter()
            .map(|(i, j)| {
                format!("        coopStoreT(acc{i}_{j}, &staging[own], s16);\n        copy_staged(rg, gm + {}u, gn + {}u, sg, lane);\n", 16 * i, 16 * j)
            })
            .collect();
        [accumulators, multiply, store, store_edge]
    }
}

impl std::fmt::Display for CoopTiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}/{}x{}/{}", self.sg_m, self.sg_n, self.qm, self.qn, self.bk)
    }
}

impl FromStr for CoopTiles {
    type Err = String;

    /// `SG_MxSG_N/QMxQN/BK`, checked for shapes the kernel supports.
    fn from_str(s: &str) -> Result<CoopTiles, String> {
        let bad = || format!("tensor-core tiles {s:?}: expected SG_MxSG_N/QMxQN/BK, e.g. 4x2/2x4/32");
        let (nums, groups) = parse_groups(s).ok_or_else(bad)?;
        let (&[sg_m, sg_n, qm, qn, bk], [2, 2, 1]) = (&nums[..], &groups[..]) else {
            return Err(bad());
        };
        let t = CoopTiles { sg_m, sg_n, qm, qn, bk };
        if [sg_m, sg_n, qm, qn].iter().all(|&v| v > 0) && bk > 0 && bk.is_multiple_of(16) && t.threads() <= 1024 {
            Ok(t)
        } else {
            Err(format!("tensor-core tiles {s:?}: positive sizes, BK a multiple of 16, at most 32 subgroups"))
        }
    }
}

/// The numbers of a tile shape written as '/'-separated groups of 'x'-separated numbers,
/// and the length of each group: "128x128x8/8x8" is ([128, 128, 8, 8, 8], [3, 2]).
fn parse_groups(s: &str) -> Option<(Vec<usize>, Vec<usize>)> {
    let groups: Vec<Vec<usize>> = s.split('/').map(|g| g.split('x').map(|v| v.trim().parse().ok()).collect()).collect::<Option<_>>()?;
    Some((groups.concat(), groups.iter().map(Vec::len).collect()))
}

/// Matrix `wid.z` of a batch, whole, or with the part `Causal` names left out.
const BATCHED_RANGES: &str = "fn group_ranges(wid: vec3<u32>) -> Ranges {
    let z = wid.z;
    var r = Ranges(0u, p.m, 0u, p.k, z * p.batch_stride_a, z * p.batch_stride_b, z * p.m * p.n, wid.y);
    {{CAUSAL}}
    return r;
}";
/// Row tile `wid.y` of the run over all experts: expert e has ceil(rows_e / BM) of them.
/// A workgroup past the last one gets an empty range.
const ROWS_RANGES: &str = "@group(0) @binding(4) var<storage, read> offsets: array<u32>;
fn group_ranges(wid: vec3<u32>) -> Ranges {
    var t = wid.y;
    for (var e = 0u; e < p.experts; e++) {
        let tiles = (offsets[e + 1u] - offsets[e] + BM - 1u) / BM;
        if t < tiles {
            return Ranges(offsets[e], offsets[e + 1u], 0u, p.k, 0u, e * p.batch_stride_b, 0u, t);
        }
        t -= tiles;
    }
    return Ranges(0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u);
}";
const DEPTH_RANGES: &str = "@group(0) @binding(4) var<storage, read> offsets: array<u32>;
fn group_ranges(wid: vec3<u32>) -> Ranges { let z = wid.z; return Ranges(0u, p.m, offsets[z], offsets[z + 1u], 0u, 0u, z * p.m * p.n, wid.y); }";

/// The triangular structure attention's causal mask gives its products (query i sees keys
/// `0..=i + S - T`): half of every score matrix is never read and half of every
/// probability matrix is zero, so a batched product can leave that half out. Diagonals
/// are aligned to the end, as the mask's are, so `m <= n` (`Output`), `m <= k` (`LowerA`)
/// and `k <= m` (`UpperA`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Causal {
    #[default]
    None,
    /// Only output entries (i, j) with `j <= i + n - m` are wanted; tiles wholly above
    /// that diagonal are not computed and hold garbage.
    Output,
    /// op(A) is zero at (i, k) with `k > i + k_dim - m` (probabilities, score
    /// gradients): each row tile's depth ends at the diagonal.
    LowerA,
    /// op(A) is zero at (i, k) with `i > k + m - k_dim` (the transpose of a `LowerA`
    /// operand): each row tile's depth starts at the diagonal, rounded down to a slice.
    UpperA,
}

impl Causal {
    fn key(self) -> &'static str {
        match self {
            Causal::None => "batched",
            Causal::Output => "batched_causal_output",
            Causal::LowerA => "batched_causal_lower_a",
            Causal::UpperA => "batched_causal_upper_a",
        }
    }

    /// WGSL that narrows `r`, the ranges of row tile `wid.y`, column tile `wid.x`.
    fn wgsl(self) -> &'static str {
        match self {
            Causal::None => "",
            Causal::Output => "if wid.x * BN > wid.y * BM + BM - 1u + p.n - p.m { r.m_end = 0u; }",
            Causal::LowerA => "r.k_end = min(p.k, wid.y * BM + BM + p.k - p.m);",
            Causal::UpperA => "let first = wid.y * BM; if first > p.m - p.k { r.k_begin = min(p.k, (first - (p.m - p.k)) / BK * BK); }",
        }
    }

    /// Whether `[m, n, k]` fits the structure's diagonal.
    pub(crate) fn fits(self, [m, n, k]: [usize; 3]) -> bool {
        match self {
            Causal::None => true,
            Causal::Output => m <= n,
            Causal::LowerA => m <= k,
            Causal::UpperA => k <= m,
        }
    }
}

/// How the matrices of one dispatch (workgroup z) are laid out.
pub(crate) enum Grouping<'a> {
    /// `batch` independent products; a stride of 0 shares that operand.
    Batched { batch: usize, stride_a: usize, stride_b: usize, causal: Causal },
    /// Expert z multiplies rows `offsets[z]..offsets[z+1]` by its own B (stride `stride_b`).
    Rows { offsets: &'a Tensor, experts: usize, stride_b: usize },
    /// Expert z's product runs over depth `offsets[z]..offsets[z+1]` into its own C.
    Depth { offsets: &'a Tensor, experts: usize },
}

impl Grouping<'_> {
    fn key(&self) -> &'static str {
        match self {
            Grouping::Batched { causal, .. } => causal.key(),
            Grouping::Rows { .. } => "rows",
            Grouping::Depth { .. } => "depth",
        }
    }

    /// WGSL for `group_ranges(wid)`.
    fn wgsl(&self) -> String {
        match self {
            Grouping::Batched { causal, .. } => render_template(BATCHED_RANGES, &[("CAUSAL", causal.wgsl())]),
            Grouping::Rows { .. } => ROWS_RANGES.to_string(),
            Grouping::Depth { .. } => DEPTH_RANGES.to_string(),
        }
    }

    /// Whether the grouping splits rows (`m`) or depth (`k`) at arbitrary offsets, which
    /// rules out vector loads along that dimension.
    fn splits(&self) -> (bool, bool) {
        (matches!(self, Grouping::Rows { .. }), matches!(self, Grouping::Depth { .. }))
    }
}

/// One fully specified kernel variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Variant {
    pub trans_a: bool,
    pub trans_b: bool,
    /// Register tiles, or `None` for the cooperative-matrix kernel (shaped by `coop`).
    pub tiles: Option<Tiles>,
    pub coop: CoopTiles,
    pub precision: Precision,
    /// f16 workgroup tiles (needs SHADER_F16); otherwise f32 tiles, rounded when F16.
    pub f16_tiles: bool,
    pub vec_a: usize,
    pub vec_b: usize,
}

impl Variant {
    fn tiles(&self) -> Tiles {
        self.tiles.unwrap_or(self.coop.tiles())
    }

    fn threads(&self) -> usize {
        self.tiles.map_or(self.coop.threads(), |t| t.threads())
    }

    fn key(&self, grouping: &str) -> String {
        let kernel = self.tiles.map_or(format!("coop{}", self.coop), |t| t.to_string());
        format!(
            "matmul/{grouping}/{}{}/{kernel}/{:?}/{}/v{}{}",
            u8::from(self.trans_a),
            u8::from(self.trans_b),
            self.precision,
            self.f16_tiles,
            self.vec_a,
            self.vec_b
        )
    }

    /// The WGSL of this variant with `grouping`'s `ranges`.
    pub fn source(&self, grouping_wgsl: &str) -> String {
        let t = self.tiles();
        let flag = |on: bool| if on { "true" } else { "false" };
        let elem = |v: usize| if v == 4 { "vec4<f32>" } else { "f32" };
        let read = |name: &str, v: usize| {
            if v == 4 {
                format!("return {name}[i / 4u];")
            } else {
                format!("return vec4({name}[i], 0.0, 0.0, 0.0);")
            }
        };
        let mut enable = String::new();
        if self.f16_tiles {
            enable.push_str("enable f16;\n");
        }
        if self.tiles.is_none() {
            enable.push_str("enable wgpu_cooperative_matrix;\n");
        }
        let to_tile = match (self.f16_tiles, self.precision) {
            (true, _) => "return f16(x);",
            (false, Precision::F16) => "return round_to_f16(x);",
            (false, Precision::F32) => "return x;",
        };
        let main = if self.tiles.is_some() { REGISTER_SHADER } else { COOP_SHADER };
        let template = format!("{TILES_SHADER}\n{main}");
        let (bm, bn, bk, tm, tn, threads) =
            (t.bm.to_string(), t.bn.to_string(), t.bk.to_string(), t.tm.to_string(), t.tn.to_string(), self.threads().to_string());
        let (read_a, read_b) = (read("a", self.vec_a), read("b", self.vec_b));
        let mut values = vec![
            ("ENABLE", enable.as_str()),
            ("TRANS_A", flag(self.trans_a)),
            ("TRANS_B", flag(self.trans_b)),
            ("BM", &bm),
            ("BN", &bn),
            ("BK", &bk),
            ("THREADS", &threads),
            ("VEC_A", if self.vec_a == 4 { "4" } else { "1" }),
            ("VEC_B", if self.vec_b == 4 { "4" } else { "1" }),
            ("A_ELEM", elem(self.vec_a)),
            ("B_ELEM", elem(self.vec_b)),
            ("TILE_T", if self.f16_tiles { "f16" } else { "f32" }),
            ("TO_TILE", to_tile),
            ("READ_A", &read_a),
            ("READ_B", &read_b),
            ("GROUPING", grouping_wgsl),
        ];
        let [accumulators, multiply, store, store_edge] = self.coop.code();
        let (sg_n, qm, qn) = (self.coop.sg_n.to_string(), self.coop.qm.to_string(), self.coop.qn.to_string());
        match self.tiles {
            Some(_) => values.extend([("TM", tm.as_str()), ("TN", tn.as_str())]),
            None => values.extend([
                ("SG_N", sg_n.as_str()),
                ("QM", &qm),
                ("QN", &qn),
                ("ACCUMULATORS", &accumulators),
                ("MULTIPLY", &multiply),
                ("STORE", &store),
                ("STORE_EDGE", &store_edge),
            ]),
        }
        render_template(&template, &values)
    }
}

/// Loads of 4 elements where the operand's contiguous dimension allows them.
fn vector_width(contiguous_len: usize, split_at_any_offset: bool) -> usize {
    if contiguous_len.is_multiple_of(4) && !split_at_any_offset {
        4
    } else {
        1
    }
}

/// Whether the tensor-core kernel computes what the portable one does on this device,
/// checked once on a product with a whole interior tile (stored directly) and edge tiles
/// (stored through staging). An adapter that advertises the feature but gets
/// it wrong falls back, with a warning, instead of training on wrong numbers.
fn tensor_cores_verified(dev: &Device) -> bool {
    dev.verified("matmul/cooperative-f16", || {
        let (m, n, k) = (200, 136, 100);
        let values = |len: usize, seed: usize| (0..len).map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0) - 1.0).collect::<Vec<_>>();
        let upload = |len, seed| Tensor::from_slice(dev, &values(len, seed), &[len]).expect("matmul self-check upload");
        let (a, b) = (upload(m * k, 1), upload(k * n, 2));
        let run = |tiles: Option<Tiles>| {
            let variant = Variant {
                trans_a: false,
                trans_b: false,
                tiles,
                coop: CoopTiles::current(dev),
                precision: Precision::F16,
                f16_tiles: true,
                vec_a: 1,
                vec_b: 1,
            };
            launch_variant(variant, Grouping::Batched { batch: 1, stride_a: 0, stride_b: 0, causal: Causal::None }, 1, &a, &b, [m, n, k], &[m, n])
                .to_vec()
                .expect("matmul self-check read-back")
        };
        let (coop, portable) = (run(None), run(Some(Tiles::SMALL)));
        let worst = coop.iter().zip(&portable).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        let ok = worst <= 1e-3;
        if !ok {
            eprintln!(
                "moegrad: {} advertises f16 cooperative matrices, but they differ from the portable kernel by {worst}; using the portable kernel",
                dev.name()
            );
        }
        ok
    })
}

/// Which kernel runs f16 matmuls on `dev`, in words (for benchmark reports).
pub fn f16_matmul_kernel(dev: &Device) -> &'static str {
    if dev.has_tensor_cores_f16() && tensor_cores_verified(dev) {
        "tensor cores (cooperative matrices)"
    } else if dev.features().contains(wgpu::Features::SHADER_F16) {
        "register tiles, f16 in workgroup memory"
    } else {
        "register tiles, operands rounded to f16"
    }
}

/// The variant for `op(a) @ op(b)` at `precision` on `a`'s device, and how many slices
/// of its depth to split it into.
fn choose(grouping: &Grouping, a: &Tensor, trans_a: bool, trans_b: bool, [m, n, k]: [usize; 3], precision: Precision) -> (Variant, usize) {
    let dev = a.device();
    let (split_m, split_k) = grouping.splits();
    let vec_a = vector_width(if trans_a { m } else { k }, if trans_a { split_m } else { split_k });
    let vec_b = vector_width(if trans_b { k } else { n }, trans_b && split_k);
    let f16 = precision == Precision::F16;
    let f16_tiles = f16 && dev.features().contains(wgpu::Features::SHADER_F16);
    let coop = f16 && dev.policy().matmul_tiles.is_none() && dev.has_tensor_cores_f16() && tensor_cores_verified(dev);
    // Products that tile independently (grouped rows share one run of row tiles), and the
    // depth of each.
    let (matrices, depth) = match grouping {
        Grouping::Batched { batch, .. } => (*batch, k),
        Grouping::Rows { .. } => (1, k),
        Grouping::Depth { experts, .. } => (*experts, k / experts.max(&1)),
    };
    let splittable = !matches!(grouping, Grouping::Rows { .. }) && !dev.tuned_for_cpu();
    let max_splits = if splittable { (depth / MIN_SPLIT_DEPTH).clamp(1, MAX_SPLITS) } else { 1 };
    let row_blocks = if let Grouping::Rows { experts, .. } = grouping { *experts } else { 0 };
    let tiles = (!coop).then(|| Tiles::for_device(dev, m, n, matrices, max_splits, row_blocks));
    let variant = Variant { trans_a, trans_b, tiles, coop: CoopTiles::current(dev), precision, f16_tiles: f16_tiles || coop, vec_a, vec_b };
    let t = variant.tiles();
    let workgroups = m.div_ceil(t.bm) * n.div_ceil(t.bn) * matrices;
    let splits = match dev.policy().matmul_splits {
        Some(s) if !matches!(grouping, Grouping::Rows { .. }) => s,
        _ => BUSY_WORKGROUPS.div_ceil(workgroups.max(1)).min(max_splits),
    };
    (variant, splits)
}

/// Records one matmul of `op(a) @ op(b)` (`[m, n, k]`) into a new `out_shape` tensor,
/// with the best variant for the device.
/// `transposed` says which of `a` and `b` enter as their transpose.
pub(crate) fn launch(
    grouping: Grouping,
    a: &Tensor,
    b: &Tensor,
    [trans_a, trans_b]: [bool; 2],
    dims: [usize; 3],
    out_shape: &[usize],
    precision: Precision,
) -> Tensor {
    let (variant, splits) = choose(&grouping, a, trans_a, trans_b, dims, precision);
    launch_variant(variant, grouping, splits, a, b, dims, out_shape)
}

/// One dispatch of `variant`, and with `splits > 1` the sum of its partial products.
fn launch_variant(variant: Variant, grouping: Grouping, splits: usize, a: &Tensor, b: &Tensor, [m, n, k]: [usize; 3], out_shape: &[usize]) -> Tensor {
    let dev = a.device();
    assert!(a.dtype() == DType::F32 && b.dtype() == DType::F32, "matmul: expects f32 tensors, got {:?} and {:?}", a.dtype(), b.dtype());
    let splits = if k == 0 { 1 } else { splits };
    let matrices = match grouping {
        Grouping::Batched { batch, .. } => batch,
        Grouping::Rows { .. } => 1,
        Grouping::Depth { experts, .. } => experts,
    };
    // Without depth the product is all zeros, and an expert may own no depth at all.
    let zero_fill = k == 0 || (splits == 1 && matches!(grouping, Grouping::Depth { .. }));
    let dest_shape = if splits > 1 { vec![matrices * splits * m * n] } else { out_shape.to_vec() };
    let out = if zero_fill { Tensor::output_zeros(dev, &dest_shape, DType::F32, "matmul") } else { Tensor::output(dev, &dest_shape, DType::F32, "matmul") };
    if out.numel() == 0 || k == 0 {
        return out;
    }
    let t = variant.tiles();
    // [column tiles, row tiles, matrices x splits]; grouped rows number the row tiles of
    // all experts in one run, at most rows/BM + experts of them.
    let (groups, stride_a, stride_b, experts) = match grouping {
        Grouping::Batched { batch, stride_a, stride_b, causal } => {
            assert!(causal.fits([m, n, k]), "matmul: {causal:?} structure does not fit [m, n, k] = {:?}", [m, n, k]);
            ([n.div_ceil(t.bn), m.div_ceil(t.bm), batch * splits], stride_a, stride_b, 0)
        }
        Grouping::Rows { experts, stride_b, .. } => ([n.div_ceil(t.bn), m.div_ceil(t.bm) + experts, 1], 0, stride_b, experts),
        Grouping::Depth { experts, .. } => ([n.div_ceil(t.bn), m.div_ceil(t.bm), experts * splits], 0, 0, experts),
    };
    assert!(groups.iter().all(|&g| g <= MAX_GROUPS_PER_DIM as usize), "matmul: output {out_shape:?} needs too many workgroups");
    let params = [m, n, k, stride_a, stride_b, experts, splits].map(|v| v as u32);
    // SAFETY: every global access of the matmul kernels is guarded by an explicit bounds
    // check, and every workgroup-memory index is below its tile's size by construction
    // (k < BK, m < BM, n < BN); tests cover every variant on odd and vector-width shapes.
    let pipeline = unsafe { dev.pipeline_unchecked(&variant.key(grouping.key()), "main", || variant.source(&grouping.wgsl())) };
    let groups = groups.map(|g| g as u32);
    match grouping {
        Grouping::Batched { .. } => dev.launch(&pipeline, &params, &[a, b, &out], groups),
        Grouping::Rows { offsets, .. } | Grouping::Depth { offsets, .. } => dev.launch(&pipeline, &params, &[a, b, &out, offsets], groups),
    }
    if splits == 1 {
        return out;
    }
    sum_middle(&out, [matrices, splits, m * n], 1.0, out_shape)
}

#[cfg(test)]
mod tests {
    //! The WGSL of every variant, the cooperative-matrix ones included, parsed, validated
    //! and translated to SPIR-V by naga: CI's adapter cannot run tensor-core kernels, so
    //! this is where a mistake in them shows up before a GPU sees them.

    use super::*;

    /// Every variant's source.
    fn all_sources() -> Vec<(String, String)> {
        let mut out = Vec::new();
        let batched =
            [Causal::None, Causal::Output, Causal::LowerA, Causal::UpperA].map(|c| (c.key(), render_template(BATCHED_RANGES, &[("CAUSAL", c.wgsl())])));
        for (name, grouping) in batched.into_iter().chain([("rows", ROWS_RANGES.to_string()), ("depth", DEPTH_RANGES.to_string())]) {
            for trans_a in [false, true] {
                for trans_b in [false, true] {
                    for vec in [1, 4] {
                        let v = Variant {
                            trans_a,
                            trans_b,
                            tiles: None,
                            coop: CoopTiles::DEFAULT,
                            precision: Precision::F16,
                            f16_tiles: true,
                            vec_a: vec,
                            vec_b: vec,
                        };
                        for coop in CoopTiles::CANDIDATES {
                            let v = Variant { coop, ..v };
                            out.push((v.key(name), v.source(&grouping)));
                        }
                        for tiles in Tiles::ALL {
                            for (precision, f16_tiles) in [(Precision::F32, false), (Precision::F16, false), (Precision::F16, true)] {
                                let v = Variant { tiles: Some(tiles), precision, f16_tiles, ..v };
                                out.push((v.key(name), v.source(&grouping)));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_variant_validates_and_translates_to_spirv() {
        let sources = all_sources();
        assert_eq!(sources.len(), 6 * 4 * 2 * (CoopTiles::CANDIDATES.len() + 3 * 3));
        for (key, source) in sources {
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{key}: {}", e.emit_to_string(&source)));
            let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                .validate(&module)
                .unwrap_or_else(|e| panic!("{key}: {}", e.emit_to_string(&source)));
            let pipeline = naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "main".into() };
            let words = naga::back::spv::write_vec(&module, &info, &naga::back::spv::Options::default(), Some(&pipeline))
                .unwrap_or_else(|e| panic!("{key}: SPIR-V: {e}"));
            assert!(words.len() > 100, "{key}: SPIR-V suspiciously short");
        }
    }

    #[test]
    fn tile_shapes_parse_and_bad_ones_are_named() {
        assert_eq!("128x128x8/8x8".parse::<Tiles>(), Ok(Tiles::LARGE));
        assert_eq!(Tiles::MEDIUM.to_string().parse::<Tiles>(), Ok(Tiles::MEDIUM));
        let err = "64x64/4x4".parse::<Tiles>().unwrap_err();
        assert!(err.contains("64x64/4x4") && err.contains("BMxBNxBK"), "{err}");
        let err = "64x64x16/2x4".parse::<Tiles>().unwrap_err();
        assert!(err.contains("multiples of 4"), "{err}");
    }

    #[test]
    fn useful_fraction_counts_overhanging_tiles() {
        // Whole tiles waste nothing; a 64 x 64 product fills a quarter of a 128 x 128 tile.
        assert_eq!(Tiles::LARGE.useful_fraction(256, 512, 0), 1.0);
        assert_eq!(Tiles::LARGE.useful_fraction(64, 64, 0), 0.25);
        assert_eq!(Tiles::MEDIUM.useful_fraction(64, 64, 0), 1.0);
        // Edges round up: 65 rows take two 64-row tiles.
        assert_eq!(Tiles::MEDIUM.useful_fraction(65, 64, 0), 65.0 / 128.0);
        // Grouped by rows, each of 8 experts' blocks ends half a tile short, expected.
        assert_eq!(Tiles::LARGE.useful_fraction(512, 128, 8), 0.5);
        assert_eq!(Tiles::MEDIUM.useful_fraction(512, 128, 8), 512.0 / 768.0);
    }

    #[test]
    fn tiles_fit_the_product_and_the_adapter() {
        let (gpu, cpu) = (false, true);
        // GPUs: big products take the fastest tiles; attention's head-wide products (128
        // heads of 512 x 64) would waste half of them; small outputs need many small tiles.
        assert_eq!(Tiles::choose(gpu, 2048, 2048, 1, 0), Tiles::LARGE);
        assert_eq!(Tiles::choose(gpu, 512, 512, 128, 0), Tiles::LARGE);
        assert_eq!(Tiles::choose(gpu, 512, 64, 128, 0), Tiles::MEDIUM);
        assert_eq!(Tiles::choose(gpu, 16384, 2048, 1, 8), Tiles::LARGE);
        assert_eq!(Tiles::choose(gpu, 256, 256, 1, 0), Tiles::SMALL);
        // CPUs: LARGE only where it fits.
        assert_eq!(Tiles::choose(cpu, 256, 256, 1, 0), Tiles::LARGE);
        assert_eq!(Tiles::choose(cpu, 64, 64, 4, 0), Tiles::MEDIUM);
        assert_eq!(Tiles::choose(cpu, 512, 128, 1, 8), Tiles::MEDIUM);
        assert_eq!(Tiles::choose(cpu, 128, 128, 1, 0), Tiles::MEDIUM);
    }

    #[test]
    fn tensor_core_shapes_parse_and_bad_ones_are_named() {
        assert_eq!("2x2/4x4/16".parse::<CoopTiles>(), Ok(CoopTiles::DEFAULT));
        for c in CoopTiles::CANDIDATES {
            assert_eq!(c.to_string().parse::<CoopTiles>(), Ok(c));
        }
        assert_eq!(CoopTiles::DEFAULT.tiles(), Tiles { bm: 128, bn: 128, bk: 16, tm: 0, tn: 0 });
        let err = "2x2/4x4".parse::<CoopTiles>().unwrap_err();
        assert!(err.contains("2x2/4x4") && err.contains("SG_MxSG_N/QMxQN/BK"), "{err}");
        let err = "2x2/4x4/24".parse::<CoopTiles>().unwrap_err();
        assert!(err.contains("multiple of 16"), "{err}");
    }

    /// `op(a) @ op(b)` in f64, with operands rounded to f16 first when `f16`.
    fn reference(a: &[f32], b: &[f32], [m, n, k]: [usize; 3], trans_a: bool, trans_b: bool, f16: bool) -> Vec<f64> {
        let round = |x: f32| {
            if f16 {
                half::f16::from_f32(x).to_f64()
            } else {
                x as f64
            }
        };
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| {
                        let x = if trans_a { a[p * m + i] } else { a[i * k + p] };
                        let y = if trans_b { b[j * k + p] } else { b[p * n + j] };
                        round(x) * round(y)
                    })
                    .sum();
            }
        }
        out
    }

    fn max_diff(got: &[f32], want: &[f64]) -> f64 {
        got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max)
    }

    /// The rounding of the path without SHADER_F16 is f16's round-to-nearest-even on any
    /// adapter: ties, the largest finite values, overflow and subnormals, bit for bit.
    #[test]
    fn round_to_f16_is_round_to_nearest_even() {
        let dev = Device::new().expect("tests need a GPU adapter (lavapipe will do)");
        let tie = 1.0 + 2f32.powi(-11);
        let values = [
            tie,
            1.0 + 3.0 * 2f32.powi(-11),
            -tie,
            0.1,
            -0.3,
            65504.0,
            65519.9,
            65520.0,
            -70000.0,
            6.0e-5,
            1.5 * 2f32.powi(-24),
            2.5 * 2f32.powi(-24),
            2f32.powi(-26),
            1.0e-7,
            0.0,
            1234.567,
        ];
        // C = A (a column) times the 1 x 1 matrix [1]: each output is one rounded operand.
        let a = Tensor::from_slice(&dev, &values, &[values.len()]).unwrap();
        let one = Tensor::from_slice(&dev, &[1.0], &[1]).unwrap();
        let variant = Variant {
            trans_a: false,
            trans_b: false,
            tiles: Some(Tiles::SMALL),
            coop: CoopTiles::DEFAULT,
            precision: Precision::F16,
            f16_tiles: false,
            vec_a: 1,
            vec_b: 1,
        };
        let got = launch_variant(
            variant,
            Grouping::Batched { batch: 1, stride_a: 0, stride_b: 0, causal: Causal::None },
            1,
            &a,
            &one,
            [values.len(), 1, 1],
            &[values.len()],
        )
        .to_vec()
        .unwrap();
        for (x, g) in values.iter().zip(got) {
            let want = half::f16::from_f32(*x).to_f32();
            assert_eq!(g.to_bits(), want.to_bits(), "{x:e} rounded to {g:e}, f16 gives {want:e}");
        }
    }

    /// Mixed precision on every path this device has: f32 tiles rounded through
    /// `round_to_f16`, f16 tiles, and tensor cores (skipped, with a note, where absent).
    /// Each must agree with f16-rounded operands summed exactly, and differ measurably
    /// from the f32 product, which shows that the rounding happens at all.
    #[test]
    fn f16_paths_round_operands_and_sum_in_f32() {
        let dev = Device::new().expect("tests need a GPU adapter (lavapipe will do)");
        // 150 x 136: a whole 128 x 128 tile and edge tiles, for every kernel's store paths.
        let dims = [150, 136, 67];
        let [m, n, k] = dims;
        let values = |len: usize, seed: f32| (0..len).map(|i| ((i as f32 * 0.7548 + seed).sin() * 43758.547).fract()).collect::<Vec<f32>>();
        let mut paths: Vec<(Option<Tiles>, bool)> = Tiles::ALL.iter().map(|&t| (Some(t), false)).collect();
        if dev.features().contains(wgpu::Features::SHADER_F16) {
            paths.extend(Tiles::ALL.iter().map(|&t| (Some(t), true)));
        }
        if dev.has_tensor_cores_f16() {
            paths.push((None, true));
        } else {
            eprintln!("skipped: {} has no f16 cooperative matrices; the tensor-core kernel is only validated by naga here", dev.name());
        }
        for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
            let (a_host, b_host) = (values(m * k, 1.0), values(k * n, 2.0));
            let a = Tensor::from_slice(&dev, &a_host, &[m * k]).unwrap();
            let b = Tensor::from_slice(&dev, &b_host, &[k * n]).unwrap();
            let want16 = reference(&a_host, &b_host, dims, trans_a, trans_b, true);
            let want32 = reference(&a_host, &b_host, dims, trans_a, trans_b, false);
            for &(tiles, f16_tiles) in &paths {
                let variant = Variant { trans_a, trans_b, tiles, coop: CoopTiles::DEFAULT, precision: Precision::F16, f16_tiles, vec_a: 1, vec_b: 1 };
                let got = launch_variant(variant, Grouping::Batched { batch: 1, stride_a: 0, stride_b: 0, causal: Causal::None }, 1, &a, &b, dims, &[m, n])
                    .to_vec()
                    .unwrap();
                let (err16, err32) = (max_diff(&got, &want16), max_diff(&got, &want32));
                assert!(err16 < 2e-5, "{variant:?}: {err16} from the f16-rounded reference");
                assert!(err32 > 5e-4, "{variant:?}: only {err32} from the f32 product: operands were not rounded");
            }
        }
    }

    /// Each causal structure on every path of this device (tensor cores included where
    /// present), transposed operands too: entries the structure promises are exact, and
    /// `Output` leaves the tiles above its diagonal unwritten (they keep the NaN the
    /// output buffer held).
    #[test]
    fn causal_structures_skip_only_the_masked_half() {
        let dev = Device::new().expect("tests need a GPU adapter (lavapipe will do)");
        let values = |len: usize, seed: f32| (0..len).map(|i| ((i as f32 * 0.7548 + seed).sin() * 43758.547).fract()).collect::<Vec<f32>>();
        let mut paths: Vec<(Option<Tiles>, Precision)> = Tiles::ALL.iter().map(|&t| (Some(t), Precision::F32)).collect();
        if dev.has_tensor_cores_f16() {
            paths.push((None, Precision::F16));
        }
        for (causal, dims) in [(Causal::Output, [150, 170, 67]), (Causal::LowerA, [150, 67, 170]), (Causal::UpperA, [170, 67, 150])] {
            let [m, n, k] = dims;
            // op(A) as [m, k], zero where the structure says it is.
            let mut op_a = values(m * k, 1.0);
            for i in 0..m {
                for p in 0..k {
                    let zero = match causal {
                        Causal::LowerA => p > i + k - m,
                        Causal::UpperA => i > p + m - k,
                        _ => false,
                    };
                    if zero {
                        op_a[i * k + p] = 0.0;
                    }
                }
            }
            let op_b = values(k * n, 2.0);
            let wanted = |i: usize, j: usize| causal != Causal::Output || j <= i + n - m;
            for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
                let a_host: Vec<f32> = if trans_a { (0..k * m).map(|x| op_a[(x % m) * k + x / m]).collect() } else { op_a.clone() };
                let b_host: Vec<f32> = if trans_b { (0..n * k).map(|x| op_b[(x % k) * n + x / k]).collect() } else { op_b.clone() };
                let a = Tensor::from_slice(&dev, &a_host, &[m * k]).unwrap();
                let b = Tensor::from_slice(&dev, &b_host, &[k * n]).unwrap();
                let exact = [false, true].map(|f16| reference(&a_host, &b_host, dims, trans_a, trans_b, f16));
                for &(tiles, precision) in &paths {
                    let f16 = precision == Precision::F16;
                    let want = &exact[usize::from(f16)];
                    // Poison the pool, so that an output buffer it hands out holds NaN.
                    drop(Tensor::from_slice(&dev, &vec![f32::NAN; m * n], &[m * n]).unwrap());
                    let variant = Variant { trans_a, trans_b, tiles, coop: CoopTiles::DEFAULT, precision, f16_tiles: f16, vec_a: 1, vec_b: 1 };
                    let got =
                        launch_variant(variant, Grouping::Batched { batch: 1, stride_a: 0, stride_b: 0, causal }, 1, &a, &b, dims, &[m, n]).to_vec().unwrap();
                    let tile = variant.tiles();
                    for i in 0..m {
                        for j in 0..n {
                            let (g, w) = (got[i * n + j], want[i * n + j]);
                            if wanted(i, j) {
                                assert!((g as f64 - w).abs() < 1e-4, "{causal:?} {variant:?}: ({i}, {j}) is {g}, expected {w}");
                            } else if (j / tile.bn) * tile.bn > (i / tile.bm) * tile.bm + tile.bm - 1 + n - m {
                                assert!(g.is_nan(), "{causal:?} {variant:?}: ({i}, {j}) was computed, in a tile wholly above the diagonal");
                            }
                        }
                    }
                }
            }
        }
    }
}
