//! WGSL sources, a tiny preprocessor and the compiled-kernel type.
//!
//! Every kernel is one file in `shaders/`, compiled into the binary with `include_str!`.
//! The preprocessor knows `#include "file"`, `#ifdef NAME` / `#ifndef NAME` / `#else` /
//! `#endif`, and replaces each whole-word `NAME` with its value from the [`ShaderKey`]'s
//! defines. Nothing more. [`super::GpuOptions::dump_wgsl`] writes every final WGSL to a folder
//! (the CLI sets it from `QWEN_WEBGPU_DUMP_WGSL=DIR`). Each compiled kernel's interface is read
//! from its final WGSL and checked against the Rust side ([`super::interface`]).

use super::interface::{Interface, KernelParams};
use super::recorder::Binding;
use super::Gpu;
use crate::error::{Error, Result};

/// Every WGSL file under `shaders/`, by the name kernels and `#include`s use (listed by
/// build.rs: a new kernel needs no registration here).
const SOURCES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/shader_sources.rs"));

fn source(name: &str) -> Result<&'static str> {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::Shader { name: name.into(), message: "no such shader file".into() })
}

/// A kernel: its file (without `.wgsl`) and its defines. Two keys that are equal share one
/// compiled pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShaderKey {
    pub name: &'static str,
    pub defines: Vec<(&'static str, String)>,
}

impl ShaderKey {
    pub fn new(name: &'static str) -> Self {
        ShaderKey { name, defines: Vec::new() }
    }
    /// A `NAME=value` substitution.
    pub fn def(mut self, name: &'static str, value: impl ToString) -> Self {
        self.defines.push((name, value.to_string()));
        self
    }
    /// A flag for `#ifdef NAME`.
    pub fn flag(self, name: &'static str, on: bool) -> Self {
        if on {
            self.def(name, "1")
        } else {
            self
        }
    }
    /// Label for wgpu objects and errors: `name[A=1,B=2]`.
    pub fn label(&self) -> String {
        let d: Vec<String> = self.defines.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}[{}]", self.name, d.join(","))
    }
}

/// Expand `#include`s and `#ifdef`s, then substitute defines.
pub fn preprocess(key: &ShaderKey) -> Result<String> {
    let mut out = String::new();
    expand(&format!("{}.wgsl", key.name), key, &mut out, 0)?;
    Ok(substitute(&out, &key.defines))
}

fn expand(file: &str, key: &ShaderKey, out: &mut String, depth: usize) -> Result<()> {
    let err = |m: String| Error::Shader { name: key.label(), message: format!("{file}: {m}") };
    if depth > 8 {
        return Err(err("#include nested too deep".into()));
    }
    let defined = |n: &str| key.defines.iter().any(|(k, _)| *k == n);
    // Stack of (this branch active, any enclosing branch inactive).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |s: &Vec<(bool, bool)>| s.last().map(|&(a, outer_off)| a && !outer_off).unwrap_or(true);
    for (i, line) in source(file)?.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("#ifdef ").or_else(|| t.strip_prefix("#ifndef ")) {
            let want = t.starts_with("#ifdef");
            let off = !active(&stack);
            stack.push((defined(rest.trim()) == want, off));
        } else if t == "#else" {
            let top = stack.last_mut().ok_or_else(|| err(format!("line {}: #else without #ifdef", i + 1)))?;
            top.0 = !top.0;
        } else if t == "#endif" {
            stack.pop().ok_or_else(|| err(format!("line {}: #endif without #ifdef", i + 1)))?;
        } else if !active(&stack) {
            continue;
        } else if let Some(rest) = t.strip_prefix("#include ") {
            let inc = rest.trim().trim_matches('"');
            expand(inc, key, out, depth + 1)?;
        } else if t.starts_with('#') {
            return Err(err(format!("line {}: unknown directive {t}", i + 1)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(err("unterminated #ifdef".into()));
    }
    Ok(())
}

fn substitute(src: &str, defines: &[(&str, String)]) -> String {
    if defines.is_empty() {
        return src.to_string();
    }
    let mut out = String::with_capacity(src.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match defines.iter().find(|(k, _)| *k == word.as_str()) {
            Some((_, v)) => out.push_str(v),
            None => out.push_str(word),
        }
        word.clear();
    };
    for ch in src.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// A compiled compute pipeline and its bind group layout (binding 0: the uniform params with
/// a dynamic offset; then one storage buffer per [`Binding`]).
pub struct Kernel {
    pub label: String,
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub bindings: Vec<Binding>,
    /// The interface read from the WGSL (native targets; None in browsers).
    pub interface: Option<Interface>,
    /// The parameter type last checked against [`Kernel::interface`].
    params_checked: std::cell::Cell<Option<std::any::TypeId>>,
}

impl Kernel {
    pub fn compile(
        gpu: &Gpu,
        key: &ShaderKey,
        bindings: &[Binding],
        dump_wgsl: Option<&std::path::Path>,
    ) -> Result<Kernel> {
        let label = key.label();
        let wgsl = preprocess(key)?;
        if let Some(dir) = dump_wgsl {
            let _ = std::fs::write(dir.join(format!("{label}.wgsl")), &wgsl);
        }
        let shader_err = |message: String| Error::Shader { name: label.clone(), message };
        #[cfg(not(target_arch = "wasm32"))]
        let interface = {
            let i = super::interface::reflect(&wgsl).map_err(shader_err)?;
            i.check_bindings(bindings).map_err(shader_err)?;
            Some(i)
        };
        #[cfg(target_arch = "wasm32")]
        let interface = None;
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for (i, b) in bindings.iter().enumerate() {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: i as u32 + 1,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: *b == Binding::Read },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let device = &gpu.device;
        let layout = device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(wgsl.into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pl),
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        gpu.check().map_err(|e| shader_err(e.to_string()))?;
        Ok(Kernel {
            label,
            pipeline,
            layout,
            bindings: bindings.to_vec(),
            interface,
            params_checked: Default::default(),
        })
    }

    /// Check `P` against the shader's `Params` (once per kernel and type).
    pub fn check_params<P: KernelParams + 'static>(&self) -> Result<()> {
        let id = std::any::TypeId::of::<P>();
        if self.params_checked.get() == Some(id) {
            return Ok(());
        }
        if let Some(i) = &self.interface {
            i.check_params(std::any::type_name::<P>(), std::mem::size_of::<P>(), P::FIELDS)
                .map_err(|message| Error::Shader { name: self.label.clone(), message })?;
        }
        self.params_checked.set(Some(id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_whole_words_only() {
        let s = substitute("let a = WG_SIZE; let b = WG_SIZE2;", &[("WG_SIZE", "64".into())]);
        assert_eq!(s, "let a = 64; let b = WG_SIZE2;");
    }

    #[test]
    fn every_kernel_preprocesses() {
        for (name, _) in SOURCES {
            if let Some(stem) = name.strip_suffix(".wgsl").filter(|n| !n.starts_with("common/")) {
                let stem: &'static str = Box::leak(stem.to_string().into_boxed_str());
                preprocess(&ShaderKey::new(stem)).unwrap();
            }
        }
    }
}
