//! Setting a run up: the process group, the checkpoint every rank resumes from, the data and
//! its split, the shape and vocabulary checks, the shard checksums, the blend, the step plan,
//! the model's starting weights, `metrics.jsonl`, the data stream and the plan lines, each in
//! its function, called in that order by `Run::prepare`.

use super::{
    global_batch, EvalSet, EvalTasks, Run, RunHandles, RunRecord, StepContext, StepTally,
    TrainConfig, VerifyMode,
};
use crate::checkpoint::{self, CheckpointState, SavedTokenizer};
use crate::data::{
    describe, held_out_rows, open_blend, open_split, split_dirs, BlendData, DataSplit, EvalSource,
};
use crate::device::{gpu_name, peak_bf16_flops, startup_actions, StartupAction};
use crate::distributed::{Backend, GradBuckets, Launch, ProcessGroup, BUCKET_BYTES};
use crate::model::Gpt;
use crate::optim::AdamW;
use crate::precision::Precision;
use crate::run_log::RunLog;
use anyhow::{anyhow, bail, Context, Result};
use h5gpt_core::schedule::LrSchedule;
use h5gpt_formats::blend::{BlendPhase, BlendRecord, BlendSet};
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::{BatchLayout, Loader, LoaderConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{nn, Device, Tensor};

/// Builds the model and its optimizer state on `device`. libtorch's allocation failure (it
/// raises it as a panic through tch: "not enough memory" on the CPU, "out of memory" on CUDA)
/// becomes the out-of-memory error with what the model needs, not a crash.
fn build_model(config: &TrainConfig, device: Device) -> Result<(nn::VarStore, Gpt, AdamW)> {
    let model_cfg = config.model;
    let built = crate::panics::catch_libtorch(|| {
        let vs = nn::VarStore::new(device);
        let model = Gpt::new(&vs.root(), model_cfg);
        let opt = AdamW::for_model(&vs, config.adamw, &model_cfg);
        (vs, model, opt)
    });
    built.map_err(|message| {
        if is_out_of_memory(&message) {
            let params = model_cfg.parameter_count();
            anyhow!(with_hint(
                format!(
                    "out of memory building the model on {device:?}: {params} parameters need \
                     {:.1} GB for the weights alone (fp32), and AdamW twice that again",
                    params as f64 * 4.0 / 1e9,
                ),
                format!(
                    "pick a smaller --model or shape (--n-layer, --n-embd, --vocab-size)\n{}",
                    allocation_line(&message),
                ),
            ))
        } else {
            anyhow!("building the model: libtorch error: {message}")
        }
    })
}

/// Whether a libtorch error message is an allocation failure (CUDA's "out of memory", the
/// CPU allocator's "not enough memory" / "can't allocate memory").
pub(crate) fn is_out_of_memory(message: &str) -> bool {
    [
        "out of memory",
        "not enough memory",
        "can't allocate memory",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// The allocator's sentence from a libtorch error ("you tried to allocate N bytes"), without
/// the C++ backtrace that follows it.
fn allocation_line(message: &str) -> &str {
    let start = message.find("you tried to allocate").unwrap_or(0);
    let rest = &message[start..];
    let end = rest.find(['\n', '\\']).unwrap_or(rest.len());
    &rest[..end]
}

impl<'a> Run<'a> {
    /// Sets the run up, each part in its function: the process group, the checkpoint every
    /// rank resumes from, the data and its split, the shape and vocabulary checks, the shard
    /// checksums, the blend, the step plan, the model (resumed, from Hugging Face, or new),
    /// `metrics.jsonl`, the data stream, and the plan lines.
    pub(super) fn prepare(
        config: &'a TrainConfig,
        handles: &'a RunHandles,
        print: &'a mut dyn FnMut(&str),
    ) -> Result<Run<'a>> {
        let model_cfg = config.model;
        model_cfg
            .validate()
            .map_err(|e| anyhow!("model configuration: {e}"))?;
        let (device, group) = connect(config, handles)?;
        let sync_debug = sync_debug_mode(device)?;
        let (rank, world) = group
            .as_ref()
            .map_or((0, 1), |g| (g.rank(), g.world_size()));
        // Resume state first: it fixes the rows held out for evaluation.
        let (resume, skipped_checkpoints) = find_resume(config, group.as_ref(), device)?;
        let resumed_state = resume.as_ref().map(|(_, state)| state);
        let data = open_data(config, resumed_state)?;
        check_shapes(config, &data.set)?;
        let tokenizer = run_tokenizer(resume.as_ref(), &data)?;
        // Task files are read (and their tokenizer loaded) on every rank, so a bad file stops
        // them all before step 0; rank 0 scores them.
        let tasks = eval_tasks(config, &tokenizer)?;
        let mut log = RunLog::new(&config.out, print, rank != 0);
        log.set_tensorboard(config.tensorboard.clone());
        log_eval_source(config, &data, &mut log);
        for line in &skipped_checkpoints {
            log.line(&format!("warning: {line}"));
        }
        verify_shards(config, handles, group.as_ref(), device, &mut log)?;
        let (blend, eval_sets) = blend_and_eval_sets(config, &data, resume.as_ref(), &mut log)?;
        let plan = plan_steps(config, &data, resumed_state, &mut log)?;
        let seq = data.set.seq_len();
        let fingerprint = data_fingerprint(config, seq)?;
        let data_change =
            logged_data_change(config, resume.as_ref(), fingerprint.as_ref(), &mut log)?;

        let StartedModel {
            vs,
            model,
            opt,
            start,
            buckets,
        } = start_model(config, device, group.as_ref(), resume.as_ref(), &mut log)?;
        write_run_files(config, handles, rank)?;
        log.open_metrics(start.step)?;

        let ctx = step_context(config, &plan, seq, device);
        let layout = batch_layout(config, plan.global, rank, world, &mut log)?;
        let loader = open_loader(config, blend.as_ref(), &data, &start, layout)?;
        if rank == 0 && start.step < plan.total_steps {
            record_segment(
                config,
                start.step,
                start.position,
                start.seed,
                layout,
                seq,
                data.train_rows,
                data.held_out,
                blend.clone(),
                data_change,
            )?;
        }
        let vocab_limit = vocab_limit(config, &data);
        log_plan(
            config,
            &plan,
            &data,
            layout,
            seq,
            &ctx,
            buckets.as_ref(),
            &mut log,
        );
        log_start_notes(handles, &start, plan.total_steps, &mut log);
        Ok(Run {
            config,
            device,
            group,
            rank,
            sync_debug,
            vs,
            model,
            opt,
            buckets,
            loader,
            schedule: plan.schedule,
            start_step: start.step,
            total_steps: plan.total_steps,
            micro_steps: layout.micro_steps(),
            vocab_limit,
            record: run_record(&start, plan.global, &data, tokenizer, blend, fingerprint),
            eval_sets,
            tasks,
            log,
            ctx,
            tally: StepTally {
                last_done: Instant::now(),
                stop_voted: false,
                nonfinite: 0,
            },
            saves: 0,
            final_eval: None,
            checkpoint: resume.map(|(path, _)| path),
            nan_at: h5gpt_formats::fault::armed("nan-at-step"),
        })
    }
}

/// H5GPT_CUDA_SYNC_DEBUG: CUDA's check for host syncs, on for the steps only (off on the CPU).
fn sync_debug_mode(device: Device) -> Result<crate::shim::SyncDebug> {
    Ok(
        match crate::shim::SyncDebug::from_env().map_err(anyhow::Error::msg)? {
            mode if device.is_cuda() => mode,
            _ => crate::shim::SyncDebug::Off,
        },
    )
}

/// The run's tokenizer: a resumed run continues on the tokenizer its model was trained with
/// (compared by content), and keeps the checkpoint's record of it; a new run takes the data's.
fn run_tokenizer(
    resume: Option<&(PathBuf, CheckpointState)>,
    data: &OpenedData,
) -> Result<SavedTokenizer> {
    Ok(match resume {
        Some((ckpt, state)) => {
            checkpoint::check_data_tokenizer(ckpt, state, &data.set)?;
            SavedTokenizer::of_checkpoint(ckpt, state)
        }
        None => SavedTokenizer::of_set(&data.set)?,
    })
}

/// `--final-eval` needs evaluation rows.
fn check_final_eval(config: &TrainConfig, eval_sets: &[EvalSet]) -> Result<()> {
    if config.final_eval && eval_sets.is_empty() {
        bail!(with_hint(
            format!(
                "--final-eval: {} has no evaluation rows (no val/ directory, and none held out)",
                describe(&config.shards)
            ),
            "preprocess with a validation split (--val-fraction), or drop --final-eval",
        ));
    }
    Ok(())
}

/// The model and its optimizer at the step the run starts from, with the gradient buckets of
/// a process group.
struct StartedModel {
    vs: nn::VarStore,
    model: Gpt,
    opt: AdamW,
    start: Start,
    buckets: Option<GradBuckets>,
}

/// Model, optimizer, resume: builds them (seeded), initializes, loads or resumes the weights,
/// gives every rank rank 0's, keeps fp32 masters under bf16-pure, and makes the gradient
/// buckets of a process group.
fn start_model(
    config: &TrainConfig,
    device: Device,
    group: Option<&ProcessGroup>,
    resume: Option<&(PathBuf, CheckpointState)>,
    log: &mut RunLog<'_>,
) -> Result<StartedModel> {
    if device.is_cuda() {
        crate::shim::allow_tf32(true)?;
    }
    tch::manual_seed(config.seed as i64);
    let (mut vs, model, mut opt) = build_model(config, device)?;
    let start = initialize(config, resume, &mut vs, &mut opt, log)?;
    if let Some(group) = group {
        // Every rank starts from rank 0's weights.
        let params = sorted_parameters(&vs);
        tch::no_grad(|| params.iter().try_for_each(|p| group.broadcast(p, 0)))?;
    }
    if config.precision == Precision::Bf16Pure {
        // fp32 masters of the weights as they are now (initialized, loaded or resumed),
        // then the model in bf16, its gradients in flat buffers.
        opt.keep_fp32_masters(&mut vs, BUCKET_BYTES)?;
    }
    // bf16-pure: the fp32 main gradients are flat buffers already, which the buckets take.
    let buckets = group.map(|_| match opt.main_grad_buffers() {
        Some(buffers) => GradBuckets::from_buffers(buffers),
        None => GradBuckets::new(&opt.gradient_holders(), BUCKET_BYTES),
    });
    Ok(StartedModel {
        vs,
        model,
        opt,
        start,
        buckets,
    })
}

/// The blend's record (with the weights a resumed run had) and the sets evaluated, logged;
/// `--final-eval` needs evaluation rows.
fn blend_and_eval_sets(
    config: &TrainConfig,
    data: &OpenedData,
    resume: Option<&(PathBuf, CheckpointState)>,
    log: &mut RunLog<'_>,
) -> Result<(Option<BlendRecord>, Vec<EvalSet>)> {
    let blend = blend_record(
        config,
        data.blend.as_ref(),
        resume.map(|(_, state)| state),
        resume.map(|(path, _)| path.as_path()),
    )?;
    let eval_sets = eval_sets(data, blend.as_ref());
    check_final_eval(config, &eval_sets)?;
    if let Some(record) = &blend {
        log_blend(config, record, &eval_sets, log);
    }
    Ok((blend, eval_sets))
}

/// How the data changed since the checkpoint (with `--allow-data-change`), said as a warning.
fn logged_data_change(
    config: &TrainConfig,
    resume: Option<&(PathBuf, CheckpointState)>,
    fingerprint: Option<&h5gpt_formats::run::DataFingerprint>,
    log: &mut RunLog<'_>,
) -> Result<Option<String>> {
    let data_change = data_change(config, resume, fingerprint)?;
    if let Some(change) = &data_change {
        log.line(&format!(
            "warning: --allow-data-change: resuming on changed data: {change} (recorded in {})",
            h5gpt_formats::run::SEGMENTS_FILE
        ));
    }
    Ok(data_change)
}

/// What the run's checkpoints record of it: the seed, the global batch, the rows' length
/// and those held out, the tokenizer, the blend and the data's fingerprint.
fn run_record(
    start: &Start,
    global_batch: usize,
    data: &OpenedData,
    tokenizer: SavedTokenizer,
    blend: Option<BlendRecord>,
    fingerprint: Option<h5gpt_formats::run::DataFingerprint>,
) -> RunRecord {
    RunRecord {
        seed: start.seed,
        global_batch,
        seq_len: data.set.seq_len(),
        held_out: data.held_out,
        tokenizer,
        blend,
        data: fingerprint,
    }
}

/// What every step needs to measure itself: tokens, FLOPs per token, the device's peak.
fn step_context(config: &TrainConfig, plan: &StepPlan, seq: usize, device: Device) -> StepContext {
    StepContext {
        tokens_per_step: plan.tokens_per_step,
        flops_per_token: config.model.flops_per_token(seq),
        peak_flops: peak_flops(config, device),
        device,
        skip_nonfinite: config.skip_nonfinite,
        log_every: config.log_every,
    }
}

/// The progress bar (when shown and steps remain) and the note that `loss.png` has no text
/// without a font.
fn log_start_notes(handles: &RunHandles, start: &Start, total_steps: usize, log: &mut RunLog<'_>) {
    if handles.progress && start.step < total_steps {
        log.show_progress(start.step, total_steps);
    }
    if h5gpt_core::plot::font_status().is_none() {
        log.line(&format!("note: {}", h5gpt_core::plot::NO_FONT_HINT));
    }
}

/// Creates the run folder; rank 0 writes the TOML config it was given (`config.toml`) and the
/// Model Zoo config's report into it.
fn write_run_files(config: &TrainConfig, handles: &RunHandles, rank: usize) -> Result<()> {
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    if let (Some(toml), 0) = (&handles.config_toml, rank) {
        h5gpt_formats::fsio::write_atomic(&config.out.join("config.toml"), toml.as_bytes())?;
    }
    if let (Some(report), 0) = (&config.config_report, rank) {
        h5gpt_formats::fsio::write_atomic(
            &config.out.join(h5gpt_core::cerebras::REPORT_FILE),
            report.as_bytes(),
        )?;
    }
    Ok(())
}

/// The training loader: a blend's weighted sampler, the rows in order (`--shuffle false`),
/// or the shuffled sample stream.
fn open_loader(
    config: &TrainConfig,
    blend: Option<&BlendRecord>,
    data: &OpenedData,
    start: &Start,
    layout: BatchLayout,
) -> Result<Loader> {
    let loader_config = LoaderConfig {
        seed: start.seed,
        layout,
        start_position: start.position,
        prefetch: 4,
    };
    Ok(match (blend, &data.blend) {
        (Some(record), Some(sets)) => Loader::with_sampler(
            sets.sets.clone(),
            record.sampler(start.seed)?,
            loader_config,
        )?,
        (Some(_), _) | (_, Some(_)) if !config.shuffle => bail!(with_hint(
            "--shuffle false with a --weights blend: a blend draws its rows by weight",
            "drop --weights, or --shuffle",
        )),
        _ if !config.shuffle => Loader::with_sampler(
            vec![data.set.clone()],
            h5gpt_formats::blend::Sampler::Plain(h5gpt_formats::stream::SampleStream::sequential(
                data.set.len() as u64,
            )),
            loader_config,
        )?,
        _ => Loader::new(data.set.clone(), loader_config)?,
    })
}

/// The largest token id plus one the batches may hold. Ids are checked against the
/// tokenizer's vocabulary, not the padded embedding: ids in the padding rows are no tokens at
/// all (a corrupt shard), and would train on garbage.
fn vocab_limit(config: &TrainConfig, data: &OpenedData) -> usize {
    data.set
        .data_params()
        .and_then(|p| p.post_process.vocab_size)
        .map_or(config.model.vocab_size, |v| v as usize)
}

/// The `--eval-task` files (their first `--eval-task-limit` items), with the run's tokenizer.
fn eval_tasks(config: &TrainConfig, saved: &SavedTokenizer) -> Result<Option<EvalTasks>> {
    if config.eval_tasks.is_empty() {
        return Ok(None);
    }
    let tokenizer = match &saved.json {
        Some(json) => h5gpt_tokenizer::tokenizer::Tokenizer::from_json(
            &saved.name,
            json.clone(),
            saved.eos_id.map_or(
                h5gpt_tokenizer::tokenizer::Eos::Detect,
                h5gpt_tokenizer::tokenizer::Eos::Id,
            ),
            Path::new("tokenizer.json"),
        )?,
        None => h5gpt_tokenizer::tokenizer::Tokenizer::load(&saved.name, None, saved.eos_id)
            .map_err(|e| {
                anyhow!(with_hint(
                format!(
                    "--eval-task: the run's tokenizer `{}` cannot encode text: {e}",
                    saved.name,
                ),
                "task files need the tokenizer the shards were made with (gpt2, a tokenizer.json)",
            ))
            })?,
    };
    let mut tasks = Vec::new();
    for path in &config.eval_tasks {
        let task = h5gpt_formats::task::Task::read(path, config.eval_task_limit)?;
        if tasks
            .iter()
            .any(|t: &h5gpt_formats::task::Task| t.name == task.name)
        {
            bail!(
                "--eval-task {}: a second task named `{}` (tasks are named by their file stem)",
                path.display(),
                task.name
            );
        }
        tasks.push(task);
    }
    Ok(Some(EvalTasks { tokenizer, tasks }))
}

/// What the run trains and evaluates on (tokenizer, seq_len, the train and val shards'
/// checksums), recorded in `state.json` so `plan fit` can refuse runs of different data.
fn data_fingerprint(
    config: &TrainConfig,
    seq: usize,
) -> Result<Option<h5gpt_formats::run::DataFingerprint>> {
    let (train_dirs, mut val_dirs) = split_dirs(&config.shards);
    if !config.val_shards.is_empty() {
        val_dirs = config.val_shards.clone();
    }
    Ok(h5gpt_formats::run::DataFingerprint::of_dirs(
        &train_dirs,
        &val_dirs,
        seq,
    )?)
}

/// What a resume would change in what the run reads, compared with the checkpoint's run: its
/// training data (the fingerprint `state.json` records) and its `--shuffle` (from the segment
/// of `segments.jsonl` that fed the checkpoint's step). `None` when nothing changes (or for a
/// fresh start); a refusal naming the difference unless `--allow-data-change`, with which the
/// difference is returned, for the log and `segments.jsonl`. (The tokenizer is checked by
/// content beforehand; a blend's weights have `--reweight`.)
fn data_change(
    config: &TrainConfig,
    resume: Option<&(PathBuf, CheckpointState)>,
    now: Option<&h5gpt_formats::run::DataFingerprint>,
) -> Result<Option<String>> {
    let Some((checkpoint, state)) = resume else {
        return Ok(None);
    };
    let segments = h5gpt_formats::run::read_segments(&config.out).unwrap_or_default();
    let fed = h5gpt_formats::run::segment_of_step(&segments, state.step);
    let mut changes = Vec::new();
    if let Some(then) = fed.filter(|s| s.shuffle != config.shuffle) {
        changes.push(format!(
            "--shuffle {} then, --shuffle {} now (the rows would be read in another order, and rows already read in this epoch read again)",
            then.shuffle, config.shuffle
        ));
    }
    if let (Some(then), Some(now)) = (&state.data, now) {
        if then.seq_len != now.seq_len {
            changes.push(format!(
                "rows of {} tokens then, {} now",
                then.seq_len, now.seq_len
            ));
        }
        if then.train != now.train {
            let before = fed.map_or_else(
                || "its shards".to_string(),
                |s| format!("--shards {}", describe(&s.shards)),
            );
            changes.push(format!(
                "other training data: the checkpoint's run read {before} (content fingerprint {}), this run --shards {} (content fingerprint {})",
                then.train,
                describe(&config.shards),
                now.train
            ));
        }
    }
    if changes.is_empty() {
        return Ok(None);
    }
    let what = changes.join("; ");
    if !config.allow_data_change {
        bail!(with_hint(
            format!(
                "{}: resuming would change what the run reads: {what}",
                checkpoint.display(),
            ),
            format!(
                "resume with the run's --shards and --shuffle (its config.toml has them); pass --allow-data-change to continue from the checkpoint on this data (recorded in {}); or use another --out",
                h5gpt_formats::run::SEGMENTS_FILE,
            ),
        ));
    }
    Ok(Some(what))
}

/// The largest divisor of `rows` that is at most `micro_batch`: a rank's micro-batch.
fn rank_micro_batch(rows: usize, micro_batch: usize) -> usize {
    (1..=micro_batch.min(rows))
        .rev()
        .find(|m| rows % m == 0)
        .unwrap_or(1)
}

/// Joins the process group `launch` describes: Gloo on CPU, NCCL on CUDA (bound to the rank's
/// device `cuda_device`).
fn join_group(
    launch: &Launch,
    cuda_device: Option<usize>,
    timeout: Duration,
) -> Result<ProcessGroup> {
    let backend = if cuda_device.is_some() {
        Backend::Nccl
    } else {
        Backend::Gloo
    };
    if !backend.available() {
        bail!(with_hint(
            "NCCL backend not built: this train was compiled without the NCCL headers, so ranks on CUDA cannot talk",
            "rebuild with NCCL (docs/distributed.md), or train data-parallel on CPU with --device cpu (Gloo)",
        ));
    }
    Ok(ProcessGroup::connect(
        launch,
        backend,
        cuda_device,
        timeout,
    )?)
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
        bail!(with_hint(
            format!(
                "rank {}: rank 0 resumes from {}, which this rank cannot read",
                group.rank(),
                path.display(),
            ),
            "--out must be a directory every rank sees (a shared filesystem)",
        ));
    }
    let state = checkpoint::read_state(&path)?;
    Ok((Some((path, state)), skipped))
}

/// Checks every shard's checksum against its manifest before step 0. Local rank 0 of each
/// node checks (shards may be node-local); the other ranks wait for it, and every rank stops
/// when a check failed anywhere.
fn verify_shards(
    config: &TrainConfig,
    handles: &RunHandles,
    group: Option<&ProcessGroup>,
    device: Device,
    log: &mut RunLog<'_>,
) -> Result<()> {
    if config.verify == VerifyMode::Off {
        log.line("verify: off (--no-verify): shard checksums are not checked");
        return Ok(());
    }
    let local_rank0 = handles.launch.as_ref().is_none_or(|l| l.local_rank == 0);
    let result = if local_rank0 {
        check_checksums(config, log)
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

fn check_checksums(config: &TrainConfig, log: &mut RunLog<'_>) -> Result<()> {
    let (train_dirs, val_dirs) = split_dirs(&config.shards);
    for dir in train_dirs.iter().chain(&val_dirs) {
        let params = h5gpt_formats::DataParams::read_from_dir(dir)?;
        let Some(params) = params.filter(|p| p.h5gpt.is_some()) else {
            log.line(&format!(
                "verify: {}: no h5gpt manifest, so no checksums to check",
                dir.display()
            ));
            continue;
        };
        let full = config.verify == VerifyMode::Full;
        let o = h5gpt_formats::verify::verify_checksums(dir, &params, &config.out, full)
            .with_context(|| format!("{}: shard verification before step 0", dir.display()))?;
        log.line(&format!(
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
            bail!(with_hint(
                format!(
                    "{}: checkpoint of a weighted blend, but this run has no --weights",
                    ckpt(),
                ),
                "resume with the run's --shards and --weights (its config.toml has them), or use another --out",
            ));
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
        (Some(_), None) => bail!(with_hint(
            format!(
                "{}: checkpoint of a run that read its shard sets as one; --weights would draw another order",
                ckpt(),
            ),
            "resume without --weights, or start the blend in another --out",
        )),
        (Some(state), Some(saved)) => {
            let rows = |sets: &[BlendSet]| sets.iter().map(|s| s.rows).collect::<Vec<_>>();
            if rows(&saved.sets) != rows(&sets) {
                bail!(with_hint(
                    format!(
                        "{}: checkpoint of a blend of {} sets of {:?} rows; this run blends {} sets of {:?} rows",
                        ckpt(),
                        saved.sets.len(),
                        rows(&saved.sets),
                        sets.len(),
                        rows(&sets),
                    ),
                    "resume with the run's --shards (its config.toml has them), or use another --out",
                ));
            }
            let same = saved
                .weights()
                .iter()
                .zip(&weights)
                .all(|(a, b)| (a - b).abs() < 1e-12);
            let mut phases = saved.phases.clone();
            if !same {
                if !config.reweight {
                    bail!(with_hint(
                        format!(
                            "{}: checkpoint of a blend with weights {:?}; this run has {:?}",
                            ckpt(),
                            saved.weights(),
                            weights,
                        ),
                        "pass --reweight to continue from the checkpoint with the new weights (each set continues its own order), or resume with the old --weights",
                    ));
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
    data_change: Option<String>,
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
        data_change,
    };
    h5gpt_formats::run::append_segment(&config.out, &segment)?;
    Ok(())
}

/// The training data as opened: the sample stream's set(s) and what validation reads.
struct OpenedData {
    /// The one set, or a blend's first (for its shape and data_params).
    set: Arc<h5gpt_formats::ShardSet>,
    val: Option<Arc<h5gpt_formats::ShardSet>>,
    source: EvalSource,
    blend: Option<BlendData>,
    /// Rows the sample stream draws from.
    train_rows: usize,
    /// Rows held out of the training set for validation (not blended).
    held_out: usize,
}

/// The steps of a run: the global batch, its tokens, how many steps and the LR schedule.
struct StepPlan {
    global: usize,
    tokens_per_step: u64,
    total_steps: usize,
    schedule: LrSchedule,
}

/// Where a run starts: step, data position and seed, from a checkpoint or from scratch.
struct Start {
    step: usize,
    position: u64,
    seed: u64,
}

/// The device this process trains on (the rank's GPU, picked by its local rank when the
/// options were resolved: [`crate::device::select`]) and its process group (`None`: a single
/// process), set up in the order [`startup_actions`] gives, before any tensor exists.
fn connect(config: &TrainConfig, handles: &RunHandles) -> Result<(Device, Option<ProcessGroup>)> {
    let device = config.device;
    let mut group = None;
    for action in startup_actions(device, handles.launch.is_some()) {
        match (action, &handles.launch) {
            (StartupAction::SetCudaDevice(index), _) => crate::shim::cuda_set_device(index)
                .with_context(|| format!("cannot make CUDA device {index} current"))?,
            (StartupAction::JoinGroup { bound_device }, Some(launch)) => {
                group = Some(join_group(launch, bound_device, config.dist_timeout)?);
            }
            (StartupAction::JoinGroup { .. }, None) => unreachable!("a group only with a launch"),
        }
    }
    Ok((device, group))
}

/// The checkpoint to resume from, agreed on by the ranks, and the lines about newer ones
/// skipped: the newest that loads and verifies (a corrupt or truncated newer one is skipped,
/// and the log says which and why). An error under `--resume` when there is none.
fn find_resume(
    config: &TrainConfig,
    group: Option<&ProcessGroup>,
    device: Device,
) -> Result<checkpoint::Resume> {
    let (resume, skipped) = match group {
        Some(group) => agree_on_checkpoint(&config.out, group, device)?,
        None => checkpoint::newest_usable_checkpoint(&config.out)?,
    };
    if resume.is_none() && config.require_checkpoint {
        bail!(
            "--resume: {} has no complete checkpoint to resume from",
            config.out.display()
        );
    }
    Ok((resume, skipped))
}

/// Opens the data: one set split into training and validation rows, or a blend's sets. A
/// resumed run holds out what it held out before.
fn open_data(config: &TrainConfig, resumed: Option<&CheckpointState>) -> Result<OpenedData> {
    check_manifests(config)?;
    let eval_rows = config.eval_batches * config.micro_batch;
    let blend = match &config.weights {
        Some(_) => Some(open_blend(&config.shards, |i, rows| match resumed {
            Some(state) => state
                .blend
                .as_ref()
                .and_then(|b| b.sets.get(i))
                .map_or(0, |s| s.held_out),
            None if config.eval_every > 0 || config.final_eval => held_out_rows(rows, eval_rows),
            None => 0,
        })?),
        None => None,
    };
    let DataSplit { train, val, source } = match &blend {
        Some(blend) => DataSplit {
            train: blend.sets[0].clone(),
            val: None,
            source: EvalSource::None,
        },
        None => open_split(&config.shards, &config.val_shards, |rows| match resumed {
            Some(state) => state.held_out,
            None if config.eval_every > 0 || config.final_eval => held_out_rows(rows, eval_rows),
            None => 0,
        })?,
    };
    let train_rows = blend
        .as_ref()
        .map_or(train.len(), |b| b.sets.iter().map(|s| s.len()).sum());
    let held_out = match source {
        EvalSource::HeldOut(rows) => rows,
        EvalSource::ValDir | EvalSource::None => 0,
    };
    Ok(OpenedData {
        set: train,
        val,
        source,
        blend,
        train_rows,
        held_out,
    })
}

/// Every training and validation directory's manifest agrees with itself and its tokenizer:
/// the check `inspect --verify` runs
/// ([`verify_shard_manifest`](h5gpt_tokenizer::shard_manifest::verify_shard_manifest)).
fn check_manifests(config: &TrainConfig) -> Result<()> {
    let (train_dirs, mut val_dirs) = split_dirs(&config.shards);
    if !config.val_shards.is_empty() {
        val_dirs = config.val_shards.clone();
    }
    for dir in train_dirs.iter().chain(&val_dirs).filter(|d| d.is_dir()) {
        if let Some(params) = h5gpt_formats::DataParams::read_from_dir(dir)? {
            h5gpt_tokenizer::shard_manifest::verify_shard_manifest(dir, &params)?;
        }
    }
    Ok(())
}

/// The shards' rows must fit the model's context, and their vocabulary its embedding.
fn check_shapes(config: &TrainConfig, set: &h5gpt_formats::ShardSet) -> Result<()> {
    let model = &config.model;
    let seq = set.seq_len();
    if seq > model.n_ctx {
        bail!(with_hint(
            format!(
                "{}: rows of {seq} tokens do not fit the model's context of {}",
                describe(&config.shards),
                model.n_ctx,
            ),
            format!(
                "re-run preprocess with --seq-len {} or pick a model with a longer context (--n-ctx {seq})",
                model.n_ctx,
            ),
        ));
    }
    if let Some(vocab) = set.data_params().and_then(|p| p.post_process.vocab_size) {
        if vocab as usize > model.embedding_rows() {
            bail!(with_hint(
                format!(
                    "{}: the shards' vocabulary ({vocab} tokens) is larger than the model's ({})",
                    describe(&config.shards),
                    model.embedding_rows(),
                ),
                format!(
                    "set vocab_size to at least {vocab}, or re-run preprocess with the model's tokenizer",
                ),
            ));
        }
    }
    Ok(())
}

/// Says where the validation rows come from.
fn log_eval_source(config: &TrainConfig, data: &OpenedData, log: &mut RunLog<'_>) {
    match &data.source {
        EvalSource::ValDir => log.line(&format!(
            "eval: {} rows of {}",
            data.val.as_ref().map_or(0, |v| v.len()),
            describe(&split_dirs(&config.shards).1)
        )),
        EvalSource::HeldOut(rows) => log.line(&format!(
            "eval: the last {rows} rows of {} are held out (training never sees them)",
            describe(&config.shards)
        )),
        EvalSource::None if config.eval_every > 0 && data.blend.is_none() => {
            log.line("eval: off (no val/ directory and too few rows to hold any out)")
        }
        EvalSource::None => {}
    }
}

/// The evaluation sets: the one set, or each blend set that has rows to evaluate on, with its
/// weight in the blended loss.
fn eval_sets(data: &OpenedData, blend: Option<&BlendRecord>) -> Vec<EvalSet> {
    match (blend, &data.blend) {
        (Some(record), Some(sets)) => sets
            .vals
            .iter()
            .zip(&record.sets)
            .zip(record.weights())
            .filter_map(|((val, s), w)| {
                val.clone().map(|rows| EvalSet {
                    name: s.path.display().to_string(),
                    rows,
                    weight: *w,
                })
            })
            .collect(),
        _ => data
            .val
            .iter()
            .map(|rows| EvalSet {
                name: String::new(),
                rows: rows.clone(),
                weight: 1.0,
            })
            .collect(),
    }
}

/// Says what the blend draws, and how it is evaluated.
fn log_blend(
    config: &TrainConfig,
    record: &BlendRecord,
    eval_sets: &[EvalSet],
    log: &mut RunLog<'_>,
) {
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
    log.line(&format!(
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
        log.line(&format!(
            "eval: per set ({}) and blended by weight",
            if eval_sets.is_empty() {
                "none has a val/ directory or rows to hold out".to_string()
            } else {
                eval_sets
                    .iter()
                    .map(|e| e.name.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ));
    }
}

/// The global batch, the number of steps and the learning-rate schedule; a resumed run must
/// have its checkpoint's batch.
fn plan_steps(
    config: &TrainConfig,
    data: &OpenedData,
    resumed: Option<&CheckpointState>,
    log: &mut RunLog<'_>,
) -> Result<StepPlan> {
    let seq = data.set.seq_len();
    let (global, notes) = match config.batch_rows {
        Some(rows) => (rows, Vec::new()),
        None => global_batch(
            config.total_batch_tokens,
            seq,
            config.micro_batch,
            data.train_rows,
        ),
    };
    for note in notes {
        log.line(&format!("note: {note}"));
    }
    if let Some(state) = resumed {
        if state.global_batch != global || state.seq_len != seq {
            bail!(with_hint(
                format!(
                    "{}: checkpoint of a run with a global batch of {} rows of {} tokens, this run has {global} rows of {seq}",
                    config.out.display(),
                    state.global_batch,
                    state.seq_len,
                ),
                "use the same --total-batch-tokens and --micro-batch, or another --out",
            ));
        }
    }
    let tokens_per_step = (global * seq) as u64;
    let total_steps = match (config.max_steps, config.max_tokens) {
        (Some(steps), _) => steps,
        (None, Some(tokens)) => tokens.div_ceil(tokens_per_step).max(1) as usize,
        (None, None) => ((config.epochs * data.train_rows as f64) / global as f64)
            .ceil()
            .max(1.0) as usize,
    };
    let warmup_steps = config.warmup_tokens.map_or(config.warmup_steps, |t| {
        t.div_ceil(tokens_per_step) as usize
    });
    Ok(StepPlan {
        global,
        tokens_per_step,
        total_steps,
        schedule: LrSchedule {
            max_lr: config.lr,
            min_lr_ratio: config.min_lr_ratio,
            warmup_steps,
            decay_steps: total_steps,
        },
    })
}

/// The model's starting weights: the checkpoint's (with the optimizer's state, the step, data
/// position and seed), a Hugging Face GPT-2's (`--init-from-hf`), or the fresh initialization.
fn initialize(
    config: &TrainConfig,
    resume: Option<&(PathBuf, CheckpointState)>,
    vs: &mut nn::VarStore,
    opt: &mut AdamW,
    log: &mut RunLog<'_>,
) -> Result<Start> {
    let model_cfg = config.model;
    if let Some((ckpt, state)) = resume {
        let options = config.out.join("config.toml");
        checkpoint::restore(ckpt, state, &model_cfg, vs, opt, &options)?;
        if state.seed != config.seed {
            log.line(&format!(
                "note: continuing the checkpoint's data order (seed {}), not --seed {}",
                state.seed, config.seed
            ));
        }
        log.line(&format!(
            "resuming from {} (step {})",
            ckpt.display(),
            state.step
        ));
        return Ok(Start {
            step: state.step,
            position: state.position,
            seed: state.seed,
        });
    }
    if let Some(dir) = &config.init_from_hf {
        if model_cfg.mup.is_some() {
            bail!(with_hint(
                format!(
                    "{}: cannot start a μP model from Hugging Face GPT-2 weights (they are in the standard parameterization)",
                    dir.display(),
                ),
                "drop --mup, or --init-from-hf",
            ));
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
        crate::hf::copy_into(vs, &tensors)?;
        log.line(&format!("initialized from {}", dir.display()));
    }
    Ok(Start {
        step: 0,
        position: 0,
        seed: config.seed,
    })
}

/// Peak FLOP/s for MFU: `--peak-flops`, else looked up from the name of the GPU this rank uses
/// (none on CPU).
fn peak_flops(config: &TrainConfig, device: Device) -> Option<f64> {
    config.peak_flops.or_else(|| match device {
        Device::Cuda(index) => gpu_name(index).and_then(|name| peak_bf16_flops(&name)),
        _ => None,
    })
}

/// How each global batch is cut: over the ranks, then into micro-batches.
fn batch_layout(
    config: &TrainConfig,
    global: usize,
    rank: usize,
    world: usize,
    log: &mut RunLog<'_>,
) -> Result<BatchLayout> {
    if global % world != 0 {
        bail!(with_hint(
            format!(
                "a global batch of {global} rows does not split over {world} ranks",
            ),
            "pick --total-batch-tokens and --micro-batch so that the rows per step are a multiple of the ranks",
        ));
    }
    let layout = BatchLayout {
        global_batch: global,
        micro_batch: rank_micro_batch(global / world, config.micro_batch),
        world_size: world,
        rank,
    };
    if world > 1 && layout.micro_batch != config.micro_batch {
        log.line(&format!(
            "note: {} rows per rank per step: micro-batch {} instead of {}",
            layout.per_rank(),
            layout.micro_batch,
            config.micro_batch
        ));
    }
    Ok(layout)
}

/// The plan lines: μP's settings, the data-parallel layout, and the steps, tokens and FLOPs.
#[allow(clippy::too_many_arguments)]
fn log_plan(
    config: &TrainConfig,
    plan: &StepPlan,
    data: &OpenedData,
    layout: BatchLayout,
    seq: usize,
    ctx: &StepContext,
    buckets: Option<&GradBuckets>,
    log: &mut RunLog<'_>,
) {
    let model_cfg = &config.model;
    if let Some(mup) = model_cfg.mup {
        log.line(&format!(
            "μP: on | m = {} / {} = {} | hidden LR {:.4e} (η/m) | embedding output × {} | logits × 1/m | attention 1/d_head | σ_base {}",
            model_cfg.n_embd,
            mup.base_width,
            model_cfg.width_mult(),
            config.lr / model_cfg.width_mult(),
            mup.embed_mult,
            mup.init_std
        ));
    }
    if let Some(buckets) = buckets {
        log.line(&format!(
            "data parallel: {} ranks ({}) | {} rows per rank per step | {} gradient buckets of at most {} MB | timeout {}s",
            layout.world_size,
            if ctx.device.is_cuda() { "nccl" } else { "gloo" },
            layout.per_rank(),
            buckets.len(),
            BUCKET_BYTES >> 20,
            config.dist_timeout.as_secs_f64()
        ));
    }
    let (total_steps, global) = (plan.total_steps, plan.global);
    let tokens = (total_steps as u64 * plan.tokens_per_step) as f64;
    log.line(&format!(
        "plan: {total_steps} steps × {global} rows × {seq} tokens = {tokens:.3e} tokens ({:.2} epochs of {} rows) | {} micro-batches of {} per step | warm-up {} steps | {} | {:.3e} FLOPs",
        (total_steps * global) as f64 / data.train_rows as f64,
        data.train_rows,
        layout.micro_steps(),
        layout.micro_batch,
        plan.schedule.warmup_steps,
        config.precision.name(),
        ctx.flops_per_token * tokens
    ));
}
