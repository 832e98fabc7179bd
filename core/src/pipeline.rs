//! Compute pipelines, compiled once per shader variant and cached for the device's life.
//!
//! Kernels are WGSL templates: `{{NAME}}` placeholders are filled per variant (an
//! expression, a workgroup size, a flag), so variants of one kernel never become copies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::device::Device;
use crate::launch::ELEMENTWISE_WGSL;

/// A compiled kernel: its pipeline and the cache key naming its variant, which profiles
/// report time under.
pub struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) name: Arc<str>,
}

impl Kernel {
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    pipelines: Mutex<HashMap<String, Arc<Kernel>>>,
    compiled: AtomicUsize,
}

impl PipelineCache {
    pub fn compiled(&self) -> usize {
        self.compiled.load(Ordering::Relaxed)
    }
}

/// Fills `{{KEY}}` placeholders in a WGSL template; panics on a placeholder left unfilled,
/// which would otherwise surface as a confusing WGSL parse error.
pub fn render_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in values {
        out = out.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let end = out[start..].find("}}").map_or(out.len(), |e| start + e + 2);
        panic!("WGSL template placeholder {} was not filled", &out[start..end]);
    }
    out
}

impl Device {
    /// The pipeline for entry point `entry` of the shader that `source` builds, compiled on
    /// first use. `key` must identify the variant uniquely (e.g. "unary/exp/forward").
    pub fn pipeline(&self, key: &str, entry: &str, source: impl FnOnce() -> String) -> Arc<Kernel> {
        self.cached_pipeline(key, entry, source, wgpu::ShaderRuntimeChecks::checked())
    }

    /// `pipeline` without the bounds checks and loop guards naga adds to every access and
    /// loop, which cost hot loops dearly.
    ///
    /// # Safety
    /// Every index of the kernel must be in bounds by construction (and tested on odd
    /// shapes) and every loop must end: an out-of-bounds access is undefined behaviour.
    pub unsafe fn pipeline_unchecked(&self, key: &str, entry: &str, source: impl FnOnce() -> String) -> Arc<Kernel> {
        self.cached_pipeline(key, entry, source, wgpu::ShaderRuntimeChecks::unchecked())
    }

    fn cached_pipeline(&self, key: &str, entry: &str, source: impl FnOnce() -> String, checks: wgpu::ShaderRuntimeChecks) -> Arc<Kernel> {
        let cache = &self.0.pipelines;
        if let Some(p) = cache.pipelines.lock().unwrap().get(key) {
            return p.clone();
        }
        // Module-scope WGSL may come in any order, so the shared pieces go after the
        // kernel's own source (whose `enable` directives must come first).
        let source = source() + "\n" + ELEMENTWISE_WGSL;
        let device = &self.0.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor { label: Some(key), source: wgpu::ShaderSource::Wgsl(source.into()) };
        // SAFETY: with checks on this is `create_shader_module`; without, `pipeline_unchecked`'s
        // caller has promised in-bounds indices and finite loops.
        let module = unsafe { device.create_shader_module_trusted(desc, checks) };
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(key),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            let detail = match &err {
                wgpu::Error::Validation { description, .. } => description.clone(),
                other => other.to_string(),
            };
            panic!("kernel {key} failed to compile: {detail}");
        }
        cache.compiled.fetch_add(1, Ordering::Relaxed);
        let kernel = Arc::new(Kernel { pipeline, name: key.into() });
        cache.pipelines.lock().unwrap().insert(key.to_string(), kernel.clone());
        kernel
    }
}

#[cfg(test)]
mod tests {
    use super::render_template;

    #[test]
    fn fills_placeholders() {
        assert_eq!(render_template("a {{X}} b {{Y}}", &[("X", "1"), ("Y", "2")]), "a 1 b 2");
    }

    #[test]
    #[should_panic(expected = "{{Y}} was not filled")]
    fn unfilled_placeholder_panics() {
        render_template("a {{X}} b {{Y}}", &[("X", "1")]);
    }
}
