//! Reading the small files of a model folder (config, index, tokenizer) and opening its large
//! ones, safely: only regular files (a FIFO or a device named `config.json` would hang or never
//! end), and the small ones under a size cap, so a hostile folder can neither hang nor exhaust
//! memory. Imports nothing from the crate but errors.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// Cap for JSON side files: config.json, generation_config.json.
pub const CONFIG_CAP: u64 = 1 << 20;
/// Cap for model.safetensors.index.json (Qwen-72B's is ~80 KB).
pub const INDEX_CAP: u64 = 16 << 20;
/// Cap for a tokenizer file (Qwen's tokenizer.json is ~7 MB, qwen.tiktoken ~2.5 MB).
pub const TOKENIZER_CAP: u64 = 64 << 20;

/// Fails unless `path` is (or links to) a regular file.
pub fn check_regular(path: &Path) -> Result<std::fs::Metadata> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path.display(), e))?;
    if !m.is_file() {
        return Err(Error::io(
            path.display(),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file (a FIFO, device or folder?)"),
        ));
    }
    Ok(m)
}

/// The bytes of a regular file of at most `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>> {
    let m = check_regular(path)?;
    let too_big = || {
        Error::io(
            path.display(),
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("larger than the {cap}-byte limit for this file"),
            ),
        )
    };
    if m.len() > cap {
        return Err(too_big());
    }
    let f = std::fs::File::open(path).map_err(|e| Error::io(path.display(), e))?;
    let mut out = Vec::with_capacity(m.len() as usize);
    // The file may grow after the check: never read more than the cap.
    f.take(cap + 1).read_to_end(&mut out).map_err(|e| Error::io(path.display(), e))?;
    if out.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(out)
}

/// [`read_capped`] as UTF-8 text.
pub fn read_text_capped(path: &Path, cap: u64) -> Result<String> {
    String::from_utf8(read_capped(path, cap)?).map_err(|e| {
        Error::io(
            path.display(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text ({})", e.utf8_error())),
        )
    })
}
