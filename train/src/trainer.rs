//! The training loop: data from the sample-stream loader, gradient accumulation to the global
//! batch, bf16 autocast or fp32, global-norm clipping, fused AdamW on the GPT-3 schedule, one
//! log line and one `metrics.jsonl` row per step, periodic validation with `loss.png`, and
//! crash-safe checkpoints that resume exactly (also after Ctrl-C / SIGTERM). Launched as
//! several ranks ([`crate::distributed`]), each rank trains on its slice of every global batch and
//! the gradients are averaged once per step; rank 0 alone logs and writes.

use crate::checkpoint::{self, CheckpointState, SavedTokenizer};
use crate::data::BatchTensors;
use crate::distributed::{GradBuckets, Launch, ProcessGroup};
use crate::evaluate::{evaluate, EvalResult};
use crate::model::{Gpt, GptConfig};
use crate::optim::{AdamW, AdamWConfig};
use crate::options::{filled, TrainOptions};
use crate::precision::Precision;
use crate::run_log::RunLog;
use anyhow::{anyhow, bail, Result};
use h5gpt_core::schedule::LrSchedule;
use h5gpt_formats::blend::BlendRecord;
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::Loader;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn, Device, Kind, Tensor};

mod setup;

/// A run's settings: the data, the run directory, the model and the hyper-parameters (the
/// process's runtime handles are [`RunHandles`]).
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
    /// fp32, bf16 autocast (fp32 weights) or bf16-pure (bf16 weights, fp32 masters): see
    /// [`Precision`].
    pub precision: Precision,
    /// Device.
    pub device: Device,
    /// Start from a Hugging Face GPT-2 directory instead of random weights.
    pub init_from_hf: Option<PathBuf>,
    /// Peak FLOP/s for MFU; `None`: looked up from the GPU's name (no MFU on CPU).
    pub peak_flops: Option<f64>,
    /// Fail when there is no checkpoint to resume from (`--resume`).
    pub require_checkpoint: bool,
    /// How long a rank waits for the others (rendezvous, each collective).
    pub dist_timeout: Duration,
    /// Shard checksums before step 0.
    pub verify: VerifyMode,
    /// Blend weights, one per `shards` set; `None`: the sets are read as one.
    pub weights: Option<Vec<f64>>,
    /// Resume with other weights than the checkpoint's (`--reweight`).
    pub reweight: bool,
    /// Resume on other data or another shuffle than the checkpoint's run
    /// (`--allow-data-change`).
    pub allow_data_change: bool,
    /// Non-finite steps (loss or gradient norm) skipped before the run stops; 0: the first
    /// one stops it.
    pub skip_nonfinite: usize,
    /// A console line every this many steps (`--log-every`); `metrics.jsonl` keeps every step.
    pub log_every: usize,
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
    /// Task files whose accuracy is measured during training (`--eval-task`, rank 0).
    pub eval_tasks: Vec<PathBuf>,
    /// Score the tasks every this many steps (and at the start and end); 0: never.
    pub eval_task_every: usize,
    /// Items of each task scored (the first N); `None`: all.
    pub eval_task_limit: Option<usize>,
    /// Where rank 0 writes TensorBoard event files; `None`: none.
    pub tensorboard: Option<PathBuf>,
}

