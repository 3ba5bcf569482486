//! The training data loader: walks the [sample stream](crate::stream) over a [`ShardSet`],
//! gathers each micro-batch into contiguous row-major buffers on a background thread, and keeps
//! a few batches prefetched.
//!
//! Its whole state is [`Loader::position`] (the stream position at the last completed
//! optimizer-step boundary) plus the seed: save those two numbers and a new loader — with any
//! world size — continues exactly where this one stopped.

use crate::blend::Sampler;
use crate::error::{FormatError, Result};
use crate::reader::{ExampleMut, ShardSet};
use crate::stream::{BatchLayout, SampleStream};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Loader settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Seed of the sample stream.
    pub seed: u64,
    /// Global batch, micro-batch, world size and rank.
    pub layout: BatchLayout,
    /// Stream position to start at (0, or a saved [`Loader::position`]).
    pub start_position: u64,
    /// Micro-batches prepared ahead of the consumer.
    pub prefetch: usize,
}

/// One micro-batch: `rows × seq_len` tokens per buffer, row-major, ready to become tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Stream position where this batch's optimizer step starts.
    pub step_start: u64,
    /// Index of this micro-batch within its step on this rank.
    pub micro_step: usize,
    /// Micro-batches per step on this rank.
    pub micro_steps: usize,
    /// Rows (samples) in the batch.
    pub rows: usize,
    /// Tokens per row.
    pub seq_len: usize,
    /// `input_ids`, `[rows, seq_len]`.
    pub input_ids: Vec<i32>,
    /// `attention_mask`, `[rows, seq_len]`: 1 where the label counts in the loss.
    pub attention_mask: Vec<i32>,
    /// `labels`, `[rows, seq_len]`.
    pub labels: Vec<i32>,
    /// The example id of each row.
    pub sample_ids: Vec<u64>,
    /// Stream position of the first row.
    pub first_position: u64,
}

impl Batch {
    /// Whether this is the last micro-batch of its step on this rank.
    pub fn is_last_micro_step(&self) -> bool {
        self.micro_step + 1 == self.micro_steps
    }
}

struct Buffers {
    input_ids: Vec<i32>,
    attention_mask: Vec<i32>,
    labels: Vec<i32>,
    sample_ids: Vec<u64>,
}

/// A prefetching loader over a shard set. Infinite: it runs through epoch after epoch.
pub struct Loader {
    receiver: Option<Receiver<Result<Batch>>>,
    recycle: Sender<Buffers>,
    worker: Option<JoinHandle<()>>,
    layout: BatchLayout,
    epoch_len: u64,
    position: u64,
    record: Option<std::fs::File>,
}

/// Test-only hook: with `H5GPT_RECORD_FED=DIR`, every loader appends one JSON line per
/// micro-batch it hands out to `DIR/fed-rank{R}.jsonl` (`step_start`, `micro`, `ids`), so tests
/// can compare what training was fed with what `inspect --run` computes.
pub const RECORD_FED_ENV: &str = "H5GPT_RECORD_FED";

