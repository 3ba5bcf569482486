#!/usr/bin/env python3
"""Nothing the old README said is lost when its sections move to docs/.

Two modes:

  python3 scripts/docs_nothing_lost.py --extract OLD_README > scripts/readme-terms.txt
      every flag (`--foo-bar`), every file name (a word ending in a known file extension, such as
      `data_params.json`, `*.h5`, `.jsonl.zst`, or a path-like token inside backticks, such as
      `out/NAME/run/`) and every heading of OLD_README, one per line, sorted, deduplicated.

  python3 scripts/docs_nothing_lost.py
      reads scripts/readme-terms.txt (lines starting with `#` are comments) and checks that each
      term appears in README.md or in one of docs/*.md: a flag as a whole flag, a file name as a
      whole word, a heading case-insensitively as a substring of some line. Prints the missing
      terms and exits 1 if there are any, else prints a one-line summary and exits 0.

The kind of a term is read from its shape: it starts with `--` (a flag), it is a file name or a
path (see FILE and PATH below), or else it is a heading.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TERMS = ROOT / "scripts" / "readme-terms.txt"

# A long flag: two dashes, then lower-case words joined by dashes; not part of a longer token.
FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9-]*[a-z0-9]")
# The file extensions that make a word a file name.
EXTENSIONS = ("h5 json jsonl toml txt md py rs sh png zst gz parquet yaml yml safetensors lock cmd "
              "tmp cpp csv")
FILE = re.compile(
    r"[\w*.{},-]*\.(?:" + "|".join(EXTENSIONS.split()) + r")(?![\w])"
)
# A path-like token inside backticks: word characters and path punctuation, with a slash.
PATH = re.compile(r"^[\w*.{},~-]*/[\w*.{},/~-]*$")
FENCE = re.compile(r"^\s*```")


def prose_and_code(text):
    """(heading lines outside fenced code, every line) of a markdown text."""
    headings, in_fence = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence and re.match(r"^#{1,6} ", line):
            headings.append(re.sub(r"^#{1,6} +", "", line).strip())
    return headings


def extract(text):
    terms = set(FLAG.findall(text))
    for m in FILE.finditer(text):
        word = m.group(0).rstrip(".,")
        # A word that is only an extension or a number-like piece is still a file name
        # (`.jsonl`, `*.h5`); a lone dot is not.
        if re.search(r"[A-Za-z]", word) and "." in word:
            terms.add(word)
    for span in re.findall(r"`([^`\n]+)`", text):
        for token in span.split():
            token = token.strip("(),;:'\"")
            if PATH.match(token) and not token.startswith("//") and re.search(r"\w", token):
                terms.add(token)
    terms.update(h for h in prose_and_code(text) if h)
    return sorted(terms)


def kind(term):
    if term.startswith("--") and FLAG.fullmatch(term):
        return "flag"
    if FILE.fullmatch(term) or PATH.match(term):
        return "file"
    return "heading"


def found(term, text, lines_lower):
    k = kind(term)
    if k == "heading":
        t = term.lower()
        return any(t in line for line in lines_lower)
    before = r"(?<![\w-])" if re.match(r"[\w-]", term) else ""
    return re.search(before + re.escape(term) + r"(?![\w-])", text) is not None


def check():
    pages = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages if p.is_file())
    lines_lower = [line.lower() for line in text.splitlines()]
    terms = [
        line.rstrip("\n")
        for line in TERMS.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    missing = [t for t in terms if not found(t, text, lines_lower)]
    for t in missing:
        print(f"missing ({kind(t)}): {t}")
    if missing:
        print(
            f"docs_nothing_lost: {len(missing)} of {len(terms)} terms of the old README are in "
            f"neither README.md nor docs/*.md\n---> HINT: move the text that had them into a "
            f"docs page, or, where a term is obsolete, take it out of {TERMS.relative_to(ROOT)} "
            f"with a `#` comment saying why"
        )
        return 1
    counts = {k: sum(1 for t in terms if kind(t) == k) for k in ("flag", "file", "heading")}
    print(
        f"docs_nothing_lost: all {len(terms)} terms found ({counts['flag']} flags, "
        f"{counts['file']} file names, {counts['heading']} headings) in README.md and "
        f"{len(pages) - 1} docs pages"
    )
    return 0


def main(argv):
    if len(argv) == 2 and argv[0] == "--extract":
        print("\n".join(extract(pathlib.Path(argv[1]).read_text(encoding="utf-8"))))
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    return check()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