impl TrainConfig {
    /// A configuration with the built-in defaults of the `train` command
    /// ([`TrainOptions::builtin`]) for everything but the data, the run directory and the
    /// model; the batch and learning rate, which `train` takes from the model's preset, are
    /// gpt2-small's batch in tokens and learning rate with a micro-batch of 8.
    pub fn new(shards: impl Into<PathBuf>, out: impl Into<PathBuf>, model: GptConfig) -> Self {
        let builtin = TrainOptions::builtin();
        let out: PathBuf = out.into();
        TrainConfig {
            shards: vec![shards.into()],
            tensorboard: Some(out.join("tensorboard")),
            out,
            model,
            micro_batch: 8,
            total_batch_tokens: 524_288,
            lr: 6e-4,
            min_lr_ratio: filled(builtin.min_lr_ratio),
            warmup_steps: filled(builtin.warmup_steps),
            warmup_tokens: None,
            max_steps: None,
            max_tokens: None,
            epochs: filled(builtin.epochs),
            seed: filled(builtin.seed),
            save_every: filled(builtin.save_every),
            keep_checkpoints: filled(builtin.keep_checkpoints),
            eval_every: filled(builtin.eval_every),
            eval_batches: filled(builtin.eval_batches),
            final_eval: filled(builtin.final_eval),
            precision: Precision::Fp32,
            device: Device::Cpu,
            init_from_hf: None,
            peak_flops: None,
            require_checkpoint: false,
            dist_timeout: Duration::from_secs_f64(filled(builtin.dist_timeout)),
            verify: VerifyMode::Cached,
            weights: None,
            reweight: false,
            allow_data_change: false,
            skip_nonfinite: filled(builtin.skip_nonfinite),
            log_every: filled(builtin.log_every),
            val_shards: Vec::new(),
            batch_rows: None,
            lr_schedule: None,
            adamw: AdamWConfig::default(),
            grad_clip: filled(builtin.grad_clip),
            shuffle: filled(builtin.shuffle),
            config_report: None,
            eval_tasks: Vec::new(),
            eval_task_every: filled(builtin.eval_every),
            eval_task_limit: None,
        }
    }
}

/// What a run is handed besides its settings: the process's place among the ranks, the stop
/// flag a signal sets, whether to draw a progress bar, and the options file to write.
#[derive(Debug, Clone, Default)]
pub struct RunHandles {
    /// Set by a signal handler: save a checkpoint and stop after the current step.
    pub stop: Option<Arc<AtomicBool>>,
    /// This process's rank among several ([`Launch::from_env`]); `None`: a single process.
    pub launch: Option<Launch>,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// The run's resolved options, written to `config.toml` by rank 0 once the run has
    /// started (a run that fails to start leaves no `config.toml` behind).
    pub config_toml: Option<String>,
}

impl RunHandles {
    /// Whether a stop was requested (by a signal) in this process.
    pub fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
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
    /// Training loss: the mean over the global batch's loss tokens.
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

/// One task's accuracy (a `metrics.jsonl` row).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskMetrics {
    /// Steps completed.
    pub step: usize,
    /// Tokens seen.
    pub tokens: u64,
    /// The task's name (its file stem).
    pub task: String,
    /// Items scored.
    pub items: usize,
    /// Items with a context cut on the left.
    pub truncated: usize,
    /// Each metric (`acc`, `acc_norm`, …; see `docs/eval.md`) and its standard error
    /// (`acc_stderr`, …).
    #[serde(flatten)]
    pub metrics: std::collections::BTreeMap<String, f64>,
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
    /// Task evaluations run by this process (rank 0).
    pub tasks: Vec<TaskMetrics>,
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
            if setup::is_out_of_memory(&message) {
                bail!(with_hint(
                    format!(
                        "{what}: out of memory with --micro-batch {micro_batch}",
                    ),
                    format!(
                        "lower --micro-batch (gradient accumulation keeps --total-batch-tokens), use --dtype bf16, or pick a smaller --model\n{message}",
                    ),
                ));
            }
            Err(anyhow!("{what}: libtorch error: {message}"))
        }
    }
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
    /// A console line every this many steps (and the run's first and last).
    log_every: usize,
}

