#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian/Ubuntu machine that has only Rust and Python 3.
# Installs what is missing and says what it does; takes seconds when all is there.
#   - apt packages the build needs (C/C++ toolchain, pkg-config, fonts for plots, the Gloo
#     headers the data-parallel shim compiles against)
#   - a venv at .venv/ with cmake >= 3.26 (static HDF5 build) and torch==2.11.0
#     (the libtorch that tch 0.24 binds), transformers (checks of the Hugging Face export), and
#     cuda-toolkit[cccl,crt] (headers for the NCCL process group)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"

TORCH_VERSION=2.11.0
# Needs no torch of its own; installed with torch pinned so that pip never swaps it.
TRANSFORMERS_VERSION=5.23.0
CMAKE_MIN=3.26
# CUDA headers (crt/, nv/) that ProcessGroupNCCL.hpp needs beyond the wheel's nvidia/cu13.
CUDA_TOOLKIT_VERSION=13.0.2
APT_PACKAGES=(build-essential pkg-config python3-venv fonts-dejavu-core libgloo-dev)

say() { printf '[setup] %s\n' "$*"; }
# pip keeps no second copy of the multi-GB wheels in ~/.cache: disk, not time, is what runs out.
export PIP_NO_CACHE_DIR=1

# Fails early, naming the folder and the shortfall, instead of pip's "No space left on device".
need_disk_gb() { # gigabytes folder what
  local avail_kb; avail_kb="$(df -Pk "$2" | awk 'NR==2 {print $4}')"
  if [ "$avail_kb" -lt $(($1 * 1024 * 1024)) ]; then
    say "error: $3 needs about $1 GB free under $2, but only $((avail_kb / 1024 / 1024)) GB is free; free some space (an old target/ or .venv/) and run again"
    exit 1
  fi
}

# --- apt ---------------------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if command -v apt-get >/dev/null; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing apt packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    say "warning: no apt-get; make sure these are installed: ${missing[*]}"
  fi
else
  say "apt packages present"
fi

# --- rust components ---------------------------------------------------------------------------
if command -v rustup >/dev/null; then
  for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
      say "installing rust component $c"
      rustup component add "$c"
    fi
  done
fi

# --- venv --------------------------------------------------------------------------------------
if [ ! -x "$H5GPT_VENV/bin/python3" ]; then
  say "creating venv at $H5GPT_VENV"
  python3 -m venv "$H5GPT_VENV"
  "$H5GPT_VENV/bin/python3" -m pip install -q --upgrade pip
fi
py="$H5GPT_VENV/bin/python3"

have_pkg() { # name version-prefix
  "$py" - "$1" "$2" <<'PY'
import sys
from importlib import metadata
name, want = sys.argv[1], sys.argv[2]
try:
    v = metadata.version(name)
except metadata.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if v == want or v.startswith(want + "+") or want == "" else 1)
PY
}

cmake_ok() {
  command -v cmake >/dev/null || return 1
  local v; v="$(cmake --version | head -n1 | awk '{print $3}')"
  [ "$(printf '%s\n%s\n' "$CMAKE_MIN" "$v" | sort -V | head -n1)" = "$CMAKE_MIN" ]
}
if cmake_ok; then
  say "cmake $(cmake --version | head -n1 | awk '{print $3}') present"
else
  say "installing cmake>=$CMAKE_MIN into the venv"
  "$py" -m pip install -q "cmake>=$CMAKE_MIN"
fi

if have_pkg torch "$TORCH_VERSION"; then
  say "torch $TORCH_VERSION present"
else
  need_disk_gb 6 "$(dirname "$H5GPT_VENV")" "torch==$TORCH_VERSION with its CUDA wheels"
  say "installing torch==$TORCH_VERSION into the venv (about 4.6 GB with its CUDA wheels; a few minutes)"
  "$py" -m pip install -q "torch==$TORCH_VERSION"
fi
if have_pkg transformers "$TRANSFORMERS_VERSION"; then
  say "transformers $TRANSFORMERS_VERSION present"
else
  say "installing transformers==$TRANSFORMERS_VERSION into the venv (tests compare the HF export with it)"
  "$py" -m pip install -q "transformers==$TRANSFORMERS_VERSION" "torch==$TORCH_VERSION"
fi
# torch's own dependencies bring cuda-toolkit without these extras.
if have_pkg nvidia-cuda-crt "" && have_pkg nvidia-cuda-cccl ""; then
  say "cuda-toolkit $CUDA_TOOLKIT_VERSION headers present"
else
  say "installing cuda-toolkit[cccl,crt]==$CUDA_TOOLKIT_VERSION into the venv (CUDA headers, about 20 MB: the shim builds c10d's NCCL process group with them)"
  "$py" -m pip install -q "cuda-toolkit[cccl,crt]==$CUDA_TOOLKIT_VERSION" "torch==$TORCH_VERSION"
fi
# datasketch: scripts/bench-dedup.py compares `preprocess --dedup near` with its MinHashLSH.
# tensorboard: the e2e tests read the runs' event files back with its EventAccumulator.
for extra in numpy tiktoken h5py datasketch tensorboard; do
  if have_pkg "$extra" ""; then :; else
    say "installing $extra into the venv (reference scripts, golden fixtures, benchmarks)"
    "$py" -m pip install -q "$extra"
  fi
done
say "done: source scripts/env.sh to use the venv; cargo builds link libtorch from it"
