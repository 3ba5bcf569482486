//! Writing shards: one example at a time, never holding a whole shard in memory, never leaving a
//! file that looks complete but is not.
//!
//! A contiguous HDF5 dataset cannot grow, so [`ShardWriter`] stages examples (in memory up to
//! [`SPILL_BYTES`], then in a raw temporary file), and [`ShardWriter::finish`] creates the
//! dataset at its exact final size under a temporary name, copies the examples in slices,
//! fsyncs and renames it into place. Object time stamps are off, so the same examples always
//! give the same bytes.

use crate::checksum::file_xxh3_64;
use crate::error::{FormatError, Result};
use crate::fsio::{commit_file, temporary_path};
use crate::manifest::{DatasetStats, ShardEntry};
use crate::spec::{
    shard_file_name, Compression, DATASET_NAME, GZIP_LEVEL, N_EXAMPLES_ATTR, ROWS_PER_EXAMPLE,
    TOKEN_BYTES,
};
use ndarray::{s, ArrayView3};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Staged bytes kept in memory before they spill to a raw temporary file.
pub const SPILL_BYTES: usize = 192 << 20;
/// Bytes copied into the HDF5 dataset per slice when a shard is finished.
const COPY_SLICE_BYTES: usize = 16 << 20;

/// A shard on disk after [`ShardWriter::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenShard {
    /// Its manifest entry (file name, examples, bytes, checksum).
    pub entry: ShardEntry,
    /// Token statistics of its examples.
    pub stats: DatasetStats,
}

/// Writes one shard. Dropping it unfinished removes every temporary file it made.
pub struct ShardWriter {
    path: PathBuf,
    seq_len: usize,
    compression: Compression,
    examples: usize,
    staged: Vec<i32>,
    spill_bytes: usize,
    spill: Option<(PathBuf, BufWriter<File>)>,
    stats: DatasetStats,
}

impl ShardWriter {
    /// A writer for the shard that will appear at `path` (which should end in `.h5`).
    pub fn new(path: impl Into<PathBuf>, seq_len: usize, compression: Compression) -> Self {
        ShardWriter {
            path: path.into(),
            seq_len,
            compression,
            examples: 0,
            staged: Vec::new(),
            spill_bytes: SPILL_BYTES,
            spill: None,
            stats: DatasetStats::default(),
        }
    }

    /// Sets how many staged bytes stay in memory before spilling to disk (default
    /// [`SPILL_BYTES`]).
    pub fn set_spill_bytes(&mut self, bytes: usize) {
        self.spill_bytes = bytes;
    }

    /// Examples pushed so far.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Appends one example; each slice must be `seq_len` long.
    pub fn push(
        &mut self,
        input_ids: &[i32],
        attention_mask: &[i32],
        labels: &[i32],
    ) -> Result<()> {
        for (name, row) in [
            ("input_ids", input_ids),
            ("attention_mask", attention_mask),
            ("labels", labels),
        ] {
            if row.len() != self.seq_len {
                return Err(FormatError::Config(format!(
                    "{}: {name} has {} tokens, expected seq_len {}",
                    self.path.display(),
                    row.len(),
                    self.seq_len
                )));
            }
        }
        self.stats.add_row(attention_mask);
        self.staged.extend_from_slice(input_ids);
        self.staged.extend_from_slice(attention_mask);
        self.staged.extend_from_slice(labels);
        self.examples += 1;
        if self.staged.len() * TOKEN_BYTES >= self.spill_bytes {
            self.spill_staged()?;
        }
        Ok(())
    }

    fn spill_path(&self) -> PathBuf {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        self.path.with_file_name(format!(".{name}.rows.tmp"))
    }

    fn spill_staged(&mut self) -> Result<()> {
        if self.spill.is_none() {
            let path = self.spill_path();
            let file = File::create(&path).map_err(|e| FormatError::io(&path, e))?;
            self.spill = Some((path, BufWriter::with_capacity(1 << 20, file)));
        }
        let (path, out) = self.spill.as_mut().expect("spill file open");
        out.write_all(as_bytes(&self.staged))
            .map_err(|e| FormatError::io(&*path, e))?;
        self.staged.clear();
        Ok(())
    }