/// Runs (or resumes) training: `Run::prepare` sets the run up, then the loop below trains,
/// like nanoGPT's train.py: batch → forward → backward → clip → step (one `Run::step`), then
/// log, evaluate and save.
pub fn train(
    config: &TrainConfig,
    handles: &RunHandles,
    log: &mut dyn FnMut(&str),
) -> Result<TrainSummary> {
    let mut run = Run::prepare(config, handles, log)?;
    let mut summary = TrainSummary {
        steps: Vec::new(),
        evals: Vec::new(),
        tasks: Vec::new(),
        start_step: run.start_step,
        end_step: run.start_step,
        total_steps: run.total_steps,
        interrupted: false,
        checkpoint: None,
        final_eval: None,
    };
    if run.start_step == 0 && config.eval_every > 0 {
        summary.evals.extend(run.evaluate(0)?);
    }
    if run.start_step == 0 && config.eval_task_every > 0 {
        summary.tasks.extend(run.evaluate_tasks(0)?);
    }
    // Steps are queued on the device without waiting: each one's figures (loss, norm, whether
    // it was skipped, the ranks' stop votes) come back through one non-blocking copy, read after
    // the next step is queued; all of them are read before a validation or a checkpoint.
    let mut pending: VecDeque<Queued> = VecDeque::new();
    run.tally.last_done = Instant::now();
    for step in run.start_step..run.total_steps {
        let stop_here = handles.stop_requested();
        if run.stops(stop_here) {
            summary.interrupted = true;
            break;
        }
        pending.push_back(run.step(step, stop_here)?);
        let done = step + 1;
        summary.end_step = done;
        let last = done == run.total_steps;
        let eval_due = config.eval_every > 0 && (done % config.eval_every == 0 || last);
        let save_due = done % config.save_every.max(1) == 0 || last;
        let tasks_due = config.eval_task_every > 0 && (done % config.eval_task_every == 0 || last);
        // Read every step but the newest; at a validation or checkpoint, all of them.
        let keep = if eval_due || save_due || tasks_due {
            0
        } else {
            1
        };
        while pending.len() > keep {
            let queued = pending.pop_front().expect("a queued step");
            summary.steps.push(run.record(queued)?);
        }
        if eval_due {
            summary.evals.extend(run.evaluate(done)?);
        }
        if tasks_due {
            summary.tasks.extend(run.evaluate_tasks(done)?);
        }
        if eval_due || tasks_due {
            run.log.plot()?;
        }
        if last && config.final_eval {
            run.final_validation(done)?;
        }
        if save_due {
            run.save(done)?;
        }
        if eval_due || save_due || tasks_due {
            // The next step's time starts now, not when the last one finished.
            run.tally.last_done = Instant::now();
        }
    }
    // The steps still queued are read before anything is saved.
    while let Some(queued) = pending.pop_front() {
        summary.steps.push(run.record(queued)?);
    }
    if summary.interrupted {
        let done = summary.end_step;
        let saved = run
            .checkpoint
            .as_ref()
            .is_some_and(|c| c.ends_with(checkpoint::checkpoint_name(done)));
        if !saved {
            run.save(done)?;
        }
        run.log.line(&format!(
            "stopped by a signal after step {done}: rerun the same command to continue"
        ));
    }
    summary.checkpoint = run.checkpoint.clone();
    summary.final_eval = run.final_eval;
    run.finish()?;
    Ok(summary)
}

/// A validation set: its name (a blend set's `--shards` path, else empty), rows and weight in
/// the blended loss.
struct EvalSet {
    name: String,
    rows: Arc<h5gpt_formats::ShardSet>,
    weight: f64,
}

/// The `--eval-task` files and the tokenizer that encodes them.
struct EvalTasks {
    tokenizer: h5gpt_tokenizer::tokenizer::Tokenizer,
    tasks: Vec<h5gpt_formats::task::Task>,
}

