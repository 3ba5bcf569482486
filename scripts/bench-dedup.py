#!/usr/bin/env python3
"""`preprocess --dedup near` against datasketch's MinHashLSH, and against `--dedup off`.

Corpus: ../shared/data/gutenberg (The Pile's Gutenberg books as .jsonl.zst, 110 books, 42 MB of
text) unless a directory is given, decompressed with the `zstd` command into one JSON-lines file,
and the same with 20% planted duplicates appended: for every fifth book, either a copy with case
and whitespace changed (an exact duplicate after normalisation) or one with 1 word in 200
replaced (5-gram Jaccard about 0.95).

Measured, in the same run, median of RUNS (default 3):
  - our dedup pass (its own time, printed by `preprocess`) and the whole `preprocess --dedup
    near` against `--dedup off`, on the corpus with and without the planted copies;
  - datasketch 2.x MinHashLSH (threshold 0.8, 128 permutations, the same 5-word shingles of
    the same normalised text; MinHash.update_batch, then query-then-insert in input order,
    a document removed when a candidate's estimated Jaccard reaches the threshold), one core;
  - agreement of the removed sets (which (file, line) each removes).

Usage: scripts/bench-dedup.py [CORPUS_DIR]   (RUNS=1 for a quick look; needs a release build,
cargo build --release --workspace --bins, or PREPROCESS=path/to/preprocess)
"""
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("RUNS", "3"))
THREADS = os.environ.get("THREADS", "2")
NGRAM, PERM, THRESHOLD = 5, 128, 0.8


def load(corpus: Path) -> list[str]:
    docs = []
    for f in sorted(corpus.glob("*.jsonl.zst")):
        raw = subprocess.run(["zstd", "-dc", str(f)], check=True, capture_output=True).stdout
        docs += [json.loads(l)["text"] for l in raw.decode().splitlines() if l.strip()]
    return docs


def planted(docs: list[str]) -> list[str]:
    out = list(docs)
    for i in range(0, len(docs), 5):
        if (i // 5) % 2 == 0:
            out.append(docs[i].upper().replace(" ", "  "))
        else:
            words = docs[i].split(" ")
            for j in range(0, len(words), 200):
                words[j] = f"planted{j}"
            out.append(" ".join(words))
    return out


def write_jsonl(docs: list[str], path: Path) -> None:
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")


def normalise(text: str) -> str:
    # docs/dedup.md: NFC, lower-cased, whitespace runs collapsed to one space, trimmed.
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text).lower()).strip()


def datasketch_removed(docs: list[str]) -> tuple[set[int], float]:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=PERM)
    removed, sigs = set(), {}
    for i, d in enumerate(docs):
        words = normalise(d).split(" ")
        n = min(NGRAM, len(words))
        shingles = {" ".join(words[k : k + n]).encode() for k in range(len(words) - n + 1)}
        m = MinHash(num_perm=PERM)
        m.update_batch(list(shingles))
        if any(sigs[c].jaccard(m) >= THRESHOLD for c in lsh.query(m)):
            removed.add(i)
        lsh.insert(i, m)
        sigs[i] = m
    return removed, time.perf_counter() - start


def preprocess(path: Path, out: Path, dedup: str) -> tuple[float, float | None, set[int]]:
    exe = os.environ.get("PREPROCESS", str(ROOT / "target/release/preprocess"))
    args = [str(exe), "--input", str(path), "--out", str(out), "--force", "--threads", THREADS]
    args += ["--dedup", dedup]
    start = time.perf_counter()
    o = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if o.returncode != 0:
        sys.exit(f"preprocess failed:\n{o.stderr}")
    m = re.search(r"dedup pass: \d+ documents in ([0-9.]+) s", o.stderr)
    removed = set()
    if dedup != "off":
        for line in open(out / "dedup.jsonl"):
            removed.add(json.loads(line)["line"] - 1)
    return wall, float(m.group(1)) if m else None, removed


def main() -> None:
    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared/data/gutenberg"
    docs = load(corpus)
    tmp = Path(tempfile.mkdtemp())
    sets = {"original": docs, "20% planted": planted(docs)}
    print(f"corpus: {corpus} ({len(docs)} documents, {sum(map(len, docs)) / 1e6:.1f} MB of text); "
          f"median of {RUNS} runs; preprocess --threads {THREADS}; datasketch one core")
    for name, ds in sets.items():
        path = tmp / f"{name.split()[0]}.jsonl"
        write_jsonl(ds, path)
        off, near, ours_pass, sketch = [], [], [], []
        for _ in range(RUNS):
            off.append(preprocess(path, tmp / "out", "off")[0])
            wall, pass_s, ours = preprocess(path, tmp / "out", "near")
            near.append(wall)
            ours_pass.append(pass_s)
            theirs, t = datasketch_removed(ds)
            sketch.append(t)
        med = statistics.median
        both = len(ours & theirs)
        either = len(ours | theirs)
        print(f"\n{name}: {len(ds)} documents")
        print(f"  preprocess --dedup off        {med(off):8.2f} s")
        print(f"  preprocess --dedup near       {med(near):8.2f} s   (near / off: {med(near) / med(off):.2f})")
        print(f"  our dedup pass alone          {med(ours_pass):8.2f} s")
        print(f"  datasketch MinHashLSH         {med(sketch):8.2f} s   (datasketch / our pass: {med(sketch) / med(ours_pass):.1f}x)")
        print(f"  removed: ours {len(ours)}, datasketch {len(theirs)}, both {both}, "
              f"agreement {both / either if either else 1.0:.3f} (|both| / |either|)")


if __name__ == "__main__":
    main()
