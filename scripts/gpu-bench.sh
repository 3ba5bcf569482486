#!/usr/bin/env bash
# GPU training throughput in one command, side by side: our `h5gpt train` (release binaries from
# --bin-dir: the GPU machine needs no Rust; copy `h5gpt` and `h5gpt-torch` there, side by side), its PyTorch twin (scripts/bench_train_torch.py:
# nanoGPT's model, SDPA, fused AdamW, clip 1.0, bf16 autocast), and the twin under
# torch.compile, at the same shapes: GPT-2 small (L12 H12 E768, 50304 embedding rows), T 1024,
# one micro-batch per step, at micro-batch 16 and 32.
#
# Our shards are made on the machine by our `h5gpt preprocess` (GPT-2 tokenizer) from a generated
# text of ~2.5M tokens, so nothing has to be copied there. Each configuration runs --warmup
# untimed steps, then --steps timed ones. Reported per row: median ms/step, tok/s, MFU (6N +
# 12·L·C·T FLOPs per token, N without the position embedding, over the GPU's dense bf16 peak)
# and peak GPU memory held by tensors (ours: the caching allocator's statistics through the
# shim, the `peak_mem_gib` of metrics.jsonl; the twin's: torch.cuda.max_memory_allocated);
# then the ratios of our tok/s to eager's and to compile's. The default finishes in about
# 5 minutes on an H100 (compile alone costs 1–2).
#
# Usage: scripts/gpu-bench.sh --bin-dir DIR [--python PY] [--micro-batches "16 32"]
#            [--dtypes "bf16"] [--warmup N] [--steps N] [--no-compile] [--workdir DIR]
#        scripts/gpu-bench.sh --smoke [--bin-dir target/debug]
#        scripts/gpu-bench.sh --check [--bin-dir DIR]
#   --bin-dir     where `h5gpt` and `h5gpt-torch` are, side by side (default target/release); to
#                 run on another machine, pack these two: `h5gpt` runs preprocess in-process and
#                 starts `h5gpt-torch` (libtorch-linked) for train
#   --python      a Python with PyTorch 2.11 (default /opt/torch/.venv/bin/python if present,
#                 else python3); its libtorch is the one our binaries load
#   --dtypes      our --dtype values to run (default "bf16"; the twin always runs bf16 autocast)
#   --warmup/--steps  untimed / timed steps per configuration (default 10 / 30)
#   --no-compile  leave out the torch.compile rows
#   --smoke       CPU, tiny shapes (L2 H2 E64, T 64, micro-batch 2 and 4, 2 + 3 steps, no
#                 compile): checks the script end to end where there is no GPU
#   --workdir     keep the shards, runs and JSON lines there (default: a temporary directory)
#   --check       the GPU checks of the CUDA step instead of the benchmark (a small model, a few
#                 steps; exit 1 when one fails): (1) no call inside a training step makes the host
#                 wait for the GPU (H5GPT_CUDA_SYNC_DEBUG=warn for the steps: CUDA's sync-debug
#                 warnings are counted); (2) no rank creates a CUDA context on a GPU other than
#                 its own: with two GPUs, two ranks (NCCL) whose processes nvidia-smi must show
#                 on their own GPU only; with one, a 1-rank NCCL run (LOCAL_RANK=0) whose
#                 processes on the GPU are listed; (3) the NCCL group shuts down cleanly (no
#                 "destroy_process_group() was not called"); (4) MFU is reported (the peak found
#                 from the rank's own GPU name).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
bin_dir="$root/target/release"; python=""; micro_batches="16 32"; dtypes="bf16"
warmup=10; steps=30; compile=1; smoke=0; check=0; workdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --python) python="$2"; shift 2 ;;
    --micro-batches) micro_batches="$2"; shift 2 ;;
    --dtypes) dtypes="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --no-compile) compile=0; shift ;;
    --smoke) smoke=1; shift ;;
    --check) check=1; shift ;;
    --workdir) workdir="$2"; shift 2 ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "gpu-bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$python" ]; then
  if [ -x /opt/torch/.venv/bin/python ]; then python=/opt/torch/.venv/bin/python
  elif [ -x "$root/.venv/bin/python" ]; then python="$root/.venv/bin/python"
  else python=python3; fi
fi
for b in h5gpt h5gpt-torch; do
  [ -x "$bin_dir/$b" ] || { echo "gpu-bench: no $bin_dir/$b (build with cargo build --release, or pass --bin-dir)" >&2; exit 2; }
done
# Our binaries load the libtorch of that Python's torch (the build machine's path may not exist here).
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX512_CORE_BF16}"

if [ "$check" = 1 ]; then
  if [ -z "$workdir" ]; then workdir="$(mktemp -d)"; trap 'rm -rf "$workdir"' EXIT; fi
  mkdir -p "$workdir"; failed=0
  "$python" - "$workdir/corpus.txt" 300000 <<'PY'