/// A run, set up: the process group, the model and optimizer (resumed, or initialized), the
/// data stream at its position, the schedule and the log.
struct Run<'a> {
    config: &'a TrainConfig,
    device: Device,
    group: Option<ProcessGroup>,
    rank: usize,
    /// CUDA's check for host syncs inside the step (`H5GPT_CUDA_SYNC_DEBUG`; off on CPU).
    sync_debug: crate::shim::SyncDebug,
    vs: nn::VarStore,
    model: Gpt,
    opt: AdamW,
    /// Data-parallel gradient buckets (with a process group).
    buckets: Option<GradBuckets>,
    loader: Loader,
    schedule: LrSchedule,
    start_step: usize,
    total_steps: usize,
    micro_steps: usize,
    /// Token ids at or above it are corrupt (the tokenizer's vocabulary, not the padded one).
    vocab_limit: usize,
    /// What a checkpoint records of the run.
    record: RunRecord,
    eval_sets: Vec<EvalSet>,
    /// `--eval-task` (scored on rank 0).
    tasks: Option<EvalTasks>,
    log: RunLog<'a>,
    ctx: StepContext,
    tally: StepTally,
    /// Checkpoints written by this run (for the fault-injection hook).
    saves: usize,
    /// The final validation (`--final-eval`, rank 0), once measured; saved in `state.json`.
    final_eval: Option<h5gpt_formats::run::FinalEval>,
    /// The newest checkpoint (the one resumed from, until this run saves).
    checkpoint: Option<PathBuf>,
    /// `H5GPT_FAULT=nan-at-step:N`: a NaN loss at step N (a testing aid).
    nan_at: Option<usize>,
}

/// What a checkpoint's `state.json` records besides the step and position.
struct RunRecord {
    /// The data order's seed (the checkpoint's when resumed).
    seed: u64,
    global_batch: usize,
    seq_len: usize,
    held_out: usize,
    tokenizer: SavedTokenizer,
    blend: Option<BlendRecord>,
    /// What the run trains and evaluates on (`None` where the shards have no manifest).
    data: Option<h5gpt_formats::run::DataFingerprint>,
}

