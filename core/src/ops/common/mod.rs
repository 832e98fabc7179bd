//! WGSL shared by several kernels (`ops/common/`), appended to their source so each
//! piece of kernel logic exists once.

pub mod rows;

const RANKING: &str = include_str!("ranking.wgsl");
const ROW_CHUNKS: &str = include_str!("row_chunks.wgsl");
/// Items worked on by groups of GROUP subgroup lanes, reduced by shuffles: packed rows and
/// the router's tokens.
pub(crate) const LANE_GROUPS_SUBGROUP: &str = include_str!("lane_groups_subgroup.wgsl");

/// Floats a kernel's thread loads at once from runs of `n` floats (a whole tensor, or
/// each of its rows): a vec4 where `n` is a multiple of 4, so that every run starts
/// 16-byte aligned (buffers do), else one.
pub(crate) fn floats_per_load(n: usize) -> usize {
    if n.is_multiple_of(4) {
        4
    } else {
        1
    }
}

/// `kernel` loading `vec` floats at a time (`floats_per_load`): `VEC`, the value type
/// `V`, its bool `VB` and u32 `VU`, and `LOAD_OFFSETS` (each value's offset within its
/// load).
pub(crate) fn with_load_type(kernel: String, vec: usize) -> String {
    let types = if vec == 4 {
        "const VEC: u32 = 4u;\n\
         alias V = vec4<f32>;\n\
         alias VB = vec4<bool>;\n\
         alias VU = vec4<u32>;\n\
         const LOAD_OFFSETS: VU = VU(0u, 1u, 2u, 3u);"
    } else {
        assert_eq!(vec, 1, "kernels load 1 or 4 floats at a time, not {vec}");
        "const VEC: u32 = 1u;\n\
         alias V = f32;\n\
         alias VB = bool;\n\
         alias VU = u32;\n\
         const LOAD_OFFSETS: VU = 0u;"
    };
    kernel + "\n" + types
}

/// `kernel` reading rows `vec` floats at a time: `with_load_type`'s types, and
/// `chunk_max`, `chunk_sum`, `chunk_lane` and `online_fold` over a load.
pub(crate) fn with_row_chunks(kernel: String, vec: usize) -> String {
    let chunk_functions = if vec == 4 {
        "fn chunk_max(v: vec4<f32>) -> f32 { return max(max(v.x, v.y), max(v.z, v.w)); }\n\
         fn chunk_sum(v: vec4<f32>) -> f32 { return (v.x + v.y) + (v.z + v.w); }\n\
         fn chunk_lane(v: vec4<f32>, i: u32) -> f32 { return v[i]; }"
    } else {
        "fn chunk_max(v: f32) -> f32 { return v; }\n\
         fn chunk_sum(v: f32) -> f32 { return v; }\n\
         fn chunk_lane(v: f32, i: u32) -> f32 { return v; }"
    };
    with_load_type(kernel, vec) + "\n" + chunk_functions + "\n" + ROW_CHUNKS
}

/// WGSL `fn {name}_each(x: V, s: f32) -> V`: the scalar function `{name}(x: f32, s: f32)`
/// applied to each float of a load of `vec` floats.
pub(crate) fn each_float(name: &str, vec: usize) -> String {
    let body = if vec == 4 { format!("V({name}(x.x, s), {name}(x.y, s), {name}(x.z, s), {name}(x.w, s))") } else { format!("{name}(x, s)") };
    format!("fn {name}_each(x: V, s: f32) -> V {{ return {body}; }}\n")
}

/// `template` with each line `{{EACH_KEPT <code>}}` written out once for each of the
/// `kept` loads a row kernel's thread keeps between its passes, `#` in the code standing
/// for the load's number (none when `kept` is 0). Kept loads live in variables of their
/// own, which stay in registers whether or not the compiler unrolls loops over an array.
pub(crate) fn each_kept(template: &str, kept: usize) -> String {
    let mut out = String::with_capacity(template.len());
    for line in template.lines() {
        let code = line.trim_start().strip_prefix("{{EACH_KEPT ").and_then(|rest| rest.strip_suffix("}}"));
        match code {
            Some(code) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                (0..kept).for_each(|i| out += &format!("{indent}{}\n", code.replace('#', &i.to_string())));
            }
            None => out += &format!("{line}\n"),
        }
    }
    out
}

/// `kernel` with `ranks_above`, the tie-breaking order of top-k selections.
pub(crate) fn with_ranking(kernel: String) -> String {
    kernel + "\n" + RANKING
}

#[cfg(test)]
mod tests {
    use super::each_kept;

    #[test]
    fn each_kept_writes_a_line_per_load_and_none_for_zero() {
        let template = "fn main() {\n    {{EACH_KEPT let k# = load(#u);}}\n    done();\n}\n";
        assert_eq!(each_kept(template, 3), "fn main() {\n    let k0 = load(0u);\n    let k1 = load(1u);\n    let k2 = load(2u);\n    done();\n}\n");
        assert_eq!(each_kept(template, 0), "fn main() {\n    done();\n}\n");
    }
}
