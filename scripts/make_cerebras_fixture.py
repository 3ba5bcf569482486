#!/usr/bin/env python3
"""Writes tests/fixtures/cerebras/: two tiny shards the way Cerebras Model Zoo's
create_hdf5_dataset.py writes them (h5py; dataset "data", int32, shape [n, 3, msl], chunks
(1, 3, msl), gzip; file attribute n_examples) plus a Cerebras-style data_params.json without our
`h5gpt` section. Rows follow the LM packing rule on GPT-2 ids (EOS = pad = 50256).

Usage: scripts/make_cerebras_fixture.py   (with the venv from scripts/setup.sh: h5py, numpy)
"""
import json
import os

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "cerebras")
MSL = 16
EOS = 50256


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(0)
    stream = rng.integers(0, 50000, size=MSL * 9 + 1).astype(np.int32)
    stream[[20, 77, 130]] = EOS
    windows = [stream[r * MSL: r * MSL + MSL + 1] for r in range(9)]
    rows = np.stack([np.stack([w[:-1], np.ones(MSL, np.int32), w[1:]]) for w in windows]).astype(np.int32)
    for i, part in enumerate([rows[:5], rows[5:]]):
        with h5py.File(os.path.join(OUT, f"examples_{i}.h5"), "w") as f:
            f.attrs["n_examples"] = part.shape[0]
            f.create_dataset("data", data=part, dtype="i4", chunks=(1, 3, MSL), compression="gzip")
    params = {
        "dataset": {"max_seq_length": MSL, "pack_sequences": True, "use_ftfy": True},
        "processing": {"max_seq_length": MSL, "eos_id": EOS, "pad_id": EOS, "tokenizer_type": "GPT2Tokenizer"},
        "setup": {"mode": "lm", "processes": 1},
        "post-process": {"n_examples": int(rows.shape[0]), "eos_id": EOS, "pad_id": EOS, "vocab_size": 50257},
        "h5_dataset_stats": {"num_sequences": int(rows.shape[0]), "num_tokens": int(rows.shape[0] * MSL)},
    }
    with open(os.path.join(OUT, "data_params.json"), "w") as f:
        json.dump(params, f, indent=2)
        f.write("\n")
    print(f"wrote {rows.shape[0]} rows in 2 shards to {OUT}")


if __name__ == "__main__":
    main()
