// f16 weights are stored as pairs packed in u32 words (low half first), so no kernel needs
// the shader-f16 feature. Every matrix row starts on a word boundary.

// Element `k` of a row whose word holding it is `word`.
fn half_of(word: u32, k: u32) -> f32 {
    return unpack2x16float(word)[k & 1u];
}
