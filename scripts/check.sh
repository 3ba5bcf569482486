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
# Every cargo command below, and the e2e tests' own build of the binaries, uses one feature set
# ($H5GPT_TEST_FEATURES from env.sh: the H5GPT_FAULT testing aids), so nothing compiles twice.
features=(--features "$H5GPT_TEST_FEATURES")
step "cargo clippy --workspace --all-targets ${features[*]} -- -D warnings"
cargo clippy --workspace --all-targets "${features[@]}" -- -D warnings
step "cargo doc --workspace --no-deps ${features[*]}"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps "${features[@]}"
step "cargo test --workspace ${features[*]}"
# The e2e tests run the debug binaries: h5gpt, h5gpt-torch (beside it, for train, sample, eval
# and export), the preprocess and train entry points, and the deprecated h5gpt-export.
cargo build --workspace --bins "${features[@]}"
cargo test --workspace "${features[@]}"