fn open_record(rank: usize) -> Result<Option<std::fs::File>> {
    let Some(dir) = std::env::var_os(RECORD_FED_ENV) else {
        return Ok(None);
    };
    let path = std::path::Path::new(&dir).join(format!("fed-rank{rank}.jsonl"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(Some)
        .map_err(|e| FormatError::io(path, e))
}

impl Loader {
    /// Starts the background thread.
    pub fn new(set: Arc<ShardSet>, config: LoaderConfig) -> Result<Loader> {
        let sampler = Sampler::Plain(SampleStream::new(set.len() as u64, config.seed));
        Self::with_sampler(vec![set], sampler, config)
    }

    /// Starts the background thread reading `sets` in the order of `sampler` (a plain stream
    /// over one set, or a [blend](crate::blend) of several; `config.seed` is not used).
    pub fn with_sampler(
        sets: Vec<Arc<ShardSet>>,
        sampler: Sampler,
        config: LoaderConfig,
    ) -> Result<Loader> {
        config.layout.validate()?;
        if sets.is_empty() || sets.iter().any(|s| s.is_empty()) {
            return Err(FormatError::Config(
                "the shard set holds no examples".into(),
            ));
        }
        if sampler.set_rows() != sets.iter().map(|s| s.len() as u64).collect::<Vec<_>>() {
            return Err(FormatError::Config(
                "the sampler does not match the shard sets".into(),
            ));
        }
        let (sender, receiver) = mpsc::sync_channel(config.prefetch.max(1));
        let (recycle, recycled) = mpsc::channel();
        let epoch_len = sets.iter().map(|s| s.len() as u64).sum();
        let worker = std::thread::Builder::new()
            .name("h5gpt-loader".into())
            .spawn(move || produce(&sets, sampler, config, &sender, &recycled))
            .map_err(|e| FormatError::Config(format!("cannot start loader thread: {e}")))?;
        Ok(Loader {
            receiver: Some(receiver),
            recycle,
            worker: Some(worker),
            layout: config.layout,
            epoch_len,
            position: config.start_position,
            record: open_record(config.layout.rank)?,
        })
    }

    /// The next micro-batch.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let received = self
            .receiver
            .as_ref()
            .expect("receiver present until drop")
            .recv();
        match received {
            Ok(Ok(batch)) => {
                if let Some(file) = &mut self.record {
                    use std::io::Write;
                    let ids: Vec<String> = batch.sample_ids.iter().map(u64::to_string).collect();
                    let _ = writeln!(
                        file,
                        "{{\"step_start\":{},\"micro\":{},\"ids\":[{}]}}",
                        batch.step_start,
                        batch.micro_step,
                        ids.join(",")
                    );
                }
                if batch.is_last_micro_step() {
                    self.position = batch.step_start + self.layout.global_batch as u64;
                }
                Ok(batch)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(FormatError::Config(
                "the loader thread stopped unexpectedly".into(),
            )),
        }
    }

    /// Hands a batch's buffers back for reuse (optional; saves allocations).
    pub fn recycle(&self, batch: Batch) {
        let _ = self.recycle.send(Buffers {
            input_ids: batch.input_ids,
            attention_mask: batch.attention_mask,
            labels: batch.labels,
            sample_ids: batch.sample_ids,
        });
    }

    /// The stream position after the last step whose micro-batches were all handed out: the
    /// one number (with the seed) to save in a checkpoint.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Epochs completed at [`position`](Self::position), as a fraction.
    pub fn epochs(&self) -> f64 {
        self.position as f64 / self.epoch_len as f64
    }

    /// The batch layout.
    pub fn layout(&self) -> BatchLayout {
        self.layout
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the channel makes the worker's next send fail, so it exits.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn produce(
    sets: &[Arc<ShardSet>],
    mut sampler: Sampler,
    config: LoaderConfig,
    sender: &SyncSender<Result<Batch>>,
    recycled: &Receiver<Buffers>,
) {
    let layout = config.layout;
    let seq = sets[0].seq_len();
    let mut step_start = config.start_position;
    loop {
        for micro in 0..layout.micro_steps() {
            let range = layout.micro_range(step_start, micro);
            let mut buffers = recycled.try_recv().unwrap_or_else(|_| Buffers {
                input_ids: Vec::new(),
                attention_mask: Vec::new(),
                labels: Vec::new(),
                sample_ids: Vec::new(),
            });
            let rows = layout.micro_batch;
            for buf in [
                &mut buffers.input_ids,
                &mut buffers.attention_mask,
                &mut buffers.labels,
            ] {
                buf.resize(rows * seq, 0);
            }
            buffers.sample_ids.clear();
            let mut result = Ok(());
            for (row, position) in range.clone().enumerate() {
                let sample = sampler.sample(position);
                buffers.sample_ids.push(sample.id);
                let cols = row * seq..(row + 1) * seq;
                result = sets[sample.set].read_example(
                    sample.row as usize,
                    ExampleMut {
                        input_ids: &mut buffers.input_ids[cols.clone()],
                        attention_mask: &mut buffers.attention_mask[cols.clone()],
                        labels: &mut buffers.labels[cols],
                    },
                );
                if result.is_err() {
                    break;
                }
            }
            let message = result.map(|()| Batch {
                step_start,
                micro_step: micro,
                micro_steps: layout.micro_steps(),
                rows,
                seq_len: seq,
                input_ids: buffers.input_ids,
                attention_mask: buffers.attention_mask,
                labels: buffers.labels,
                sample_ids: buffers.sample_ids,
                first_position: range.start,
            });
            let failed = message.is_err();
            if sender.send(message).is_err() || failed {
                return;
            }
        }
        step_start += layout.global_batch as u64;
    }
}
