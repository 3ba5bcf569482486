#!/usr/bin/env bash
# Loader output bytes/s vs memcpy bytes/s on this machine, side by side (median of 5).
# Usage: scripts/bench-loader.sh            (1 GiB of shards in a temporary directory)
#        H5GPT_BENCH_GIB=2 H5GPT_BENCH_DIR=/tmp/bench-shards scripts/bench-loader.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
bash scripts/setup.sh >/dev/null
cargo bench -p h5gpt-formats --bench loader
