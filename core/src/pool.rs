//! A pool of wgpu buffers keyed by size class and usage. Dropping a tensor returns its
//! buffer here; the next allocation of the same class takes it back, so a repeated
//! computation (a training step) stops creating buffers after its first run.
//!
//! Reuse is safe without waiting for the GPU: every use of a buffer is a command recorded
//! in order, and the GPU runs commands in that order. The one operation that jumps the
//! queue, `Queue::write_buffer`, is only ever issued after the recorder has flushed.
//!
//! The pool also keeps the device's memory accounts (bytes on loan, their peak, bytes
//! cached) and its optional limit. When a new buffer would pass the limit, or the device
//! has no memory left, the cached buffers are released first: memory a run holds but does
//! not use never makes it fail.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::device::DeviceInner;
use crate::error::{Error, Result};

/// Environment variable that caps the bytes a device's tensors may hold (`8GiB`, `512MiB`,
/// or plain bytes), as `Device::set_memory_limit` does: to share a GPU with other jobs, or
/// to learn on a large GPU whether a run fits a smaller one.
pub const MEMORY_LIMIT_ENV: &str = "MOEGRAD_MEMORY_LIMIT";

/// The byte count a `MOEGRAD_MEMORY_LIMIT` value names (`None`: unset or empty, no limit).
pub fn memory_limit_from(value: Option<&str>) -> Result<Option<u64>> {
    let text = value.unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || Error::BadSetting { var: MEMORY_LIMIT_ENV, value: text.to_string(), expected: "a size such as 8GiB, 512MiB or 1000000 (bytes)" };
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let amount: f64 = number.parse().map_err(|_| bad())?;
    let bytes = amount * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(Some(bytes as u64))
}

#[derive(Default)]
struct Shelves {
    free: HashMap<(u64, wgpu::BufferUsages), Vec<wgpu::Buffer>>,
    /// Bytes of the buffers on loan: live tensors and read-backs in flight.
    in_use: u64,
    /// The most `in_use` has been since the last reset.
    peak: u64,
    /// Bytes of the buffers in `free`.
    cached: u64,
}

impl Shelves {
    fn lend(&mut self, bytes: u64) {
        self.in_use += bytes;
        self.peak = self.peak.max(self.in_use);
    }

    fn release_cached(&mut self) {
        self.free.clear();
        self.cached = 0;
    }
}

pub(crate) struct BufferPool {
    shelves: Mutex<Shelves>,
    created: AtomicUsize,
    /// Most bytes the buffers on loan and cached may take together (u64::MAX: no limit).
    limit: AtomicU64,
}

/// Why the pool lent no buffer; `in_use` is what the buffers on loan held then.
pub(crate) enum Shortage {
    /// The buffer would take the bytes on loan past the limit.
    Limit { in_use: u64, limit: u64 },
    /// The device could not create it. The cached buffers have been released, but the
    /// GPU may still hold them until the work that used them is done.
    Device { in_use: u64 },
}

/// Memory accounts: bytes on loan, their peak since the last reset, bytes cached.
pub(crate) struct Accounts {
    pub in_use: u64,
    pub peak: u64,
    pub cached: u64,
}

/// Rounds a request up to one of four classes per power of two (at most 25% waste),
/// never below 256 bytes.
fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = 63 - (bytes - 1).leading_zeros() as u64; // 2^pow < bytes <= 2^(pow+1)
    let quarter = 1u64 << (pow - 2);
    let base = 1u64 << pow;
    (1..=4).map(|q| base + q * quarter).find(|&c| c >= bytes).unwrap()
}

/// A new buffer, or `None` when the device is out of memory.
fn create(device: &wgpu::Device, size: u64, usage: wgpu::BufferUsages) -> Option<wgpu::Buffer> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let buffer = device.create_buffer(&wgpu::BufferDescriptor { label: None, size, usage, mapped_at_creation: false });
    pollster::block_on(scope.pop()).is_none().then_some(buffer)
}

impl BufferPool {
    pub fn new(limit: Option<u64>) -> Self {
        BufferPool { shelves: Mutex::default(), created: AtomicUsize::new(0), limit: AtomicU64::new(limit.unwrap_or(u64::MAX)) }
    }

    pub fn created(&self) -> usize {
        self.created.load(Ordering::Relaxed)
    }

