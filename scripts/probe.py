#!/usr/bin/env python3
"""Hostile-input probe campaign (issue 12) against the release CLI and scripts/serve.mjs.

    scripts/probe.py [--jobs 2] [--timeout 30] [--only SUBSTRING] [--keep] [--list] [--no-build]

Builds the release CLI and the fixture generator (cargo build --release), writes a tiny
checkpoint, then runs each probe once: malformed model folders (config.json fields of the
wrong type, huge, negative or missing; corrupted safetensors headers, offsets past the end,
wrong dtypes and shapes; indexes pointing outside the folder), mutated tokenizer.json and
qwen.tiktoken files, bad or huge CLI arguments for every subcommand, special files (a FIFO,
a link to /dev/zero, a directory in place of a file), closed stdout pipes and a full disk;
and HTTP requests to scripts/serve.mjs (bad paths, encoded dot-dots, bad Host headers,
symlinks out of the served folder, odd methods and ranges).

Each probe is classified:
  clean    a non-zero exit with an `error:` line on stderr (or clap's usage, exit 2) and no
           panic; an HTTP 4xx, or a connection the server closed (or left waiting for the
           rest of a request) while it went on answering others
  success  exit status 0 (or an HTTP 2xx where one is allowed)
  crash    a panic, exit 101, death by a signal, another non-zero exit without an `error:`
           line, an HTTP 5xx, a served file that should have been refused, or a dead server
  hang     still running after --timeout seconds (killed)
It prints the counts and every crash and hang with its reproducer; exit status 1 if any.
Nothing here changes the repository (work files go to a temporary folder).
"""
import argparse
import base64
import concurrent.futures as cf
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/qwen-webgpu/target"))
CLI = os.path.join(TARGET, "release", "qwen-webgpu")
MK = os.path.join(TARGET, "release", "examples", "make_fixture")

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--jobs", type=int, default=2)
ap.add_argument("--timeout", type=float, default=30.0)
ap.add_argument("--only", default="", help="run only probes whose name contains this")
ap.add_argument("--keep", action="store_true", help="keep the work folder")
ap.add_argument("--no-build", action="store_true")
ap.add_argument("--list", action="store_true", help="print the probes' names and exit")
args = ap.parse_args()

if not args.no_build:
    subprocess.run(["cargo", "build", "--release", "--bin", "qwen-webgpu", "--example", "make_fixture"], cwd=ROOT, check=True)
WORK = tempfile.mkdtemp(prefix="qwen-probe-")
os.chmod(WORK, 0o755)
env = dict(os.environ)
env.setdefault("XDG_RUNTIME_DIR", "/tmp/qwen-webgpu-xdg-%d" % os.getuid())
os.makedirs(env["XDG_RUNTIME_DIR"], mode=0o700, exist_ok=True)
env["RUST_BACKTRACE"] = "0"

BASE = os.path.join(WORK, "base")
subprocess.run([MK, BASE, "--vocab", "301", "--hidden", "64", "--layers", "2", "--ff", "96", "--heads", "4",
                "--kv-heads", "2", "--seed", "1"], check=True, stdout=subprocess.DEVNULL, env=env)
SHARDED = os.path.join(WORK, "sharded")
subprocess.run([MK, SHARDED, "--vocab", "301", "--hidden", "64", "--layers", "2", "--ff", "96", "--heads", "4",
                "--kv-heads", "2", "--seed", "7", "--shards", "2", "--tie"], check=True, stdout=subprocess.DEVNULL, env=env)

# ---------------------------------------------------------------- seeds

def gpt2_chars():
    out, n = [], 0
    for b in range(256):
        if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255:
            out.append(chr(b))
        else:
            n += 1
            out.append(chr(255 + n))
    return out

def tokenizer_json_seed():
    """A small byte-level BPE tokenizer.json in Qwen's layout (as tests/fuzz.rs's seed)."""
    vocab = {c: i for i, c in enumerate(gpt2_chars())}
    merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("hell", "o")]
    for i, (a, b) in enumerate(merges):
        vocab[a + b] = 256 + i
    added = lambda i, s: {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0",
        "added_tokens": [added(260, "<|endoftext|>"), added(261, "<|im_start|>"), added(262, "<|im_end|>")],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": vocab, "merges": ["%s %s" % m for m in merges]},
    }

def tiktoken_seed():
    lines = ["%s %d" % (base64.b64encode(bytes([b])).decode(), b) for b in range(256)]
    for i, t in enumerate(["he", "ll", "hell", "hello"]):
        lines.append("%s %d" % (base64.b64encode(t.encode()).decode(), 256 + i))
    return ("\n".join(lines) + "\n").encode()

def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]

def st_bytes(header, body, raw_header=None):
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body

BASE_CONFIG = json.load(open(os.path.join(BASE, "config.json")))
BASE_HEADER, BASE_BODY = read_st(os.path.join(BASE, "model.safetensors"))
TOK_JSON = tokenizer_json_seed()
TIKTOKEN = tiktoken_seed()

# ---------------------------------------------------------------- probes

PROBES = []  # (name, kind, fn) ; fn() -> (class, detail)
counter = [0]

def new_dir(src=BASE):
    counter[0] += 1
    d = os.path.join(WORK, "p%05d" % counter[0])
    shutil.copytree(src, d, symlinks=True)
    return d