    /// Writes the shard under a temporary name, fsyncs it and renames it into place.
    pub fn finish(self) -> Result<WrittenShard> {
        self.stage()?.commit()
    }

    /// Writes the shard under its temporary name and checksums it, without moving it into
    /// place: [`StagedShard::commit`] does that (so shards finished in parallel can be
    /// committed in order).
    pub fn stage(mut self) -> Result<StagedShard> {
        if self.examples == 0 {
            return Err(FormatError::Config(format!(
                "{}: refusing to write a shard with no examples",
                self.path.display()
            )));
        }
        let tmp = temporary_path(&self.path);
        let result = self.write_hdf5(&tmp);
        self.remove_spill();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        StagedShard::checksum(tmp, &self.path, self.examples, self.stats)
    }

    fn write_hdf5(&mut self, tmp: &Path) -> Result<()> {
        let h5err = |e| FormatError::hdf5(tmp, e);
        let (file, dataset) =
            create_shard_file(tmp, self.examples, self.seq_len, self.compression)?;
        let example_len = ROWS_PER_EXAMPLE * self.seq_len;
        let slice_examples = (COPY_SLICE_BYTES / (example_len * TOKEN_BYTES)).max(1);
        let mut written = 0usize;
        let write = |tokens: &[i32], written: &mut usize| -> Result<()> {
            let k = tokens.len() / example_len;
            let view = ArrayView3::from_shape((k, ROWS_PER_EXAMPLE, self.seq_len), tokens)
                .expect("staged tokens form whole examples");
            dataset
                .write_slice(view, s![*written..*written + k, .., ..])
                .map_err(h5err)?;
            *written += k;
            Ok(())
        };
        if let Some((path, out)) = self.spill.as_mut() {
            out.flush().map_err(|e| FormatError::io(&*path, e))?;
            let mut reader =
                BufReader::new(File::open(&*path).map_err(|e| FormatError::io(&*path, e))?);
            let spilled = out
                .get_ref()
                .metadata()
                .map_err(|e| FormatError::io(&*path, e))?
                .len() as usize
                / (example_len * TOKEN_BYTES);
            let mut buf = vec![0i32; slice_examples * example_len];
            let mut left = spilled;
            while left > 0 {
                let k = left.min(slice_examples);
                let chunk = &mut buf[..k * example_len];
                reader
                    .read_exact(as_bytes_mut(chunk))
                    .map_err(|e| FormatError::io(&*path, e))?;
                if cfg!(target_endian = "big") {
                    chunk.iter_mut().for_each(|t| *t = i32::from_le(*t));
                }
                write(chunk, &mut written)?;
                left -= k;
            }
        }
        for chunk in self.staged.chunks(slice_examples * example_len) {
            write(chunk, &mut written)?;
        }
        debug_assert_eq!(written, self.examples);
        write_n_examples(&file, self.examples).map_err(h5err)?;
        drop(dataset);
        file.close().map_err(h5err)
    }

    fn remove_spill(&mut self) {
        if let Some((path, _)) = self.spill.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        self.remove_spill();
    }
}

/// A shard complete under its temporary name (`.NAME.tmp`), checksummed, not yet in place.
/// Dropping it uncommitted removes the temporary file.
#[derive(Debug)]
pub struct StagedShard {
    tmp: Option<PathBuf>,
    path: PathBuf,
    written: WrittenShard,
    checksum_time: std::time::Duration,
}

impl StagedShard {
    fn checksum(
        tmp: PathBuf,
        path: &Path,
        examples: usize,
        stats: DatasetStats,
    ) -> Result<StagedShard> {
        let mut staged = StagedShard {
            tmp: Some(tmp),
            path: path.to_path_buf(),
            written: WrittenShard {
                entry: ShardEntry {
                    file: path
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned(),
                    n_examples: examples as u64,
                    bytes: 0,
                    xxh3_64: String::new(),
                },
                stats,
            },
            checksum_time: std::time::Duration::ZERO,
        };
        let tmp = staged.tmp.as_deref().expect("not committed");
        let start = std::time::Instant::now();
        let xxh3_64 = file_xxh3_64(tmp)?;
        staged.checksum_time = start.elapsed();
        let bytes = std::fs::metadata(tmp)
            .map_err(|e| FormatError::io(tmp, e))?
            .len();
        staged.written.entry.xxh3_64 = xxh3_64;
        staged.written.entry.bytes = bytes;
        Ok(staged)
    }