    pub fn accounts(&self) -> Accounts {
        let s = self.shelves.lock().unwrap();
        Accounts { in_use: s.in_use, peak: s.peak, cached: s.cached }
    }

    pub fn reset_peak(&self) {
        let mut s = self.shelves.lock().unwrap();
        s.peak = s.in_use;
    }

    pub fn set_limit(&self, limit: Option<u64>) {
        self.limit.store(limit.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A buffer of at least `bytes` bytes with exactly `usage`: a cached one of its class,
    /// else a new one, after releasing the cache if that is what it takes.
    pub fn take(&self, device: &wgpu::Device, max_bytes: u64, bytes: u64, usage: wgpu::BufferUsages) -> Result<wgpu::Buffer, Shortage> {
        let class = size_class(bytes).min(max_bytes.max(bytes));
        let mut s = self.shelves.lock().unwrap();
        let limit = self.limit.load(Ordering::Relaxed);
        // The limit holds for cached buffers handed out again as much as for new ones.
        if s.in_use.saturating_add(class) > limit {
            return Err(Shortage::Limit { in_use: s.in_use, limit });
        }
        if let Some(buffer) = s.free.get_mut(&(class, usage)).and_then(Vec::pop) {
            s.cached -= class;
            s.lend(class);
            return Ok(buffer);
        }
        if s.in_use.saturating_add(s.cached).saturating_add(class) > limit {
            s.release_cached();
        }
        let buffer = create(device, class, usage).or_else(|| {
            s.release_cached();
            create(device, class, usage)
        });
        let Some(buffer) = buffer else {
            return Err(Shortage::Device { in_use: s.in_use });
        };
        self.created.fetch_add(1, Ordering::Relaxed);
        s.lend(class);
        Ok(buffer)
    }

    pub fn give(&self, buffer: wgpu::Buffer) {
        let mut s = self.shelves.lock().unwrap();
        s.in_use -= buffer.size();
        s.cached += buffer.size();
        s.free.entry((buffer.size(), buffer.usage())).or_default().push(buffer);
    }
}

/// A buffer on loan from the pool; goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    device: Arc<DeviceInner>,
}

impl PooledBuffer {
    /// A buffer of at least `bytes` bytes. When the device is out of memory, waits for
    /// the GPU to finish what is recorded (so that the released cache is really free) and
    /// tries once more.
    pub(crate) fn new(device: &Arc<DeviceInner>, bytes: u64, usage: wgpu::BufferUsages) -> Result<Self, Shortage> {
        let take = || device.pool.take(&device.device, device.limits.max_buffer_size, bytes, usage);
        let buffer = match take() {
            Err(Shortage::Device { .. }) => {
                device.recorder.lock().unwrap().flush(device);
                // A lost device fails the retry as well, which then reports the shortage.
                let _ = device.device.poll(wgpu::PollType::wait_indefinitely());
                take()
            }
            other => other,
        }?;
        Ok(PooledBuffer { buffer: Some(buffer), device: device.clone() })
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.device.pool.give(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{memory_limit_from, size_class};

    #[test]
    fn size_classes_cover_the_request_with_little_waste() {
        for bytes in [1u64, 255, 256, 257, 1000, 1024, 1025, 4096 * 3 + 4, 1 << 30] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c <= (bytes.max(256) * 5) / 4 + 1, "{bytes} -> {c} wastes too much");
        }
    }

    #[test]
    fn memory_limits_parse_with_binary_units() {
        let parse = |s: &str| memory_limit_from(Some(s)).unwrap();
        assert_eq!(parse(""), None);
        assert_eq!(parse("1000000"), Some(1_000_000));
        assert_eq!(parse("512MiB"), Some(512 << 20));
        assert_eq!(parse("8 GiB"), Some(8 << 30));
        assert_eq!(parse("1.5g"), Some(3 << 29));
        assert_eq!(parse("64k"), Some(64 << 10));
        assert_eq!(memory_limit_from(None).unwrap(), None);
        for bad in ["lots", "8GB", "-1", "0", "1.2.3M", "GiB"] {
            let err = memory_limit_from(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("MOEGRAD_MEMORY_LIMIT") && err.contains(bad), "{bad}: {err}");
        }
    }
}
