#!/usr/bin/env bash
# Memory of `preprocess` on documents with one long run without whitespace (issue: a 32 MB line
# of base64 took ~50x its size and 25 s on one thread). Byte-pair encoding merges inside one
# pre-tokenizer piece and cannot cut it without changing the ids, so a document whose run of
# whitespace or non-whitespace exceeds 1 MiB (preprocess's MAX_RUN_BYTES) is a bad record.
# Reports wall seconds, peak RSS and the exit code, side by side, for:
#   - ordinary text of the same size (the baseline),
#   - a run at the limit (1 MiB: tokenized, exact ids),
#   - a run of 32 MB (refused at once, naming file and line; skipped with --skip-bad-records).
# Usage: scripts/bench-long-piece.sh [THREADS]   (default 1)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$H5GPT_ROOT"
threads="${1:-1}"
bash scripts/setup.sh >/dev/null
cargo build --release -q -p h5gpt-preprocess --bins
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'PY'
import sys, pathlib
d = pathlib.Path(sys.argv[1])
words = ("the quick brown fox jumps over the lazy dog " * 800_000)[: 32 << 20]
(d / "ordinary-32MB.txt").write_text(words)
(d / "run-1MiB.txt").write_text("x " + "QUJD" * ((1 << 20) // 4) + " y")
(d / "run-32MB.txt").write_text("x " + "QUJD" * ((32 << 20) // 4) + " y")
PY
printf '%-22s %-20s %10s %12s %6s\n' input flags seconds "peak RSS MB" exit
for input in ordinary-32MB run-1MiB run-32MB; do
  for flags in "" "--skip-bad-records"; do
    [ "$input" = ordinary-32MB ] && [ -n "$flags" ] && continue
    rm -rf "$tmp/out"
    set +e
    /usr/bin/time -f "%e %M" -o "$tmp/time" ./target/release/preprocess --input "$tmp/$input.txt" \
      --out "$tmp/out" --threads "$threads" $flags >/dev/null 2>"$tmp/err"
    code=$?
    set -e
    read -r secs kb < <(tail -n1 "$tmp/time")
    printf '%-22s %-20s %10s %12d %6s\n' "$input" "${flags:--}" "$secs" $((kb / 1024)) "$code"
  done
done
