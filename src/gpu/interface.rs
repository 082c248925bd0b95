//! One source of truth for each kernel's interface: the WGSL. A kernel's uniform `Params`
//! struct and its storage bindings are read from the preprocessed WGSL (with naga, which wgpu
//! already builds on native targets) and the Rust side is checked against them: the binding
//! list an op declares when it compiles the kernel, and the parameter struct it dispatches
//! with (declared with [`kernel_params!`](crate::kernel_params), which records each field's
//! name, offset and type). A mismatch is an [`Error::Shader`](crate::Error::Shader) at the
//! first dispatch, so every test that runs the kernel fails on it; nothing runs with a struct
//! that the shader reads differently. Browsers (wasm) skip the reflection: the same kernels
//! are checked by every native test run.

use super::recorder::Binding;

/// The scalar type of one uniform field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    U32,
    I32,
    F32,
    /// Padding (a Rust field whose name starts with `_`: its name and type are not compared).
    Pad,
}

/// One field of a kernel's uniform parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamField {
    pub name: &'static str,
    pub offset: u32,
    pub kind: FieldKind,
}

/// A uniform parameter struct whose layout is known field by field (see
/// [`kernel_params!`](crate::kernel_params)).
pub trait KernelParams: bytemuck::Pod {
    const FIELDS: &'static [ParamField];
}

/// The Rust type of a uniform field.
pub trait ParamType {
    const KIND: FieldKind;
}
impl ParamType for u32 {
    const KIND: FieldKind = FieldKind::U32;
}
impl ParamType for i32 {
    const KIND: FieldKind = FieldKind::I32;
}
impl ParamType for f32 {
    const KIND: FieldKind = FieldKind::F32;
}
impl<const N: usize> ParamType for [u32; N] {
    const KIND: FieldKind = FieldKind::Pad;
}

/// Declare a kernel's uniform parameters: a `#[repr(C)]` Pod struct whose fields mirror the
/// `Params` struct of its WGSL file, with [`KernelParams`] implemented from the declaration.
/// Padding fields are named `_...` (compared by size only).
#[macro_export]
macro_rules! kernel_params {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $crate::gpu::interface::KernelParams for $name {
            const FIELDS: &'static [$crate::gpu::interface::ParamField] = &[$(
                $crate::gpu::interface::ParamField {
                    name: stringify!($f),
                    offset: std::mem::offset_of!($name, $f) as u32,
                    kind: <$t as $crate::gpu::interface::ParamType>::KIND,
                }
            ),*];
        }
    };
}

/// What a WGSL kernel declares: its uniform struct (binding 0) and storage bindings (1..).
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    /// The uniform struct's fields (name, offset, kind) and its size in bytes.
    pub params: Vec<(String, u32, FieldKind)>,
    pub params_size: u32,
    /// Storage bindings in binding order.
    pub bindings: Vec<Binding>,
}

/// Read the interface of a preprocessed WGSL kernel.
#[cfg(not(target_arch = "wasm32"))]
pub fn reflect(wgsl: &str) -> Result<Interface, String> {
    use naga::{AddressSpace, ScalarKind, StorageAccess, TypeInner};
    let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
    let mut uniform = None;
    let mut storage = std::collections::BTreeMap::new();
    for (_, g) in module.global_variables.iter() {
        let Some(rb) = &g.binding else { continue };
        if rb.group != 0 {
            return Err(format!("{:?} is in bind group {}: kernels use group 0 only", g.name, rb.group));
        }
        match (g.space, rb.binding) {
            (AddressSpace::Uniform, 0) => uniform = Some(g.ty),
            (AddressSpace::Storage { access }, b) if b > 0 => {
                let kind = if access.contains(StorageAccess::STORE) { Binding::ReadWrite } else { Binding::Read };
                if storage.insert(b, kind).is_some() {
                    return Err(format!("binding {b} is declared twice"));
                }
            }
            (space, b) => return Err(format!("binding {b} ({:?}) is a {space:?} variable", g.name)),
        }
    }
    let ty = uniform.ok_or("no uniform Params at binding 0")?;
    let TypeInner::Struct { members, span } = &module.types[ty].inner else {
        return Err("the uniform at binding 0 is not a struct".into());
    };
    let mut params = Vec::new();
    for m in members {
        let name = m.name.clone().unwrap_or_default();
        let kind = match &module.types[m.ty].inner {
            TypeInner::Scalar(s) if s.width == 4 => match s.kind {
                ScalarKind::Uint => FieldKind::U32,
                ScalarKind::Sint => FieldKind::I32,
                ScalarKind::Float => FieldKind::F32,
                k => return Err(format!("Params.{name} is a {k:?}")),
            },
            other => return Err(format!("Params.{name} is a {other:?}: kernel parameters are 32-bit scalars")),
        };
        params.push((name, m.offset, kind));
    }
    let bindings: Vec<Binding> = storage.values().copied().collect();
    if storage.keys().copied().ne(1..=bindings.len() as u32) {
        return Err(format!("storage bindings {:?} are not numbered 1, 2, ...", storage.keys().collect::<Vec<_>>()));
    }
    Ok(Interface { params, params_size: *span, bindings })
}

