#!/usr/bin/env bash
# Our training step against PyTorch eager, side by side in one run (CPU, fp32).
#
# Both sides build the same GPT-2 (L6 H6 E384, T 256, B 8, 50304 embedding rows: 30.1M
# parameters) and time the same step on random tokens: forward + cross-entropy + backward + clip
# to global norm 1.0 + fused AdamW. Ours: train/examples/bench_step.rs (the trainer's Gpt and
# AdamW; its softmax covers the 50257 real tokens); theirs: scripts/bench_train_torch.py (a
# nanoGPT-style model written there, softmax over all 50304 rows as nanoGPT does).
# The two alternate (ours, torch, ours, torch, ...) so that drift on the machine hits both.
# Reports the median over runs of each run's median ms/step, the mean over all timed steps, the
# fastest step, tok/s (from the median), the median time of each phase, and the ratio ours/torch
# (target <= 1.0): of the medians, of each run and the torch run right after it (robust to load
# that comes and goes), and of the fastest steps.
#
# Usage: scripts/bench-train.sh [--threads N] [--warmup N] [--steps N] [--runs N]
#        THREADS=2 WARMUP=3 STEPS=10 RUNS=3 scripts/bench-train.sh   (the defaults)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
threads="${THREADS:-2}"; warmup="${WARMUP:-3}"; steps="${STEPS:-10}"; runs="${RUNS:-3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)"; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
# --workspace: the feature set of every other build here, so nothing else is rebuilt
cargo build --release -q --workspace --example bench_step
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

flags=(--threads "$threads" --warmup "$warmup" --steps "$steps")
for run in $(seq "$runs"); do
  echo "run $run/$runs: h5gpt" >&2
  ./target/release/examples/bench_step "${flags[@]}" 2>"$tmp/log" | tail -n1 >>"$tmp/ours.jsonl"
  echo "run $run/$runs: torch" >&2
  python scripts/bench_train_torch.py "${flags[@]}" 2>"$tmp/log" | tail -n1 >>"$tmp/torch.jsonl"
done

python - "$tmp/ours.jsonl" "$tmp/torch.jsonl" "$threads" "$warmup" "$steps" <<'EOF'
import json, statistics, sys

ours_path, torch_path, threads, warmup, steps = sys.argv[1:]
PHASES = ["forward", "backward", "clip", "adamw"]  # forward includes the loss

def summary(path):
    runs = [json.loads(line) for line in open(path)]
    tokens = runs[0]["batch"] * runs[0]["seq"]
    median = statistics.median(r["median_ms"] for r in runs)
    mean = statistics.fmean(r["mean_ms"] for r in runs)  # every run times the same steps
    phases = {p: statistics.median(r[p + "_ms"] for r in runs) for p in PHASES}
    fastest = min(r["min_ms"] for r in runs)
    return median, mean, tokens / (median / 1e3), [r["median_ms"] for r in runs], phases, fastest

ours, torch = summary(ours_path), summary(torch_path)
print(f"L6 H6 E384 T256 B8, vocab 50304, fp32, CPU, {threads} threads; "
      f"{warmup} warm-up + {steps} timed steps per run, {len(ours[3])} runs each, alternating")
print(f"{'':22} {'ms/step median':>15} {'ms/step mean':>13} {'fastest':>8} {'tok/s':>8}   per-run medians (ms)")
for name, (median, mean, tok_s, per_run, _, fastest) in [("h5gpt (tch + shim)", ours), ("PyTorch eager", torch)]:
    runs = " ".join(f"{m:.0f}" for m in per_run)
    print(f"{name:22} {median:15.1f} {mean:13.1f} {fastest:8.1f} {tok_s:8.0f}   {runs}")
print("phases, median ms:   " + "  ".join(f"{p} {ours[4][p]:.1f} vs {torch[4][p]:.1f}" for p in PHASES))
# Each run of ours is paired with the torch run right after it: the machine's drift cancels.
pairs = [a / b for a, b in zip(ours[3], torch[3])]
print(f"ratio ours/torch (median ms/step): {ours[0] / torch[0]:.3f}; "
      f"median of the {len(pairs)} paired runs: {statistics.median(pairs):.3f}; "
      f"fastest steps: {ours[5] / torch[5]:.3f} (target <= 1.0)")
EOF
