//! Opening and validating shard sets, and reading examples out of them.
//!
//! Every shard is validated when the set is opened, cheaply (dataset name, rank, dtype,
//! `seq_len` agreement, the `n_examples` attribute, file length against the dataset's extent,
//! agreement with `data_params.json`), so nothing fails hours into a run. Contiguous,
//! uncompressed little-endian datasets are memory-mapped and examples are copied straight out
//! of the page cache (the fast path); chunked or compressed ones (as Cerebras writes them) are
//! read through HDF5 (the slow path): same results, slower.

use crate::error::{FormatError, Result};
use crate::manifest::DataParams;
use crate::spec::{
    DATASET_NAME, N_EXAMPLES_ATTR, ROWS_PER_EXAMPLE, ROW_ATTENTION_MASK, ROW_INPUT_IDS, ROW_LABELS,
    SHARD_SUFFIX, TOKEN_BYTES,
};
use memmap2::Mmap;
use ndarray::{s, Array3};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a shard's examples are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessPath {
    /// Memory-mapped, copied without HDF5 (contiguous, uncompressed, little-endian int32).
    Fast,
    /// Read through HDF5 (chunked, compressed or big-endian).
    Slow,
}

impl std::fmt::Display for AccessPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AccessPath::Fast => "fast (mmap)",
            AccessPath::Slow => "slow (hdf5)",
        })
    }
}

enum Storage {
    Mapped { map: Mmap, offset: usize },
    Hdf5 { dataset: hdf5::Dataset },
}

/// One validated shard.
pub struct Shard {
    path: PathBuf,
    n_examples: usize,
    seq_len: usize,
    file_bytes: u64,
    storage: Storage,
}

/// The three rows of one example, borrowed from caller-owned buffers.
pub struct ExampleMut<'a> {
    /// `input_ids`, `seq_len` long.
    pub input_ids: &'a mut [i32],
    /// `attention_mask`, `seq_len` long.
    pub attention_mask: &'a mut [i32],
    /// `labels`, `seq_len` long.
    pub labels: &'a mut [i32],
}

/// Owned buffers for one example, reused across reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExampleBuf {
    /// `input_ids`.
    pub input_ids: Vec<i32>,
    /// `attention_mask`.
    pub attention_mask: Vec<i32>,
    /// `labels`.
    pub labels: Vec<i32>,
}

impl ExampleBuf {
    /// Zeroed buffers for rows of `seq_len`.
    pub fn new(seq_len: usize) -> ExampleBuf {
        ExampleBuf {
            input_ids: vec![0; seq_len],
            attention_mask: vec![0; seq_len],
            labels: vec![0; seq_len],
        }
    }

    /// The buffers as a read target.
    pub fn as_mut(&mut self) -> ExampleMut<'_> {
        ExampleMut {
            input_ids: &mut self.input_ids,
            attention_mask: &mut self.attention_mask,
            labels: &mut self.labels,
        }
    }
}