impl Interface {
    /// The storage bindings an op declared must be the shader's, in order and access.
    pub fn check_bindings(&self, declared: &[Binding]) -> Result<(), String> {
        if declared != self.bindings.as_slice() {
            return Err(format!("the op binds {declared:?} but the shader declares {:?}", self.bindings));
        }
        Ok(())
    }

    /// A Rust parameter struct of `size` bytes with `fields` must be the shader's `Params`:
    /// the same size, and the same named fields at the same offsets with the same types
    /// (padding compared by size only).
    pub fn check_params(&self, type_name: &str, size: usize, fields: &[ParamField]) -> Result<(), String> {
        if size != self.params_size as usize {
            return Err(format!("{type_name} is {size} bytes but the shader's Params is {}", self.params_size));
        }
        let rust: Vec<(&str, u32, FieldKind)> =
            fields.iter().filter(|f| !f.name.starts_with('_')).map(|f| (f.name, f.offset, f.kind)).collect();
        let wgsl: Vec<(&str, u32, FieldKind)> =
            self.params.iter().filter(|p| !p.0.starts_with('_')).map(|p| (p.0.as_str(), p.1, p.2)).collect();
        if rust != wgsl {
            return Err(format!("{type_name} has fields {rust:?} but the shader's Params has {wgsl:?}"));
        }
        Ok(())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use Binding::{Read, ReadWrite};

    crate::kernel_params! {
        pub struct Two {
            pub n: u32,
            pub eps: f32,
            pub _pad: [u32; 2],
        }
    }

    fn wgsl(fields: &str, bindings: &str) -> String {
        format!(
            "struct Params {{ {fields} }}\n@group(0) @binding(0) var<uniform> p: Params;\n{bindings}\n\
             @compute @workgroup_size(1) fn main() {{}}"
        )
    }

    const BINDINGS: &str = "@group(0) @binding(1) var<storage, read> x: array<f32>;\n\
                            @group(0) @binding(2) var<storage, read_write> y: array<f32>;";

    #[test]
    fn a_matching_struct_and_binding_list_pass() {
        let i = reflect(&wgsl("n: u32, eps: f32, _a: u32, _b: u32", BINDINGS)).unwrap();
        assert_eq!(i.bindings, vec![Read, ReadWrite]);
        i.check_bindings(&[Read, ReadWrite]).unwrap();
        i.check_params("Two", std::mem::size_of::<Two>(), <Two as KernelParams>::FIELDS).unwrap();
    }

    #[test]
    fn every_kind_of_mismatch_is_an_error() {
        let size = std::mem::size_of::<Two>();
        let fields = <Two as KernelParams>::FIELDS;
        let check = |f: &str| reflect(&wgsl(f, BINDINGS)).unwrap().check_params("Two", size, fields);
        // A field renamed (HeadParams' `f` was `eps` in one shader and `scale` in another).
        assert!(check("n: u32, scale: f32, _a: u32, _b: u32").is_err());
        // Swapped, retyped, or a different size.
        assert!(check("eps: f32, n: u32, _a: u32, _b: u32").is_err());
        assert!(check("n: u32, eps: u32, _a: u32, _b: u32").is_err());
        assert!(check("n: u32, eps: f32").is_err());
        assert!(check("n: u32, eps: f32, k: u32, _b: u32").is_err());
        // Bindings: a missing one, a wrong access, a gap.
        let i = reflect(&wgsl("n: u32, eps: f32, _a: u32, _b: u32", BINDINGS)).unwrap();
        assert!(i.check_bindings(&[Read]).is_err());
        assert!(i.check_bindings(&[Read, Read]).is_err());
        let gap = "@group(0) @binding(1) var<storage, read> x: array<f32>;\n\
                   @group(0) @binding(3) var<storage, read_write> y: array<f32>;";
        assert!(reflect(&wgsl("n: u32, eps: f32, _a: u32, _b: u32", gap)).is_err());
    }
}