impl Run<'_> {
    /// Whether the run stops before the next step. A signal on any rank stops them all after
    /// the same step: every rank reads the same summed votes at the same step.
    fn stops(&self, stop_here: bool) -> bool {
        match &self.group {
            Some(_) => self.tally.stop_voted,
            None => stop_here,
        }
    }

    /// Queues optimizer step `step` on the device: the micro-batches' forward and backward
    /// passes, the ranks' gradient all-reduce, clipping, and the AdamW update (skipped on the
    /// device when the loss or norm is not finite). `stop_here` is this rank's stop vote.
    fn step(&mut self, step: usize, stop_here: bool) -> Result<Queued> {
        let lr = self
            .config
            .lr_schedule
            .as_ref()
            .map_or_else(|| self.schedule.lr(step), |phases| phases.lr(step));
        tch::manual_seed(step_seed(self.record.seed, step, self.rank));
        let device = self.device;
        let (stats, event) = guarded(&format!("step {step}"), self.config.micro_batch, || {
            let _sync_debug = crate::shim::SyncDebugGuard::enter(self.sync_debug)?;
            match &mut self.buckets {
                // Gradients are views into the buckets: zeroed there, one fill per bucket
                // (bf16-pure: the buckets hold the fp32 main gradients, which the first
                // micro-batch overwrites).
                Some(buckets) if !self.opt.has_masters() => buckets.zero_grad(),
                _ => self.opt.zero_grad()?,
            }
            // The step's loss is the mean over the global batch's loss tokens (Megatron's
            // per-token loss): each micro-batch backpropagates its summed loss, and the
            // gradients are divided by the count of loss tokens over every micro-batch and rank,
            // which rides on the loss's all-reduce. So neither --micro-batch nor the number of
            // ranks changes the loss or the gradient.
            let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
            let mut tokens = Tensor::zeros([], (Kind::Float, device));
            for micro in 0..self.micro_steps {
                let batch = self.loader.next_batch()?;
                let tensors = BatchTensors::new(
                    &batch.input_ids,
                    &batch.labels,
                    &batch.attention_mask,
                    batch.rows,
                    self.vocab_limit,
                    device,
                    &|r| format!("training example {}", batch.sample_ids[r]),
                )?;
                self.loader.recycle(batch);
                let mut micro_loss = {
                    let _autocast = self.config.precision.autocast(device)?;
                    self.model
                        .loss_sum(&tensors.input_ids, &tensors.labels, &tensors.mask, true)
                };
                if self.nan_at == Some(step) && micro == 0 {
                    if self.rank == 0 {
                        eprintln!("H5GPT_FAULT: a NaN loss at step {step} (testing aid)");
                    }
                    micro_loss.sum *= f64::NAN;
                }
                micro_loss.sum.backward();
                // bf16-pure: into the fp32 main gradients.
                self.opt.accumulate_main_grads(micro == 0)?;
                loss_sum += micro_loss.sum.detach();
                tokens += micro_loss.tokens;
            }
            // The summed loss, the count of loss tokens and this rank's stop vote travel
            // together: one all-reduce, one read.
            let shared = Tensor::stack(
                &[
                    loss_sum,
                    tokens,
                    Tensor::full([], f64::from(u8::from(stop_here)), (Kind::Float, device)),
                ],
                0,
            );
            if let (Some(group), Some(buckets)) = (&self.group, &mut self.buckets) {
                // Gradients and loss summed over the ranks before clipping.
                buckets.all_reduce_sum(group)?;
                group.all_reduce_sum(&shared)?;
            }
            let tokens = shared.get(1);
            let loss = shared.get(0) / &tokens;
            let clip = match self.config.grad_clip {
                0.0 => f64::INFINITY, // the norm, measured, nothing clipped
                clip => clip,
            };
            // The gradients of the summed loss, divided by the count in the clipping's scale.
            let norm = self
                .opt
                .clip_grad_norm_scaled(clip, Some(&tokens.reciprocal()))?
                .unwrap_or_else(|| Tensor::zeros([], (Kind::Float, device)));
            // A non-finite loss or norm skips the update on the device (no host sync).
            let found_inf = (&loss + &norm)
                .isfinite()
                .logical_not()
                .to_kind(Kind::Float);
            self.opt.step(lr, Some(&found_inf))?;
            let stats = Tensor::stack(&[loss, norm, found_inf, shared.get(2)], 0);
            // To pinned host memory without blocking (a CUDA event marks when it has landed).
            let host = stats.to_device_(Device::Cpu, Kind::Float, true, false);
            let event = match device {
                Device::Cuda(index) => Some(crate::shim::CudaEvent::record(index)?),
                _ => None,
            };
            Ok((host, event))
        })?;
        Ok(Queued {
            step,
            lr,
            stats,
            event,
            queued: Instant::now(),
        })
    }

    /// Reads a queued step's figures (waiting for that step only), logs its line and its
    /// `metrics.jsonl` row, and stops the run on a non-finite step unless `--skip-nonfinite`
    /// still allows one. Its time is the time between this step's completion and the previous
    /// one's, so it stays true when steps run ahead of the host.
    fn record(&mut self, queued: Queued) -> Result<StepMetrics> {
        if let Some(event) = &queued.event {
            event.synchronize()?;
        }
        let figures = Vec::<f32>::try_from(&queued.stats)?;
        let [loss, norm, found_inf, stop_votes] = figures[..] else {
            bail!("step {}: expected 4 figures, got {figures:?}", queued.step);
        };
        let (ctx, tally) = (&self.ctx, &mut self.tally);
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
            let newest = self.checkpoint.as_ref().map_or_else(
                || "none was written yet".to_owned(),
                |c| format!("the newest is {}", c.display()),
            );
            if tally.nonfinite > ctx.skip_nonfinite {
                bail!(with_hint(
                    format!(
                        "step {step}: non-finite loss ({loss}) or gradient norm ({norm}); the step was not applied and the run stops without saving it (checkpoints are of earlier steps: {newest})",
                    ),
                    "lower --lr or raise --warmup-steps, check the data and the checkpoint the run resumed from; --skip-nonfinite N skips up to N such steps",
                ));
            }
            let line = format!(
                "step {step:>5} | loss {loss} | norm {norm} | non-finite: skipped, not applied ({} of at most {} with --skip-nonfinite)",
                tally.nonfinite, ctx.skip_nonfinite
            );
            self.log.line(&line);
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
        let console =
            step % ctx.log_every == 0 || step == self.start_step || step + 1 == self.total_steps;
        if !nonfinite && console {
            let mfu = m
                .mfu
                .map(|f| format!(" | mfu {:.1}%", f * 100.0))
                .unwrap_or_default();
            let mem = m
                .peak_mem_gib
                .map(|g| format!(" | mem {g:.2}GiB"))
                .unwrap_or_default();
            self.log.line(&format!(
                "step {:>5} | loss {:.6} | lr {:.4e} | norm {:.4} | dt {:.2}ms | tok/s {:.0}{mfu}{mem}",
                m.step, m.loss, m.lr, m.norm, m.dt_ms, m.tok_per_s
            ));
        }
        self.log.tick(m.loss);
        self.log.step_row(&m)?;
        Ok(m)
    }

    /// The loss over the evaluation sets (the first `limit` rows of each, or all of them),
    /// averaged by the sets' weights, with rows and tokens summed; and, for a blend, each
    /// set's loss by name.
    fn evaluate_sets(
        &self,
        what: &str,
        limit: Option<usize>,
    ) -> Result<(EvalResult, std::collections::BTreeMap<String, f64>)> {
        let config = self.config;
        let (mut weighted, mut weights, mut rows, mut tokens) = (0.0, 0.0, 0, 0);
        let mut per_set = std::collections::BTreeMap::new();
        for set in &self.eval_sets {
            let result = guarded(what, config.micro_batch, || {
                evaluate(
                    &self.model,
                    &set.rows,
                    config.micro_batch,
                    limit,
                    self.device,
                    config.precision,
                )
            })?;
            weighted += set.weight * result.loss;
            weights += set.weight;
            rows += result.rows;
            tokens += result.tokens;
            if self.record.blend.is_some() {
                per_set.insert(set.name.clone(), result.loss);
            }
        }
        let blended = EvalResult {
            loss: weighted / weights,
            tokens,
            rows,
        };
        Ok((blended, per_set))
    }

    /// Validation after `done` steps (rank 0): each evaluation set's loss, blended by weight,
    /// logged and recorded. `None` on other ranks and without evaluation rows.
    fn evaluate(&mut self, done: usize) -> Result<Option<EvalMetrics>> {
        if self.eval_sets.is_empty() || self.rank != 0 {
            return Ok(None);
        }
        let limit = self.config.eval_batches * self.config.micro_batch;
        let (blended, per_set) = self.evaluate_sets("evaluation", Some(limit))?;
        let (loss, rows) = (blended.loss, blended.rows);
        let row = EvalMetrics {
            step: done,
            tokens: done as u64 * self.ctx.tokens_per_step,
            val_loss: loss,
            val_loss_sets: per_set,
        };
        let sets: String = row
            .val_loss_sets
            .iter()
            .map(|(name, l)| format!(" | {name} {l:.6}"))
            .collect();
        self.log.line(&format!(
            "step {:>5} | val loss {:.6}{} | {} rows{sets}",
            done,
            loss,
            if self.record.blend.is_some() {
                " (blended)"
            } else {
                ""
            },
            rows
        ));
        self.log.eval_row(&row)?;
        Ok(Some(row))
    }

    /// The task accuracies after `done` steps (rank 0): each `--eval-task` scored
    /// ([`crate::task_eval::score_task`]: eval mode, no gradients, no random numbers drawn,
    /// so the training is the same with and without it), logged and recorded.
    fn evaluate_tasks(&mut self, done: usize) -> Result<Vec<TaskMetrics>> {
        let Some(tasks) = &self.tasks else {
            return Ok(Vec::new());
        };
        if self.rank != 0 {
            return Ok(Vec::new());
        }
        let options = crate::task_eval::ScoreOptions {
            batch_rows: self.config.micro_batch,
            device: self.device,
            precision: self.config.precision,
        };
        let mut rows = Vec::new();
        for task in &tasks.tasks {
            let scores = guarded("task evaluation", self.config.micro_batch, || {
                crate::task_eval::score_task(
                    &self.model,
                    &tasks.tokenizer,
                    task,
                    options,
                    &mut |_| {},
                )
            })?;
            let mut metrics = std::collections::BTreeMap::new();
            for (name, m) in &scores.metrics {
                metrics.insert(name.clone(), m.value);
                if let Some(se) = m.stderr {
                    metrics.insert(format!("{name}_stderr"), se);
                }
            }
            rows.push(TaskMetrics {
                step: done,
                tokens: done as u64 * self.ctx.tokens_per_step,
                task: task.name.clone(),
                items: scores.items,
                truncated: scores.truncated,
                metrics,
            });
            self.log
                .line(&format!("step {done:>5} | task {}", scores.summary()));
        }
        for row in &rows {
            self.log.task_row(row)?;
        }
        Ok(rows)
    }

    /// The final validation after `done` steps (rank 0, `--final-eval`): every row of every
    /// evaluation set, blended by weight, logged, recorded in `metrics.jsonl` and kept for the
    /// checkpoint's `state.json`.
    fn final_validation(&mut self, done: usize) -> Result<()> {
        if self.rank != 0 {
            return Ok(());
        }
        let (blended, _) = self.evaluate_sets("final evaluation", None)?;
        let (rows, tokens) = (blended.rows, blended.tokens);
        let result = h5gpt_formats::run::FinalEval {
            step: done,
            loss: blended.loss,
            rows,
            tokens,
        };
        if !result.loss.is_finite() {
            bail!(
                "--final-eval: the loss over the evaluation set is {} after step {done}",
                result.loss
            );
        }
        self.log.line(&format!(
            "step {done:>5} | final val loss {:.6} | every row: {} rows, {} tokens",
            result.loss, result.rows, result.tokens
        ));
        self.log.final_eval_row(&FinalEvalMetrics {
            step: done,
            tokens: done as u64 * self.ctx.tokens_per_step,
            final_val_loss: result.loss,
            rows,
            eval_tokens: tokens,
        })?;
        self.final_eval = Some(result);
        Ok(())
    }

    /// Writes the checkpoint after `done` steps (rank 0; the other ranks only note its path)
    /// and makes it the run's newest.
    fn save(&mut self, done: usize) -> Result<()> {
        let path = if self.rank != 0 {
            checkpoint::checkpoint_path(&self.config.out, done)
        } else {
            self.saves += 1;
            let record = &self.record;
            let state = CheckpointState {
                step: done,
                position: self.loader.position(),
                seed: record.seed,
                global_batch: record.global_batch,
                seq_len: record.seq_len,
                held_out: record.held_out,
                model: self.config.model,
                tokenizer: record.tokenizer.name.clone(),
                eos_id: record.tokenizer.eos_id,
                version: checkpoint::STATE_VERSION,
                files: Default::default(),
                blend: record.blend.clone(),
                data: record.data.clone(),
                final_eval: self.final_eval,
            };
            let path = checkpoint::save(
                &self.config.out,
                &self.vs,
                &self.opt,
                &state,
                record.tokenizer.json.as_deref(),
                self.saves,
                self.config.keep_checkpoints,
            )?;
            self.log.line(&format!("saved {}", path.display()));
            path
        };
        self.checkpoint = Some(path);
        Ok(())
    }

    /// Closes the log (the final `loss.png`), waits for the other ranks, and shuts the
    /// process group down.
    fn finish(mut self) -> Result<()> {
        self.log.finish()?;
        if let Some(group) = self.group.take() {
            // No rank leaves before rank 0 has written the last checkpoint.
            group.barrier()?;
            group.shutdown()?;
        }
        Ok(())
    }
}
