// Expert choices that send every token to every expert: slot s = t * E + e chooses e.

struct Params { slots: u32, experts: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> expert_of_slot: array<u32>;

@compute @workgroup_size(ELEMENTWISE_WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s = flat_index(gid, nwg);
    if s < p.slots {
        expert_of_slot[s] = s % p.experts;
    }
}
