#!/usr/bin/env bash
# Items per second of `h5gpt eval --task` against transformers on the same items, in the same run:
# a GPT-2-small-sized model (124M, random weights, seed 0) saved as a Hugging Face folder, 100
# generated four-choice items with HellaSwag-length contexts, scored on the CPU in fp32 by
# `h5gpt eval --hf DIR --task` and by scripts/hf_task_scores.py (transformers' GPT2LMHeadModel), both
# with 16 continuations per forward pass. Prints both rates and their ratio.
#
# Usage: scripts/bench_task_eval.sh [WORKDIR]   (needs the built binaries h5gpt and h5gpt-torch:
# cargo build --bins; source scripts/env.sh first; H5GPT_BIN=DIR where they are, default
# target/debug)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
bin="${H5GPT_BIN:-$root/target/debug}"
py="${H5GPT_PYTHON:-python3}"
mkdir -p "$work"

# GPT-2's tokenizer files, from an export of a one-step run (h5gpt writes them offline).
if [ ! -f "$work/tok/vocab.json" ]; then
  printf 'the quick brown fox jumps over the lazy dog. %.0s' $(seq 300) > "$work/corpus.txt"
  "$bin/h5gpt" preprocess --input "$work/corpus.txt" --out "$work/shards" --seq-len 32 >/dev/null
  "$bin/h5gpt" train --shards "$work/shards" --out "$work/run" --model tiny --micro-batch 4 \
    --total-batch-tokens 128 --max-steps 1 --eval-every 0 --device cpu >/dev/null 2>&1
  "$bin/h5gpt" export --checkpoint "$work/run" --hf "$work/tok" >/dev/null
fi

"$py" - "$work" <<'EOF'
import json, os, random, shutil, sys
import torch
from transformers import GPT2Config, GPT2LMHeadModel
work = sys.argv[1]
model_dir = os.path.join(work, "gpt2-small")
if not os.path.exists(os.path.join(model_dir, "model.safetensors")):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())  # 124M: 12 layers, 768 wide, 1024 context
    model.save_pretrained(model_dir, safe_serialization=True)
    for f in os.listdir(os.path.join(work, "tok")):
        if f not in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(os.path.join(work, "tok", f), model_dir)
words = ("the a man woman dog runs over into house then and is was are with on in of to "
         "kitchen knife cuts paper water pours glass slowly quickly camera shows people").split()
rng = random.Random(0)
with open(os.path.join(work, "items.jsonl"), "w") as f:
    for i in range(100):
        ctx = " ".join(rng.choice(words) for _ in range(rng.randint(30, 60)))
        choices = [" ".join(rng.choice(words) for _ in range(rng.randint(10, 25))) for _ in range(4)]
        f.write(json.dumps({"context": ctx, "choices": choices, "answer": rng.randrange(4)}) + "\n")
EOF

ours=$("$bin/h5gpt" eval --hf "$work/gpt2-small" --task "$work/items.jsonl" --micro-batch 16 \
  --device cpu --dtype fp32 --json 2>/dev/null)
"$py" "$root/scripts/hf_task_scores.py" "$work/gpt2-small" "$work/items.jsonl" \
  "$work/transformers.json" --batch 16
"$py" - "$ours" "$work/transformers.json" <<'EOF'
import json, sys
ours = json.loads(sys.argv[1])
theirs = json.load(open(sys.argv[2]))
a = ours["items"] / ours["seconds"]
b = theirs["items"] / theirs["seconds"]
print(f"h5gpt eval --task: {ours['items']} items in {ours['seconds']:.2f}s = {a:.2f} items/s")
print(f"transformers:      {theirs['items']} items in {theirs['seconds']:.2f}s = {b:.2f} items/s")
print(f"ratio h5gpt/transformers: {a / b:.2f}")
print(f"acc: h5gpt {ours['metrics']['acc']['value']:.2f}, transformers {theirs['metrics']['acc']:.2f}")
EOF
