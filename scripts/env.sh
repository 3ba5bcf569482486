# shellcheck shell=bash
# Sourced by every h5gpt script: puts the project venv first on PATH and tells
# the build where libtorch (from the PyPI torch wheel) and CMake live.
# Usage: source scripts/env.sh   (from anywhere; paths are resolved from this file)

H5GPT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export H5GPT_ROOT
export H5GPT_VENV="${H5GPT_VENV:-$H5GPT_ROOT/.venv}"
export PATH="$H5GPT_VENV/bin:$HOME/.cargo/bin:$PATH"
# tch/torch-sys: link against the libtorch inside the venv's torch wheel.
export LIBTORCH_USE_PYTORCH=1
# Give the bf16 CPU kernels an ISA the kernel actually enables (AMX is advertised but off on some VMs).
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX512_CORE_BF16}"
# Keep property tests fast unless the caller asks for more.
export PROPTEST_CASES="${PROPTEST_CASES:-64}"
# The features every check and test build uses (scripts/check.sh; the e2e tests' `bin()` reads
# this line from here): the H5GPT_FAULT testing aids. One feature set, so the workspace compiles once.
export H5GPT_TEST_FEATURES="h5gpt-formats/fault-injection"
