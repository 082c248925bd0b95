// How values are packed in u32 words, for weights and the KV cache alike (no kernel needs the
// shader-f16 feature or 8-bit storage): f16 pairs (low half first) and int8 quads (byte k % 4
// of the word holds value k). Every matrix row and cache row starts on a word boundary.

// Element `k` of a row whose word holding it is `word` (f16 pairs).
fn half_of(word: u32, k: u32) -> f32 {
    return unpack2x16float(word)[k & 1u];
}

// The four int8 values of a word, sign-extended.
fn q8_quad(word: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// `x` as the int8 byte of a value scaled by `inv` (1 / the row's scale), rounded and clamped
// to ±127: how the q8 KV cache stores a value.
fn q8_byte(x: f32, inv: f32) -> u32 {
    return bitcast<u32>(i32(clamp(round(x * inv), -127.0, 127.0))) & 0xffu;
}

// Four values as one q8 word (value k in byte k), the inverse of `q8_quad` up to the scale.
fn q8_word(x: vec4<f32>, inv: f32) -> u32 {
    return q8_byte(x.x, inv) | (q8_byte(x.y, inv) << 8u) | (q8_byte(x.z, inv) << 16u) | (q8_byte(x.w, inv) << 24u);
}