    /// Its manifest entry and statistics, as they will be once committed.
    pub fn written(&self) -> &WrittenShard {
        &self.written
    }

    /// How long checksumming it took (for profiles).
    pub fn checksum_time(&self) -> std::time::Duration {
        self.checksum_time
    }

    /// Moves it into place: fsync, rename to the final `.h5` name, fsync the directory.
    pub fn commit(mut self) -> Result<WrittenShard> {
        let tmp = self.tmp.take().expect("committed once");
        commit_file(&tmp, &self.path)?;
        Ok(self.written.clone())
    }
}

impl Drop for StagedShard {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// A contiguous shard written by position: HDF5 lays out the file's metadata (a few KB, under
/// its global lock), and the examples go straight to their place in the file with positional
/// writes, from any thread and in any order. Its bytes are exactly those [`ShardWriter`]
/// writes for the same examples, since both create the file the same way: the
/// dataset is contiguous and allocated at creation, so writing its data changes no metadata.
///
/// Dropping it unfinished removes its temporary files.
#[derive(Debug)]
pub struct PositionalShard {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    seq_len: usize,
    data_offset: u64,
    /// The temporary file belongs to a [`StagedShard`] now.
    finished: bool,
}

impl PositionalShard {
    /// Starts the shard that will appear at `path`, for up to `capacity` examples of
    /// `seq_len` tokens (the capacity only places the data; the shard holds as many
    /// examples as [`finish`](Self::finish) says).
    pub fn create(path: impl Into<PathBuf>, seq_len: usize, capacity: usize) -> Result<Self> {
        let path = path.into();
        if seq_len == 0 {
            return Err(FormatError::Config(format!(
                "{}: seq_len must be at least 1",
                path.display()
            )));
        }
        let tmp = temporary_path(&path);
        let (_, data_offset) = write_skeleton(&skeleton_path(&path), capacity.max(1), seq_len)?;
        let _ = std::fs::remove_file(skeleton_path(&path));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| FormatError::io(&tmp, e))?;
        Ok(PositionalShard {
            path,
            tmp,
            file,
            seq_len,
            data_offset,
            finished: false,
        })
    }

    /// Tokens per example (`3 × seq_len`).
    pub fn example_len(&self) -> usize {
        ROWS_PER_EXAMPLE * self.seq_len
    }

    /// Writes whole examples (`input_ids`, `attention_mask`, `labels` each, one example after
    /// the other) as examples `first..`. Safe to call from several threads at once for
    /// different examples.
    pub fn write_examples(&self, first: usize, tokens: &[i32]) -> Result<()> {
        debug_assert_eq!(tokens.len() % self.example_len(), 0, "whole examples");
        let at = self.data_offset + (first * self.example_len() * TOKEN_BYTES) as u64;
        write_all_at(&self.file, as_bytes(tokens), at).map_err(|e| FormatError::io(&self.tmp, e))
    }

