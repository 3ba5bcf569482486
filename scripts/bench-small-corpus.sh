#!/usr/bin/env bash
# GPT-2's vocabulary against a vocabulary trained on the corpus, on the generated small-language
# corpus (tests/examples/small_language.rs: 300 made-up words), at the same compute budget.
#
# 1. preprocess the corpus twice: --tokenizer gpt2 and --train-tokenizer wordlevel --vocab-size 512
#    (--val-fraction 0.05, the same documents in val/ both times);
# 2. train on the word-level shards with the auto-sized model (one epoch);
# 3. train on the GPT-2 shards with the same model body, learning rate, batch rows and steps,
#    so both runs do the same transformer work per step (GPT-2's LM head is bigger);
# 4. print parameters, training FLOPs, final validation loss per token and per byte of text
#    (loss per token is not comparable across tokenizers; per byte is).
#
# Usage: scripts/bench-small-corpus.sh [WORKDIR]   (default: a temporary directory)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
docs="${DOCS:-4000}"
cargo build --release --quiet --bins
cargo run --release --quiet -p h5gpt-tests --example small_language -- "$work/corpus.jsonl" "$docs" 300 1
bin=target/release

"$bin/preprocess" --input "$work/corpus.jsonl" --out "$work/gpt2" --seq-len 64 --val-fraction 0.05 --force >"$work/pre-gpt2.txt"
"$bin/preprocess" --input "$work/corpus.jsonl" --out "$work/words" --seq-len 64 --val-fraction 0.05 --force \
  --train-tokenizer wordlevel --vocab-size 512 >"$work/pre-words.txt"

rm -rf "$work/run-words" "$work/run-gpt2"
"$bin/train" --shards "$work/words" --out "$work/run-words" --device cpu --epochs 1 --eval-every 25 \
  --eval-batches 50 --seed 1 >"$work/train-words.txt" 2>&1

# The word-level run's resolved shape and batch, and its number of steps.
read -r layers heads width lr micro batch_tokens steps < <(python3 - "$work/run-words" <<'PY'
import json, sys, tomllib, pathlib
run = pathlib.Path(sys.argv[1])
c = tomllib.loads((run / "config.toml").read_text())
steps = max(json.loads(l).get("step", 0) for l in (run / "metrics.jsonl").read_text().splitlines())
print(c["n_layer"], c["n_head"], c["n_embd"], c["lr"], c["micro_batch"], c["total_batch_tokens"], steps)
PY
)
"$bin/train" --shards "$work/gpt2" --out "$work/run-gpt2" --device cpu --model tiny \
  --n-layer "$layers" --n-head "$heads" --n-embd "$width" --lr "$lr" --micro-batch "$micro" \
  --total-batch-tokens "$batch_tokens" --max-steps "$steps" --eval-every 25 --eval-batches 50 \
  --seed 1 >"$work/train-gpt2.txt" 2>&1

python3 - "$work" <<'PY'
import json, sys, pathlib, re
import h5py, numpy as np, tiktoken
work = pathlib.Path(sys.argv[1])

def val_stream(name):
    """The val split's token stream (first input id, then every label under mask 1)."""
    out = []
    for shard in sorted((work / name / "val").glob("*.h5")):
        data = h5py.File(shard, "r")["data"][:]
        for row in data:
            if not out:
                out.append(int(row[0][0]))
            out.extend(int(t) for t, m in zip(row[2], row[1]) if m == 1)
    return out

# The val documents are the same for both runs (the split is keyed by document); GPT-2's BPE is
# lossless, so its val stream gives their exact size: text bytes plus one per end-of-document.
gpt2 = tiktoken.get_encoding("gpt2")
stream = val_stream("gpt2")
val_bytes = len(gpt2.decode_bytes([t for t in stream if t != 50256])) + stream.count(50256)

print(f"{'vocabulary':<22}{'params':>10}{'train FLOPs':>13}{'val loss/token':>16}{'val tokens':>12}{'bits/byte':>11}")
for name, label in [("gpt2", "GPT-2 (50,257)"), ("words", "trained word-level")]:
    log = (work / f"train-{name}.txt").read_text()
    params = float(re.search(r"\| ([0-9.]+)M parameters", log).group(1))
    flops = float(re.search(r"\| ([0-9.e+]+) FLOPs", log).group(1))
    metrics = [json.loads(l) for l in (work / f"run-{name}" / "metrics.jsonl").read_text().splitlines()]
    loss = [m["val_loss"] for m in metrics if "val_loss" in m][-1]
    vocab = json.loads((work / name / "val" / "data_params.json").read_text())["post-process"]["vocab_size"]
    predicted = len(val_stream(name)) - 1
    bits_per_byte = loss * predicted / val_bytes / np.log(2)
    print(f"{label:<22}{params:>9.3f}M{flops:>13.3e}{loss:>16.4f}{predicted:>12,}{bits_per_byte:>11.4f}   (vocab {vocab})")
print(f"val text: {val_bytes:,} bytes")
PY
echo "work directory: $work"
