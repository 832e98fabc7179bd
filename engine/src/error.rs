//! Errors for the fallible parts of the engine: finding a device, allocating, reading back.
//! Shape mistakes in ops are programming errors and panic instead (with both shapes).

/// Everything the engine can fail at without it being a bug in the caller's code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no GPU adapter found. Install a Vulkan driver (on Debian: `apt-get install \
         mesa-vulkan-drivers libvulkan1`, which includes the CPU device lavapipe), \
         or run on a machine with Metal or DX12"
    )]
    NoAdapter,

    #[error("MOEGRAD_ADAPTER={wanted:?} matches no adapter name; available adapters: {available}")]
    AdapterNotFound { wanted: String, available: String },

    #[error("{var}={value:?} is not a setting: expected {expected}")]
    BadSetting { var: &'static str, value: String, expected: &'static str },

    #[error("could not open adapter {adapter:?}: {reason}")]
    RequestDevice { adapter: String, reason: String },

    #[error(
        "tensor of shape {shape:?} needs {bytes} bytes, more than the adapter {adapter:?} allows \
         in one storage buffer ({limit} bytes)"
    )]
    TooLarge { shape: Vec<usize>, bytes: u64, limit: u64, adapter: String },

    #[error("data has {got} elements but shape {shape:?} needs {expected}")]
    DataLength { shape: Vec<usize>, expected: usize, got: usize },

    #[error("reading a tensor back from the GPU failed: {0}")]
    ReadBack(String),

    #[error("tensor has dtype {got:?}, but {wanted:?} was asked for")]
    DType { wanted: crate::DType, got: crate::DType },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