impl Shard {
    /// Opens and validates one shard file.
    pub fn open(path: &Path) -> Result<Shard> {
        let h5err = |e| FormatError::hdf5(path, e);
        let file_bytes = std::fs::metadata(path)
            .map_err(|e| FormatError::io(path, e))?
            .len();
        // No HDF5 file locking: shards are immutable once renamed into place, and a lock would
        // outlive our close when a concurrently spawned child process inherits the descriptor.
        let file = hdf5::File::with_options()
            .with_fapl(|p| p.file_locking(false))
            .open(path)
            .map_err(h5err)?;
        let dataset = file
            .dataset(DATASET_NAME)
            .map_err(|_| FormatError::layout(path, format!("no dataset named `{DATASET_NAME}`")))?;
        let shape = dataset.shape();
        if shape.len() != 3 || shape[1] != ROWS_PER_EXAMPLE {
            return Err(FormatError::layout(
                path,
                format!("dataset `{DATASET_NAME}` has shape {shape:?}, expected [n_examples, 3, seq_len]"),
            ));
        }
        let (n_examples, seq_len) = (shape[0], shape[2]);
        if seq_len == 0 {
            return Err(FormatError::layout(path, "seq_len is 0"));
        }
        let dtype = dataset.dtype().map_err(h5err)?;
        let descriptor = dtype.to_descriptor().map_err(h5err)?;
        if !matches!(
            descriptor,
            hdf5::types::TypeDescriptor::Integer(hdf5::types::IntSize::U4)
        ) {
            return Err(FormatError::layout(
                path,
                format!("dataset `{DATASET_NAME}` has dtype {descriptor:?}, expected int32"),
            ));
        }
        let attr: i64 = file
            .attr(N_EXAMPLES_ATTR)
            .and_then(|a| a.read_scalar())
            .map_err(|_| {
                FormatError::layout(path, format!("missing int64 attribute `{N_EXAMPLES_ATTR}`"))
            })?;
        if attr != n_examples as i64 {
            return Err(FormatError::NExamplesMismatch {
                path: path.into(),
                attr,
                rows: n_examples,
            });
        }
        let data_bytes = (n_examples * ROWS_PER_EXAMPLE * seq_len * TOKEN_BYTES) as u64;
        let little_endian = dtype.byte_order() == hdf5::datatype::ByteOrder::LittleEndian;
        let fast = little_endian && !dataset.is_chunked() && dataset.filters().is_empty();
        let storage = match dataset.offset() {
            Some(offset) if fast => {
                if offset + data_bytes > file_bytes {
                    return Err(FormatError::Truncated {
                        path: path.into(),
                        detail: format!(
                            "dataset needs bytes {offset}..{} but the file has {file_bytes}",
                            offset + data_bytes
                        ),
                    });
                }
                drop(dataset);
                file.close().map_err(h5err)?;
                let handle = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
                // SAFETY: shards are immutable once renamed into place (writers only ever
                // create new files under temporary names), and the extent was checked against
                // the file's length above, so every byte we read is inside the mapping.
                let map = unsafe { Mmap::map(&handle) }.map_err(|e| FormatError::io(path, e))?;
                if (map.len() as u64) < offset + data_bytes {
                    return Err(FormatError::Truncated {
                        path: path.into(),
                        detail: "file shrank while it was being opened".into(),
                    });
                }
                Storage::Mapped {
                    map,
                    offset: offset as usize,
                }
            }
            _ => {
                if n_examples > 0 && dataset.storage_size() == 0 && !dataset.is_chunked() {
                    return Err(FormatError::layout(
                        path,
                        "dataset storage was never written",
                    ));
                }
                Storage::Hdf5 { dataset }
            }
        };
        Ok(Shard {
            path: path.into(),
            n_examples,
            seq_len,
            file_bytes,
            storage,
        })
    }

    /// The shard's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Examples in the shard.
    pub fn n_examples(&self) -> usize {
        self.n_examples
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Size of the file on disk.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Whether examples come from a memory map or through HDF5.
    pub fn access_path(&self) -> AccessPath {
        match self.storage {
            Storage::Mapped { .. } => AccessPath::Fast,
            Storage::Hdf5 { .. } => AccessPath::Slow,
        }
    }

    /// Copies example `index` (local to this shard) into `out`.
    pub fn read_example(&self, index: usize, out: ExampleMut<'_>) -> Result<()> {
        assert!(index < self.n_examples, "example {index} out of range");
        let seq = self.seq_len;
        match &self.storage {
            Storage::Mapped { map, offset } => {
                let row_bytes = seq * TOKEN_BYTES;
                let base = offset + index * ROWS_PER_EXAMPLE * row_bytes;
                for (row, dst) in [
                    (ROW_INPUT_IDS, out.input_ids),
                    (ROW_ATTENTION_MASK, out.attention_mask),
                    (ROW_LABELS, out.labels),
                ] {
                    let start = base + row * row_bytes;
                    copy_le_tokens(&map[start..start + row_bytes], dst);
                }
            }
            Storage::Hdf5 { dataset } => {
                let example: Array3<i32> = dataset
                    .read_slice(s![index..index + 1, .., ..])
                    .map_err(|e| FormatError::hdf5(&self.path, e))?;
                let flat = example.as_slice().expect("standard layout");
                out.input_ids
                    .copy_from_slice(&flat[ROW_INPUT_IDS * seq..(ROW_INPUT_IDS + 1) * seq]);
                out.attention_mask.copy_from_slice(
                    &flat[ROW_ATTENTION_MASK * seq..(ROW_ATTENTION_MASK + 1) * seq],
                );
                out.labels
                    .copy_from_slice(&flat[ROW_LABELS * seq..(ROW_LABELS + 1) * seq]);
            }
        }
        Ok(())
    }

    /// Reads examples `start..start + count` as one `[count, 3, seq_len]` buffer.
    pub fn read_examples(&self, start: usize, count: usize) -> Result<Vec<i32>> {
        let seq = self.seq_len;
        let example_len = ROWS_PER_EXAMPLE * seq;
        assert!(start + count <= self.n_examples, "examples out of range");
        match &self.storage {
            Storage::Mapped { map, offset } => {
                let mut out = vec![0i32; count * example_len];
                let begin = offset + start * example_len * TOKEN_BYTES;
                copy_le_tokens(
                    &map[begin..begin + count * example_len * TOKEN_BYTES],
                    &mut out,
                );
                Ok(out)
            }
            Storage::Hdf5 { dataset } => {
                let block: Array3<i32> = dataset
                    .read_slice(s![start..start + count, .., ..])
                    .map_err(|e| FormatError::hdf5(&self.path, e))?;
                Ok(block.into_raw_vec_and_offset().0)
            }
        }
    }
}

/// Copies little-endian int32 bytes into `dst` (any alignment of `src`).
fn copy_le_tokens(src: &[u8], dst: &mut [i32]) {
    assert_eq!(src.len(), std::mem::size_of_val(dst));
    // SAFETY: lengths are equal (checked above), the regions cannot overlap (dst is a
    // caller-owned buffer, src a read-only mapping), and every byte pattern is a valid i32.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len());
    }
    if cfg!(target_endian = "big") {
        dst.iter_mut().for_each(|t| *t = i32::from_le(*t));
    }
}

