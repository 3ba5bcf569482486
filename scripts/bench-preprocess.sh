#!/usr/bin/env bash
# End-to-end preprocess speed against the tokenizer bound, side by side in one run.
#
# Corpus: ../shared/data/gutenberg (two Pile-format .jsonl.zst files, 110 books, 42.3 MB of text)
# unless a directory is given. Reports, median of RUNS (default 5):
#   - `preprocess` wall time and text MB/s at 1 and 2 threads (peak RSS too);
#   - the tokenizer bound: tiktoken-rs `r50k_base().encode_ordinary` over the same documents,
#     whole documents, one core, nothing else;
#   - ratios: 2-thread throughput / (2 x bound throughput), and against Cerebras Model Zoo's
#     create_hdf5_dataset.py (40.5 s for this corpus on this kind of machine, median of 7);
#   - a scaling table on the corpus replicated (symbolic links) to >= 150 MB of text: 1, 2 and
#     N threads (N = all cores, default), runs alternating between thread counts, median wall
#     seconds, speed-up over 1 thread, parallel efficiency = speed-up / threads, CPU seconds
#     (user + system) and peak RSS.
# Usage: scripts/bench-preprocess.sh [CORPUS_DIR] ; RUNS=3 THREADS_N=16 scripts/bench-preprocess.sh
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

# One run of `preprocess` on corpus $1 with $2 threads; appends wall seconds, user + system
# seconds and peak RSS (KB) to $tmp/<tag>.{t,c,m} (tag $3).
run_once() {
  rm -rf "$tmp/out"
  /usr/bin/time -f "%e %U %S %M" -o "$tmp/time" ./target/release/preprocess --input "$1" --out "$tmp/out" --threads "$2" >/dev/null 2>&1
  awk '{print $1}' "$tmp/time" >>"$tmp/$3.t"
  awk '{print $2 + $3}' "$tmp/time" >>"$tmp/$3.c"
  awk '{print $4}' "$tmp/time" >>"$tmp/$3.m"
}

declare -A wall rss
for _ in $(seq "$runs"); do
  for threads in 1 2; do run_once "$corpus" "$threads" "g$threads"; done
done
for threads in 1 2; do
  wall[$threads]="$(median <"$tmp/g$threads.t")"
  rss[$threads]="$(sort -g "$tmp/g$threads.m" | tail -n1)"
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

# Scaling: the corpus replicated to at least 150 MB of text.
copies=$(awk -v b="$text_bytes" 'BEGIN { c = int(150e6 / b); if (c * b < 150e6) c++; print c }')
mkdir -p "$tmp/big"
for c in $(seq "$copies"); do
  find "$corpus" -type f | sort | while read -r f; do
    ln -s "$(realpath "$f")" "$tmp/big/copy$c-$(basename "$f")"
  done
done
big_bytes=$(awk -v b="$text_bytes" -v c="$copies" 'BEGIN { print b * c }')
n="${THREADS_N:-$(nproc)}"
counts="1 2"; [ "$n" -gt 2 ] && counts="1 2 $n"
for _ in $(seq "$runs"); do
  for threads in $counts; do run_once "$tmp/big" "$threads" "s$threads"; done
done
printf "\nscaling: %d copies of the corpus (%.1f MB of text, %d files), runs alternating, median of %d\n" \
  "$copies" "$(awk -v b="$big_bytes" 'BEGIN { print b / 1e6 }')" "$(find "$tmp/big" -mindepth 1 | wc -l)" "$runs"
printf "%-8s %8s %8s %9s %11s %12s %10s\n" threads seconds MB/s speed-up efficiency "cpu seconds" "peak RSS"
t1="$(median <"$tmp/s1.t")"
for threads in $counts; do
  t="$(median <"$tmp/s$threads.t")"; c="$(median <"$tmp/s$threads.c")"; m="$(sort -g "$tmp/s$threads.m" | tail -n1)"
  awk -v n="$threads" -v t="$t" -v t1="$t1" -v c="$c" -v m="$m" -v b="$big_bytes" 'BEGIN {
    printf "%-8d %8.2f %8.1f %8.2fx %10.0f%% %12.2f %7.0f MB\n", n, t, b / 1e6 / t, t1 / t, 100 * t1 / t / n, c, m / 1024 }'
done
echo "all runs (seconds): $(for threads in $counts; do printf '%s: %s; ' "$threads" "$(paste -sd' ' "$tmp/s$threads.t")"; done)"
echo "target: >= 1.8x from 1 to 2 threads on 2 cores; >= 70% efficiency at 16 threads on 16 cores"
