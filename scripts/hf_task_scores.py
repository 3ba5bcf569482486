#!/usr/bin/env python3
"""Scores a task file with transformers' GPT2LMHeadModel the way lm-evaluation-harness does,
for checking `eval --task` (and timing it against transformers).

Usage: hf_task_scores.py MODEL_DIR TASK.jsonl OUT.json [--limit N] [--batch B]
  MODEL_DIR  a directory `GPT2LMHeadModel.from_pretrained` and `AutoTokenizer.from_pretrained`
             load (h5gpt's `export` writes one)
  TASK.jsonl HellaSwag's jsonl, {"context", "choices", "answer"} lines, or LAMBADA's {"text"}
  OUT.json   {"loglik": [[per continuation] per item], "tokens": [...], "greedy": [...],
              "metrics": {...}, "seconds": scoring time, "items": N}

Written from the harness's rules (not importing it): HellaSwag's query is
`activity_label + ": " + ctx_a + " " + ctx_b.capitalize()` with its bracket clean-up, the
continuations are " " + choice; `_encode_pair` moves the context's trailing whitespace into the
continuation and takes the whole string's tokens past the context's; the input is
`(context + continuation)[-(n_ctx + 1):][:-1]`. acc = arg-max log-likelihood, acc_norm = arg-max
log-likelihood / len(choice); LAMBADA: acc = all target tokens greedy, perplexity =
exp(-mean log-likelihood). float32, eval mode, CPU, no network.
"""

import json
import math
import os
import re
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def preprocess(text):
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def items_of(path, limit):
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            if limit is not None and len(out) >= limit:
                break
            doc = json.loads(line)
            if "endings" in doc:
                ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
                query = preprocess(doc["activity_label"] + ": " + ctx)
                choices = [preprocess(e) for e in doc["endings"]]
                out.append(("mc", query, choices, int(doc["label"])))
            elif "choices" in doc:
                out.append(("mc", doc["context"], doc["choices"], int(doc["answer"])))
            else:
                words = doc["text"].split(" ")
                out.append(("lambada", " ".join(words[:-1]), [words[-1]], 0))
    return out


def main() -> int:
    args = sys.argv[1:]
    limit, batch = None, 16
    if "--limit" in args:
        i = args.index("--limit")
        limit = int(args[i + 1])
        del args[i : i + 2]
    if "--batch" in args:
        i = args.index("--batch")
        batch = int(args[i + 1])
        del args[i : i + 2]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, task, out = args
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    n_ctx = model.config.n_positions
    eot = model.config.eos_token_id

    def enc(s):
        return tok.encode(s, add_special_tokens=False)

    def encode_pair(context, continuation):
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if context == "":
            return [eot], enc(continuation)
        whole = enc(context + continuation)
        ctx = enc(context)
        return ctx, whole[len(ctx):]

    items = items_of(task, limit)
    started = time.perf_counter()
    requests = []
    for kind, context, choices, _ in items:
        for c in choices:
            requests.append(encode_pair(context, " " + c))
    results = [None] * len(requests)
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0] + requests[i][1]))
    with torch.no_grad():
        for start in range(0, len(order), batch):
            chunk = order[start : start + batch]
            rows = []
            for i in chunk:
                ctx, cont = requests[i]
                rows.append((ctx + cont)[-(n_ctx + 1):][:-1])
            width = max(len(r) for r in rows)
            ids = torch.zeros((len(rows), width), dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : len(r)] = torch.tensor(r)
            logits = model(input_ids=ids).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for b, i in enumerate(chunk):
                cont = requests[i][1]
                n = len(rows[b])
                lp = logp[b, n - len(cont) : n]
                target = torch.tensor(cont)
                ll = lp.gather(1, target.unsqueeze(1)).squeeze(1).double().sum().item()
                greedy = bool((lp.argmax(-1) == target).all())
                results[i] = (ll, greedy, len(cont))
    seconds = time.perf_counter() - started
    at = 0
    loglik, tokens, greedy, acc, acc_norm, lls = [], [], [], [], [], []
    for kind, context, choices, answer in items:
        r = results[at : at + len(choices)]
        at += len(choices)
        ll = [x[0] for x in r]
        loglik.append(ll)
        tokens.append([x[2] for x in r])
        greedy.append([x[1] for x in r])
        if kind == "mc":
            pred = max(range(len(ll)), key=lambda k: (ll[k], -k))
            norm = [ll[k] / len(choices[k]) for k in range(len(ll))]
            pred_norm = max(range(len(ll)), key=lambda k: (norm[k], -k))
            acc.append(float(pred == answer))
            acc_norm.append(float(pred_norm == answer))
        else:
            acc.append(float(r[0][1]))
            lls.append(ll[0])
    metrics = {"acc": sum(acc) / len(acc)}
    if acc_norm:
        metrics["acc_norm"] = sum(acc_norm) / len(acc_norm)
    if lls:
        metrics["perplexity"] = math.exp(-sum(lls) / len(lls))
    with open(out, "w") as f:
        json.dump(
            {
                "loglik": loglik,
                "tokens": tokens,
                "greedy": greedy,
                "metrics": metrics,
                "seconds": seconds,
                "items": len(items),
            },
            f,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
