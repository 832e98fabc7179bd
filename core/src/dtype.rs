//! Element types. Kernels are f32 today; `F16` is reserved for the mixed-precision path and
//! `U32` carries indices (token ids, expert ids, permutations).

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
}

impl DType {
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }
}