    /// Starts writing the examples written so far back to disk, without waiting for it to end
    /// (so the final fsync has little left to do).
    pub fn start_writeback(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| FormatError::io(&self.tmp, e))
    }

    /// Completes the shard with its first `examples` examples (all written by now): lays the
    /// HDF5 metadata for that many examples around them and checksums the file. `stats` are
    /// the statistics of those examples.
    pub fn finish(mut self, examples: usize, stats: DatasetStats) -> Result<StagedShard> {
        if examples == 0 {
            return Err(FormatError::Config(format!(
                "{}: refusing to write a shard with no examples",
                self.path.display()
            )));
        }
        let skeleton = skeleton_path(&self.path);
        let result = self.graft(&skeleton, examples);
        let _ = std::fs::remove_file(&skeleton);
        result?;
        self.finished = true;
        StagedShard::checksum(self.tmp.clone(), &self.path, examples, stats)
    }

    /// Copies the metadata of an HDF5 file made for `examples` examples around the data.
    fn graft(&self, skeleton: &Path, examples: usize) -> Result<()> {
        let (size, data_offset) = write_skeleton(skeleton, examples, self.seq_len)?;
        let data_len = (examples * self.example_len() * TOKEN_BYTES) as u64;
        let source = File::open(skeleton).map_err(|e| FormatError::io(skeleton, e))?;
        let read = |from: u64, to: u64| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; (to - from) as usize];
            read_exact_at(&source, &mut buf, from).map_err(|e| FormatError::io(skeleton, e))?;
            Ok(buf)
        };
        let ioerr = |e| FormatError::io(&self.tmp, e);
        if data_offset != self.data_offset {
            // HDF5 placed the data elsewhere for this size: move it there.
            let mut data = vec![0u8; data_len as usize];
            read_exact_at(&self.file, &mut data, self.data_offset).map_err(ioerr)?;
            self.file.set_len(0).map_err(ioerr)?;
            write_all_at(&self.file, &data, data_offset).map_err(ioerr)?;
        }
        let end = (data_offset + data_len).min(size);
        write_all_at(&self.file, &read(0, data_offset)?, 0).map_err(ioerr)?;
        write_all_at(&self.file, &read(end, size)?, end).map_err(ioerr)?;
        self.file
            .set_len(size.max(data_offset + data_len))
            .map_err(ioerr)
    }
}

impl Drop for PositionalShard {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Where a shard's HDF5 metadata is laid out before it is grafted around the data.
fn skeleton_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.meta.tmp"))
}

/// Writes a contiguous shard file of `examples` examples without its data; returns the
/// file's size and the byte offset of the data.
fn write_skeleton(path: &Path, examples: usize, seq_len: usize) -> Result<(u64, u64)> {
    let h5err = |e| FormatError::hdf5(path, e);
    let (file, dataset) = create_shard_file(path, examples, seq_len, Compression::None)?;
    let offset = dataset.offset().ok_or_else(|| FormatError::Layout {
        path: path.to_path_buf(),
        what: "HDF5 did not allocate the contiguous dataset at creation".into(),
    })?;
    write_n_examples(&file, examples).map_err(h5err)?;
    drop(dataset);
    file.close().map_err(h5err)?;
    let size = std::fs::metadata(path)
        .map_err(|e| FormatError::io(path, e))?
        .len();
    Ok((size, offset))
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut at: u64) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, bytes, at)?;
        bytes = &bytes[n..];
        at += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut at: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        at += n as u64;
    }
    Ok(())
}

/// Creates shard file `path` with its dataset of `examples` examples, not yet written. Every
/// writer creates shards here, so all of them lay out the same bytes.
fn create_shard_file(
    path: &Path,
    examples: usize,
    seq_len: usize,
    compression: Compression,
) -> Result<(hdf5::File, hdf5::Dataset)> {
    let h5err = |e| FormatError::hdf5(path, e);
    let file = hdf5::File::with_options()
        .with_fcpl(|p| p.obj_track_times(false))
        // The temporary file is ours alone; see the reader on why locks would hurt.
        .with_fapl(|p| p.file_locking(false))
        .create(path)
        .map_err(h5err)?;
    let builder = file
        .new_dataset::<i32>()
        .shape([examples, ROWS_PER_EXAMPLE, seq_len]);
    let builder = match compression {
        Compression::None => builder
            .no_chunk()
            .alloc_time(Some(hdf5::plist::dataset_create::AllocTime::Early))
            .fill_time(hdf5::plist::dataset_create::FillTime::Never),
        Compression::Gzip => builder
            .chunk((1, ROWS_PER_EXAMPLE, seq_len))
            .deflate(GZIP_LEVEL),
    };
    let dataset = builder.create(DATASET_NAME).map_err(h5err)?;
    Ok((file, dataset))
}

