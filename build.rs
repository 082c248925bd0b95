//! Lists every WGSL file under shaders/ for src/gpu/shaders.rs, so a new kernel is its WGSL
//! file and nothing to register.

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).expect("shaders/").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "wgsl") {
            out.push(p);
        }
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir")).join("shaders");
    println!("cargo:rerun-if-changed=shaders");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("out dir"));
    let mut code = String::from("&[\n");
    // `*_check.wgsl` kernels exist for tests only: not in the browser's module.
    let wasm = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "wasm32");
    files.retain(|f| !(wasm && f.to_string_lossy().ends_with("_check.wgsl")));
    for (i, f) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.strip_prefix(&root).expect("under shaders/").to_string_lossy().replace('\\', "/");
        // What ships is the source without comments and indentation (about 40% fewer bytes in
        // the wasm module); the files in shaders/ stay the readable originals.
        let text = std::fs::read_to_string(f).expect("read shader");
        let stripped = strip(&text);
        let at = out_dir.join(format!("shader{i}.wgsl"));
        std::fs::write(&at, stripped).expect("write stripped shader");
        code += &format!("    ({name:?}, include_str!({:?})),\n", at.display().to_string());
    }
    code += "]\n";
    std::fs::write(out_dir.join("shader_sources.rs"), code).expect("write shader list");
}

/// WGSL without `//` comments (WGSL has no string literals, so `//` always starts one),
/// leading and trailing spaces, or empty lines.
fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("").trim();
        if !code.is_empty() {
            out.push_str(code);
            out.push('\n');
        }
    }
    out
}