def classify_proc(cmd, stdin=b"", timeout=None, stdout=subprocess.DEVNULL, close_stdout=False):
    """Run the CLI; classify its end."""
    timeout = timeout or args.timeout
    t0 = time.time()
    if close_stdout:
        r, w = os.pipe()
        os.close(r)  # every write to stdout fails with EPIPE
        out = w
    else:
        out = stdout
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.PIPE, env=env, start_new_session=True)
    finally:
        if close_stdout:
            os.close(w)
    try:
        _, err = p.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return "hang", "still running after %.0f s" % timeout
    except BrokenPipeError:
        _, err = p.communicate()
    err = err.decode("utf-8", "replace")
    rc = p.returncode
    dt = time.time() - t0
    last = [l for l in err.splitlines() if l.strip()][-1:] or [""]
    if rc < 0:
        return "crash", "killed by signal %d; stderr: %s" % (-rc, err[-400:])
    if rc == 101 or "panicked at" in err:
        return "crash", "exit %d (panic): %s" % (rc, err[-600:])
    if rc == 0:
        return "success", "exit 0 in %.1f s" % dt
    # An `error:` line (chat prints it after its "> " prompt); clap's usage errors exit 2.
    errs = [l for l in err.splitlines() if re.match(r"^(> )*error:", l)]
    if errs:
        return "clean", errs[-1][:200]
    if rc == 2 and "Usage:" in err:
        return "clean", "usage (exit 2)"
    return "crash", "exit %d without an error: line: %s" % (rc, err[-400:])

def probe(name, kind):
    def reg(fn):
        PROBES.append((name, kind, fn))
        return fn
    return reg

def model_probe(name, prepare, commands=("info", "generate"), src=BASE):
    """A mutated model folder, tried with `info` and `generate`."""
    for c in commands:
        def run(c=c):
            d = new_dir(src)
            prepare(d)
            if c == "info":
                cmd = [CLI, "info", "--model", d]
            elif c == "generate":
                cmd = [CLI, "generate", "--model", d, "--prompt-ids", "1,2,3", "--max-new-tokens", "4", "--print-ids"]
            elif c == "prompt":
                cmd = [CLI, "generate", "--model", d, "--prompt", "hello 世界", "--max-new-tokens", "4"]
            elif c == "chat":
                cmd = [CLI, "generate", "--model", d, "--chat", "--prompt", "hello", "--max-new-tokens", "4"]
            res = classify_proc(cmd)
            return res + (" ".join(cmd),)
        PROBES.append(("model/%s [%s]" % (name, c), "cli", run))

def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)

def write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)

# --- config.json fields
BAD_VALUES = [("string", "12"), ("null", None), ("list", [1]), ("object", {"a": 1}), ("bool", True), ("neg", -1),
              ("zero", 0), ("float", 1.5), ("huge", 2 ** 64), ("u32+1", 2 ** 32 + 1), ("1e308", 1e308), ("big", 10 ** 9)]
for key in sorted(BASE_CONFIG):
    for label, v in BAD_VALUES:
        def prep(d, key=key, v=v):
            c = dict(BASE_CONFIG); c[key] = v; write_json(os.path.join(d, "config.json"), c)
        model_probe("config %s=%s" % (key, label), prep, commands=("generate",))
    def prep(d, key=key):
        c = dict(BASE_CONFIG); del c[key]; write_json(os.path.join(d, "config.json"), c)
    model_probe("config without %s" % key, prep, commands=("info", "generate"))
# Whole config files.
for label, data in [("empty", b""), ("not json", b"hello"), ("truncated", json.dumps(BASE_CONFIG).encode()[:40]),
                    ("array", b"[]"), ("null", b"null"), ("bom", b"\xef\xbb\xbf" + json.dumps(BASE_CONFIG).encode()),
                    ("nested 100k", b"[" * 100000 + b"]" * 100000), ("NaN", json.dumps(dict(BASE_CONFIG, hidden_size=float("nan"))).encode()),
                    ("over cap", json.dumps(BASE_CONFIG).encode() + b" " * (2 << 20)), ("binary", bytes(range(256)) * 4),
                    ("invalid utf8", b'{"model_type": "\xff\xfe"}'), ("dup keys", json.dumps(BASE_CONFIG).encode()[:-1] + b', "hidden_size": 0}'),
                    ("model_type unknown", json.dumps(dict(BASE_CONFIG, model_type="llama")).encode()),
                    ("rope_scaling odd", json.dumps(dict(BASE_CONFIG, rope_scaling={"type": "yarn", "factor": 4})).encode()),
                    ("rope_scaling huge", json.dumps(dict(BASE_CONFIG, rope_scaling={"type": "dynamic", "factor": 1e300})).encode()),
                    ("eos list huge", json.dumps(dict(BASE_CONFIG, eos_token_id=[1, 2 ** 40])).encode()),
                    ("eos neg", json.dumps(dict(BASE_CONFIG, eos_token_id=-1)).encode())]:
    model_probe("config file %s" % label, lambda d, data=data: write_bytes(os.path.join(d, "config.json"), data))
for label, data in [("generation_config not json", b"{"), ("generation_config eos huge", b'{"eos_token_id": 18446744073709551616}'),
                    ("generation_config over cap", b"{}" + b" " * (2 << 20)), ("generation_config eos string", b'{"eos_token_id": "x"}')]:
    model_probe(label, lambda d, data=data: write_bytes(os.path.join(d, "generation_config.json"), data), commands=("generate",))