/// The file attribute every shard carries: its number of examples.
fn write_n_examples(file: &hdf5::File, examples: usize) -> hdf5::Result<()> {
    file.new_attr::<i64>()
        .create(N_EXAMPLES_ATTR)
        .and_then(|a| a.write_scalar(&(examples as i64)))
}

/// Views tokens as the little-endian bytes the raw staging file holds.
fn as_bytes(tokens: &[i32]) -> &[u8] {
    // SAFETY: i32 has no padding and any byte pattern is a valid u8; length scaled by 4.
    // On big-endian hosts the staged file holds native order and is read back the same way.
    unsafe {
        std::slice::from_raw_parts(tokens.as_ptr().cast::<u8>(), std::mem::size_of_val(tokens))
    }
}

fn as_bytes_mut(tokens: &mut [i32]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; every byte pattern is a valid i32.
    unsafe {
        std::slice::from_raw_parts_mut(
            tokens.as_mut_ptr().cast::<u8>(),
            std::mem::size_of_val(tokens),
        )
    }
}

/// Writes a whole shard set: rolls over to a new shard every `examples_per_shard` examples.
pub struct ShardSetWriter {
    dir: PathBuf,
    seq_len: usize,
    compression: Compression,
    examples_per_shard: usize,
    current: Option<ShardWriter>,
    shards: Vec<ShardEntry>,
    stats: DatasetStats,
}

impl ShardSetWriter {
    /// Starts a new set in `dir` (created if missing).
    pub fn new(
        dir: impl Into<PathBuf>,
        seq_len: usize,
        compression: Compression,
        examples_per_shard: usize,
    ) -> Result<Self> {
        Self::resume(
            dir,
            seq_len,
            compression,
            examples_per_shard,
            Vec::new(),
            DatasetStats::default(),
        )
    }

    /// Continues a set whose first shards (`shards`, with `stats`) are already on disk.
    pub fn resume(
        dir: impl Into<PathBuf>,
        seq_len: usize,
        compression: Compression,
        examples_per_shard: usize,
        shards: Vec<ShardEntry>,
        stats: DatasetStats,
    ) -> Result<Self> {
        let dir = dir.into();
        if seq_len == 0 || examples_per_shard == 0 {
            return Err(FormatError::Config(
                "seq_len and examples per shard must be at least 1".into(),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| FormatError::io(&dir, e))?;
        Ok(ShardSetWriter {
            dir,
            seq_len,
            compression,
            examples_per_shard,
            current: None,
            shards,
            stats,
        })
    }

    /// Appends one example. Returns the shard it completed, if it completed one.
    pub fn push(
        &mut self,
        input_ids: &[i32],
        attention_mask: &[i32],
        labels: &[i32],
    ) -> Result<Option<ShardEntry>> {
        let writer = self.current.get_or_insert_with(|| {
            ShardWriter::new(
                self.dir.join(shard_file_name(self.shards.len())),
                self.seq_len,
                self.compression,
            )
        });
        writer.push(input_ids, attention_mask, labels)?;
        if writer.examples() >= self.examples_per_shard {
            return self.close_current();
        }
        Ok(None)
    }

    /// Finishes the shard in progress, if any, and returns it.
    pub fn close_current(&mut self) -> Result<Option<ShardEntry>> {
        match self.current.take() {
            Some(writer) if writer.examples() > 0 => {
                let written = writer.finish()?;
                self.stats.add(&written.stats);
                self.shards.push(written.entry.clone());
                Ok(Some(written.entry))
            }
            _ => Ok(None),
        }
    }

    /// Examples staged in the shard in progress.
    pub fn pending_examples(&self) -> usize {
        self.current.as_ref().map_or(0, ShardWriter::examples)
    }

    /// Shards completed so far.
    pub fn shards(&self) -> &[ShardEntry] {
        &self.shards
    }

    /// Statistics of the completed shards.
    pub fn stats(&self) -> DatasetStats {
        self.stats
    }

    /// Finishes the last shard and returns every shard with the totals.
    pub fn finish(mut self) -> Result<(Vec<ShardEntry>, DatasetStats)> {
        self.close_current()?;
        Ok((std::mem::take(&mut self.shards), self.stats))
    }
}
