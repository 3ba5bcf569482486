#!/usr/bin/env python3
"""The PyTorch baseline of `scripts/bench-train.sh` and `scripts/gpu-bench.sh`: the twin of
`train/examples/bench_step.rs` and of `train`'s step (same model, step, shapes, flags and JSON
line), eager or under `torch.compile`, on the CPU or a GPU.

A nanoGPT-style GPT-2, written here: learned position embedding, pre-LayerNorm blocks (eps 1e-5,
with bias), causal `F.scaled_dot_product_attention`, tanh-GELU MLP 4x, LM head tied to the token
embedding; init N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 L)). One step: forward +
cross-entropy + backward + clip_grad_norm_(1.0) + fused AdamW (betas (0.9, 0.95), eps 1e-8,
weight decay 0.1 on >= 2-D parameters). fp32 by default; `--dtype bf16` runs forward and loss
under bf16 autocast (nanoGPT's setting); on CUDA, fp32 matmuls use TF32 as `train` does.
`--compile` wraps the model in `torch.compile` (its compilation happens in the warm-up steps).
On CUDA only the whole step is timed (ending with a synchronize); the phases are CPU-only.

Usage: python scripts/bench_train_torch.py --threads 2 --warmup 3 --steps 10
       python scripts/bench_train_torch.py --device cuda --dtype bf16 --batch 16 --seq 1024 \
           --layers 12 --heads 12 --embd 768 [--compile]
"""

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(n_embd, eps=1e-5)
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.attn_proj = nn.Linear(n_embd, n_embd)
        self.ln_2 = nn.LayerNorm(n_embd, eps=1e-5)
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.mlp_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        b, t, c = x.shape
        hs = c // self.n_head
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)  # (B, T, C) each
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (z.view(b, t, self.n_head, hs).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # (B, T, C)
        x = x + self.attn_proj(y)
        h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")  # (B, T, 4C)
        return x + self.mlp_proj(h)


class Gpt(nn.Module):
    def __init__(self, vocab, n_ctx, n_layer, n_head, n_embd):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(n_ctx, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        residual_std = 0.02 / math.sqrt(2 * n_layer)
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = residual_std if name.endswith("_proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, idx, targets):
        _, t = idx.shape
        pos = torch.arange(t, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step, B (default 8)")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence, T = n_ctx (default 256)")
    p.add_argument("--layers", type=int, default=6, help="transformer blocks (default 6)")
    p.add_argument("--heads", type=int, default=6, help="attention heads (default 6)")
    p.add_argument("--embd", type=int, default=384, help="embedding width (default 384)")
    p.add_argument("--seed", type=int, default=1337, help="seed of weights and batches (default 1337)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="(default cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                   help="fp32, or bf16 autocast over fp32 weights (default fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.set_float32_matmul_precision("high")  # TF32, as train does on CUDA
    vocab, padded = 50257, 50304  # GPT-2's vocabulary; embedding rows padded to a multiple of 64
    model = Gpt(padded, args.seq, args.layers, args.heads, args.embd).to(device)
    model.train()
    step_model = torch.compile(model) if args.compile else model
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=6e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    n_params = sum(p.numel() for p in params)
    print(
        f"torch {torch.__version__}: L{args.layers} H{args.heads} E{args.embd} T{args.seq} "
        f"B{args.batch} vocab {padded} ({n_params} parameters), {args.dtype}, {args.device}"
        f"{', compiled' if args.compile else ''}, "
        f"{torch.get_num_threads()} threads, {args.warmup} warm-up + {args.steps} timed steps",
        file=sys.stderr,
    )

    times_ms, loss = [], float("nan")
    phase_ms = [[], [], [], []]  # forward+loss, backward, clip, AdamW
    for step in range(args.warmup + args.steps):
        tokens = torch.randint(vocab, (args.batch, args.seq + 1))
        idx, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (B, T) each
        idx = idx.pin_memory().to(device, non_blocking=True) if cuda else idx
        targets = targets.pin_memory().to(device, non_blocking=True) if cuda else targets
        # CPU kernels are synchronous: a clock read between phases times them. On CUDA the
        # phases overlap the host; only the whole step (to a synchronize) is timed.
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)  # nanoGPT; PyTorch's default
        with autocast:
            l = step_model(idx, targets)
        t1 = time.perf_counter()
        l.backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t3 = time.perf_counter()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        loss = l.item()
        t4 = time.perf_counter()
        phases = [(b - a) * 1e3 for a, b in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)]]
        total = (t4 - t0) * 1e3
        if step >= args.warmup:
            times_ms.append(total)
            for all_, t in zip(phase_ms, phases):
                all_.append(t)
        print(
            f"step {step:3} | loss {loss:.4f} | {total:8.1f} ms (forward {phases[0]:.1f}, "
            f"backward {phases[1]:.1f}, clip {phases[2]:.1f}, AdamW {phases[3]:.1f})",
            file=sys.stderr,
        )

    median = statistics.median(times_ms) if times_ms else float("nan")
    mean = statistics.fmean(times_ms) if times_ms else float("nan")
    phase = (lambda i: statistics.median(phase_ms[i])) if times_ms and not cuda else (lambda i: float("nan"))
    report = {
        "impl": "torch-compile" if args.compile else "torch",
        "device": args.device,
        "dtype": args.dtype,
        "parameters": n_params,
        "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None,
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "batch": args.batch,
        "seq": args.seq,
        "median_ms": median,
        "mean_ms": mean,
        "min_ms": min(times_ms) if times_ms else float("nan"),
        "tok_per_s": args.batch * args.seq / (median / 1e3),
        "final_loss": loss,
        "forward_ms": phase(0),
        "backward_ms": phase(1),
        "clip_ms": phase(2),
        "adamw_ms": phase(3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
