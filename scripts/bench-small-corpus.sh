#!/usr/bin/env bash
# GPT-2's vocabulary against a vocabulary trained on the corpus, on the generated small-language
# corpus (tests/examples/small_language.rs: 300 made-up words), at the same compute budget.
#
# 1. preprocess the corpus twice: --tokenizer gpt2 and --train-tokenizer wordlevel --vocab-size 512
#    (--val-fraction 0.05, the same documents in val/ both times);
# 2. train on the word-level shards with the auto-sized model (one epoch);
# 3. train on the GPT-2 shards with the same model body, learning rate and rows per step: for
#    the same number of steps (the same transformer work; GPT-2's LM head costs far more), and
#    for the steps the word-level run's FLOPs buy;
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

rm -rf "$work/run-words" "$work/run-gpt2" "$work/run-gpt2-same-flops"
"$bin/train" --shards "$work/words" --out "$work/run-words" --device cpu --epochs 1 --eval-every 25 \
  --eval-batches 50 --seed 1 >"$work/train-words.txt" 2>&1

# The word-level run's resolved shape, learning rate and micro-batch (config.toml), and the
# steps, rows per step and FLOPs it ran (its plan line).
read -r layers heads width lr micro < <(python3 - "$work/run-words" <<'PY'
import sys, tomllib, pathlib
c = tomllib.loads((pathlib.Path(sys.argv[1]) / "config.toml").read_text())
print(c["n_layer"], c["n_head"], c["n_embd"], c["lr"], c["micro_batch"])
PY
)
plan_of() { sed -n 's/^plan: \([0-9]*\) steps × \([0-9]*\) rows × \([0-9]*\) tokens.*| \([0-9.e+]*\) FLOPs$/\1 \2 \3 \4/p' "$1"; }
read -r steps rows seq flops_words < <(plan_of "$work/train-words.txt")
gpt2_run() { # NAME STEPS WARMUP
  "$bin/train" --shards "$work/gpt2" --out "$work/run-$1" --device cpu --model tiny \
    --n-layer "$layers" --n-head "$heads" --n-embd "$width" --lr "$lr" --micro-batch "$micro" \
    --total-batch-tokens $((rows * seq)) --max-steps "$2" --warmup-steps "$3" --eval-every 25 \
    --eval-batches 50 --seed 1 >"$work/train-$1.txt" 2>&1
}
# Same model body, rows per step and steps: the same transformer work, more FLOPs in the head.
gpt2_run gpt2 "$steps" 10
# The same FLOPs as the word-level run: as many steps as that budget buys.
read -r _ _ _ flops_gpt2 < <(plan_of "$work/train-gpt2.txt")
steps_same_flops=$(python3 -c "print(max(1, int($steps * $flops_words / $flops_gpt2)))")
gpt2_run gpt2-same-flops "$steps_same_flops" 1

python3 scripts/small_corpus_report.py "$work"
echo "work directory: $work"
