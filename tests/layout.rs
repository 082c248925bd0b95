//! The module layout the README promises: data flows one way, so no module imports one that
//! comes after it. Each top-level module of src/ may use only the modules listed for it here
//! (the README's "Modules" table says the same in words); an import outside the list, and so
//! any cycle, fails this test. Doc comments and comments are not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module → the crate modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("clock", &[]),
    ("files", &["error"]),
    ("config", &["error"]),
    ("sampler", &["error"]),
    ("weights", &["error", "config", "files"]),
    // A GGUF file's vocabulary is read from its metadata (weights::gguf::GgufValue).
    ("tokenizer", &["error", "files", "weights"]),
    ("gpu", &["error", "weights"]),
    ("ops", &["error", "gpu", "sampler", "weights"]),
    ("model", &["error", "config", "gpu", "ops", "weights", "sampler", "clock", "files"]),
    ("generate", &["error", "model", "sampler", "tokenizer"]),
    ("bench", &["error", "config", "gpu", "ops", "model", "weights", "sampler", "clock"]),
    // Perplexity over long texts (the CLI's perplexity; its test borrows bench's Qwen-1.8B config).
    ("eval", &["error", "config", "model", "clock", "bench"]),
    (
        "wasm",
        &[
            "error",
            "config",
            "gpu",
            "ops",
            "model",
            "weights",
            "sampler",
            "clock",
            "generate",
            "tokenizer",
            "bench",
            "files",
        ],
    ),
    ("lib", &["config", "error", "model"]),
    ("main", &[]),
    // The binary's subcommands in their own files (src/cli/, modules of main.rs): the crate's
    // public API only, as main.
    ("cli", &[]),
];

fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::NAME` uses in code (not in comments), by module.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let m = module_of(&src, &f);
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = out.entry(m.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for c in re.captures_iter(code) {
                let dep = c[1].to_string();
                // Macros exported at the crate root (`crate::kernel_params!`) belong to gpu.
                let dep = if dep == "kernel_params" { "gpu".to_string() } else { dep };
                if dep != m {
                    deps.insert(dep);
                }
            }
        }
    }
    out
}

#[test]
fn modules_import_only_what_comes_before_them() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> =
        ALLOWED.iter().map(|(m, d)| (*m, d.iter().copied().collect())).collect();
    let mut bad = Vec::new();
    for (m, deps) in imports() {
        let Some(ok) = allowed.get(m.as_str()) else {
            bad.push(format!("module {m} is not in the layout table (tests/layout.rs, README)"));
            continue;
        };
        for d in deps {
            if !ok.contains(d.as_str()) {
                bad.push(format!("{m} imports {d}"));
            }
        }
    }
    assert!(bad.is_empty(), "imports against the layout:\n{}", bad.join("\n"));
}

#[test]
fn the_layout_table_has_no_cycle() {
    // Depth-first search over the allowed edges: the table itself must be a DAG, so that
    // the check above rules out every cycle.
    let edges: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    fn visit<'a>(
        m: &'a str,
        edges: &BTreeMap<&'a str, &'a [&'a str]>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        assert!(!stack.contains(&m), "cycle: {stack:?} -> {m}");
        stack.push(m);
        for d in edges.get(m).copied().unwrap_or(&[]) {
            visit(d, edges, stack, done);
        }
        stack.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        visit(m, &edges, &mut Vec::new(), &mut done);
    }
}
