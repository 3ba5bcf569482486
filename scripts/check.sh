#!/usr/bin/env bash
# The checks: set-up, then formatting, lints, docs and the whole test suite.
# Idempotent; this is what CI runs (.ci/run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
bash scripts/setup.sh
step() { printf '\n==> %s\n' "$*"; }
step "cargo fmt --all --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo doc --workspace --no-deps"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
step "cargo test --workspace"
# The e2e tests run the debug binaries: h5gpt, h5gpt-torch (beside it, for train, sample, eval
# and export), the preprocess and train entry points, and the deprecated h5gpt-export.
cargo build --workspace --bins
cargo test --workspace
