#!/usr/bin/env python3
"""Cross-check our GGUF header reader (src/weights/gguf.rs) against gguf-py.

Writes GGUF files with gguf-py's GGUFWriter (metadata of every value type, arrays of
strings/ints/floats/bools, a nested array; F32/F16/BF16/Q8_0/Q4_0/I8/I64 tensors of odd shapes and a
tensor of every ggml type gguf-py knows, as raw blocks; default and custom alignment; one file
without tensors), reads each with gguf-py's GGUFReader and with our parser (the ignored unit test
weights::gguf::tests::crosscheck_dump), and compares tensor names, dims, types, absolute offsets
and sizes, the data offset, and every metadata value.

    python3 -m venv /tmp/gguf-venv && /tmp/gguf-venv/bin/pip install gguf
    /tmp/gguf-venv/bin/python scripts/gguf-crosscheck.py [EXISTING.gguf ...]

Files named on the command line are checked too (llama.cpp's models/ggml-vocab-*.gguf, in the
llama-cpp-python sdist, are real converter output: vocabulary-only, no tensors).

Known differences it accounts for: gguf-py pads a file without tensors to the alignment, ggml (and
we) start its data section right after the header; gguf-py 0.19.0 (PyPI) sizes Q8_1 blocks at 40
bytes where ggml's block_q8_1 is 36 (ggml.c, and gguf-py in llama.cpp's tree, say 36), so that
type is left out of the files (Q8_1 is a runtime type, never stored).
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFReader, GGUFValueType as T, GGUFWriter, quants
from gguf.constants import GGML_QUANT_SIZES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, alignment=None, tensors=True):
    w = GGUFWriter(path, "qwen2")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_string("general.name", "crosscheck ünïcödé")
    w.add_uint8("s.u8", 250)
    w.add_int8("s.i8", -7)
    w.add_uint16("s.u16", 65535)
    w.add_int16("s.i16", -32768)
    w.add_uint32("s.u32", 4_000_000_000)
    w.add_int32("s.i32", -2_000_000_000)
    w.add_float32("s.f32", 0.1)
    w.add_uint64("s.u64", 2**64 - 1)
    w.add_int64("s.i64", -(2**63))
    w.add_float64("s.f64", 1e-300)
    w.add_bool("s.bool", True)
    w.add_array("tokenizer.ggml.tokens", ["a", "Ġb", "<|im_end|>", "世界", ""])
    w.add_array("tokenizer.ggml.merges", ["Ġ b", "a b"])
    w.add_array("tokenizer.ggml.token_type", [1, 1, 3, 1, 2])
    w.add_array("tokenizer.ggml.scores", [0.5, -1.25])
    w.add_key_value("a.u8", [0, 255], T.ARRAY, T.UINT8)
    w.add_key_value("a.i16", [-3, 3], T.ARRAY, T.INT16)
    w.add_key_value("a.u64", [2**64 - 1, 0], T.ARRAY, T.UINT64)
    w.add_key_value("a.i64", [-(2**63)], T.ARRAY, T.INT64)
    w.add_key_value("a.f64", [1e300, -0.0], T.ARRAY, T.FLOAT64)
    w.add_array("a.bool", [True, False, True])
    w.add_array("a.nested", [[1, 2], [3]])
    if tensors:
        rng = np.random.default_rng(0)
        f = lambda *s: rng.standard_normal(s).astype(np.float32)
        w.add_tensor("vec.f32", f(7))
        w.add_tensor("cube.f32", f(2, 5, 3))
        w.add_tensor("mat.f16", f(5, 3).astype(np.float16))
        w.add_tensor("mat.bf16", quants.quantize(f(3, 4), Q.BF16), raw_dtype=Q.BF16)
        w.add_tensor("mat.q8_0", quants.quantize(f(3, 64), Q.Q8_0), raw_dtype=Q.Q8_0)
        w.add_tensor("mat.q4_0", quants.quantize(f(5, 32), Q.Q4_0), raw_dtype=Q.Q4_0)
        w.add_tensor("ids.i8", np.arange(9, dtype=np.int8))
        w.add_tensor("ids.i64", np.arange(6, dtype=np.int64).reshape(2, 3))
        for q, (block, size) in GGML_QUANT_SIZES.items():
            if q == Q.Q8_1:
                continue
            # Two rows of one block each, as raw bytes.
            w.add_tensor(f"raw.{q.name}", rng.integers(0, 256, (2, size), dtype=np.uint8), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ours(path):
    env = dict(os.environ, GGUF_CROSSCHECK=path)
    env.setdefault("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/qwen-webgpu/target"))
    out = subprocess.run(
        ["cargo", "test", "--quiet", "--lib", "weights::gguf::tests::crosscheck_dump", "--", "--ignored", "--nocapture"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    for line in out.stdout.split("\n"):  # not splitlines(): vocabularies hold U+2028 and friends
        if line.startswith("CROSSCHECK_JSON "):
            return json.loads(line[len("CROSSCHECK_JSON "):])
    sys.exit(f"our parser printed nothing for {path}:\n{out.stdout}\n{out.stderr}")


def check(path, expect_padded_data=True):
    r = GGUFReader(path)
    h = ours(path)
    problems = []

    def same(what, a, b):
        if a != b:
            problems.append(f"{what}: ours {a!r}, gguf-py {b!r}")

    same("alignment", h["alignment"], int(r.alignment))
    if expect_padded_data:
        same("data_offset", h["data_offset"], int(r.data_offset))
    else:
        # No tensors: gguf-py pads to the alignment, ggml and we do not.
        a = int(r.alignment)
        same("data_offset (padded)", (h["data_offset"] + a - 1) // a * a, int(r.data_offset))
    same("tensor count", len(h["tensors"]), len(r.tensors))
    for ot, rt in zip(h["tensors"], r.tensors):
        n = rt.name
        same(f"{n} name", ot["name"], rt.name)
        same(f"{n} dims", ot["dims"], [int(d) for d in rt.shape])
        same(f"{n} type", ot["type"], rt.tensor_type.name)
        same(f"{n} start", ot["start"], int(rt.data_offset))
        same(f"{n} bytes", ot["end"] - ot["start"], int(rt.n_bytes))
    fields = {k: f for k, f in r.fields.items() if not k.startswith("GGUF.")}
    same("metadata keys", sorted(h["metadata"]), sorted(fields))
    scalar = {T.UINT8: "u8", T.INT8: "i8", T.UINT16: "u16", T.INT16: "i16", T.UINT32: "u32", T.INT32: "i32",
              T.FLOAT32: "f32", T.UINT64: "u64", T.INT64: "i64", T.FLOAT64: "f64", T.BOOL: "bool", T.STRING: "string"}
    arrays = {T.STRING: "strings", T.BOOL: "bools", T.FLOAT32: "floats", T.FLOAT64: "floats", T.ARRAY: "nested"}
    for k, f in fields.items():
        if k not in h["metadata"]:
            continue
        got, want = h["metadata"][k], f.contents()
        if f.types[0] == T.ARRAY:
            same(f"{k} type", got["type"], arrays.get(f.types[1], "ints"))
            if f.types[1] == T.ARRAY:
                # contents() flattens nested arrays: the outer count is the part after the key,
                # the value type and the element type.
                same(f"{k} length", got["value"], int(f.parts[4][0]))
                continue
        else:
            same(f"{k} type", got["type"], scalar[f.types[0]])
        if f.types[-1] == T.FLOAT32:
            want = [float(np.float32(x)) for x in want] if isinstance(want, list) else float(np.float32(want))
        same(f"{k} value", got["value"], want)
    print(f"{os.path.basename(path)}: {len(r.tensors)} tensors, {len(fields)} keys, data at {h['data_offset']}, "
          f"{h['round_trips']} round trips: {'OK' if not problems else 'DIFFERENT'}")
    for p in problems:
        print("   ", p)
    return not problems


def main():
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for name, kw in [("default.gguf", {}), ("align128.gguf", {"alignment": 128}), ("metadata-only.gguf", {"tensors": False})]:
            path = os.path.join(d, name)
            write(path, **kw)
            ok &= check(path, expect_padded_data=kw.get("tensors", True))
    for path in sys.argv[1:]:
        ok &= check(path, expect_padded_data=len(GGUFReader(path).tensors) > 0)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
