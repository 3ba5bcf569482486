//! The training loop: data from the sample-stream loader, gradient accumulation to the global
//! batch, bf16 autocast or fp32, global-norm clipping, fused AdamW on the GPT-3 schedule, one
//! log line and one `metrics.jsonl` row per step, periodic validation with `loss.png`, and
//! crash-safe checkpoints that resume exactly (also after Ctrl-C / SIGTERM). Launched as
//! several ranks ([`crate::dist`]), each rank trains on its slice of every global batch and
//! the gradients are averaged once per step; rank 0 alone logs and writes.

use crate::checkpoint::{self, CheckpointState, SavedTokenizer};
use crate::data::{
    describe, held_out_rows, open_blend, open_split, split_dirs, BatchTensors, BlendData,
    DataSplit, EvalSource,
};
use crate::device::{gpu_name, peak_bf16_flops};
use crate::dist::{Backend, GradBuckets, Launch, ProcessGroup, BUCKET_BYTES};
use crate::evaluate::evaluate;
use crate::model::{Gpt, GptConfig};
use crate::optim::{AdamW, AdamWConfig};
use crate::precision::Precision;
use anyhow::{anyhow, bail, Context, Result};
use h5gpt_core::schedule::LrSchedule;
use h5gpt_formats::blend::{BlendPhase, BlendRecord, BlendSet};
use h5gpt_formats::{BatchLayout, Loader, LoaderConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind, Tensor};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Shard directories (each plain, or with `train/` and `val/`), read as one set.
    pub shards: Vec<PathBuf>,
    /// Run directory.
    pub out: PathBuf,
    /// Model shape (`n_ctx` ≥ the shards' seq_len).
    pub model: GptConfig,
    /// Rows per forward/backward pass.
    pub micro_batch: usize,
    /// Tokens per optimizer step (rounded down to whole micro-batches).
    pub total_batch_tokens: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate / peak.
    pub min_lr_ratio: f64,
    /// Warm-up steps (unless `warmup_tokens` is set).
    pub warmup_steps: usize,
    /// Warm-up length in tokens (rounded up to whole steps); overrides `warmup_steps`.
    pub warmup_tokens: Option<u64>,
    /// Steps to run; overrides `max_tokens` and `epochs`.
    pub max_steps: Option<usize>,
    /// Tokens to train on (rounded up to whole steps); overrides `epochs`.
    pub max_tokens: Option<u64>,
    /// Epochs to run when neither `max_steps` nor `max_tokens` is set.
    pub epochs: f64,
    /// Seed of the initialization, the sample stream and dropout.
    pub seed: u64,
    /// Checkpoint every this many steps (and at the end).
    pub save_every: usize,
    /// Checkpoints kept.
    pub keep_checkpoints: usize,
    /// Validation every this many steps (and at the end); 0: never.
    pub eval_every: usize,
    /// Micro-batches per validation.
    pub eval_batches: usize,
    /// After the last step, evaluate every row of the evaluation set and record the loss as
    /// the run's final validation loss (`state.json` `final_eval`, a `final_val_loss` row of
    /// `metrics.jsonl`).
    pub final_eval: bool,
    /// fp32 or bf16 autocast.
    pub precision: Precision,
    /// Device.
    pub device: Device,
    /// Start from a Hugging Face GPT-2 directory instead of random weights.
    pub init_from_hf: Option<PathBuf>,
    /// Peak FLOP/s for MFU; `None`: looked up from the GPU's name (no MFU on CPU).
    pub peak_flops: Option<f64>,
    /// Fail when there is no checkpoint to resume from (`--resume`).
    pub require_checkpoint: bool,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Set by a signal handler: save a checkpoint and stop after the current step.
    pub stop: Option<Arc<AtomicBool>>,
    /// This process's rank among several ([`Launch::from_env`]); `None`: a single process.
    pub launch: Option<Launch>,
    /// How long a rank waits for the others (rendezvous, each collective).
    pub dist_timeout: Duration,
    /// Shard checksums before step 0.
    pub verify: VerifyMode,
    /// The run's resolved options, written to `config.toml` by rank 0 once the run has
    /// started (a run that fails to start leaves no `config.toml` behind).
    pub config_toml: Option<String>,
    /// Blend weights, one per `shards` set; `None`: the sets are read as one.
    pub weights: Option<Vec<f64>>,
    /// Resume with other weights than the checkpoint's (`--reweight`).
    pub reweight: bool,
    /// Non-finite steps (loss or gradient norm) skipped before the run stops; 0: the first
    /// one stops it.
    pub skip_nonfinite: usize,
    /// Evaluation shard directories, read as one set, instead of the `val/` of `shards`.
    pub val_shards: Vec<PathBuf>,
    /// Rows per optimizer step as given (`--batch-size`): used exactly, never shrunk for
    /// small data; `None`: from `total_batch_tokens`.
    pub batch_rows: Option<usize>,
    /// A phased schedule (Cerebras' semantics) instead of warm-up and cosine from `lr`.
    pub lr_schedule: Option<h5gpt_core::cerebras::PhaseSchedule>,
    /// AdamW's betas, ε and weight decay.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (0: none).
    pub grad_clip: f64,
    /// Shuffle the training rows (`false`: file order, epoch after epoch).
    pub shuffle: bool,
    /// The report of a Cerebras YAML `--config`, written to the run folder when it starts.
    pub config_report: Option<String>,
}

impl TrainConfig {
    /// A configuration with the defaults of the `train` command for everything but the data,
    /// the run directory and the model.
    pub fn new(shards: impl Into<PathBuf>, out: impl Into<PathBuf>, model: GptConfig) -> Self {
        TrainConfig {
            shards: vec![shards.into()],
            out: out.into(),
            model,
            micro_batch: 8,
            total_batch_tokens: 524_288,
            lr: 6e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 10,
            warmup_tokens: None,
            max_steps: None,
            max_tokens: None,
            epochs: 1.0,
            seed: 1337,
            save_every: 100,
            keep_checkpoints: 2,
            eval_every: 0,
            eval_batches: 20,
            final_eval: false,
            precision: Precision::Fp32,
            device: Device::Cpu,
            init_from_hf: None,
            peak_flops: None,
            require_checkpoint: false,
            progress: false,
            stop: None,
            launch: None,
            dist_timeout: Duration::from_secs(600),
            config_toml: None,
            verify: VerifyMode::Cached,
            weights: None,
            reweight: false,
            skip_nonfinite: 0,
            val_shards: Vec::new(),
            batch_rows: None,
            lr_schedule: None,
            adamw: AdamWConfig::default(),
            grad_clip: 1.0,
            shuffle: true,
            config_report: None,
        }
    }
}

/// How the shards' checksums are checked before step 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Hash the shards the verification cache does not vouch for (the default).
    Cached,
    /// Hash every shard (`--verify full`).
    Full,
    /// No check (`--no-verify`).
    Off,
}

