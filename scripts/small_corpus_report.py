"""The table of scripts/bench-small-corpus.sh: parameters, training FLOPs, final validation loss
per token and bits per byte of the val text, for each run in WORK (see that script).

Also a library for the other reports (scripts/check_main_job.py): the token stream of a shard
directory and the unigram entropy of a token sequence.

Usage: python3 scripts/small_corpus_report.py WORK"""
import json, sys, pathlib, re
import h5py, numpy as np


def shard_rows(directory):
    """Every row of a shard directory's shards, in order, as one (rows, 3, seq_len) array
    (input_ids, attention_mask, labels)."""
    shards = sorted(pathlib.Path(directory).glob("*.h5"))
    if not shards:
        raise SystemExit(f"{directory}: no shards (*.h5)\n---> HINT: run preprocess first")
    return np.concatenate([h5py.File(s, "r")["data"][:] for s in shards])


def labels(rows):
    """The tokens the loss counts in `rows`: every label under attention mask 1."""
    return rows[:, 2][rows[:, 1] == 1]


def token_stream(rows):
    """The text's token stream of packed `rows`: the first input id, then every counted label."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rows[:1, 0, 0], labels(rows)])


def split_stream(directory):
    """A shard directory's token stream (first input id, then every label under mask 1)."""
    return [int(t) for t in token_stream(shard_rows(directory))]


def unigram_entropy(tokens):
    """The entropy, in nats, of the tokens' own frequencies: the loss per token of a model
    that knows only how often each token occurs (and knows it exactly)."""
    counts = np.unique(np.asarray(tokens), return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def main(work):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from golden_packing import offline_r50k  # noqa: E402

    def val_stream(name, split="val"):
        return split_stream(work / name / split)

    # The val documents are the same for both runs (the split is keyed by document); GPT-2's
    # BPE is lossless, so its val stream gives their exact size: text bytes plus one per
    # end-of-document.
    gpt2 = offline_r50k()
    stream = val_stream("gpt2")
    val_bytes = len(gpt2.decode_bytes([t for t in stream if t != 50256])) + stream.count(50256)

    print(f"{'run':<22}{'params':>10}{'train FLOPs':>13}{'val loss/token':>16}{'val tokens':>12}{'bits/byte':>11}")
    for run, data, label in [
        ("words", "words", "trained word-level"),
        ("gpt2", "gpt2", "GPT-2, same steps"),
        ("gpt2-same-flops", "gpt2", "GPT-2, same FLOPs"),
    ]:
        name = data
        log = (work / f"train-{run}.txt").read_text()
        params = float(re.search(r"\| ([0-9.]+)M parameters", log).group(1))
        flops = float(re.search(r"\| ([0-9.e+]+) FLOPs", log).group(1))
        metrics = [json.loads(l) for l in (work / f"run-{run}" / "metrics.jsonl").read_text().splitlines()]
        loss = [m["val_loss"] for m in metrics if "val_loss" in m][-1]
        vocab = json.loads((work / name / "val" / "data_params.json").read_text())["post-process"]["vocab_size"]
        predicted = len(val_stream(name)) - 1
        bits_per_byte = loss * predicted / val_bytes / np.log(2)
        print(f"{label:<22}{params:>9.3f}M{flops:>13.3e}{loss:>16.4f}{predicted:>12,}{bits_per_byte:>11.4f}   (vocab {vocab})")
    print(f"val text: {val_bytes:,} bytes")
    # What a model that knows only token frequencies would score: the unigram entropy of the
    # predicted tokens of the word-level training stream.
    entropy = unigram_entropy(val_stream("words", "train")[1:])
    print(f"unigram entropy of the word-level training stream: {entropy:.4f} nats/token")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]))
