//! One training step of our GPT-2, timed on CPU, for `scripts/bench-train.sh`; its PyTorch
//! eager twin is `scripts/bench_train_torch.py` (same shapes, flags and output).
//!
//! A step is forward + masked cross-entropy (summed; the gradients divided by the count of loss
//! tokens where they are clipped, as the trainer does) + backward + global-norm clip (1.0) + fused AdamW,
//! on random token batches (fixed seed), fp32. After `--warmup` untimed steps, `--steps` steps
//! are timed one by one. The last line printed is JSON:
//! `{"impl": "h5gpt", "median_ms": …, "mean_ms": …, "tok_per_s": …, …}` (tok/s from the median),
//! with the median time of each phase (`forward_ms` including the loss, `backward_ms`,
//! `clip_ms`, `adamw_ms`).
//!
//! `cargo run --release -p h5gpt-train --example bench_step -- --threads 2 --steps 10`

use clap::Parser;
use h5gpt_train::model::{Gpt, GptConfig};
use h5gpt_train::optim::{AdamW, AdamWConfig};
use std::time::Instant;
use tch::{nn, Device, Kind, Tensor};

#[derive(Parser, Debug)]
#[command(about = "Times training steps of the h5gpt GPT-2 on CPU (fp32)")]
struct Args {
    /// Intra-op threads (`tch::set_num_threads`).
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Sequences per step (B).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Tokens per sequence (T, = n_ctx).
    #[arg(long, default_value_t = 256)]
    seq: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 6)]
    layers: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 6)]
    heads: usize,
    /// Embedding width.
    #[arg(long, default_value_t = 384)]
    embd: usize,
    /// Seed of the initial weights and the token batches.
    #[arg(long, default_value_t = 1337)]
    seed: i64,
    /// Time the loss as it was before the fused fp32 cross-entropy (a log-softmax, a gather
    /// and a masked fp32 sum), to compare the forward phase.
    #[arg(long)]
    gather_loss: bool,
}

/// The loss before the fused fp32 cross-entropy: log-softmax, gather, masked fp32 sum (what
/// the trainer still does for bf16 logits), summed over the positions whose mask is not 0.
fn gather_loss_sum(model: &Gpt, idx: &Tensor, labels: &Tensor, mask: &Tensor) -> Tensor {
    let logits = model.forward(idx, true);
    let (rows, v) = (logits.size()[2], model.config().vocab_size as i64);
    tch::no_grad(|| {
        let _ = logits.narrow(2, v, rows - v).fill_(f64::NEG_INFINITY);
    });
    let logits = logits.reshape([-1, rows]);
    let targets = labels.masked_fill(&mask.eq(0), -100).view([-1]);
    let valid = targets.ne(-100);
    let picked = logits
        .log_softmax(-1, logits.kind())
        .gather(-1, &targets.clamp_min(0).unsqueeze(-1), false)
        .squeeze_dim(-1)
        .to_kind(Kind::Float);
    -(picked * valid.to_kind(Kind::Float)).sum(Kind::Float)
}

// A benchmark script reads top to bottom, phase by phase, like its PyTorch twin.
#[allow(clippy::too_many_lines)]
fn main() {
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    tch::manual_seed(args.seed);
    let config = GptConfig {
        vocab_size: 50257, // GPT-2's; the embedding is padded to 50304 rows
        pad_vocab: true,
        n_ctx: args.seq,
        n_layer: args.layers,
        n_head: args.heads,
        n_embd: args.embd,
        bias: true,
        dropout: 0.0,
        mup: None,
        ffn_size: None,
        layer_norm_eps: h5gpt_core::config::DEFAULT_LAYER_NORM_EPS,
        init: None,
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), config);
    let mut optimizer = AdamW::new(&vs, AdamWConfig::default());
    let (b, t) = (args.batch as i64, args.seq as i64);
    eprintln!(
        "h5gpt: L{} H{} E{} T{} B{} vocab {} ({} parameters), fp32, CPU, {} threads, {} warm-up + {} timed steps",
        args.layers,
        args.heads,
        args.embd,
        args.seq,
        args.batch,
        config.embedding_rows(),
        config.parameter_count(),
        tch::get_num_threads(),
        args.warmup,
        args.steps
    );

    let mut times_ms = Vec::with_capacity(args.steps);
    let mut phase_ms: [Vec<f64>; 4] = Default::default(); // forward+loss, backward, clip, AdamW
    let mut loss = f64::NAN;
    for step in 0..args.warmup + args.steps {
        let tokens = Tensor::randint(
            config.vocab_size as i64,
            [b, t + 1],
            (Kind::Int64, Device::Cpu),
        );
        let idx = tokens.narrow(1, 0, t).contiguous(); // (B, T)
        let labels = tokens.narrow(1, 1, t).contiguous(); // (B, T)
        let mask = Tensor::ones([b, t], (Kind::Int64, Device::Cpu));
        // CPU kernels are synchronous: a clock read between phases times them.
        let start = Instant::now();
        optimizer.zero_grad().expect("zero_grad");
        // As the trainer's step: the summed loss backpropagated, the gradients divided by the
        // count of loss tokens where they are clipped.
        let (sum, count) = if args.gather_loss {
            let count = mask.ne(0).sum(Kind::Float);
            (gather_loss_sum(&model, &idx, &labels, &mask), count)
        } else {
            let l = model.loss_sum(&idx, &labels, &mask, true);
            (l.sum, l.tokens)
        };
        let forward = Instant::now();
        sum.backward();
        let backward = Instant::now();
        let _norm = optimizer
            .clip_grad_norm_scaled(1.0, Some(&count.reciprocal()))
            .expect("clip");
        let clip = Instant::now();
        optimizer.step(6e-4, None).expect("AdamW step");
        loss = (sum / count).double_value(&[]);
        let end = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        let phases = [
            ms(start, forward),
            ms(forward, backward),
            ms(backward, clip),
            ms(clip, end),
        ];
        let total = ms(start, end);
        if step >= args.warmup {
            times_ms.push(total);
            for (all, t) in phase_ms.iter_mut().zip(phases) {
                all.push(t);
            }
        }
        eprintln!(
            "step {step:3} | loss {loss:.4} | {total:8.1} ms (forward {:.1}, backward {:.1}, clip {:.1}, AdamW {:.1})",
            phases[0], phases[1], phases[2], phases[3]
        );
    }

    let mean = times_ms.iter().sum::<f64>() / times_ms.len().max(1) as f64;
    let median_ms = median(&times_ms);
    let tok_per_s = (args.batch * args.seq) as f64 / (median_ms / 1e3);
    let report = serde_json::json!({
        "impl": "h5gpt",
        "threads": tch::get_num_threads(),
        "warmup": args.warmup,
        "steps": args.steps,
        "batch": args.batch,
        "seq": args.seq,
        "median_ms": median_ms,
        "mean_ms": mean,
        "min_ms": times_ms.iter().copied().fold(f64::NAN, f64::min),
        "tok_per_s": tok_per_s,
        "final_loss": loss,
        "forward_ms": median(&phase_ms[0]),
        "backward_ms": median(&phase_ms[1]),
        "clip_ms": median(&phase_ms[2]),
        "adamw_ms": median(&phase_ms[3]),
    });
    println!("{report}");
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