/// A validated, ordered set of shards: the unit the loader samples from. A set can be cut
/// into [slices](ShardSet::slice) (e.g. a held-out evaluation tail) that share the open shards.
pub struct ShardSet {
    shards: Arc<Vec<Shard>>,
    /// `starts[i]` is the global index of shard `i`'s first example; one extra entry at the end.
    starts: Vec<usize>,
    seq_len: usize,
    data_params: Option<DataParams>,
    manifest_dir: Option<PathBuf>,
    /// The examples this set exposes, as global indices into `shards`.
    window: Range<usize>,
}

impl ShardSet {
    /// Opens a shard directory, or a list of shard files and directories. Files are sorted by
    /// name within each directory; every shard is validated, and checked against the
    /// directory's `data_params.json` when there is one.
    pub fn open<P: AsRef<Path>>(inputs: &[P]) -> Result<ShardSet> {
        let mut shards = Vec::new();
        let mut data_params = None;
        let mut manifest_dir = None;
        for input in inputs {
            let input = input.as_ref();
            if input.is_dir() {
                let files = list_shard_files(input)?;
                if files.is_empty() {
                    return Err(FormatError::NoShards { path: input.into() });
                }
                let params = DataParams::read_from_dir(input)?;
                if let Some(params) = &params {
                    check_manifest_files(input, params, &files)?;
                }
                let opened = files
                    .iter()
                    .map(|f| Shard::open(f))
                    .collect::<Result<Vec<_>>>()?;
                if let Some(params) = &params {
                    check_manifest_shards(input, params, &opened)?;
                }
                if let (Some(first), Some(params)) = (&data_params, &params) {
                    crate::manifest::check_same_tokenizer([
                        (
                            manifest_dir.as_deref().unwrap_or(Path::new("")),
                            Some(first),
                        ),
                        (input, Some(params)),
                    ])?;
                }
                if data_params.is_none() {
                    data_params = params;
                    manifest_dir = Some(input.to_path_buf());
                }
                shards.extend(opened);
            } else {
                shards.push(Shard::open(input)?);
            }
        }
        Self::from_shards(
            shards,
            data_params,
            manifest_dir,
            inputs.first().map(|p| p.as_ref()),
        )
    }

    fn from_shards(
        shards: Vec<Shard>,
        data_params: Option<DataParams>,
        manifest_dir: Option<PathBuf>,
        first_input: Option<&Path>,
    ) -> Result<ShardSet> {
        let Some(first) = shards.first() else {
            return Err(FormatError::NoShards {
                path: first_input.unwrap_or(Path::new("")).into(),
            });
        };
        let seq_len = first.seq_len;
        for shard in &shards {
            if shard.seq_len != seq_len {
                return Err(FormatError::SeqLenMismatch {
                    path: shard.path.clone(),
                    found: shard.seq_len,
                    expected: seq_len,
                    first: first.path.clone(),
                });
            }
        }
        let mut starts = Vec::with_capacity(shards.len() + 1);
        let mut total = 0usize;
        for shard in &shards {
            starts.push(total);
            total += shard.n_examples;
        }
        starts.push(total);
        Ok(ShardSet {
            shards: Arc::new(shards),
            starts,
            seq_len,
            data_params,
            manifest_dir,
            window: 0..total,
        })
    }

