#!/usr/bin/env python3
"""Make tests/data/tokenizer_golden.jsonl: expected Qwen v1 token ids for the test corpus.

The reference is PyPI `tiktoken` loaded with the real `qwen.tiktoken` and the Qwen pre-tokenizer
regex, preceded by NFC normalisation exactly as Qwen v1's tokenization_qwen.py does
(`unicodedata.normalize("NFC", text)` before `tiktoken.Encoding.encode`).

    pip install tiktoken
    bash scripts/fetch-vocab.sh
    python3 scripts/make_tokenizer_golden.py

Each output line: {"text", "ids" (specials as plain text, as message content is encoded),
"ids_special" (specials recognised, allowed_special="all")}. Then a few {"decode_ids",
"decoded"} lines: id sequences that cut UTF-8 characters, decoded with errors="replace".
"""
import base64
import json
import os
import random
import sys
import unicodedata

import tiktoken

PAT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIAL_START = 151643
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(205)]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB_DIR = os.environ.get("QWEN_VOCAB_DIR", os.path.expanduser("~/.cache/qwen-webgpu/vocab"))


def load_encoding(path):
    ranks = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    specials = {s: SPECIAL_START + i for i, s in enumerate(SPECIALS)}
    return tiktoken.Encoding("qwen", pat_str=PAT, mergeable_ranks=ranks, special_tokens=specials)


def main():
    path = os.path.join(VOCAB_DIR, "qwen.tiktoken")
    if not os.path.exists(path):
        sys.exit(f"{path} missing: run scripts/fetch-vocab.sh first")
    enc = load_encoding(path)
    corpus = os.path.join(ROOT, "tests/data/tokenizer_corpus.jsonl")
    out_path = os.path.join(ROOT, "tests/data/tokenizer_golden.jsonl")
    lines = []
    all_ids = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            norm = unicodedata.normalize("NFC", text)
            ids = enc.encode_ordinary(norm)
            ids_special = enc.encode(norm, allowed_special="all")
            all_ids.extend(ids)
            lines.append({"text": text, "ids": ids, "ids_special": ids_special})

    # Decoding cases: random windows of the corpus ids (cutting characters at the edges),
    # and raw single-byte tokens 128..255 that are never valid UTF-8 on their own.
    rng = random.Random(1234)
    cases = []
    for _ in range(40):
        a = rng.randrange(len(all_ids))
        cases.append(all_ids[a : a + rng.randrange(1, 12)])
    for _ in range(20):
        cases.append([rng.randrange(128, 256) for _ in range(rng.randrange(1, 6))])
    cases.append([enc.encode_single_token("a".encode())] + [0xE4, 0xBD] + [SPECIAL_START + 2])
    for ids in cases:
        lines.append({"decode_ids": ids, "decoded": enc.decode(ids, errors="replace")})

    with open(out_path, "w", encoding="utf-8") as f:
        for obj in lines:
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
    print(f"wrote {out_path}: {len(lines) - len(cases)} texts, {len(all_ids)} ids, {len(cases)} decode cases")


if __name__ == "__main__":
    main()
