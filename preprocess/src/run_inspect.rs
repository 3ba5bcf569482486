//! `inspect --run RUN`: the sample audit of a training run, on top of
//! [`h5gpt_formats::audit`]: the rows a step read (optionally decoded), the per-epoch
//! coverage proof, and the steps whose batches contained a text.

use anyhow::{bail, Context, Result};
use h5gpt_formats::audit::RunAudit;
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::reader::ExampleBuf;
use h5gpt_formats::run::Segment;
use h5gpt_formats::ShardSet;
use h5gpt_tokenizer::tokenizer::Tokenizer;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The training rows of a run's segment: one set per blend set (one set unless blended).
pub struct RunData {
    sets: Vec<ShardSet>,
    offsets: Vec<u64>,
    tokenizer: Option<Tokenizer>,
}

impl RunData {
    /// Opens the training directories `segment` read, as it read them (held-out tails
    /// excluded); `decode` loads their tokenizer too.
    pub fn open(segment: &Segment, decode: bool) -> Result<RunData> {
        let parts: Vec<(Vec<PathBuf>, u64)> = match &segment.blend {
            Some(blend) => blend
                .sets
                .iter()
                .map(|s| (s.train_dirs.clone(), s.rows))
                .collect(),
            None => vec![(segment.train_dirs.clone(), segment.train_rows)],
        };
        let mut sets = Vec::new();
        let mut offsets = Vec::new();
        let mut total = 0;
        for (dirs, rows) in parts {
            let names = dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let set = ShardSet::open(&dirs)
                .with_context(|| format!("cannot open the run's training shards {names}"))?;
            if (set.len() as u64) < rows {
                bail!(with_hint(
                    format!(
                        "{names}: {} rows, but the run read {rows} from it",
                        set.len(),
                    ),
                    "the shards changed since the run; the audit needs the data the run trained on",
                ));
            }
            offsets.push(total);
            total += rows;
            sets.push(set.slice(0..rows as usize));
        }
        let tokenizer = if decode {
            crate::inspect::decoding_tokenizer(&sets[0])?
        } else {
            None
        };
        Ok(RunData {
            sets,
            offsets,
            tokenizer,
        })
    }

    /// The set and its row of global row id `id`.
    fn split(&self, id: u64) -> (usize, u64) {
        let set = self.offsets.partition_point(|&o| o <= id) - 1;
        (set, id - self.offsets[set])
    }

    /// Where row `id` lives.
    pub fn locate(&self, id: u64, position: Option<u64>) -> RowRef {
        let (set, row) = self.split(id);
        let (shard, shard_row) = self.sets[set].locate(row as usize);
        RowRef {
            position,
            id,
            set,
            shard: self.sets[set].shards()[shard].path().to_path_buf(),
            row: shard_row,
            text: None,
        }
    }

    /// The real tokens (attention mask 1) of row `row` of set `set`.
    fn tokens(&self, set: usize, row: u64, buf: &mut ExampleBuf) -> Result<Vec<u32>> {
        self.sets[set].read_example(row as usize, buf.as_mut())?;
        let valid = buf.attention_mask.iter().filter(|&&m| m != 0).count();
        Ok(buf.input_ids[..valid].iter().map(|&t| t as u32).collect())
    }

    /// Row `id` as text, when the tokenizer is known.
    pub fn decode(&self, id: u64) -> Result<Option<String>> {
        let Some(tokenizer) = &self.tokenizer else {
            return Ok(None);
        };
        let (set, row) = self.split(id);
        let mut buf = ExampleBuf::new(self.sets[set].seq_len());
        Ok(Some(
            tokenizer.decode_lossy(&self.tokens(set, row, &mut buf)?),
        ))
    }
}

/// A row of the training data.
#[derive(Debug, Clone, Serialize)]
pub struct RowRef {
    /// Stream position that read it (absent where no position is meant).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Global row id (rows of set `i` come after those of the sets before it).
    pub id: u64,
    /// Blend set (0 unless blended).
    pub set: usize,
    /// Shard file.
    pub shard: PathBuf,
    /// Row within the shard.
    pub row: usize,
    /// The row's text, with `--decode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The rows one rank read in one micro-batch.
#[derive(Debug, Clone, Serialize)]
pub struct FeedReport {
    /// Rank.
    pub rank: usize,
    /// Micro-batch.
    pub micro: usize,
    /// Rows, in order.
    pub rows: Vec<RowRef>,
}

/// `inspect --run RUN --step K`.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step.
    pub step: usize,
    /// 1-based index of the segment (start or resume) that ran it.
    pub segment: usize,
    /// World size then.
    pub world_size: usize,
    /// Rows per step.
    pub global_batch: usize,
    /// Rows per micro-batch.
    pub micro_batch: usize,
    /// Stream position of the step's first row.
    pub position: u64,
    /// Per rank and micro-batch.
    pub feeds: Vec<FeedReport>,
}

