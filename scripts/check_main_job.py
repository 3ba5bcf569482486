"""Did the main job's model learn? Two measures, printed by scripts/quickstart.sh:

1. loss: the run's final validation loss against the unigram entropy of the validation tokens
   (the loss of a model that knows only how often each token occurs, and knows it for exactly
   these tokens). Beating it by MARGIN nats per token means the model uses context.
2. words: of the sampled words (runs of letters; the prompt and a word the token budget may have
   cut off at the end of a sample left out), the share that occur as words in the training text.

The validation tokens are those the run was evaluated on: the first rows of SHARDS/val/ that each
evaluation reads (RUN/config.toml: eval_batches × micro_batch) when there is a val/, else the
last rows of SHARDS that train held out (the checkpoint's state.json says how many). Both
measures warn when missed and never fail: a slower machine, a shorter run or another seed may
land below them. Exit status 1 only when a file is missing or unreadable.

Usage: python3 scripts/check_main_job.py --shards DIR --run DIR --sample FILE --prompt TEXT
           [--margin NATS] [--coverage FRACTION] [--expected-seconds S]
"""
import argparse
import json
import pathlib
import re
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from small_corpus_report import labels, shard_rows, token_stream, unigram_entropy  # noqa: E402

# A run of letters (any script): no digits, no underscores.
WORD = re.compile(r"[^\W\d_]+")
# What `sample` prints between two samples.
SAMPLE_SEPARATOR = "---------------"


def fail(message):
    raise SystemExit(f"check_main_job: error: {message}")


def final_val_loss(run):
    """The last validation loss in RUN/metrics.jsonl, its step, and the training seconds."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        fail(f"{path}: no metrics\n---> HINT: train the run first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    vals = [r for r in rows if "val_loss" in r]
    if not vals:
        fail(f"{path}: no validation loss\n---> HINT: train with --eval-every > 0")
    seconds = sum(r.get("dt_ms", 0.0) for r in rows if "loss" in r) / 1e3
    return vals[-1]["val_loss"], vals[-1]["step"], seconds


def held_out_rows(run):
    """Rows the run held out of a plain shard directory (its newest checkpoint's state.json)."""
    states = sorted((run / "checkpoints").glob("step-*/state.json"))
    if not states:
        fail(f"{run}: no checkpoint\n---> HINT: train the run first")
    return int(json.loads(states[-1].read_text()).get("held_out", 0))


def evaluated_rows(run):
    """How many validation rows each evaluation of the run reads (its config.toml's
    eval_batches × micro_batch), or None when the run has no config.toml."""
    path = run / "config.toml"
    if not path.is_file():
        return None
    # Two integer keys at the top level: no TOML parser needed (tomllib is Python ≥ 3.11).
    config = dict(re.findall(r"^(\w+) = (\d+)$", path.read_text(), re.MULTILINE))
    return int(config["eval_batches"]) * int(config["micro_batch"])


def split(shards, run):
    """(training rows, validation rows the run evaluated, the directory with tokenizer.json)."""
    if (shards / "val").is_dir():
        val = shard_rows(shards / "val")[: evaluated_rows(run)]
        return shard_rows(shards / "train"), val, shards / "train"
    rows = shard_rows(shards)
    held = held_out_rows(run)
    if held <= 0 or held >= len(rows):
        fail(f"{run}: held out {held} of {len(rows)} rows of {shards}: no validation tokens")
    return rows[:-held], rows[-held:], shards


def decoder(directory):
    """Token ids → text, with the shards' tokenizer (tokenizer.json beside them, or GPT-2's)."""
    file = directory / "tokenizer.json"
    if file.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(file))
        return lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=True)
    params = json.loads((directory / "data_params.json").read_text())
    name = params.get("h5gpt", {}).get("tokenizer", "gpt2")
    if name != "gpt2":
        fail(f"{directory}: no tokenizer.json and tokenizer {name!r}: cannot decode it here")
    from golden_packing import offline_r50k

    enc = offline_r50k()
    return lambda ids: enc.decode([int(i) for i in ids if i != 50256])


def sampled_words(text, prompt):
    """The words of each sample in `text` after its prompt; a sample's last word is left out
    when the sample ends inside it (the token budget may have cut it)."""
    words = []
    for sample in text.split("\n" + SAMPLE_SEPARATOR + "\n"):
        sample = sample.rstrip("\n")
        if prompt and sample.startswith(prompt):
            sample = sample[len(prompt):]
        found = WORD.findall(sample)
        if found and WORD.fullmatch(sample[-1:] or " "):
            found.pop()
        words.extend(found)
    return words


def word_coverage(sample_words, training_text):
    """(words of `sample_words` that occur as words in `training_text`, all of them, unknown)."""
    known = set(WORD.findall(training_text))
    unknown = [w for w in sample_words if w not in known]
    return len(sample_words) - len(unknown), len(sample_words), unknown


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shards", type=pathlib.Path, required=True, help="the run's shard directory")
    p.add_argument("--run", type=pathlib.Path, required=True, help="the run directory")
    p.add_argument("--sample", type=pathlib.Path, required=True, help="what `sample` printed")
    p.add_argument("--prompt", default="", help="the prompt the samples start with")
    p.add_argument("--margin", type=float, default=1.0,
                   help="nats per token the val loss must be below the unigram entropy (1.0)")
    p.add_argument("--coverage", type=float, default=0.8,
                   help="share of sampled words that must occur in the training text (0.8)")
    p.add_argument("--expected-seconds", type=float, default=0,
                   help="training time the job was sized for (0: no time note)")
    a = p.parse_args()

    loss, step, seconds = final_val_loss(a.run)
    train_rows, val_rows, tok_dir = split(a.shards, a.run)
    val_tokens = labels(val_rows)
    entropy = unigram_entropy(val_tokens)
    below = entropy - loss
    loss_ok = below >= a.margin
    print(f"check: val loss {loss:.3f} nats/token at step {step} | unigram entropy of the "
          f"{len(val_tokens):,} val tokens {entropy:.3f} | {below:.3f} below "
          f"(wanted ≥ {a.margin:.2f}): {'ok' if loss_ok else 'NOT REACHED'}")

    if not a.sample.is_file():
        fail(f"{a.sample}: no sample\n---> HINT: run sample first")
    words = sampled_words(a.sample.read_text(), a.prompt)
    hits, total, unknown = word_coverage(words, decoder(tok_dir)(token_stream(train_rows)))
    share = hits / total if total else 0.0
    words_ok = total > 0 and share >= a.coverage
    print(f"check: {hits} of {total} sampled words ({share:.0%}) occur in the training text "
          f"(wanted ≥ {a.coverage:.0%}): {'ok' if words_ok else 'NOT REACHED'}"
          + (f" | not in it: {' '.join(sorted(set(unknown))[:12])}" if unknown else ""))

    if not (loss_ok and words_ok):
        slow = a.expected_seconds and seconds > 1.5 * a.expected_seconds
        print(f"check: WARNING: the model did not reach what the main job aims at after {step} "
              f"steps ({seconds:.0f} s of training"
              + (f", {a.expected_seconds:.0f} s expected: a slow or busy machine" if slow else "")
              + "). Train longer (more --max-steps) or a bigger model; this is a warning, not a "
              "failure.")
    elif a.expected_seconds and seconds > 1.5 * a.expected_seconds:
        print(f"check: note: training took {seconds:.0f} s ({a.expected_seconds:.0f} s expected "
              "on two idle cores): a slow or busy machine")


if __name__ == "__main__":
    main()
