#!/usr/bin/env python3
"""Logits of a Hugging Face GPT-2 directory, for checking h5gpt's export against transformers.

Usage: hf_logits.py MODEL_DIR IDS OUT
  MODEL_DIR  a directory `GPT2LMHeadModel.from_pretrained` loads (config.json, model.safetensors)
  IDS        token ids as JSON: a list of rows of equal length, e.g. '[[1, 2, 3], [4, 5, 6]]'
  OUT        file to write: JSON {"shape": [B, T, V], "logits": [...]} (row-major, float32 values)

The model runs in float32, eval mode (no dropout), on the CPU, without network access.
Needs torch and transformers (scripts/setup.sh installs them into .venv).
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, ids_json, out = sys.argv[1:]
    import torch
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    ids = torch.tensor(json.loads(ids_json), dtype=torch.long)
    assert ids.dim() == 2, f"IDS must be a list of equal-length rows, got shape {tuple(ids.shape)}"
    with torch.no_grad():
        logits = model(input_ids=ids).logits.to(torch.float32).contiguous()
    with open(out, "w") as f:
        json.dump({"shape": list(logits.shape), "logits": logits.flatten().tolist()}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
