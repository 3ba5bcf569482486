#!/usr/bin/env bash
# The main job on built-in defaults: set-up, build, then write a small shard set and inspect it.
# Idempotent. Outputs go to out/ (git-ignored).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
bash scripts/setup.sh
cargo build --release --workspace --bins --examples
rm -rf out/synthetic
./target/release/examples/synthetic out/synthetic 1000 256
./target/release/inspect out/synthetic --verify --show 1