    /// The examples `range` of this set (indices relative to it) as a set of their own, sharing
    /// the open shards. Panics if `range` reaches past [`len`](Self::len).
    pub fn slice(&self, range: Range<usize>) -> ShardSet {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "slice {range:?} of a set of {} examples",
            self.len()
        );
        ShardSet {
            shards: Arc::clone(&self.shards),
            starts: self.starts.clone(),
            seq_len: self.seq_len,
            data_params: self.data_params.clone(),
            manifest_dir: self.manifest_dir.clone(),
            window: self.window.start + range.start..self.window.start + range.end,
        }
    }

    /// The underlying shards, in order (all of them, also for a [slice](Self::slice)).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Examples in the set (in the slice, for a slice).
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether the set has no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The first directory's manifest, if it had one.
    pub fn data_params(&self) -> Option<&DataParams> {
        self.data_params.as_ref()
    }

    /// The directory the manifest came from.
    pub fn manifest_dir(&self) -> Option<&Path> {
        self.manifest_dir.as_deref()
    }

    /// The shard holding example `index` of this set, and the index within that shard.
    pub fn locate(&self, index: usize) -> (usize, usize) {
        assert!(index < self.len(), "example {index} out of range");
        let index = self.window.start + index;
        let shard = self.starts.partition_point(|&s| s <= index) - 1;
        (shard, index - self.starts[shard])
    }

    /// Index of shard `shard`'s first example among all the underlying shards' examples.
    pub fn shard_start(&self, shard: usize) -> usize {
        self.starts[shard]
    }

    /// Copies example `index` of this set into `out`.
    pub fn read_example(&self, index: usize, out: ExampleMut<'_>) -> Result<()> {
        let (shard, local) = self.locate(index);
        self.shards[shard].read_example(local, out)
    }
}

/// The `*.h5` files directly inside `dir`, sorted by name.
pub fn list_shard_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))? {
        let entry = entry.map_err(|e| FormatError::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(SHARD_SUFFIX) && !name.starts_with('.') && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn check_manifest_files(dir: &Path, params: &DataParams, files: &[PathBuf]) -> Result<()> {
    let Some(ours) = &params.h5gpt else {
        return Ok(());
    };
    let on_disk: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for entry in &ours.shards {
        if !on_disk.contains(&entry.file) {
            return Err(FormatError::ManifestMismatch {
                path: dir.join(&entry.file),
                what: "listed in data_params.json but missing".into(),
            });
        }
    }
    for name in &on_disk {
        if !ours.shards.iter().any(|e| &e.file == name) {
            return Err(FormatError::ManifestMismatch {
                path: dir.join(name),
                what: "present but not listed in data_params.json".into(),
            });
        }
    }
    Ok(())
}

fn check_manifest_shards(dir: &Path, params: &DataParams, shards: &[Shard]) -> Result<()> {
    if let Some(seq_len) = params.seq_len() {
        if let Some(shard) = shards.iter().find(|s| s.seq_len != seq_len) {
            return Err(FormatError::ManifestMismatch {
                path: shard.path.clone(),
                what: format!("seq_len {} but the manifest says {seq_len}", shard.seq_len),
            });
        }
    }
    match &params.h5gpt {
        Some(ours) => {
            for shard in shards {
                let name = shard.path.file_name().unwrap_or_default().to_string_lossy();
                let entry = ours.shards.iter().find(|e| e.file == name);
                if let Some(entry) = entry {
                    if entry.n_examples != shard.n_examples as u64 {
                        return Err(FormatError::ManifestMismatch {
                            path: shard.path.clone(),
                            what: format!(
                                "{} examples but the manifest says {}",
                                shard.n_examples, entry.n_examples
                            ),
                        });
                    }
                    if entry.bytes != shard.file_bytes {
                        return Err(FormatError::ManifestMismatch {
                            path: shard.path.clone(),
                            what: format!(
                                "{} bytes but the manifest says {}",
                                shard.file_bytes, entry.bytes
                            ),
                        });
                    }
                }
            }
        }
        None => {
            let total: usize = shards.iter().map(|s| s.n_examples).sum();
            let promised = params.post_process.n_examples;
            if promised != 0 && promised != total as u64 {
                return Err(FormatError::ManifestMismatch {
                    path: dir.join(crate::spec::DATA_PARAMS_FILE),
                    what: format!(
                        "post-process.n_examples = {promised} but the shards hold {total}"
                    ),
                });
            }
        }
    }
    Ok(())
}
