"""The table of scripts/bench-small-corpus.sh: parameters, training FLOPs, final validation loss
per token and bits per byte of the val text, for each run in WORK (see that script)."""
import json, sys, pathlib, re
import h5py, numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from golden_packing import offline_r50k  # noqa: E402
work = pathlib.Path(sys.argv[1])

def val_stream(name, split="val"):
    """A split's token stream (first input id, then every label under mask 1)."""
    out = []
    for shard in sorted((work / name / split).glob("*.h5")):
        data = h5py.File(shard, "r")["data"][:]
        for row in data:
            if not out:
                out.append(int(row[0][0]))
            out.extend(int(t) for t, m in zip(row[2], row[1]) if m == 1)
    return out

# The val documents are the same for both runs (the split is keyed by document); GPT-2's BPE is
# lossless, so its val stream gives their exact size: text bytes plus one per end-of-document.
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
counts = np.unique(np.array(val_stream("words", "train")[1:]), return_counts=True)[1]
p = counts / counts.sum()
print(f"unigram entropy of the word-level training stream: {-(p * np.log(p)).sum():.4f} nats/token")
