#!/usr/bin/env python3
"""Independent reference for `preprocess`: writes the golden fixture in tests/fixtures/golden/.

Tokenizes a small deterministic corpus with OpenAI's Python `tiktoken` (GPT-2's r50k_base,
offline: the vocabulary comes from tiktoken-rs' bundled copy placed in TIKTOKEN_CACHE_DIR) and
applies Cerebras Model Zoo's LMData packing rule with numpy: every document followed by EOS
50256, the stream cut into windows of seq_len+1 tokens with stride seq_len,
input_ids = w[:-1], labels = w[1:], mask all ones. Cerebras drops the final partial window;
h5gpt writes it padded when it holds >= 2 tokens: both are recorded.

Usage: scripts/golden_packing.py   (from the repo root, with the venv from scripts/setup.sh)
"""
import glob
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "golden")
SEQ_LEN = 32
EOS = 50256
R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"


def offline_r50k():
    """tiktoken's r50k_base, loaded from tiktoken-rs' bundled vocabulary (no network)."""
    found = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/tiktoken-rs-*/assets/r50k_base.tiktoken"))
    if not found:
        raise SystemExit("tiktoken-rs sources not found: run `cargo fetch` first")
    cache = tempfile.mkdtemp(prefix="tiktoken-cache-")
    shutil.copy(sorted(found)[-1], os.path.join(cache, hashlib.sha1(R50K_URL.encode()).hexdigest()))
    os.environ["TIKTOKEN_CACHE_DIR"] = cache
    return tiktoken.get_encoding("r50k_base")


def corpus():
    """A deterministic corpus without special-token text: prose, code, unicode, numbers."""
    words = ["the", "model", "learns", "tokens", "from", "HDF5", "shards", "quickly", "naïve", "café",
             "日本語", "emoji🙂", "don't", "we'll", "3.14159", "x=1;", "    indented", "\ttab", "end."]
    docs = []
    state = 12345
    for d in range(40):
        n = 5 + (d * 37) % 90
        out = []
        for _ in range(n):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            out.append(words[(state >> 33) % len(words)])
            if (state >> 20) % 7 == 0:
                out.append("\n")
        docs.append(" ".join(out))
    docs.append("def f(x):\n    return x * 2\n\nprint(f(21))\n")
    docs.append("Short.")
    return docs


def main():
    enc = offline_r50k()
    docs = corpus()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"text": text, "meta": {"id": i}}, ensure_ascii=False) + "\n")
    stream = np.array([t for text in docs for t in enc.encode_ordinary(text) + [EOS]], dtype=np.int32)
    full = (len(stream) - 1) // SEQ_LEN
    rows = [stream[r * SEQ_LEN: r * SEQ_LEN + SEQ_LEN + 1] for r in range(full)]
    tail = stream[full * SEQ_LEN:]
    expected = {
        "seq_len": SEQ_LEN,
        "stream_tokens": int(len(stream)),
        "cerebras_rows": [{"input_ids": w[:-1].tolist(), "labels": w[1:].tolist()} for w in rows],
        "final_partial": None if len(tail) < 2 else {
            "input_ids": tail[:-1].tolist() + [EOS] * (SEQ_LEN - len(tail) + 1),
            "labels": tail[1:].tolist() + [EOS] * (SEQ_LEN - len(tail) + 1),
            "attention_mask": [1] * (len(tail) - 1) + [0] * (SEQ_LEN - len(tail) + 1),
        },
    }
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))
        f.write("\n")
    print(f"{len(docs)} documents, {len(stream)} stream tokens, {full} full rows, tail {len(tail)} tokens")


if __name__ == "__main__":
    main()