/// The rows step `step` of the run fed to each rank and micro-batch.
pub fn step_report(audit: &RunAudit, step: usize, decode: bool) -> Result<StepReport> {
    let feeds = audit.step(step)?;
    let (index, segment) = audit.segment_for(step).expect("step() checked it");
    let data = RunData::open(segment, decode)?;
    let mut out = Vec::new();
    for feed in feeds {
        let mut rows = Vec::new();
        for (position, sample) in feed.positions.clone().zip(&feed.samples) {
            let mut r = data.locate(sample.id, Some(position));
            r.text = data.decode(sample.id)?;
            rows.push(r);
        }
        out.push(FeedReport {
            rank: feed.rank,
            micro: feed.micro,
            rows,
        });
    }
    Ok(StepReport {
        step,
        segment: index + 1,
        world_size: segment.world_size,
        global_batch: segment.global_batch,
        micro_batch: segment.micro_batch,
        position: segment.step_position(step),
        feeds: out,
    })
}

/// One place where the text was found: one row, or two consecutive rows it spans.
#[derive(Debug, Clone, Serialize)]
pub struct FindMatch {
    /// The row(s).
    pub rows: Vec<RowRef>,
    /// For each row, the steps that read it.
    pub steps: Vec<Vec<usize>>,
}

/// `inspect --run RUN --find TEXT`.
#[derive(Debug, Clone, Serialize)]
pub struct FindReport {
    /// The text searched for.
    pub text: String,
    /// Where it was found, in row order.
    pub matches: Vec<FindMatch>,
    /// Every step whose batch contained it (or part of a spanning match).
    pub steps: Vec<usize>,
}

/// The steps of the run whose batches contained `needle`: each training row is decoded, and
/// a match may lie in one row or span two consecutive rows of a set (both are reported).
pub fn find(audit: &RunAudit, needle: &str) -> Result<FindReport> {
    if needle.is_empty() {
        bail!("--find: the text is empty");
    }
    let segment = &audit.segments()[0];
    if audit
        .segments()
        .iter()
        .any(|s| s.set_rows() != segment.set_rows())
    {
        bail!(
            "{}: the run's segments read different data; --find searches the first segment's",
            audit.run().display()
        );
    }
    let data = RunData::open(segment, true)?;
    let Some(tokenizer) = &data.tokenizer else {
        bail!("--find: the run's shards have no tokenizer to decode them with (synthetic data?)");
    };
    let mut matches: Vec<Vec<u64>> = Vec::new();
    for (set, shards) in data.sets.iter().enumerate() {
        let mut buf = ExampleBuf::new(shards.seq_len());
        let mut next = tokenizer.decode_lossy(&data.tokens(set, 0, &mut buf)?);
        for row in 0..shards.len() as u64 {
            let text = next;
            next = if row + 1 < shards.len() as u64 {
                tokenizer.decode_lossy(&data.tokens(set, row + 1, &mut buf)?)
            } else {
                String::new()
            };
            let id = data.offsets[set] + row;
            if text.contains(needle) {
                matches.push(vec![id]);
            }
            // Matches that start in this row and end in the next.
            let joined = format!("{text}{next}");
            let from = text.len().saturating_sub(needle.len() - 1);
            let spans = (from..text.len())
                .filter(|&i| joined.is_char_boundary(i))
                .any(|i| joined[i..].starts_with(needle) && i + needle.len() > text.len());
            if spans && !next.is_empty() {
                matches.push(vec![id, id + 1]);
            }
        }
    }
    let wanted: std::collections::HashSet<u64> = matches.iter().flatten().copied().collect();
    let mut steps_of: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    audit.walk(|step, feed| {
        for sample in &feed.samples {
            if wanted.contains(&sample.id) {
                let steps = steps_of.entry(sample.id).or_default();
                if steps.last() != Some(&step) {
                    steps.push(step);
                }
            }
        }
    })?;
    let mut all_steps = Vec::new();
    let matches = matches
        .into_iter()
        .map(|ids| {
            let steps: Vec<Vec<usize>> = ids
                .iter()
                .map(|id| steps_of.get(id).cloned().unwrap_or_default())
                .collect();
            all_steps.extend(steps.iter().flatten().copied());
            FindMatch {
                rows: ids.iter().map(|&id| data.locate(id, None)).collect(),
                steps,
            }
        })
        .collect();
    all_steps.sort_unstable();
    all_steps.dedup();
    Ok(FindReport {
        text: needle.to_owned(),
        matches,
        steps: all_steps,
    })
}