/// One step's figures (a `metrics.jsonl` row).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepMetrics {
    /// Step index (0-based).
    pub step: usize,
    /// Tokens seen after this step.
    pub tokens: u64,
    /// Mean training loss over the step's micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub norm: f64,
    /// Milliseconds.
    pub dt_ms: f64,
    /// Tokens per second.
    pub tok_per_s: f64,
    /// Model FLOPs utilization (fraction of the device's peak), when the peak is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfu: Option<f64>,
    /// Peak GPU memory held by tensors so far, in GiB (the CUDA caching allocator's
    /// `max_memory_allocated`); CUDA only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_mem_gib: Option<f64>,
    /// The loss or gradient norm was not finite: the step was not applied
    /// (`--skip-nonfinite`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// One validation (a `metrics.jsonl` row).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalMetrics {
    /// Steps completed.
    pub step: usize,
    /// Tokens seen.
    pub tokens: u64,
    /// Mean loss on the evaluation rows (for a blend: the sets' losses averaged by weight).
    pub val_loss: f64,
    /// For a blend: each set's loss, by its `--shards` path.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub val_loss_sets: std::collections::BTreeMap<String, f64>,
}

/// The final validation (a `metrics.jsonl` row).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FinalEvalMetrics {
    /// Steps completed.
    pub step: usize,
    /// Tokens seen.
    pub tokens: u64,
    /// Mean loss over every row of the evaluation set (for a blend: the sets' losses averaged
    /// by weight).
    pub final_val_loss: f64,
    /// Rows evaluated.
    pub rows: usize,
    /// Tokens counted.
    pub eval_tokens: u64,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Per step, this process only.
    pub steps: Vec<StepMetrics>,
    /// Validations run by this process.
    pub evals: Vec<EvalMetrics>,
    /// Step the run started at (non-zero when resumed).
    pub start_step: usize,
    /// Steps completed when it stopped.
    pub end_step: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Stopped early by a signal (a checkpoint was saved).
    pub interrupted: bool,
    /// The newest checkpoint.
    pub checkpoint: Option<PathBuf>,
    /// The final validation (`--final-eval`), when the run measured one.
    pub final_eval: Option<h5gpt_formats::run::FinalEval>,
}

/// Samples per optimizer step: `total_batch_tokens / seq_len` rounded down to whole
/// micro-batches, then halved while an epoch would give fewer than 100 steps (never below one
/// micro-batch). Returns the batch and the notes to print.
pub fn global_batch(
    total_batch_tokens: usize,
    seq_len: usize,
    micro_batch: usize,
    examples: usize,
) -> (usize, Vec<String>) {
    let mut notes = Vec::new();
    let wanted = total_batch_tokens / seq_len;
    let mut batch = (wanted / micro_batch).max(1) * micro_batch;
    if batch * seq_len != total_batch_tokens {
        notes.push(format!(
            "total batch {total_batch_tokens} tokens is not a multiple of micro-batch {micro_batch} × seq_len {seq_len}: using {} tokens",
            batch * seq_len
        ));
    }
    let before = batch;
    while batch > micro_batch && examples / batch < 100 {
        let halved = (batch / 2 / micro_batch).max(1) * micro_batch;
        if halved == batch {
            break;
        }
        batch = halved;
    }
    if batch < before {
        notes.push(format!(
            "an epoch of {examples} rows would give fewer than 100 optimizer steps: total batch shrunk to {batch} rows ({} tokens)",
            batch * seq_len
        ));
    }
    (batch, notes)
}

/// The seed of step `step`'s dropout masks on rank `rank`: reseeding from it at every step
/// makes dropout reproducible after a resume without saving any RNG state.
pub fn step_seed(seed: u64, step: usize, rank: usize) -> i64 {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    for v in [step as u64, rank as u64] {
        x = h5gpt_formats::permutation::mix64(x ^ v);
    }
    (x >> 1) as i64
}

/// Runs `f`, turning a libtorch error raised as a panic into an error; out-of-memory gets the
/// knobs to turn.
fn guarded<T>(what: &str, micro_batch: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match crate::panics::catch_libtorch(f) {
        Ok(result) => result,
        Err(message) => {
            if message.contains("out of memory") {
                bail!(
                    "{what}: out of memory with --micro-batch {micro_batch}\n---> HINT: lower --micro-batch (gradient accumulation keeps --total-batch-tokens), use --dtype bf16, or pick a smaller --model\n{message}"
                );
            }
            Err(anyhow!("{what}: libtorch error: {message}"))
        }
    }
}

/// Log lines go through this so they print above the progress bar.
struct Console<'a> {
    bar: ProgressBar,
    log: &'a mut dyn FnMut(&str),
    /// Ranks other than 0 print nothing.
    quiet: bool,
}

impl Console<'_> {
    fn line(&mut self, line: &str) {
        if self.quiet {
            return;
        }
        let log = &mut self.log;
        self.bar.suspend(|| log(line));
    }
}

/// Training and validation curves for `loss.png`, as (tokens, loss).
#[derive(Default)]
struct Curves {
    train: Vec<(u64, f64)>,
    val: Vec<(u64, f64)>,
}

/// Reopens `metrics.jsonl`, keeping the rows a resumed run does not redo (steps before
/// `start_step`, validations at or before it), and returns the curves they hold.
fn reopen_metrics(path: &Path, start_step: usize) -> Result<(std::fs::File, Curves)> {
    let mut curves = Curves::default();
    let mut kept = Vec::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(step), Some(tokens)) = (v["step"].as_u64(), v["tokens"].as_u64()) else {
            continue;
        };
        let step = step as usize;
        if let Some(val) = v["val_loss"].as_f64() {
            // A resumed run keeps the validation at its checkpoint's step; a run that starts
            // over from step 0 runs the step-0 validation again.
            if step < start_step || (step == start_step && start_step > 0) {
                curves.val.push((tokens, val));
                kept.push(line.to_owned());
            }
        } else if step < start_step {
            if let Some(loss) = v["loss"].as_f64() {
                curves.train.push((tokens, loss));
            }
            kept.push(line.to_owned());
        }
    }
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    for line in kept {
        writeln!(file, "{line}")?;
    }
    Ok((file, curves))
}

/// Appends `row` to `metrics.jsonl` (rank 0's; other ranks have none).
fn append_row(metrics: &mut Option<std::fs::File>, row: &impl Serialize) -> Result<()> {
    if let Some(file) = metrics {
        writeln!(file, "{}", serde_json::to_string(row)?)?;
    }
    Ok(())
}

/// The largest divisor of `rows` that is at most `micro_batch`: a rank's micro-batch.
fn rank_micro_batch(rows: usize, micro_batch: usize) -> usize {
    (1..=micro_batch.min(rows))
        .rev()
        .find(|m| rows % m == 0)
        .unwrap_or(1)
}

