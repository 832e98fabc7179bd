//! Errors for the fallible parts of the engine: finding a device, allocating, reading back.
//! Shape mistakes in ops are programming errors and panic instead (with both shapes); the
//! crate's documentation states the whole policy.

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

    #[error("out of GPU memory on {adapter:?}: a tensor of shape {shape:?} needs {} more, with {} held by live tensors; {}", sized(.bytes), sized(.in_use), shortage_advice(.limit))]
    OutOfMemory { shape: Vec<usize>, bytes: u64, in_use: u64, limit: Option<u64>, adapter: String },

    #[error("data has {got} elements but shape {shape:?} needs {expected}")]
    DataLength { shape: Vec<usize>, expected: usize, got: usize },

    #[error("reading a tensor back from the GPU failed: {0}")]
    ReadBack(String),

    #[error("copying data to the GPU failed: {0}")]
    Upload(String),

    #[error("tensor has dtype {got:?}, but {wanted:?} was asked for")]
    DType { wanted: crate::DType, got: crate::DType },

    /// A resource failure inside an op, reported by the next read-back or `Device::check`.
    #[error("{op}: {source}")]
    Op { op: String, source: Box<Error> },

    #[error(
        "this tensor of shape {shape:?} holds nothing: the op that made it failed for lack of GPU \
         resources (the error was returned by an earlier read-back or Device::check)"
    )]
    Void { shape: Vec<usize> },

    #[error("the GPU device was lost ({0}); its tensors are gone: restart from the last checkpoint")]
    DeviceLost(String),
}

impl Error {
    /// Whether this is a lack of GPU resources (memory, the binding limit, the device
    /// itself) rather than bad input: the kind a smaller batch or model may cure.
    pub fn is_resource(&self) -> bool {
        match self {
            Error::OutOfMemory { .. } | Error::TooLarge { .. } | Error::DeviceLost(_) | Error::Void { .. } => true,
            Error::Op { source, .. } => source.is_resource(),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A byte count for people: bytes, KiB, MiB or GiB.
pub(crate) fn sized(bytes: &u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    let mut value = *bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if unit == "bytes" {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {unit}")
    }
}

fn shortage_advice(limit: &Option<u64>) -> String {
    match limit {
        Some(limit) => format!(
            "that would pass the memory limit of {} (MOEGRAD_MEMORY_LIMIT or Device::set_memory_limit), cached buffers already released",
            sized(limit)
        ),
        None => "the adapter has no memory left, even with cached buffers released: lower the batch size (train.grad_accum keeps the tokens per step) or the model's size".to_string(),
    }
}