import random, sys
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1234)
syllables = [c + v for c in "bdfghklmnprstvwz" for v in "aeiou"]
lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
with open(path, "w") as f:
    for line in range(n // 100):
        f.write(" ".join(rng.choice(lexicon) for _ in range(100)) + ".\n")
PY
  "$bin_dir/h5gpt" preprocess --input "$workdir/corpus.txt" --out "$workdir/shards" --seq-len 256 >"$workdir/preprocess.log" 2>&1 \
    || { cat "$workdir/preprocess.log" >&2; exit 1; }
  small=(--shards "$workdir/shards" --model gpt2-small --n-layer 4 --n-head 4 --n-embd 256 --n-ctx 256
         --micro-batch 4 --total-batch-tokens 2048 --warmup-steps 2 --eval-every 0 --device cuda --dtype bf16)
  ngpu="$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)"
  gpu_apps() { nvidia-smi --query-compute-apps=pid,gpu_bus_id,used_memory --format=csv,noheader 2>/dev/null || true; }
  # (1) Host syncs inside the step: every step after the first two under the sync-debug switch.
  H5GPT_CUDA_SYNC_DEBUG=warn "$bin_dir/h5gpt" train "${small[@]}" --out "$workdir/sync" --max-steps 5 \
    >"$workdir/sync.log" 2>&1 || { tail -n 30 "$workdir/sync.log" >&2; exit 1; }
  syncs="$(grep -c "synchronizing CUDA operation\|synchronizing operation" "$workdir/sync.log" || true)"
  if [ "$syncs" = 0 ]; then echo "check: PASS no host sync inside the training step (5 steps under H5GPT_CUDA_SYNC_DEBUG=warn)"
  else echo "check: FAIL $syncs synchronizing calls inside the training step:"; grep -m 10 -B1 -A3 "synchronizing" "$workdir/sync.log"; failed=1; fi
  # (4) MFU from the rank's own GPU name.
  if grep -q '"mfu"' "$workdir/sync/metrics.jsonl"; then echo "check: PASS MFU reported (peak from the device's own name)"
  else echo "check: NOTE no MFU in metrics.jsonl (GPU not in the peak table: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1))"; fi
  # (2) and (3): ranks on their own GPUs, NCCL shut down cleanly.
  world=$(( ngpu >= 2 ? 2 : 1 )); port=$(( 29500 + RANDOM % 1000 )); pids=()
  for r in $(seq 0 $((world - 1))); do
    RANK=$r LOCAL_RANK=$r WORLD_SIZE=$world MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$bin_dir/h5gpt" train "${small[@]}" --out "$workdir/ranks" --max-steps 40 >"$workdir/rank$r.log" 2>&1 &
    pids+=($!)
  done
  # A rank's processes: the `h5gpt` it started and what that runs (h5gpt-torch, unless it execs).
  tree() { echo "$1"; for c in $(ps --ppid "$1" -o pid= 2>/dev/null); do tree "$c"; done; }
  : >"$workdir/apps.txt"; : >"$workdir/rank-pids.txt"
  while kill -0 "${pids[0]}" 2>/dev/null; do
    gpu_apps >>"$workdir/apps.txt"
    for r in $(seq 0 $((world - 1))); do tree "${pids[$r]}" | sed "s/^ */$r /"; done >>"$workdir/rank-pids.txt"
    sleep 0.5
  done
  for pid in "${pids[@]}"; do wait "$pid" || { echo "check: FAIL a rank failed:"; tail -n 20 "$workdir"/rank*.log; failed=1; }; done
  bus=($(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader))
  echo "check: processes seen on the GPUs during the $world-rank run (pid, GPU bus id, memory):"
  sort -u "$workdir/apps.txt" | sed 's/^/  /'
  for r in $(seq 0 $((world - 1))); do
    pid="${pids[$r]}"; own="${bus[$r]}"
    mine="$(awk -v r="$r" '$1 == r { print $2 }' "$workdir/rank-pids.txt" | sort -u)"
    [ -n "$mine" ] || mine="$pid"
    others="$(for p in $mine; do grep "^$p," "$workdir/apps.txt" || true; done | grep -v -i "$own" | sort -u || true)"
    if [ -z "$others" ]; then echo "check: PASS rank $r (pids $(echo $mine)) has a context on its own GPU only ($own)"
    else echo "check: FAIL rank $r (pids $(echo $mine)) also holds memory on another GPU: $others"; failed=1; fi
  done
  if grep -q "destroy_process_group() was not called" "$workdir"/rank*.log; then
    echo "check: FAIL the NCCL group was destroyed without shutdown"; failed=1
  else echo "check: PASS the NCCL group shut down cleanly"; fi
  exit "$failed"
fi

if [ "$smoke" = 1 ]; then
  device=cpu; shape=(--layers 2 --heads 2 --embd 64 --seq 64); ours_shape=(--n-layer 2 --n-head 2 --n-embd 64 --n-ctx 64)
  seq=64; words=200000; [ "$micro_batches" = "16 32" ] && micro_batches="2 4"
  [ "$warmup" = 10 ] && warmup=2; [ "$steps" = 30 ] && steps=3; compile=0; threads=(--threads 2)
else
  device=cuda; shape=(--layers 12 --heads 12 --embd 768 --seq 1024); ours_shape=(); seq=1024
  words=2000000; threads=()
fi
if [ -z "$workdir" ]; then workdir="$(mktemp -d)"; trap 'rm -rf "$workdir"' EXIT; fi
mkdir -p "$workdir"
results="$workdir/results.jsonl"; : >"$results"

echo "gpu-bench: generating $words words of text and preprocessing them (GPT-2 tokenizer, seq $seq)" >&2
"$python" - "$workdir/corpus.txt" "$words" <<'PY'
import random, sys
path, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1234)
syllables = [c + v for c in "bdfghklmnprstvwz" for v in "aeiou"]
lexicon = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
with open(path, "w") as f:
    for line in range(n // 100):
        f.write(" ".join(rng.choice(lexicon) for _ in range(100)) + ".\n")
PY
rm -rf "$workdir/shards"
"$bin_dir/h5gpt" preprocess --input "$workdir/corpus.txt" --out "$workdir/shards" --seq-len "$seq" >"$workdir/preprocess.log" 2>&1 \
  || { cat "$workdir/preprocess.log" >&2; exit 1; }

total=$((warmup + steps))
for mb in $micro_batches; do
  for dtype in $dtypes; do
    echo "gpu-bench: train --dtype $dtype, micro-batch $mb" >&2
    run="$workdir/run-$dtype-$mb"; rm -rf "$run"
    "$bin_dir/h5gpt" train --shards "$workdir/shards" --out "$run" --model gpt2-small "${ours_shape[@]}" \
      --micro-batch "$mb" --total-batch-tokens $((mb * seq)) --max-steps "$total" \
      --warmup-steps 2 --save-every "$total" --eval-every 0 --device "$device" --dtype "$dtype" \
      "${threads[@]}" >"$run.log" 2>&1 || { tail -n 30 "$run.log" >&2; exit 1; }
    "$python" - "$run/metrics.jsonl" "$warmup" "$mb" "$seq" "$dtype" >>"$results" <<'PY'
import json, statistics, sys
path, warmup, mb, seq, dtype = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = [json.loads(l) for l in open(path) if '"dt_ms"' in l]
timed = rows[warmup:]
ms = statistics.median(r["dt_ms"] for r in timed)
mem = max((r.get("peak_mem_gib") or 0.0) for r in rows) or None
print(json.dumps({"impl": f"train --dtype {dtype}", "batch": mb, "seq": seq, "median_ms": ms,
                  "tok_per_s": mb * seq / (ms / 1e3), "peak_mem_gib": mem,
                  "final_loss": rows[-1]["loss"]}))
PY
  done
  for mode in eager compile; do
    [ "$mode" = compile ] && [ "$compile" = 0 ] && continue
    echo "gpu-bench: PyTorch $mode, micro-batch $mb" >&2
    extra=(); [ "$mode" = compile ] && extra=(--compile)
    "$python" "$here/bench_train_torch.py" --device "$device" --dtype bf16 --batch "$mb" "${shape[@]}" \
      --warmup "$warmup" --steps "$steps" "${threads[@]}" "${extra[@]}" 2>"$workdir/torch-$mode-$mb.log" \
      | tail -n1 >>"$results" || { tail -n 30 "$workdir/torch-$mode-$mb.log" >&2; exit 1; }
  done
done

"$python" - "$results" "$device" "${shape[@]}" <<'PY'
import json, sys
results, device = sys.argv[1], sys.argv[2]
shape = dict(zip(sys.argv[3::2], map(int, sys.argv[4::2])))
L, C, T = shape["--layers"], shape["--embd"], shape["--seq"]
rows = [json.loads(l) for l in open(results) if l.strip()]
# 6N + 12·L·C·T, N without the position embedding (nanoGPT's estimate_mfu; ours: flops_per_token).
n = next((r["parameters"] for r in rows if "parameters" in r), None)
fpt = 6 * (n - T * C) + 12 * L * C * T if n else None
peak, gpu = None, "CPU"
if device == "cuda":
    import torch
    gpu = torch.cuda.get_device_name(0)
    table = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}
    peak = next((v for k, v in table.items() if k in gpu), None)
print(f"\ngpu-bench: GPT-2 small shapes L{L} C{C} T{T} on {gpu}, one micro-batch per step, "
      f"median of the timed steps")
print(f"{'':24} {'micro-batch':>11} {'ms/step':>9} {'tok/s':>9} {'MFU':>6} {'peak mem':>9}")
by = {}
for r in rows:
    tok = r["tok_per_s"]
    mfu = f"{tok * fpt / peak * 100:5.1f}%" if (peak and fpt) else "    -"
    mem = f"{r['peak_mem_gib']:6.2f}GiB" if r.get("peak_mem_gib") else "        -"
    print(f"{r['impl']:24} {r['batch']:11} {r['median_ms']:9.1f} {tok:9.0f} {mfu:>6} {mem:>9}")
    by[(r["impl"], r["batch"])] = tok
print()
for (impl, b), tok in by.items():
    if not impl.startswith("train"):
        continue
    for base in ["torch", "torch-compile"]:
        if (base, b) in by:
            print(f"ratio tok/s {impl} / {base} at micro-batch {b}: {tok / by[(base, b)]:.3f}")
PY