/// Joins the process group `launch` describes: Gloo on CPU, NCCL on CUDA.
fn join_group(launch: &Launch, device: Device, timeout: Duration) -> Result<ProcessGroup> {
    let backend = if device.is_cuda() {
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    if !backend.available() {
        bail!(
            "NCCL backend not built: this train was compiled without the NCCL headers, so ranks on CUDA cannot talk\n---> HINT: rebuild with NCCL (README, Many GPUs and machines), or train data-parallel on CPU with --device cpu (Gloo)"
        );
    }
    Ok(ProcessGroup::connect(launch, backend, timeout)?)
}

/// The checkpoint every rank resumes from: rank 0 picks its newest that loads and verifies
/// ([`checkpoint::newest_usable_checkpoint`]) and tells the others, who must see the same
/// directory (`--out` on a shared filesystem).
fn agree_on_checkpoint(
    out: &Path,
    group: &ProcessGroup,
    device: Device,
) -> Result<checkpoint::Resume> {
    const NONE_USABLE: i64 = -2;
    let (mine, skipped, failure) = if group.rank() == 0 {
        match checkpoint::newest_usable_checkpoint(out) {
            Ok((found, skipped)) => (
                found.as_ref().map_or(-1, |(_, state)| state.step as i64),
                skipped,
                None,
            ),
            Err(e) => (NONE_USABLE, Vec::new(), Some(e)),
        }
    } else {
        (-1, Vec::new(), None)
    };
    let step = Tensor::from_slice(&[mine]).to_device(device);
    group.broadcast(&step, 0)?;
    let step = step.int64_value(&[0]);
    if let Some(e) = failure {
        return Err(e);
    }
    if step == NONE_USABLE {
        bail!(
            "rank {}: rank 0 found no checkpoint that loads (see its log)",
            group.rank()
        );
    }
    if step < 0 {
        return Ok((None, skipped));
    }
    let path = checkpoint::checkpoint_path(out, step as usize);
    if !path.join("state.json").is_file() {
        bail!(
            "rank {}: rank 0 resumes from {}, which this rank cannot read\n---> HINT: --out must be a directory every rank sees (a shared filesystem)",
            group.rank(),
            path.display()
        );
    }
    let state = checkpoint::read_state(&path)?;
    Ok((Some((path, state)), skipped))
}

/// Checks every shard's checksum against its manifest before step 0. Local rank 0 of each
/// node checks (shards may be node-local); the other ranks wait for it, and every rank stops
/// when a check failed anywhere.
fn verify_shards(
    config: &TrainConfig,
    group: Option<&ProcessGroup>,
    device: Device,
    console: &mut Console<'_>,
) -> Result<()> {
    if config.verify == VerifyMode::Off {
        console.line("verify: off (--no-verify): shard checksums are not checked");
        return Ok(());
    }
    let local_rank0 = config.launch.as_ref().is_none_or(|l| l.local_rank == 0);
    let result = if local_rank0 {
        check_checksums(config, console)
    } else {
        Ok(())
    };
    if let Some(group) = group {
        // Whether the check failed on any rank (this all-reduce is also the ranks' barrier).
        let vote = Tensor::from_slice(&[f32::from(u8::from(result.is_err()))]).to_device(device);
        group.all_reduce_sum(&vote)?;
        let failed = vote.double_value(&[0]) > 0.0;
        if failed && result.is_ok() {
            bail!(
                "rank {}: the shards failed verification on another rank (see its log)",
                group.rank()
            );
        }
    }
    result
}

fn check_checksums(config: &TrainConfig, console: &mut Console<'_>) -> Result<()> {
    let (train_dirs, val_dirs) = split_dirs(&config.shards);
    for dir in train_dirs.iter().chain(&val_dirs) {
        let params = h5gpt_formats::DataParams::read_from_dir(dir)?;
        let Some(params) = params.filter(|p| p.h5gpt.is_some()) else {
            console.line(&format!(
                "verify: {}: no h5gpt manifest, so no checksums to check",
                dir.display()
            ));
            continue;
        };
        let full = config.verify == VerifyMode::Full;
        let o = h5gpt_formats::verify::verify_checksums(dir, &params, &config.out, full)
            .with_context(|| format!("{}: shard verification before step 0", dir.display()))?;
        console.line(&format!(
            "verify: {} | {} shards, checksums OK | {} unchanged since verified, {:.1} MB hashed in {:.2} s{}",
            dir.display(),
            o.shards,
            o.cached,
            o.bytes_hashed as f64 / 1e6,
            o.seconds,
            if full { " (--verify full)" } else { "" }
        ));
    }
    Ok(())
}

/// A step queued on the device whose figures the host has not read yet.
struct Queued {
    step: usize,
    lr: f64,
    /// `[loss, norm, found_inf, stop votes]`, f32 on the host (pinned on CUDA, filled by a
    /// non-blocking copy).
    stats: Tensor,
    /// Recorded after that copy was queued (CUDA only).
    event: Option<crate::shim::CudaEvent>,
    /// When the host finished queuing it.
    queued: Instant,
}

/// What reading the queued steps carries from one to the next.
struct StepTally {
    /// When the last step read was done (on CUDA: seen done; on CPU: computed).
    last_done: Instant,
    /// The ranks' summed stop votes of the last step read were non-zero.
    stop_voted: bool,
    /// Non-finite steps skipped so far in this process.
    nonfinite: usize,
}

/// The run's constants a step's figures need.
struct StepContext {
    tokens_per_step: u64,
    flops_per_token: f64,
    peak_flops: Option<f64>,
    device: Device,
    skip_nonfinite: usize,
}

/// Reads a queued step's figures (waiting for that step only), logs its line, and stops the
/// run on a non-finite step unless `--skip-nonfinite` still allows one. Its time is the time
/// between this step's completion and the previous one's, so it stays true when steps run
/// ahead of the host.
fn resolve(
    queued: Queued,
    tally: &mut StepTally,
    console: &mut Console<'_>,
    ctx: &StepContext,
    summary: &TrainSummary,
) -> Result<StepMetrics> {
    if let Some(event) = &queued.event {
        event.synchronize()?;
    }
    let figures = Vec::<f32>::try_from(&queued.stats)?;
    let [loss, norm, found_inf, stop_votes] = figures[..] else {
        bail!("step {}: expected 4 figures, got {figures:?}", queued.step);
    };
    let done_at = if ctx.device.is_cuda() {
        Instant::now()
    } else {
        queued.queued
    };
    let dt = done_at
        .saturating_duration_since(tally.last_done)
        .as_secs_f64()
        .max(1e-9);
    tally.last_done = done_at.max(tally.last_done);
    tally.stop_voted = stop_votes > 0.0;
    let step = queued.step;
    let nonfinite = found_inf > 0.0;
    if nonfinite {
        tally.nonfinite += 1;
        let newest = summary.checkpoint.as_ref().map_or_else(
            || "none was written yet".to_owned(),
            |c| format!("the newest is {}", c.display()),
        );
        if tally.nonfinite > ctx.skip_nonfinite {
            bail!(
                "step {step}: non-finite loss ({loss}) or gradient norm ({norm}); the step was not applied and the run stops without saving it (checkpoints are of earlier steps: {newest})\n---> HINT: lower --lr or raise --warmup-steps, check the data and the checkpoint the run resumed from; --skip-nonfinite N skips up to N such steps"
            );
        }
        console.line(&format!(
            "step {step:>5} | loss {loss} | norm {norm} | non-finite: skipped, not applied ({} of at most {} with --skip-nonfinite)",
            tally.nonfinite, ctx.skip_nonfinite
        ));
    }
    let tok_per_s = ctx.tokens_per_step as f64 / dt;
    let peak_memory = match ctx.device {
        Device::Cuda(index) => crate::shim::cuda_peak_memory(index, false).ok(),
        _ => None,
    };
    let m = StepMetrics {
        step,
        tokens: (step as u64 + 1) * ctx.tokens_per_step,
        loss,
        lr: queued.lr,
        norm: norm as f64,
        dt_ms: dt * 1e3,
        tok_per_s,
        mfu: ctx
            .peak_flops
            .map(|peak| tok_per_s * ctx.flops_per_token / peak),
        peak_mem_gib: peak_memory.map(|p| p.allocated as f64 / (1u64 << 30) as f64),
        skipped: nonfinite,
    };
    if !nonfinite {
        let mfu = m
            .mfu
            .map(|f| format!(" | mfu {:.1}%", f * 100.0))
            .unwrap_or_default();
        let mem = m
            .peak_mem_gib
            .map(|g| format!(" | mem {g:.2}GiB"))
            .unwrap_or_default();
        console.line(&format!(
            "step {:>5} | loss {:.6} | lr {:.4e} | norm {:.4} | dt {:.2}ms | tok/s {:.0}{mfu}{mem}",
            m.step, m.loss, m.lr, m.norm, m.dt_ms, m.tok_per_s
        ));
    }
    console.bar.set_message(format!("loss {:.4}", m.loss));
    console.bar.inc(1);
    Ok(m)
}

/// The trainable variables sorted by name: the same order on every rank.
fn sorted_parameters(vs: &nn::VarStore) -> Vec<Tensor> {
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables
        .into_iter()
        .map(|(_, t)| t)
        .filter(Tensor::requires_grad)
        .collect()
}

/// Draws `loss.png`; a failure is reported, not fatal.
fn plot(out: &Path, curves: &Curves, console: &mut Console<'_>) {
    let path = out.join("loss.png");
    let title = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Err(e) = h5gpt_core::plot::write_loss_plot(&path, &curves.train, &curves.val, &title) {
        console.line(&format!("warning: cannot draw {}: {e}", path.display()));
    }
}

/// The blend this run reads (`None` without `--weights`): the sets, and the weights over the
/// run. A resume keeps the checkpoint's weights; other weights are refused unless
/// `--reweight`, which continues the stream from the checkpoint's position with them.
fn blend_record(
    config: &TrainConfig,
    data: Option<&BlendData>,
    resumed: Option<&CheckpointState>,
    checkpoint: Option<&Path>,
) -> Result<Option<BlendRecord>> {
    let resumed_blend = resumed.and_then(|s| s.blend.as_ref());
    let ckpt = || checkpoint.map_or_else(String::new, |c| c.display().to_string());
    let (Some(data), Some(weights)) = (data, &config.weights) else {
        if resumed_blend.is_some() {
            bail!(
                "{}: checkpoint of a weighted blend, but this run has no --weights\n---> HINT: resume with the run's --shards and --weights (its config.toml has them), or use another --out",
                ckpt()
            );
        }
        return Ok(None);
    };
    let weights = h5gpt_formats::blend::normalize_weights(weights)?;
    let sets: Vec<BlendSet> = config
        .shards
        .iter()
        .zip(&data.sets)
        .zip(&data.held_out)
        .map(|((path, set), &held_out)| BlendSet {
            path: path.clone(),
            train_dirs: split_dirs(std::slice::from_ref(path))
                .0
                .into_iter()
                .map(|d| std::path::absolute(&d).unwrap_or(d))
                .collect(),
            rows: set.len() as u64,
            held_out,
        })
        .collect();
    let phases = match (resumed, resumed_blend) {
        (None, _) => vec![BlendPhase { start: 0, weights }],
        (Some(_), None) => bail!(
            "{}: checkpoint of a run that read its shard sets as one; --weights would draw another order\n---> HINT: resume without --weights, or start the blend in another --out",
            ckpt()
        ),
        (Some(state), Some(saved)) => {
            let rows = |sets: &[BlendSet]| sets.iter().map(|s| s.rows).collect::<Vec<_>>();
            if rows(&saved.sets) != rows(&sets) {
                bail!(
                    "{}: checkpoint of a blend of {} sets of {:?} rows; this run blends {} sets of {:?} rows\n---> HINT: resume with the run's --shards (its config.toml has them), or use another --out",
                    ckpt(),
                    saved.sets.len(),
                    rows(&saved.sets),
                    sets.len(),
                    rows(&sets)
                );
            }
            let same = saved
                .weights()
                .iter()
                .zip(&weights)
                .all(|(a, b)| (a - b).abs() < 1e-12);
            let mut phases = saved.phases.clone();
            if !same {
                if !config.reweight {
                    bail!(
                        "{}: checkpoint of a blend with weights {:?}; this run has {:?}\n---> HINT: pass --reweight to continue from the checkpoint with the new weights (each set continues its own order), or resume with the old --weights",
                        ckpt(),
                        saved.weights(),
                        weights
                    );
                }
                phases.retain(|p| p.start < state.position);
                phases.push(BlendPhase {
                    start: state.position,
                    weights,
                });
            }
            phases
        }
    };
    Ok(Some(BlendRecord { sets, phases }))
}

/// Appends this start (or resume) to the run's history, `RUN/segments.jsonl`, from which
/// `inspect --run` recomputes what every step read.
#[allow(clippy::too_many_arguments)]
fn record_segment(
    config: &TrainConfig,
    first_step: usize,
    position: u64,
    seed: u64,
    layout: BatchLayout,
    seq_len: usize,
    train_rows: usize,
    held_out: usize,
    blend: Option<h5gpt_formats::blend::BlendRecord>,
) -> Result<()> {
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    let train_dirs = split_dirs(&config.shards)
        .0
        .into_iter()
        .map(|d| std::path::absolute(&d).unwrap_or(d))
        .collect();
    let segment = h5gpt_formats::run::Segment {
        version: h5gpt_formats::run::SEGMENT_VERSION,
        first_step,
        position,
        seed,
        global_batch: layout.global_batch,
        micro_batch: layout.micro_batch,
        world_size: layout.world_size,
        seq_len,
        shards: config.shards.clone(),
        train_dirs,
        train_rows: train_rows as u64,
        held_out,
        blend,
        shuffle: config.shuffle,
    };
    h5gpt_formats::run::append_segment(&config.out, &segment)?;
    Ok(())
}

/// What the final validation evaluates.
struct FinalValidation<'a> {
    model: &'a Gpt,
    /// The evaluation sets: name, rows, weight in the blended loss.
    sets: &'a [(String, Arc<h5gpt_formats::ShardSet>, f64)],
    config: &'a TrainConfig,
    device: Device,
    /// Steps completed.
    done: usize,
    /// Tokens seen.
    tokens: u64,
}

