#!/usr/bin/env bash
# The main job on built-in defaults: set-up, build, then on a ~1 MB corpus shipped in data/: train
# a BPE vocabulary and write shards (h5gpt preprocess), check them (h5gpt inspect), train the
# auto-sized model for about three minutes on two CPU cores (CUDA when present: the same job,
# faster, with a bigger model), sample from it, evaluate it, measure what it learned
# (scripts/check_main_job.py) and say where everything is. Outputs go to out/NAME/ (git-ignored).
#   corpus: data/tinyshakespeare.txt.gz, decompressed to out/shakespeare/tinyshakespeare.txt
#   (NAME shakespeare, prompt "ROMEO:"); H5GPT_CORPUS=FILE trains on FILE instead (NAME: its
#   file name without the extension; prompt: the file's first 8 characters).
# A rerun redoes nothing that is done (same commands, same outputs) and takes seconds; a changed
# command (another version of this script) starts that step and the ones after it over.
# H5GPT_PROMPT overrides the prompt.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
started=$SECONDS
bash scripts/setup.sh
cargo build --release --workspace --bins
bin="${CARGO_TARGET_DIR:-target}/release"   # h5gpt, and h5gpt-torch beside it (train, sample, eval); cargo's CARGO_TARGET_DIR is honoured
say() { printf '\n==> %s\n' "$*"; }

# --- the corpus ---------------------------------------------------------------------------------
if [ -n "${H5GPT_CORPUS:-}" ]; then
  corpus="$H5GPT_CORPUS"   # as given: data_params.json records inputs as given
  [ -f "$corpus" ] || { echo "quickstart: H5GPT_CORPUS=$corpus is not a file" >&2; exit 2; }
  base="$(basename "$corpus")"; name="${base%.*}"; name="${name//[^A-Za-z0-9_.-]/_}"
  [ -n "$name" ] || name=corpus
  prompt="$(python3 -c 'import sys; print(open(sys.argv[1], encoding="utf-8", errors="replace").read(8), end="")' "$corpus")"
else
  name=shakespeare
  prompt="ROMEO:"
  # The shipped corpus (data/README.md), decompressed once: rewritten only when missing or
  # different, so a rerun leaves it, and the shards made from it, as they are.
  corpus="out/$name/tinyshakespeare.txt"
  mkdir -p "out/$name"
  if ! gzip -dc data/tinyshakespeare.txt.gz | cmp -s - "$corpus"; then
    gzip -dc data/tinyshakespeare.txt.gz >"$corpus.tmp"
    mv "$corpus.tmp" "$corpus"
  fi
fi
inputs=("$corpus")
# One document: preprocess cuts it at the newline nearest 90% (nanoGPT's 90/10 by position);
# the vocabulary is trained on the first 90% only.
split=(--val-fraction 0.1)
prompt="${H5GPT_PROMPT:-$prompt}"
out="out/$name"
mkdir -p "$out"

# --- the model and its run: ~3 minutes on two CPU cores, or a bigger one on CUDA ------------------
if nvidia-smi -L >/dev/null 2>&1; then
  # 8.2M tokens: the auto-sized model grows to 3 layers × 128 (untested here: no GPU in CI).
  device=cuda; steps=1000; batch_tokens=8192; micro=32; expected_s=60
else
  # 2.5M tokens: 2 layers × 128 (0.69M parameters with the 2048-token vocabulary).
  device=cpu; steps=600; batch_tokens=4096; micro=16; expected_s=180
fi

# Runs a step's command. Its output remembers the command that made it (a stamp file, written
# before the command runs, so an interrupted step continues on the next run); when the command
# has changed (a newer version of this script), RESTART first clears the old output.
step() { # STAMP RESTART COMMAND...
  local stamp="$1" restart="$2"; shift 2
  local cmd; cmd="$(printf '%q ' "$@")"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$cmd" ]; then
    eval "$restart"
    printf '%s' "$cmd" >"$stamp"
  fi
  "$@"
}

say "preprocess: a 2048-token BPE vocabulary trained on the corpus, then shards ($out/shards)"
# New shards: the run on the old ones starts over too.
step "$out/.preprocess.cmd" "rm -rf '$out/shards' '$out/run' '$out/.train.cmd'" \
  "$bin/h5gpt" preprocess --input "${inputs[@]}" --out "$out/shards" --seq-len 256 \
  --train-tokenizer bpe --vocab-size 2048 "${split[@]}"

say "h5gpt inspect $out/shards --verify --show 1 --decode"
shards_dir="$out/shards"; [ -d "$out/shards/train" ] && shards_dir="$out/shards/train"
"$bin/h5gpt" inspect "$shards_dir" --verify --show 1 --decode

say "train the auto-sized model ($out/run; $device, $steps steps of $batch_tokens tokens)"
step "$out/.train.cmd" "rm -rf '$out/run'" \
  "$bin/h5gpt" train --shards "$out/shards" --out "$out/run" --device "$device" --ratio 10 \
  --micro-batch "$micro" --total-batch-tokens "$batch_tokens" --max-steps "$steps" \
  --lr 3e-3 --warmup-steps 20 --eval-every 100 --eval-batches 20 --save-every 1000 \
  --log-every 50

say "sample from it (prompt \"$prompt\")"
"$bin/h5gpt" sample --checkpoint "$out/run" --prompt "$prompt" --max-new-tokens 200 --seed 1337 \
  | tee "$out/sample.txt"

say "h5gpt eval: its loss and perplexity on the validation shards"
"$bin/h5gpt" eval --checkpoint "$out/run" --shards "$out/shards" --device "$device"

say "what it learned"
python3 scripts/check_main_job.py --shards "$out/shards" --run "$out/run" \
  --sample "$out/sample.txt" --prompt "$prompt" --margin 1.0 --coverage 0.8 \
  --expected-seconds "$expected_s"

checkpoint="$(ls -d "$out"/run/checkpoints/step-* | sort | tail -n 1)"
say "done in $(((SECONDS - started) / 60))m$(((SECONDS - started) % 60))s"
cat <<EOF
  shards      $out/shards/   (tokenizer.json: the trained vocabulary)
  checkpoint  $checkpoint/
  loss plot   $out/run/loss.png   (metrics: $out/run/metrics.jsonl)
  sample      $out/sample.txt

Go further:
  # 1. a bigger model for longer (a GPU helps; rerun the same command to resume)
  $bin/h5gpt train --shards $out/shards --out runs/$name-nano --model nano --max-steps 5000
  # 2. your own corpus (files or directories of .txt/.jsonl/.jsonl.zst/.parquet/...)
  $bin/h5gpt preprocess --input YOUR_CORPUS --out shards/mine --train-tokenizer bpe --vocab-size 8192 --val-fraction 0.01
  $bin/h5gpt train --shards shards/mine --out runs/mine
  # 3. size a run before it starts: the model train would pick, its FLOPs, loss and time
  $bin/h5gpt plan --shards $out/shards/
EOF