# --- safetensors
ST = lambda d: os.path.join(d, "model.safetensors")
first_tensor = sorted(BASE_HEADER.keys() - {"__metadata__"})[0]
names = sorted(BASE_HEADER.keys() - {"__metadata__"})
raw_header = json.dumps(BASE_HEADER).encode()
for label, data in [
    ("empty", b""), ("4 bytes", b"\x01\x00\x00\x00"), ("len 0", struct.pack("<Q", 0)),
    ("len huge", struct.pack("<Q", 2 ** 63) + raw_header + BASE_BODY), ("len max", b"\xff" * 8 + raw_header + BASE_BODY),
    ("len past end", struct.pack("<Q", len(raw_header) + len(BASE_BODY) + 10) + raw_header + BASE_BODY),
    ("len short", struct.pack("<Q", len(raw_header) - 5) + raw_header + BASE_BODY),
    ("header garbage", struct.pack("<Q", 64) + os.urandom(64) + BASE_BODY),
    ("header not object", st_bytes(None, BASE_BODY, b"[1,2,3]")), ("header null", st_bytes(None, BASE_BODY, b"null")),
    ("header nested", st_bytes(None, BASE_BODY, b"[" * 50000 + b"]" * 50000)),
    ("header 100MB claim", struct.pack("<Q", 100 << 20) + raw_header),
    ("body truncated half", st_bytes(BASE_HEADER, BASE_BODY[: len(BASE_BODY) // 2])),
    ("body truncated 1", st_bytes(BASE_HEADER, BASE_BODY[:-1])), ("body empty", st_bytes(BASE_HEADER, b"")),
    ("body extra", st_bytes(BASE_HEADER, BASE_BODY + b"\0" * 1000)),
    ("random 4k", os.urandom(4096)),
]:
    model_probe("safetensors %s" % label, lambda d, data=data: write_bytes(ST(d), data))
for cut in [8, 9, 20, len(raw_header) // 2, len(raw_header) + 7, len(raw_header) + 8, len(raw_header) + 9]:
    model_probe("safetensors cut at %d" % cut, lambda d, cut=cut: write_bytes(ST(d), st_bytes(BASE_HEADER, BASE_BODY)[:cut]), commands=("generate",))
rng = random.Random(12)
for t in [first_tensor, names[len(names) // 2], names[-1]]:
    tensor_mutations = [
        ("dtype F64", lambda h: h.update(dtype="F64")), ("dtype I8", lambda h: h.update(dtype="I8")),
        ("dtype U8", lambda h: h.update(dtype="U8")), ("dtype BOOL", lambda h: h.update(dtype="BOOL")),
        ("dtype F8_E4M3", lambda h: h.update(dtype="F8_E4M3")), ("dtype XYZ", lambda h: h.update(dtype="XYZ")),
        ("dtype 7", lambda h: h.update(dtype=7)), ("dtype missing", lambda h: h.pop("dtype")),
        ("shape swapped", lambda h: h.update(shape=list(reversed(h["shape"])))), ("shape zero", lambda h: h.update(shape=[0] * len(h["shape"]))),
        ("shape huge", lambda h: h.update(shape=[2 ** 62, 2 ** 62])), ("shape neg", lambda h: h.update(shape=[-1] + h["shape"][1:])),
        ("shape float", lambda h: h.update(shape=[1.5])), ("shape 5d", lambda h: h.update(shape=h["shape"] + [1, 1, 1])),
        ("shape string", lambda h: h.update(shape="64,64")), ("shape missing", lambda h: h.pop("shape")),
        ("offsets reversed", lambda h: h.update(data_offsets=list(reversed(h["data_offsets"])))),
        ("offsets past end", lambda h: h.update(data_offsets=[h["data_offsets"][0], len(BASE_BODY) + 100])),
        ("offsets huge", lambda h: h.update(data_offsets=[2 ** 63, 2 ** 64 - 1])), ("offsets neg", lambda h: h.update(data_offsets=[-4, 0])),
        ("offsets overlap", lambda h: h.update(data_offsets=[0, h["data_offsets"][1] - h["data_offsets"][0]])),
        ("offsets one", lambda h: h.update(data_offsets=[0])), ("offsets float", lambda h: h.update(data_offsets=[0.5, 10.5])),
        ("offsets missing", lambda h: h.pop("data_offsets")), ("not object", None),
    ]
    for label, mut in tensor_mutations:
        def prep(d, t=t, mut=mut):
            h = json.loads(json.dumps(BASE_HEADER))
            if mut is None:
                h[t] = "x"
            else:
                mut(h[t])
            write_bytes(ST(d), st_bytes(h, BASE_BODY))
        model_probe("safetensors %s: %s" % (t, label), prep, commands=("generate",))
for label, mut in [("missing tensor", lambda h: h.pop(first_tensor)), ("extra tensor", lambda h: h.update(extra={"dtype": "F16", "shape": [1], "data_offsets": [0, 2]})),
                   ("metadata format bogus", lambda h: h.update(__metadata__={"qwen_webgpu.format": "q3", "qwen_webgpu.group": "32", "qwen_webgpu.version": "1"})),
                   ("metadata version 9", lambda h: h.update(__metadata__={"qwen_webgpu.format": "q4", "qwen_webgpu.group": "32", "qwen_webgpu.version": "9"})),
                   ("metadata group 0", lambda h: h.update(__metadata__={"qwen_webgpu.format": "q4", "qwen_webgpu.group": "0", "qwen_webgpu.version": "1"})),
                   ("metadata not strings", lambda h: h.update(__metadata__={"qwen_webgpu.format": 4})),
                   ("metadata list", lambda h: h.update(__metadata__=[1])),
                   ("tensor name empty", lambda h: h.update({"": h.pop(first_tensor)})),
                   ("every tensor one offset", lambda h: [v.update(data_offsets=[0, v["data_offsets"][1] - v["data_offsets"][0]]) for k, v in h.items() if k != "__metadata__"])]:
    def prep(d, mut=mut):
        h = json.loads(json.dumps(BASE_HEADER)); mut(h); write_bytes(ST(d), st_bytes(h, BASE_BODY))
    model_probe("safetensors %s" % label, prep)
for i in range(40):  # random byte flips in the header
    def prep(d, i=i):
        r = random.Random(1000 + i)
        b = bytearray(raw_header)
        for _ in range(r.randint(1, 4)):
            b[r.randrange(len(b))] = r.randrange(256)
        write_bytes(ST(d), st_bytes(None, BASE_BODY, bytes(b)))
    model_probe("safetensors header flip %d" % i, prep, commands=("generate",))

# --- index (sharded fixture)
IDX = lambda d: os.path.join(d, "model.safetensors.index.json")
base_index = json.load(open(os.path.join(SHARDED, "model.safetensors.index.json")))
some_tensor = sorted(base_index["weight_map"])[0]
for label, shard in [("dotdot", "../base/model.safetensors"), ("absolute", os.path.join(BASE, "model.safetensors")), ("sub", "sub/x.safetensors"),
                     ("backslash", "..\\x"), ("dev zero", "/dev/zero"), ("empty", ""), ("dot", "."), ("number", 7), ("null", None),
                     ("missing file", "model-00009-of-00009.safetensors"), ("proc", "/proc/self/mem"), ("long", "a" * 5000)]:
    def prep(d, shard=shard):
        i = json.loads(json.dumps(base_index)); i["weight_map"][some_tensor] = shard; write_json(IDX(d), i)
    model_probe("index shard %s" % label, prep, src=SHARDED)
for label, data in [("not json", b"{"), ("no weight_map", b'{"metadata": {}}'), ("weight_map list", b'{"weight_map": []}'),
                    ("weight_map empty", b'{"weight_map": {}}'), ("total_size string", json.dumps(dict(base_index, metadata={"total_size": "x"})).encode()),
                    ("over cap", json.dumps(base_index).encode() + b" " * (17 << 20)), ("empty", b"")]:
    model_probe("index %s" % label, lambda d, data=data: write_bytes(IDX(d), data), src=SHARDED)
def drop_shard(d):
    shards = sorted(set(base_index["weight_map"].values()))
    os.remove(os.path.join(d, shards[-1]))
model_probe("index shard file deleted", drop_shard, src=SHARDED)

# --- special files in place of each model file
for fname in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json"]:
    for label in ["fifo", "dev zero", "dev null", "directory", "dangling link", "link loop", "unreadable"]:
        def prep(d, fname=fname, label=label):
            p = os.path.join(d, fname)
            if os.path.exists(p):
                os.remove(p)
            if label == "fifo":
                os.mkfifo(p)
            elif label == "dev zero":
                os.symlink("/dev/zero", p)
            elif label == "dev null":
                os.symlink("/dev/null", p)
            elif label == "directory":
                os.mkdir(p)
            elif label == "dangling link":
                os.symlink("/nonexistent/x", p)
            elif label == "link loop":
                os.symlink(p, p)
            elif label == "unreadable":
                write_bytes(p, b"{}")
                os.chmod(p, 0)
        model_probe("%s is a %s" % (fname, label), prep, commands=("info", "prompt"))
# A FIFO as the index of the sharded fixture.
def fifo_index(d):
    os.remove(IDX(d)); os.mkfifo(IDX(d))
model_probe("index is a fifo", fifo_index, src=SHARDED)

# --- tokenizer files: in a model folder (generate --prompt) and alone (tokenize)
def tok_variants():
    out = []
    t = TOK_JSON
    def mod(label, f):
        j = json.loads(json.dumps(t)); f(j); out.append((label, json.dumps(j).encode()))
    mod("model type unknown", lambda j: j["model"].update(type="Unigram2"))
    mod("vocab id huge", lambda j: j["model"]["vocab"].update(x=2 ** 32))
    mod("vocab id 2^22", lambda j: j["model"]["vocab"].update(x=2 ** 22))
    mod("vocab id neg", lambda j: j["model"]["vocab"].update(x=-1))
    mod("vocab id float", lambda j: j["model"]["vocab"].update(x=1.5))
    mod("vocab not object", lambda j: j["model"].update(vocab=[1, 2]))
    mod("vocab empty", lambda j: j["model"].update(vocab={}))
    mod("merges unknown token", lambda j: j["model"]["merges"].append("zz qq"))
    mod("merges bad", lambda j: j["model"].update(merges=["a"]))
    mod("merges not list", lambda j: j["model"].update(merges=7))
    mod("added id huge", lambda j: j["added_tokens"].append({"id": 2 ** 40, "content": "<x>", "special": True}))
    mod("added id neg", lambda j: j["added_tokens"].append({"id": -5, "content": "<x>", "special": True}))
    mod("added content empty", lambda j: j["added_tokens"].append({"id": 270, "content": "", "special": True}))
    mod("added dup", lambda j: j["added_tokens"].append(j["added_tokens"][0]))
    mod("added not list", lambda j: j.update(added_tokens={"a": 1}))
    mod("normalizer replace x10", lambda j: j.update(normalizer={"type": "Sequence", "normalizers": [{"type": "Replace", "pattern": {"String": "a"}, "content": "a" * 10}] * 5}))
    mod("normalizer unknown", lambda j: j.update(normalizer={"type": "Evil"}))
    mod("normalizer deep", lambda j: j.update(normalizer=json.loads('{"type":"Sequence","normalizers":[' * 200 + "]}" * 200)))
    mod("pre_tokenizer regex bad", lambda j: j.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(("}, "behavior": "Isolated", "invert": False}))
    mod("pre_tokenizer regex heavy", lambda j: j.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated", "invert": False}))
    mod("decoder unknown", lambda j: j.update(decoder={"type": "Nope"}))
    mod("decoder surrogate", lambda j: j.update(decoder={"type": "Replace", "pattern": {"String": "\ud800"}, "content": "x"}))
    mod("model missing", lambda j: j.pop("model"))
    mod("byte token missing", lambda j: j["model"]["vocab"].pop("a"))
    out += [("empty", b""), ("not json", b"{{"), ("truncated", json.dumps(t).encode()[:500]), ("null", b"null"),
            ("nested", b"[" * 100000 + b"]" * 100000), ("over cap", json.dumps(t).encode() + b" " * (65 << 20)),
            ("invalid utf8", json.dumps(t).encode().replace(b'"NFC"', b'"\xff\xfe"'))]
    raw = json.dumps(t).encode()
    for i in range(30):
        r = random.Random(2000 + i); b = bytearray(raw)
        for _ in range(r.randint(1, 6)):
            b[r.randrange(len(b))] = r.randrange(256)
        out.append(("flip %d" % i, bytes(b)))
    return out

def tiktoken_variants():
    s = TIKTOKEN
    lines = s.decode().splitlines()
    out = [("empty", b""), ("no space", b"aGVsbG8=\n"), ("bad base64", b"!!!! 0\n"), ("rank text", b"aA== x\n"), ("rank neg", b"aA== -1\n"),
           ("rank huge", b"aA== 18446744073709551616\n"), ("rank 2^32", b"aA== 4294967296\n"), ("rank 2^22", ("\n".join(lines) + "\naGk= 4194304\n").encode()),
           ("dup rank", ("\n".join(lines) + "\naGk= 5\n").encode()), ("dup token", ("\n".join(lines) + "\nYQ== 300\n").encode()),
           ("binary", os.urandom(3000)), ("crlf", s.replace(b"\n", b"\r\n")), ("missing bytes", "\n".join(lines[100:]).encode()),
           ("over cap", s + b"aA== 1\n" * ((65 << 20) // 7)), ("nul", s + b"\0\0\0"), ("huge line", b"a" * (5 << 20) + b" 1\n"),
           ("three fields", b"aA== 1 2\n"), ("only newlines", b"\n" * 10000)]
    for i in range(30):
        r = random.Random(3000 + i); b = bytearray(s)
        for _ in range(r.randint(1, 6)):
            b[r.randrange(len(b))] = r.randrange(256)
        out.append(("flip %d" % i, bytes(b)))
    return out

for fname, variants in [("tokenizer.json", tok_variants()), ("qwen.tiktoken", tiktoken_variants())]:
    for label, data in variants:
        def run_tok(fname=fname, data=data, decode=False):
            counter[0] += 1
            p = os.path.join(WORK, "t%05d-%s" % (counter[0], fname))
            write_bytes(p, data)
            cmd = [CLI, "tokenize", "--tokenizer", p] + (["--decode"] if decode else [])
            res = classify_proc(cmd, stdin=b"1,2,3,261,99999999" if decode else "hello 世界 <|im_end|> ".encode() * 50)
            return res + (" ".join(cmd) + (" <<< 1,2,3,261,99999999" if decode else " <<< 'hello 世界 <|im_end|> ' x50"),)
        PROBES.append(("tokenize %s %s" % (fname, label), "cli", run_tok))
        PROBES.append(("tokenize --decode %s %s" % (fname, label), "cli", lambda run_tok=run_tok: run_tok(decode=True)))
        model_probe("%s %s" % (fname, label), lambda d, fname=fname, data=data: write_bytes(os.path.join(d, fname), data), commands=("chat",))

# --- CLI arguments
M = BASE
GEN = [CLI, "generate", "--model", M, "--prompt-ids", "1,2,3", "--max-new-tokens", "4"]
arg_cases = []
def case(label, argv, stdin=b""):
    arg_cases.append((label, argv, stdin))
for flag, values in [("--max-new-tokens", ["-1", "abc", "18446744073709551616", "1e3", ""]),
                     ("--temperature", ["nan", "-1", "inf", "1e40", "abc", "-0"]),
                     ("--top-k", ["-1", "18446744073709551615", "1.5"]), ("--top-p", ["2", "-0.1", "nan", "0", "inf"]),
                     ("--repetition-penalty", ["0", "-1", "nan", "inf", "1e-40"]), ("--seed", ["-1", "18446744073709551616", "x"]),
                     ("--context", ["0", "18446744073709551615", "1000000000", "abc", "-5", "1"]),
                     ("--max-batch", ["0", "4294967297", "18446744073709551615", "-1"]),
                     ("--weights", ["bogus", "", "Q4", "q4 "]), ("--kv-cache", ["bogus", "", "f64"]),
                     ("--stop-ids", ["-1", "4294967296", "a,b", ",,"]),
                     ("--max-binding-bytes", ["0", "1", "18446744073709551615", "-1"])]:
    for v in values:
        case("generate %s %r" % (flag, v), GEN + [flag, v])
for v in ["", "1,,2", "-1", "4294967296", "99999", "4294967295", "1," * 5000 + "1", "a", " 1"]:
    case("generate --prompt-ids %r" % v[:20], [CLI, "generate", "--model", M, "--prompt-ids", v, "--max-new-tokens", "2"])
case("generate no prompt", [CLI, "generate", "--model", M])
case("generate --prompt without tokenizer", [CLI, "generate", "--model", M, "--prompt", "hi"])
case("generate --chat --prompt-ids", [CLI, "generate", "--model", M, "--chat", "--prompt-ids", "1"])
case("generate model missing", [CLI, "generate", "--model", "/nonexistent", "--prompt-ids", "1"])
case("generate model is a file", [CLI, "generate", "--model", os.path.join(M, "config.json"), "--prompt-ids", "1"])
case("generate model empty", [CLI, "generate", "--model", "", "--prompt-ids", "1"])
case("generate model /dev/zero", [CLI, "generate", "--model", "/dev/zero", "--prompt-ids", "1"])
case("generate model /", [CLI, "generate", "--model", "/", "--prompt-ids", "1"])
case("generate long prompt over context", [CLI, "generate", "--model", M, "--context", "8", "--prompt-ids", ",".join(["1"] * 50)])
case("generate context 1 fills", [CLI, "generate", "--model", M, "--context", "2", "--prompt-ids", "1", "--max-new-tokens", "50", "--ignore-eos"])
case("generate max-batch 1 long prompt", [CLI, "generate", "--model", M, "--max-batch", "1", "--prompt-ids", ",".join(["5"] * 40), "--max-new-tokens", "2"])
case("generate huge max-new-tokens small context", [CLI, "generate", "--model", M, "--context", "64", "--prompt-ids", "1", "--max-new-tokens", "18446744073709551615", "--ignore-eos"])
case("generate unknown flag", GEN + ["--nope"])
case("generate no-subgroups", GEN + ["--no-subgroups"])
case("no subcommand", [CLI])
case("unknown subcommand", [CLI, "frobnicate"])
case("info no model", [CLI, "info"])
case("info --context 0", [CLI, "info", "--model", M, "--context", "0"])
case("info --context huge", [CLI, "info", "--model", M, "--context", "18446744073709551615"])
case("info --weights bogus", [CLI, "info", "--model", M, "--weights", "q3"])
case("info --max-batch 0", [CLI, "info", "--model", M, "--max-batch", "0"])
case("info --max-batch huge", [CLI, "info", "--model", M, "--max-batch", "18446744073709551615"])
for label, extra in [("layers 0", ["--layers", "0"]), ("layers 129", ["--layers", "129"]), ("layers huge", ["--layers", "18446744073709551615"]),
                     ("vocab 0", ["--vocab", "0"]), ("vocab huge", ["--vocab", "18446744073709551615"]), ("prefill 0", ["--prefill", "0"]),
                     ("prefill huge", ["--prefill", "18446744073709551615"]), ("decode-at 0", ["--decode-at", "0"]),
                     ("decode-tokens huge", ["--decode-tokens", "18446744073709551615"]), ("context 1", ["--context", "1"]),
                     ("json to dir", ["--json", "/tmp"]), ("json to /dev/full", ["--json", "/dev/full"]), ("json no dir", ["--json", "/nonexistent/x.json"]),
                     ("weights bogus", ["--weights", "q2"]), ("kv bogus", ["--kv-cache", "q2"]), ("top-k no temperature", ["--top-k", "5"]),
                     ("temperature nan", ["--temperature", "nan"]), ("max-batch 0", ["--max-batch", "0"]), ("max-binding-bytes 1", ["--max-binding-bytes", "1"]),
                     ("model missing", ["--model", "/nonexistent"]), ("model with layers", ["--model", M, "--layers", "1"])]:
    case("bench %s" % label, [CLI, "bench", "--layers", "1", "--vocab", "256", "--prefill", "4", "--decode-at", "4", "--decode-tokens", "2"] + extra)
case("bench tiny model", [CLI, "bench", "--model", M, "--prefill", "4", "--decode-at", "4", "--decode-tokens", "2", "--context", "100000"])
for label, extra in [("format bogus", ["--format", "q3"]), ("format f16", ["--format", "f16"]), ("out exists", ["--format", "q4", "--out", M]),
                     ("out /proc", ["--format", "q4", "--out", "/proc/qwen-probe"]), ("out a file", ["--format", "q4", "--out", os.path.join(M, "config.json")]),
                     ("max-shard-bytes 0", ["--format", "q4", "--max-shard-bytes", "0"]), ("max-shard-bytes 1", ["--format", "q4", "--max-shard-bytes", "1"]),
                     ("model missing", ["--format", "q4", "--model", "/nonexistent"])]:
    def qcase(extra=extra):
        counter[0] += 1
        out = os.path.join(WORK, "q%05d" % counter[0])
        argv = [CLI, "quantize", "--model", M, "--out", out] + extra
        # later flags win: --out / --model given twice are clap errors, so rebuild the list
        seen = {}
        i = 2
        while i < len(argv):
            seen[argv[i]] = argv[i + 1]; i += 2
        return [CLI, "quantize"] + [x for k, v in seen.items() for x in (k, v)]
    arg_cases.append(("quantize %s" % label, qcase, b""))
def info_total(ctx):
    r = subprocess.run([CLI, "info", "--model", M, "--context", str(ctx)], capture_output=True, env=env, timeout=args.timeout)
    m = re.search(rb"gpu memory: total (\d+) bytes", r.stdout)
    return r.returncode, int(m.group(1)) if m else None
for ctx in [2 ** 32 + 1, 2 ** 62, 2 ** 64 - 1]:
    def info_overflow(ctx=ctx):
        """`info` must not print a wrapped (smaller) figure for a larger context."""
        rc0, small = info_total(4096)
        res = classify_proc([CLI, "info", "--model", M, "--context", str(ctx)])
        rc, big = info_total(ctx)
        repro = "qwen-webgpu info --model TINY --context %d  (vs --context 4096)" % ctx
        if res[0] == "success" and big is not None and small is not None and big < small:
            return "crash", "wrong figure (arithmetic overflow): total %d bytes at --context %d, %d at --context 4096" % (big, ctx, small), repro
        return res + (repro,)
    PROBES.append(("args/info --context %d: figures do not wrap" % ctx, "cli", info_overflow))
case("tokenize missing file", [CLI, "tokenize", "--tokenizer", "/nonexistent"])
case("tokenize directory", [CLI, "tokenize", "--tokenizer", "/tmp"])
case("tokenize /dev/zero", [CLI, "tokenize", "--tokenizer", "/dev/zero"])
chat_inputs = [("eof", b""), ("not utf8", b"\xff\xfe\n"), ("huge line", b"x" * 3_000_000 + b"\n"), ("reset", b"/reset\n/reset\n"),
               ("nul", b"\0\0\0\n"), ("many lines", b"hi\n" * 20)]

for label, argv, stdin in arg_cases:
    def run(argv=argv, stdin=stdin):
        a = argv() if callable(argv) else argv
        res = classify_proc(a, stdin=stdin)
        return res + (" ".join(repr(x) if (not x or " " in x) else x for x in a)[:400],)
    PROBES.append(("args/" + label, "cli", run))

# A model folder with a tokenizer that fits (the small BPE seed: ids up to 262 < 301).
TOKM = os.path.join(WORK, "tokmodel")
shutil.copytree(BASE, TOKM)
write_json(os.path.join(TOKM, "tokenizer.json"), TOK_JSON)
TOKFILE = os.path.join(TOKM, "tokenizer.json")
for label, stdin in chat_inputs:
    def run(stdin=stdin):
        cmd = [CLI, "chat", "--model", TOKM, "--max-new-tokens", "4", "--context", "64"]
        return classify_proc(cmd, stdin=stdin) + (" ".join(cmd) + " <<< %r" % stdin[:30],)
    PROBES.append(("chat stdin %s" % label, "cli", run))
for label, stdin in [("not utf8", b"\xff\xfe\xfd"), ("huge", b"hello " * 500000), ("empty", b""), ("nul", b"\0" * 100)]:
    def run(stdin=stdin):
        cmd = [CLI, "tokenize", "--tokenizer", TOKFILE]
        return classify_proc(cmd, stdin=stdin) + (" ".join(cmd) + " <<< %r" % stdin[:30],)
    PROBES.append(("tokenize stdin %s" % label, "cli", run))
for label, stdin in [("not ids", b"a,b"), ("huge id", b"18446744073709551616"), ("neg", b"-1"), ("past vocab", b"99999999"),
                     ("many", (",".join(["104"] * 200000)).encode()), ("spaces", b" 1 , 2 ")]:
    def run(stdin=stdin):
        cmd = [CLI, "tokenize", "--tokenizer", TOKFILE, "--decode"]
        return classify_proc(cmd, stdin=stdin) + (" ".join(cmd) + " <<< %r" % stdin[:30],)
    PROBES.append(("tokenize --decode stdin %s" % label, "cli", run))

# --- closed stdout pipe, and a full disk
for label, cmd, stdin in [("generate ids", [CLI, "generate", "--model", M, "--prompt-ids", "1,2,3", "--max-new-tokens", "64", "--print-ids", "--ignore-eos"], b""),
                          ("generate text", [CLI, "generate", "--model", TOKM, "--prompt", "hello", "--max-new-tokens", "64", "--ignore-eos"], b""),
                          ("chat", [CLI, "chat", "--model", TOKM, "--max-new-tokens", "16", "--context", "128"], b"hi\nagain\n"),
                          ("info", [CLI, "info", "--model", M], b""), ("tokenize", [CLI, "tokenize", "--tokenizer", TOKFILE], b"hello " * 1000),
                          ("bench", [CLI, "bench", "--layers", "1", "--vocab", "256", "--prefill", "4", "--decode-at", "4", "--decode-tokens", "2"], b""),
                          ("help", [CLI, "--help"], b"")]:
    PROBES.append(("closed stdout: %s" % label, "cli", lambda cmd=cmd, stdin=stdin: classify_proc(cmd, stdin=stdin, close_stdout=True) + (" ".join(cmd) + " | (closed pipe)",)))
    def full(cmd=cmd, stdin=stdin):
        with open("/dev/full", "wb") as f:
            return classify_proc(cmd, stdin=stdin, stdout=f) + (" ".join(cmd) + " > /dev/full",)
    PROBES.append(("stdout /dev/full: %s" % label, "cli", full))

# ---------------------------------------------------------------- serve.mjs

SERVE_DIR = os.path.join(WORK, "serve-models")
os.makedirs(os.path.join(SERVE_DIR, "tiny"))
for f in os.listdir(BASE):
    shutil.copy(os.path.join(BASE, f), os.path.join(SERVE_DIR, "tiny", f))
SECRET = os.path.join(WORK, "secret.txt")
write_bytes(SECRET, b"TOPSECRET")
os.symlink(SECRET, os.path.join(SERVE_DIR, "out-link.json"))
os.symlink(WORK, os.path.join(SERVE_DIR, "out-dir"))
os.symlink("tiny/config.json", os.path.join(SERVE_DIR, "in-link.json"))
os.symlink("/dev/zero", os.path.join(SERVE_DIR, "zero.bin"))
os.mkfifo(os.path.join(SERVE_DIR, "fifo.bin"))
os.mkdir(os.path.join(SERVE_DIR, "dir.json"))
write_bytes(os.path.join(SERVE_DIR, "noread.bin"), b"x")
os.chmod(os.path.join(SERVE_DIR, "noread.bin"), 0)

server = {"proc": None, "port": None, "lock": threading.Lock()}

def start_server():
    senv = dict(env, SERVE_ROOT=ROOT, SERVE_PORT="0", SERVE_HOST="127.0.0.1", SERVE_MODELS=SERVE_DIR, SERVE_ALLOWED_HOSTS="")
    cmd = ["node", os.path.join(ROOT, "scripts/serve.mjs")]
    if os.getuid() == 0:  # root reads a chmod 000 file: serve as nobody, as a user would run it
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=senv, start_new_session=True)
    line = p.stdout.readline().decode()
    m = re.search(r":(\d+)/www/", line)
    if not m:
        raise SystemExit("serve.mjs did not start: %s %s" % (line, p.stderr.read(2000)))
    server["proc"], server["port"] = p, int(m.group(1))

def raw_request(data, timeout=10):
    """Send raw bytes; return (status, body) or (None, reason)."""
    s = socket.create_connection(("127.0.0.1", server["port"]), timeout=timeout)
    try:
        s.sendall(data)
        chunks = []
        while True:
            try:
                c = s.recv(65536)
            except socket.timeout:
                return None, "timeout"
            if not c:
                break
            chunks.append(c)
            if sum(map(len, chunks)) > (4 << 20):
                break
        resp = b"".join(chunks)
    except ConnectionResetError:
        return None, "reset"
    finally:
        s.close()
    if not resp:
        return None, "closed without a response"
    head = resp.split(b"\r\n", 1)[0].decode("latin-1")
    try:
        status = int(head.split(" ")[1])
    except (IndexError, ValueError):
        return None, "bad status line %r" % head[:80]
    return status, resp

def http_probe(label, path, host=None, method="GET", headers=(), expect="refuse", raw=None):
    def run():
        with server["lock"]:  # one request at a time: a dead server is then this probe's doing
            h = host.replace("PORT", str(server["port"])) if host is not None else "127.0.0.1:%d" % server["port"]
            if raw is not None:
                data = raw(server["port"])
            else:
                lines = ["%s %s HTTP/1.1" % (method, path)] + (["Host: %s" % h] if h != "" else []) + list(headers) + ["Connection: close", "", ""]
                data = "\r\n".join(lines).encode("utf-8", "surrogateescape")
            status, body = raw_request(data)
            time.sleep(0.02)
            alive = server["proc"].poll() is None
            repro = "printf %r | nc 127.0.0.1 PORT   (SERVE_MODELS=%s node scripts/serve.mjs)" % (data[:300].decode("latin-1"), SERVE_DIR)
            if not alive:
                err = server["proc"].stderr.read(2000).decode("utf-8", "replace")
                start_server()
                return "crash", "server died: %s" % err[-400:], repro
            if status is None:
                # Closed, reset or left waiting: fine if the server still answers others.
                s2, b2 = raw_request(("GET /www/index.html HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n" % server["port"]).encode())
                if s2 == 200:
                    return "clean", "no response (%s); the server still answers others" % body, repro
                return ("crash" if body != "timeout" else "hang"), "no response: %s, and none to a plain request (%s)" % (body, s2), repro
            leaked = b"TOPSECRET" in body or b"root:x:0:0" in body
            if leaked:
                return "crash", "leaked a file outside the served folders (HTTP %d)" % status, repro
            if status >= 500:
                return "crash", "HTTP %d" % status, repro
            if 400 <= status < 500:
                return "clean", "HTTP %d" % status, repro
            if expect == "refuse":
                return "crash", "HTTP %d for a request that must be refused" % status, repro
            return "success", "HTTP %d" % status, repro
    PROBES.append(("serve/" + label, "http", run))

for p in ["/www/../../etc/passwd", "/www/%2e%2e/%2e%2e/etc/passwd", "/www/..%2f..%2fetc%2fpasswd", "/models/..%2f..%2f..%2fetc%2fpasswd",
          "/models/%252e%252e/secret.txt", "/models/..%5c..%5csecret.txt", "/models/out-link.json", "/models/out-dir/secret.txt",
          "/models/zero.bin", "/models/fifo.bin", "/models/dir.json", "/models/noread.bin", "/models/tiny/%00config.json",
          "/models/tiny/config.json%00", "/models/%zz", "/models/tiny/../../secret.txt", "//etc/passwd", "/pkg/../../../etc/passwd",
          "/www/" + "a" * 20000, "/models/" + "%2e%2e/" * 200 + "etc/passwd", "/models/tiny/\u2025/config.json", "http://evil/etc/passwd",
          "*", "/models/tiny/./../../secret.txt", "/etc/passwd", "/.git/config", "/scripts/serve.mjs",
          "/models/nonexistent", "/www/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd", "/models/%2e%2e%2fsecret.txt"]:
    http_probe("path %s" % p[:60], p)
http_probe("path trailing slash on a file", "/models/tiny/config.json/", expect="any")
http_probe("host LOCALHOST (names are case-insensitive)", "/www/index.html", host="LOCALHOST:PORT", expect="any")
for h in ["evil.com", "evil.com:PORT", "localhost:1", "127.0.0.1", "127.0.0.1.evil.com:PORT", "", "[::2]:PORT",
          "localhost:PORT\u0000", "x" * 10000, "localhost:PORT, evil.com", "0x7f000001:PORT", "2130706433:PORT", "local\u00adhost:PORT"]:
    http_probe("host %r" % h[:40], "/www/index.html", host=h)
for m in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "PATCH", "FOO"]:
    http_probe("method %s" % m, "/www/index.html", method=m, expect="any")
for r in ["bytes=-5", "bytes=10-5", "bytes=0-100000000000000000000", "bytes=0-1,2-3", "bytes=abc", "bytes=99999999-", "items=0-1", "bytes=-0", "bytes= 0-1"]:
    http_probe("range %s" % r, "/models/tiny/config.json", headers=["Range: " + r], expect="any")
http_probe("huge header", "/www/index.html", headers=["X-A: " + "a" * 200000], expect="any")
http_probe("many headers", "/www/index.html", headers=["X-%d: 1" % i for i in range(5000)], expect="any")
http_probe("garbage request line", "", raw=lambda port: b"\x00\xff GARBAGE\r\n\r\n", expect="any")
http_probe("http/0.9", "", raw=lambda port: b"GET /www/index.html\r\n\r\n", expect="any")
http_probe("half request", "", raw=lambda port: b"GET /www/index.html HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port, expect="any")
http_probe("bad content-length", "", raw=lambda port: b"POST /www/index.html HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: -1\r\n\r\n" % port, expect="any")
http_probe("chunked garbage", "", raw=lambda port: b"POST /www/index.html HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" % port, expect="any")
http_probe("ok: a model file", "/models/tiny/config.json", expect="any")
http_probe("ok: inside link", "/models/in-link.json", expect="any")

# ---------------------------------------------------------------- run

def main():
    todo = [p for p in PROBES if args.only in p[0]]
    if args.list:
        for name, _, _ in todo:
            print(name)
        shutil.rmtree(WORK, ignore_errors=True)
        return 0
    if any(k == "http" for _, k, _ in todo):
        start_server()
    results = {"clean": [], "success": [], "crash": [], "hang": []}
    t0 = time.time()

    def one(p):
        name, kind, fn = p
        try:
            cls, detail, repro = fn()
        except Exception as e:  # the probe itself failed: report it, do not hide it
            cls, detail, repro = "crash", "probe error: %r" % e, name
        return name, cls, detail, repro

    done = 0
    with cf.ThreadPoolExecutor(max_workers=args.jobs) as ex:
        for name, cls, detail, repro in ex.map(one, todo):
            done += 1
            results[cls].append((name, detail, repro))
            if cls in ("crash", "hang"):
                print("%-6s %s: %s\n       %s" % (cls.upper(), name, detail.strip()[:600], repro), flush=True)
            if done % 100 == 0:
                print("... %d/%d probes (%.0f s)" % (done, len(todo), time.time() - t0), flush=True)
    if server["proc"]:
        server["proc"].kill()
    n = len(todo)
    print("probes tried: %d; clean errors: %d; successes: %d; crashes: %d; hangs: %d (%.0f s, %d jobs, timeout %.0f s)" % (
        n, len(results["clean"]), len(results["success"]), len(results["crash"]), len(results["hang"]), time.time() - t0, args.jobs, args.timeout))
    if os.environ.get("PROBE_LIST_SUCCESS"):
        for name, detail, _ in results["success"]:
            print("success: %s (%s)" % (name, detail))
    for cls in ("crash", "hang"):
        for name, detail, repro in results[cls]:
            print("%s: %s\n    %s\n    %s" % (cls, name, detail.strip().replace("\n", "\n    ")[:800], repro))
    if not args.keep:
        for dirpath, dirnames, filenames in os.walk(WORK):
            for d in dirnames:
                try: os.chmod(os.path.join(dirpath, d), 0o755)
                except OSError: pass
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print("work folder kept: %s" % WORK)
    return 1 if results["crash"] or results["hang"] else 0

sys.exit(main())