/// Evaluates every row of every evaluation set (`--final-eval`): the run's final validation
/// loss, and its `metrics.jsonl` row.
fn final_validation(
    v: &FinalValidation<'_>,
) -> Result<(h5gpt_formats::run::FinalEval, FinalEvalMetrics)> {
    let (mut weighted, mut weights, mut rows, mut tokens) = (0.0, 0.0, 0, 0);
    for (_, set, weight) in v.sets {
        let result = guarded("final evaluation", v.config.micro_batch, || {
            evaluate(
                v.model,
                set,
                v.config.micro_batch,
                None,
                v.device,
                v.config.precision,
            )
        })?;
        weighted += weight * result.loss;
        weights += weight;
        rows += result.rows;
        tokens += result.tokens;
    }
    let result = h5gpt_formats::run::FinalEval {
        step: v.done,
        loss: weighted / weights,
        rows,
        tokens,
    };
    if !result.loss.is_finite() {
        bail!(
            "--final-eval: the loss over the evaluation set is {} after step {}",
            result.loss,
            v.done
        );
    }
    let row = FinalEvalMetrics {
        step: v.done,
        tokens: v.tokens,
        final_val_loss: result.loss,
        rows,
        eval_tokens: tokens,
    };
    Ok((result, row))
}

/// Runs (or resumes) training.
pub fn train(config: &TrainConfig, log: &mut dyn FnMut(&str)) -> Result<TrainSummary> {
    let model_cfg = config.model;
    model_cfg
        .validate()
        .map_err(|e| anyhow!("model configuration: {e}"))?;
    // Ranks: none for a single process. Each rank of a CUDA run takes its LOCAL_RANK's GPU.
    let device = match (config.device, &config.launch) {
        (Device::Cuda(_), Some(launch)) => Device::Cuda(launch.local_rank),
        (device, _) => device,
    };
    let group = match &config.launch {
        Some(launch) => Some(join_group(launch, device, config.dist_timeout)?),
        None => None,
    };
    let (rank, world) = group
        .as_ref()
        .map_or((0, 1), |g| (g.rank(), g.world_size()));

    // Resume state first: it fixes the rows held out for evaluation.
    // The newest checkpoint that loads and verifies: a corrupt or truncated newer one is
    // skipped, and the log says which and why.
    let (resume, skipped_checkpoints) = match &group {
        Some(group) => agree_on_checkpoint(&config.out, group, device)?,
        None => checkpoint::newest_usable_checkpoint(&config.out)?,
    };
    let (resume_from, resumed_state) = match resume {
        Some((path, state)) => (Some(path), Some(state)),
        None if config.require_checkpoint => bail!(
            "--resume: {} has no complete checkpoint to resume from",
            config.out.display()
        ),
        None => (None, None),
    };

    // Data. A resumed run holds out what it held out before.
    let resumed_blend = resumed_state.as_ref().and_then(|s| s.blend.as_ref());
    let blend_data = match &config.weights {
        Some(_) => Some(open_blend(
            &config.shards,
            |i, rows| match &resumed_state {
                Some(_) => resumed_blend
                    .and_then(|b| b.sets.get(i))
                    .map_or(0, |s| s.held_out),
                None if config.eval_every > 0 || config.final_eval => {
                    held_out_rows(rows, config.eval_batches * config.micro_batch)
                }
                None => 0,
            },
        )?),
        None => None,
    };
    let DataSplit {
        train: set,
        val,
        source,
    } = match &blend_data {
        Some(blend) => DataSplit {
            train: blend.sets[0].clone(),
            val: None,
            source: EvalSource::None,
        },
        None => open_split(
            &config.shards,
            &config.val_shards,
            |rows| match &resumed_state {
                Some(state) => state.held_out,
                None if config.eval_every > 0 || config.final_eval => {
                    held_out_rows(rows, config.eval_batches * config.micro_batch)
                }
                None => 0,
            },
        )?,
    };
    let train_rows = blend_data
        .as_ref()
        .map_or(set.len(), |b| b.sets.iter().map(|s| s.len()).sum());
    let held_out = match source {
        EvalSource::HeldOut(rows) => rows,
        EvalSource::ValDir | EvalSource::None => 0,
    };
    let seq = set.seq_len();
    if seq > model_cfg.n_ctx {
        bail!(
            "{}: rows of {seq} tokens do not fit the model's context of {}\n---> HINT: re-run preprocess with --seq-len {} or pick a model with a longer context (--n-ctx {seq})",
            describe(&config.shards),
            model_cfg.n_ctx,
            model_cfg.n_ctx
        );
    }
    if let Some(vocab) = set.data_params().and_then(|p| p.post_process.vocab_size) {
        if vocab as usize > model_cfg.embedding_rows() {
            bail!(
                "{}: the shards' vocabulary ({vocab} tokens) is larger than the model's ({})\n---> HINT: set vocab_size to at least {vocab}, or re-run preprocess with the model's tokenizer",
                describe(&config.shards),
                model_cfg.embedding_rows()
            );
        }
    }
    // A resumed run continues on the tokenizer its model was trained with (compared by
    // content), and keeps the checkpoint's record of it.
    let fingerprint = {
        let (train_dirs, mut val_dirs) = split_dirs(&config.shards);
        if !config.val_shards.is_empty() {
            val_dirs = config.val_shards.clone();
        }
        h5gpt_formats::run::DataFingerprint::of_dirs(&train_dirs, &val_dirs, seq)?
    };
    let tokenizer = match (&resume_from, &resumed_state) {
        (Some(ckpt), Some(state)) => {
            checkpoint::check_data_tokenizer(ckpt, state, &set)?;
            SavedTokenizer::of_checkpoint(ckpt, state)
        }
        _ => SavedTokenizer::of_set(&set)?,
    };
    let mut console = Console {
        bar: ProgressBar::hidden(),
        log,
        quiet: rank != 0,
    };
    match &source {
        EvalSource::ValDir => console.line(&format!(
            "eval: {} rows of {}",
            val.as_ref().map_or(0, |v| v.len()),
            describe(&split_dirs(&config.shards).1)
        )),
        EvalSource::HeldOut(rows) => console.line(&format!(
            "eval: the last {rows} rows of {} are held out (training never sees them)",
            describe(&config.shards)
        )),
        EvalSource::None if config.eval_every > 0 && blend_data.is_none() => {
            console.line("eval: off (no val/ directory and too few rows to hold any out)")
        }
        EvalSource::None => {}
    }
    for line in &skipped_checkpoints {
        console.line(&format!("warning: {line}"));
    }
    verify_shards(config, group.as_ref(), device, &mut console)?;
    let blend = blend_record(
        config,
        blend_data.as_ref(),
        resumed_state.as_ref(),
        resume_from.as_deref(),
    )?;
    // Evaluation sets: the one set, or each blend set that has rows to evaluate on, with its
    // weight in the blended loss.
    let eval_sets: Vec<(String, Arc<h5gpt_formats::ShardSet>, f64)> = match (&blend, &blend_data) {
        (Some(record), Some(data)) => data
            .vals
            .iter()
            .zip(&record.sets)
            .zip(record.weights())
            .filter_map(|((val, s), w)| val.clone().map(|v| (s.path.display().to_string(), v, *w)))
            .collect(),
        _ => val
            .iter()
            .map(|v| (String::new(), v.clone(), 1.0))
            .collect(),
    };
    if config.final_eval && eval_sets.is_empty() {
        bail!(
            "--final-eval: {} has no evaluation rows (no val/ directory, and none held out)\n---> HINT: preprocess with a validation split (--val-fraction), or drop --final-eval",
            describe(&config.shards)
        );
    }
    if let Some(record) = &blend {
        let sets: Vec<String> = record
            .sets
            .iter()
            .zip(record.weights())
            .map(|(s, w)| {
                format!(
                    "{} {w:.3} ({} rows{})",
                    s.path.display(),
                    s.rows,
                    if s.held_out > 0 {
                        format!(", last {} held out", s.held_out)
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        console.line(&format!(
            "blend: {} | weights are fractions of rows, in blocks of {} with exact quotas; each set has its own epochs{}",
            sets.join(" + "),
            h5gpt_formats::blend::BLOCK,
            if record.phases.len() > 1 {
                format!(" | reweighted {} times, last at stream position {}", record.phases.len() - 1, record.phases.last().map_or(0, |p| p.start))
            } else {
                String::new()
            }
        ));
        if config.eval_every > 0 {
            console.line(&format!(
                "eval: per set ({}) and blended by weight",
                if eval_sets.is_empty() {
                    "none has a val/ directory or rows to hold out".to_string()
                } else {
                    eval_sets
                        .iter()
                        .map(|e| e.0.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
    }

    // Batch and schedule.
    let (global, notes) = match config.batch_rows {
        Some(rows) => (rows, Vec::new()),
        None => global_batch(
            config.total_batch_tokens,
            seq,
            config.micro_batch,
            train_rows,
        ),
    };
    for note in notes {
        console.line(&format!("note: {note}"));
    }
    if let Some(state) = &resumed_state {
        if state.global_batch != global || state.seq_len != seq {
            bail!(
                "{}: checkpoint of a run with a global batch of {} rows of {} tokens, this run has {global} rows of {seq}\n---> HINT: use the same --total-batch-tokens and --micro-batch, or another --out",
                config.out.display(),
                state.global_batch,
                state.seq_len
            );
        }
    }
    let tokens_per_step = (global * seq) as u64;
    let total_steps = match (config.max_steps, config.max_tokens) {
        (Some(steps), _) => steps,
        (None, Some(tokens)) => tokens.div_ceil(tokens_per_step).max(1) as usize,
        (None, None) => ((config.epochs * train_rows as f64) / global as f64)
            .ceil()
            .max(1.0) as usize,
    };
    let warmup_steps = config.warmup_tokens.map_or(config.warmup_steps, |t| {
        t.div_ceil(tokens_per_step) as usize
    });
    let schedule = LrSchedule {
        max_lr: config.lr,
        min_lr_ratio: config.min_lr_ratio,
        warmup_steps,
        decay_steps: total_steps,
    };

    // Model, optimizer, resume.
    if device.is_cuda() {
        crate::shim::allow_tf32(true)?;
    }
    tch::manual_seed(config.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let model = Gpt::new(&vs.root(), model_cfg);
    let mut opt = AdamW::for_model(&vs, config.adamw, &model_cfg);
    let (mut start_step, mut position, mut seed) = (0usize, 0u64, config.seed);
    if let (Some(ckpt), Some(state)) = (&resume_from, &resumed_state) {
        if state.model != model_cfg {
            bail!(
                "{}: checkpoint of another model ({:?}); this run has {:?}\n---> HINT: use the same model flags (the run's config.toml has them: --config {}), or another --out",
                ckpt.display(),
                state.model,
                model_cfg,
                config.out.join("config.toml").display()
            );
        }
        vs.load(ckpt.join("model.safetensors"))
            .with_context(|| format!("{}: cannot load model.safetensors", ckpt.display()))?;
        let saved = Tensor::read_safetensors(ckpt.join("optimizer.safetensors"))
            .with_context(|| format!("{}: cannot load optimizer.safetensors", ckpt.display()))?;
        opt.load_state(&saved)
            .map_err(|e| anyhow!("{}: {e}", ckpt.display()))?;
        (start_step, position, seed) = (state.step, state.position, state.seed);
        if seed != config.seed {
            console.line(&format!(
                "note: continuing the checkpoint's data order (seed {seed}), not --seed {}",
                config.seed
            ));
        }
        console.line(&format!(
            "resuming from {} (step {start_step})",
            ckpt.display()
        ));
    } else if let Some(dir) = &config.init_from_hf {
        if model_cfg.mup.is_some() {
            bail!(
                "{}: cannot start a μP model from Hugging Face GPT-2 weights (they are in the standard parameterization)\n---> HINT: drop --mup, or --init-from-hf",
                dir.display()
            );
        }
        let (hf_config, tensors) = crate::hf::load(dir)?;
        if hf_config.n_layer != model_cfg.n_layer
            || hf_config.n_head != model_cfg.n_head
            || hf_config.n_embd != model_cfg.n_embd
            || hf_config.n_ctx != model_cfg.n_ctx
            || hf_config.embedding_rows() != model_cfg.embedding_rows()
        {
            bail!(
                "{}: a model of another shape ({hf_config:?}) than this run's ({model_cfg:?})",
                dir.display()
            );
        }
        crate::hf::copy_into(&vs, &tensors)?;
        console.line(&format!("initialized from {}", dir.display()));
    }
    if let Some(group) = &group {
        // Every rank starts from rank 0's weights.
        let params = sorted_parameters(&vs);
        tch::no_grad(|| params.iter().try_for_each(|p| group.broadcast(p, 0)))?;
    }
    if config.precision == Precision::Bf16Pure {
        // fp32 masters of the weights as they are now (initialized, loaded or resumed), then
        // the model in bf16.
        opt.keep_fp32_masters()?;
        vs.bfloat16();
    }
    let mut buckets = group
        .as_ref()
        .map(|_| GradBuckets::new(&opt.gradient_holders(), BUCKET_BYTES));
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    if let (Some(toml), 0) = (&config.config_toml, rank) {
        h5gpt_formats::fsio::write_atomic(&config.out.join("config.toml"), toml.as_bytes())?;
    }
    if let (Some(report), 0) = (&config.config_report, rank) {
        h5gpt_formats::fsio::write_atomic(
            &config.out.join(h5gpt_core::cerebras::REPORT_FILE),
            report.as_bytes(),
        )?;
    }
    let (mut metrics, mut curves) = if rank == 0 {
        let (file, curves) = reopen_metrics(&config.out.join("metrics.jsonl"), start_step)?;
        (Some(file), curves)
    } else {
        (None, Curves::default())
    };

    let flops_per_token = model_cfg.flops_per_token(seq);
    let peak_flops = config.peak_flops.or_else(|| {
        device
            .is_cuda()
            .then(gpu_name)
            .flatten()
            .and_then(|name| peak_bf16_flops(&name))
    });
    if global % world != 0 {
        bail!(
            "a global batch of {global} rows does not split over {world} ranks\n---> HINT: pick --total-batch-tokens and --micro-batch so that the rows per step are a multiple of the ranks"
        );
    }
    let layout = BatchLayout {
        global_batch: global,
        micro_batch: rank_micro_batch(global / world, config.micro_batch),
        world_size: world,
        rank,
    };
    if world > 1 && layout.micro_batch != config.micro_batch {
        console.line(&format!(
            "note: {} rows per rank per step: micro-batch {} instead of {}",
            layout.per_rank(),
            layout.micro_batch,
            config.micro_batch
        ));
    }
    let loader_config = LoaderConfig {
        seed,
        layout,
        start_position: position,
        prefetch: 4,
    };
    let mut loader = match (&blend, &blend_data) {
        (Some(record), Some(data)) => {
            Loader::with_sampler(data.sets.clone(), record.sampler(seed)?, loader_config)?
        }
        (Some(_), _) | (_, Some(_)) if !config.shuffle => bail!(
            "--shuffle false with a --weights blend: a blend draws its rows by weight\n---> HINT: drop --weights, or --shuffle"
        ),
        _ if !config.shuffle => Loader::with_sampler(
            vec![set.clone()],
            h5gpt_formats::blend::Sampler::Plain(h5gpt_formats::stream::SampleStream::sequential(
                set.len() as u64,
            )),
            loader_config,
        )?,
        _ => Loader::new(set.clone(), loader_config)?,
    };
    if rank == 0 && start_step < total_steps {
        record_segment(
            config,
            start_step,
            position,
            seed,
            layout,
            seq,
            train_rows,
            held_out,
            blend.clone(),
        )?;
    }
    let micro_steps = layout.micro_steps();
    // Ids are checked against the tokenizer's vocabulary, not the padded embedding: ids in
    // the padding rows are no tokens at all (a corrupt shard), and would train on garbage.
    let vocab_limit = set
        .data_params()
        .and_then(|p| p.post_process.vocab_size)
        .map_or(model_cfg.vocab_size, |v| v as usize);
    if let Some(mup) = model_cfg.mup {
        console.line(&format!(
            "μP: on | m = {} / {} = {} | hidden LR {:.4e} (η/m) | embedding output × {} | logits × 1/m | attention 1/d_head | σ_base {}",
            model_cfg.n_embd,
            mup.base_width,
            model_cfg.width_mult(),
            config.lr / model_cfg.width_mult(),
            mup.embed_mult,
            mup.init_std
        ));
    }
    if let Some(buckets) = &buckets {
        console.line(&format!(
            "data parallel: {world} ranks ({}) | {} rows per rank per step | {} gradient buckets of at most {} MB | timeout {}s",
            if device.is_cuda() { "nccl" } else { "gloo" },
            layout.per_rank(),
            buckets.len(),
            BUCKET_BYTES >> 20,
            config.dist_timeout.as_secs_f64()
        ));
    }
    console.line(&format!(
        "plan: {total_steps} steps × {global} rows × {seq} tokens = {:.3e} tokens ({:.2} epochs of {} rows) | {micro_steps} micro-batches of {} per step | warm-up {warmup_steps} steps | {} | {:.3e} FLOPs",
        (total_steps as u64 * tokens_per_step) as f64,
        (total_steps * global) as f64 / train_rows as f64,
        train_rows,
        layout.micro_batch,
        config.precision.name(),
        flops_per_token * (total_steps as u64 * tokens_per_step) as f64
    ));

    if config.progress && start_step < total_steps {
        console.bar =
            ProgressBar::with_draw_target(Some(total_steps as u64), ProgressDrawTarget::stderr());
        console.bar.set_style(
            ProgressStyle::with_template(
                "{bar:40.cyan/blue} {pos}/{len} steps [{elapsed_precise} < {eta_precise}] {msg}",
            )
            .expect("valid template"),
        );
        console.bar.set_position(start_step as u64);
        console.bar.reset_eta();
    }

    let mut summary = TrainSummary {
        steps: Vec::new(),
        evals: Vec::new(),
        start_step,
        end_step: start_step,
        total_steps,
        interrupted: false,
        checkpoint: resume_from.clone(),
        final_eval: None,
    };
    let mut saves = 0usize;
    let mut save = |done: usize,
                    loader: &Loader,
                    opt: &AdamW,
                    final_eval: Option<h5gpt_formats::run::FinalEval>,
                    console: &mut Console<'_>|
     -> Result<PathBuf> {
        if rank != 0 {
            return Ok(checkpoint::checkpoint_path(&config.out, done));
        }
        saves += 1;
        let state = CheckpointState {
            step: done,
            position: loader.position(),
            seed,
            global_batch: global,
            seq_len: seq,
            held_out,
            model: model_cfg,
            tokenizer: tokenizer.name.clone(),
            eos_id: tokenizer.eos_id,
            version: checkpoint::STATE_VERSION,
            files: Default::default(),
            blend: blend.clone(),
            data: fingerprint.clone(),
            final_eval,
        };
        let path = checkpoint::save(
            &config.out,
            &vs,
            opt,
            &state,
            tokenizer.json.as_deref(),
            saves,
            config.keep_checkpoints,
        )?;
        console.line(&format!("saved {}", path.display()));
        Ok(path)
    };
    let run_eval = |done: usize, console: &mut Console<'_>, metrics: &mut Option<std::fs::File>| {
        if eval_sets.is_empty() || rank != 0 {
            return Ok::<_, anyhow::Error>(None);
        }
        let (mut weighted, mut weights, mut rows) = (0.0, 0.0, 0);
        let mut per_set = std::collections::BTreeMap::new();
        for (name, val, weight) in &eval_sets {
            let result = guarded("evaluation", config.micro_batch, || {
                evaluate(
                    &model,
                    val,
                    config.micro_batch,
                    Some(config.eval_batches * config.micro_batch),
                    device,
                    config.precision,
                )
            })?;
            weighted += weight * result.loss;
            weights += weight;
            rows += result.rows;
            if blend.is_some() {
                per_set.insert(name.clone(), result.loss);
            }
        }
        let loss = weighted / weights;
        let row = EvalMetrics {
            step: done,
            tokens: done as u64 * tokens_per_step,
            val_loss: loss,
            val_loss_sets: per_set,
        };
        let sets: String = row
            .val_loss_sets
            .iter()
            .map(|(name, l)| format!(" | {name} {l:.6}"))
            .collect();
        console.line(&format!(
            "step {:>5} | val loss {:.6}{} | {} rows{sets}",
            done,
            loss,
            if blend.is_some() { " (blended)" } else { "" },
            rows
        ));
        append_row(metrics, &row)?;
        Ok(Some(row))
    };

    let ctx = StepContext {
        tokens_per_step,
        flops_per_token,
        peak_flops,
        device,
        skip_nonfinite: config.skip_nonfinite,
    };
    if h5gpt_core::plot::font_status().is_none() {
        console.line(&format!("note: {}", h5gpt_core::plot::NO_FONT_HINT));
    }
    if start_step == 0 && config.eval_every > 0 {
        if let Some(row) = run_eval(0, &mut console, &mut metrics)? {
            curves.val.push((0, row.val_loss));
            summary.evals.push(row);
        }
    }
    // Steps are queued on the device without waiting: each one's figures (loss, norm, whether
    // it was skipped, the ranks' stop votes) come back through one non-blocking copy, read after
    // the next step is queued; all of them are read before a validation or a checkpoint.
    let nan_at = h5gpt_formats::fault::armed("nan-at-step");
    let mut pending: VecDeque<Queued> = VecDeque::new();
    let mut tally = StepTally {
        last_done: Instant::now(),
        stop_voted: false,
        nonfinite: 0,
    };
    for step in start_step..total_steps {
        let stop_here = config
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst));
        // A signal on any rank stops them all after the same step: every rank reads the same
        // summed votes at the same step.
        let stop = match &group {
            Some(_) => tally.stop_voted,
            None => stop_here,
        };
        if stop {
            summary.interrupted = true;
            break;
        }
        let lr = config
            .lr_schedule
            .as_ref()
            .map_or_else(|| schedule.lr(step), |phases| phases.lr(step));
        tch::manual_seed(step_seed(seed, step, rank));
        let stats = guarded(&format!("step {step}"), config.micro_batch, || {
            match &mut buckets {
                // Gradients are views into the buckets: zeroed there, one fill per bucket.
                Some(buckets) => buckets.zero_grad(),
                None => opt.zero_grad()?,
            }
            let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
            for micro in 0..micro_steps {
                let batch = loader.next_batch()?;
                let tensors = BatchTensors::new(
                    &batch.input_ids,
                    &batch.labels,
                    &batch.attention_mask,
                    batch.rows,
                    vocab_limit,
                    device,
                    &|r| format!("training example {}", batch.sample_ids[r]),
                )?;
                loader.recycle(batch);
                let mut loss = {
                    let _autocast = config.precision.autocast(device)?;
                    model.loss(&tensors.input_ids, &tensors.labels, &tensors.mask, true)
                        / micro_steps as f64
                };
                if nan_at == Some(step) && micro == 0 {
                    if rank == 0 {
                        eprintln!("H5GPT_FAULT: a NaN loss at step {step} (testing aid)");
                    }
                    loss *= f64::NAN;
                }
                loss.backward();
                // bf16-pure: into the fp32 main gradients.
                opt.accumulate_main_grads(micro == 0)?;
                loss_sum += loss.detach();
            }
            // The loss and this rank's stop vote travel together: one all-reduce, one read.
            let shared = Tensor::stack(
                &[
                    loss_sum,
                    Tensor::full([], f64::from(u8::from(stop_here)), (Kind::Float, device)),
                ],
                0,
            );
            if let (Some(group), Some(buckets)) = (&group, &mut buckets) {
                // Gradients and loss averaged over the ranks before clipping.
                buckets.all_reduce_mean(group)?;
                group.all_reduce_sum(&shared)?;
            }
            let loss = shared.get(0) / world as f64;
            let norm = opt
                .clip_grad_norm(if config.grad_clip > 0.0 {
                    config.grad_clip
                } else {
                    f64::INFINITY // the norm, measured, nothing clipped
                })?
                .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, device)));
            // A non-finite loss or norm skips the update on the device (no host sync).
            let found_inf = (&loss + &norm)
                .isfinite()
                .logical_not()
                .to_kind(Kind::Float);
            opt.step(lr, Some(&found_inf))?;
            let stats = Tensor::stack(&[loss, norm, found_inf, shared.get(1)], 0);
            // To pinned host memory without blocking (a CUDA event marks when it has landed).
            let host = stats.to_device_(Device::Cpu, Kind::Float, true, false);
            let event = match device {
                Device::Cuda(index) => Some(crate::shim::CudaEvent::record(index)?),
                _ => None,
            };
            Ok((host, event))
        })?;
        pending.push_back(Queued {
            step,
            lr,
            stats: stats.0,
            event: stats.1,
            queued: Instant::now(),
        });
        let done = step + 1;
        summary.end_step = done;
        let last = done == total_steps;
        let eval_due = config.eval_every > 0 && (done % config.eval_every == 0 || last);
        let save_due = done % config.save_every.max(1) == 0 || last;
        // Read every step but the newest; at a validation or checkpoint, all of them.
        let keep = if eval_due || save_due { 0 } else { 1 };
        while pending.len() > keep {
            let queued = pending.pop_front().expect("a queued step");
            let m = resolve(queued, &mut tally, &mut console, &ctx, &summary)?;
            append_row(&mut metrics, &m)?;
            if m.loss.is_finite() {
                curves.train.push((m.tokens, m.loss as f64));
            }
            summary.steps.push(m);
        }
        if eval_due {
            if let Some(row) = run_eval(done, &mut console, &mut metrics)? {
                curves.val.push((row.tokens, row.val_loss));
                summary.evals.push(row);
            }
            if let Some(file) = &mut metrics {
                file.flush()?;
                plot(&config.out, &curves, &mut console);
            }
        }
        if last && config.final_eval && rank == 0 {
            let (result, row) = final_validation(&FinalValidation {
                model: &model,
                sets: &eval_sets,
                config,
                device,
                done,
                tokens: done as u64 * tokens_per_step,
            })?;
            console.line(&format!(
                "step {done:>5} | final val loss {:.6} | every row: {} rows, {} tokens",
                result.loss, result.rows, result.tokens
            ));
            append_row(&mut metrics, &row)?;
            summary.final_eval = Some(result);
        }
        if save_due {
            summary.checkpoint = Some(save(done, &loader, &opt, summary.final_eval, &mut console)?);
        }
        if eval_due || save_due {
            // The next step's time starts now, not when the last one finished.
            tally.last_done = Instant::now();
        }
    }
    // The steps still queued are read before anything is saved.
    while let Some(queued) = pending.pop_front() {
        let m = resolve(queued, &mut tally, &mut console, &ctx, &summary)?;
        append_row(&mut metrics, &m)?;
        if m.loss.is_finite() {
            curves.train.push((m.tokens, m.loss as f64));
        }
        summary.steps.push(m);
    }
    if summary.interrupted {
        let done = summary.end_step;
        let saved = summary
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.ends_with(checkpoint::checkpoint_name(done)));
        if !saved {
            summary.checkpoint = Some(save(done, &loader, &opt, None, &mut console)?);
        }
        console.line(&format!(
            "stopped by a signal after step {done}: rerun the same command to continue"
        ));
    }
    console.bar.finish_and_clear();
    if let Some(file) = &metrics {
        file.sync_all()?;
        plot(&config.out, &curves, &mut console);
    }
    if let Some(group) = &group {
        // No rank leaves before rank 0 has written the last checkpoint.
        group.barrier()?;
    }
    Ok(summary)
}
