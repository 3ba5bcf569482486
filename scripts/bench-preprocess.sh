#!/usr/bin/env bash
# End-to-end preprocess speed against the tokenizer bound, side by side in one run.
#
# Corpus: ../shared/data/gutenberg (two Pile-format .jsonl.zst files, 110 books, 42.3 MB of text)
# unless a directory is given. Reports, median of RUNS (default 5):
#   - `preprocess` wall time and text MB/s at 1 and 2 threads (peak RSS too);
#   - the tokenizer bound: tiktoken-rs `r50k_base().encode_ordinary` over the same documents,
#     whole documents, one core, nothing else;
#   - ratios: 2-thread throughput / (2 x bound throughput), and against Cerebras Model Zoo's
#     create_hdf5_dataset.py (40.5 s for this corpus on this kind of machine, median of 7).
# Usage: scripts/bench-preprocess.sh [CORPUS_DIR] ; RUNS=3 scripts/bench-preprocess.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
corpus="${1:-$H5GPT_ROOT/../shared/data/gutenberg}"
runs="${RUNS:-5}"
cerebras_seconds="${CEREBRAS_SECONDS:-40.5}"
[ -e "$corpus" ] || { echo "no corpus at $corpus (pass a directory)"; exit 1; }
bash scripts/setup.sh >/dev/null
cargo build --release -q -p h5gpt-preprocess --bins --examples
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bound_out="$(./target/release/examples/tokenizer_bound "$corpus" --runs "$runs")"
text_bytes="$(echo "$bound_out" | awk 'NR==1 {print $4}')"
bound="$(echo "$bound_out" | awk '{print $2}' | median)"

declare -A wall rss
for threads in 1 2; do
  : >"$tmp/t$threads"; : >"$tmp/m$threads"
  for _ in $(seq "$runs"); do
    rm -rf "$tmp/out"
    /usr/bin/time -f "%e %M" -o "$tmp/time" ./target/release/preprocess --input "$corpus" --out "$tmp/out" --threads "$threads" >/dev/null 2>&1
    awk '{print $1}' "$tmp/time" >>"$tmp/t$threads"; awk '{print $2}' "$tmp/time" >>"$tmp/m$threads"
  done
  wall[$threads]="$(median <"$tmp/t$threads")"
  rss[$threads]="$(sort -g "$tmp/m$threads" | tail -n1)"
done

awk -v b="$bound" -v t1="${wall[1]}" -v t2="${wall[2]}" -v bytes="$text_bytes" -v r1="${rss[1]}" -v r2="${rss[2]}" -v c="$cerebras_seconds" -v n="$runs" 'BEGIN {
  mb = bytes / 1e6
  printf "corpus text: %.1f MB; median of %d runs\n", mb, n
  printf "%-34s %8s %10s %10s\n", "", "seconds", "MB/s", "peak RSS"
  printf "%-34s %8.2f %10.1f %10s\n", "tokenizer bound (encode_ordinary, 1 core)", b, mb / b, "-"
  printf "%-34s %8.2f %10.1f %8.0f MB\n", "preprocess --threads 1", t1, mb / t1, r1 / 1024
  printf "%-34s %8.2f %10.1f %8.0f MB\n", "preprocess --threads 2", t2, mb / t2, r2 / 1024
  printf "2 threads vs 2 x bound: %.2f (target >= 0.90)\n", (mb / t2) / (2 * mb / b)
  printf "2 threads vs Cerebras create_hdf5_dataset.py (%.1f s): %.1fx (target >= 20x)\n", c, c / t2
}'
