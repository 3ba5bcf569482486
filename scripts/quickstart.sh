#!/usr/bin/env bash
# The main job on built-in defaults: set-up, build, preprocess a real corpus that is on every
# machine without network, inspect it, train a tiny model on it and sample from it. Idempotent
# (a finished run is not redone); outputs go to out/ (git-ignored).
#   corpus: ../shared/data/tinyshakespeare.txt when present, else the Python standard
#   library's .py files (a Pile-"GitHub"-like code corpus).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
bash scripts/setup.sh
cargo build --release --workspace --bins

corpus="../shared/data/tinyshakespeare.txt"   # relative: data_params.json records inputs as given
glob=()
if [ ! -f "$corpus" ]; then
  corpus="$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')"
  glob=(--glob '*.py' --skip-bad-records)
fi
echo "==> preprocess $corpus"
./target/release/preprocess --input "$corpus" "${glob[@]}" --out out/shards --seq-len 1024 --force
echo "==> inspect out/shards --verify --show 1 --decode"
./target/release/inspect out/shards --verify --show 1 --decode
echo "==> train a tiny model for 100 steps (out/run; CUDA when available, else CPU)"
./target/release/train --shards out/shards --out out/run --model tiny --micro-batch 2 \
  --total-batch-tokens 2048 --max-steps 100 --eval-every 25 --eval-batches 4 --lr 3e-3
echo "==> sample from it"
./target/release/sample --checkpoint out/run --prompt "${H5GPT_PROMPT:-First Citizen:}" --max-new-tokens 60
./target/release/eval --checkpoint out/run --shards out/shards --max-rows 32
