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
    let mut code = String::from("&[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let name = f.strip_prefix(&root).expect("under shaders/").to_string_lossy().replace('\\', "/");
        code += &format!("    ({name:?}, include_str!({:?})),\n", f.display().to_string());
    }
    code += "]\n";
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("out dir")).join("shader_sources.rs");
    std::fs::write(out, code).expect("write shader list");
}
