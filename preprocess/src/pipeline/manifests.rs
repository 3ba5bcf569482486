//! The manifests: one `data_params.json` (and the trained `tokenizer.json`) per output
//! directory once its shards are in place, or the reason a directory got no rows.

use super::outdir::{files_json, OutputCounts, Progress, INPUT_CHECKSUMS};
use super::sink::Written;
use super::{OutputSummary, PreprocessConfig, RunCounts, TokenizerChoice};
use crate::input::{canonical, InputFile};
use crate::val_split::{DocPart, SplitRule};
use anyhow::{bail, Result};
use h5gpt_formats::exit::with_hint;
use h5gpt_formats::fsio::write_atomic;
use h5gpt_formats::manifest::{DataParams, DatasetStats, ManifestCore, ShardEntry};
use h5gpt_formats::split::{TRAIN_DIR, VAL_DIR};
use h5gpt_formats::Packing;
use h5gpt_tokenizer::tokenizer::{Tokenizer, TOKENIZER_FILE};
use serde_json::{json, Map, Value};
use std::path::{Component, Path, PathBuf};

/// Writes the manifest of every output directory in `dirs` (with what the writers finished
/// and the counts of `state`), or fails naming the directory that got no rows and why.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_manifests(
    config: &PreprocessConfig,
    tokenizer: &Tokenizer,
    (files, input_sums): (&[InputFile], &[String]),
    fingerprint: &str,
    packing: Packing,
    state: &Progress,
    dirs: &[PathBuf],
    written: Written,
) -> Result<Vec<OutputSummary>> {
    let mut outputs = Vec::new();
    for (i, (shards, stats)) in written.into_iter().enumerate() {
        let dir = &dirs[i];
        let counts = &state.outputs[i].counts;
        if shards.is_empty() && state.counts.bad_skipped > 0 && counts.documents == 0 {
            bail!(with_hint(
                format!(
                    "{}: no rows to write: all {} records read were bad and skipped (--skip-bad-records), {} of them empty",
                    dir.display(),
                    state.counts.records,
                    state.counts.empty_skipped,
                ),
                format!(
                    "the input holds no valid document; the first bad records: {}",
                    state.bad_examples.join("; "),
                ),
            ));
        }
        if shards.is_empty() {
            bail!(with_hint(
                format!(
                    "{}: no rows to write ({} documents, {} tokens)",
                    dir.display(),
                    counts.documents,
                    counts.tokens,
                ),
                no_rows_hint(config, &state.counts, counts, i, dirs.len()),
            ));
        }
        outputs.push(OutputSummary {
            dir: dir.clone(),
            documents: counts.documents,
            tokens: counts.tokens,
            rows: stats.num_sequences,
            shards: shards.len(),
        });
        if let Some(json) = tokenizer.json() {
            write_atomic(&dir.join(TOKENIZER_FILE), json)?;
        }
        let mut params = manifest(
            config,
            tokenizer,
            files,
            fingerprint,
            packing,
            &state.counts,
            counts,
            shards,
            stats,
            i,
            dirs.len(),
        );
        params
            .setup
            .insert(INPUT_CHECKSUMS.into(), json!(input_sums));
        if let TokenizerChoice::Given { name, .. } = &config.tokenizer {
            if let Some(file) = tokenizer.file_entry() {
                // A tokenizer.json: by content, and where it lies from here (an output moved
                // with its tokenizer keeps the path right; no absolute path is written).
                let p = &mut params.processing;
                p.insert(
                    "tokenizer".into(),
                    relative_path(&canonical(Path::new(name)), &canonical(dir))
                        .to_string_lossy()
                        .into_owned()
                        .into(),
                );
                p.insert("tokenizer_xxh3_64".into(), file.xxh3_64.into());
            }
        }
        params.write_to_dir(dir)?;
    }
    Ok(outputs)
}

/// What to say when output `index` of `outputs` got no rows: what actually happened.
fn no_rows_hint(
    config: &PreprocessConfig,
    run: &RunCounts,
    counts: &OutputCounts,
    index: usize,
    outputs: usize,
) -> String {
    let read = run.records - run.bad_skipped;
    if let (DocPart::Head(f) | DocPart::Tail(f), 0) = (config.part, counts.documents) {
        return format!(
            "the documents are too short to cut inside (the last {f} of each goes to val/, cut at a newline): nothing is left for this side; use a longer input or --val-fraction 0"
        );
    }
    if read == 0 {
        return "the input holds no records; check --input, --glob and --text-key".into();
    }
    if run.records == run.empty_skipped + run.bad_skipped && run.records > 0 {
        return format!(
            "all {} records are empty or bad; check --text-key (is the text under another key?)",
            run.records
        );
    }
    match config.part {
        _ if outputs > 1 && counts.documents == 0 => format!(
            "none of the {} documents went to {} (--val-fraction {}, whole documents by a seeded hash); use another --seed or --val-fraction",
            read - run.empty_skipped,
            if index == 0 { "train/" } else { "val/" },
            config.val_fraction
        ),
        _ => format!(
            "its {} documents hold {} tokens, fewer than the 2 a row needs; use a longer input",
            counts.documents, counts.tokens
        ),
    }
}

/// The `data_params.json` of output `index` (of `outputs`): the shards and their statistics,
/// the setup, the processing and the counts.
#[allow(clippy::too_many_arguments)]
fn manifest(
    config: &PreprocessConfig,
    tokenizer: &Tokenizer,
    files: &[InputFile],
    fingerprint: &str,
    packing: Packing,
    run: &RunCounts,
    counts: &OutputCounts,
    shards: Vec<ShardEntry>,
    stats: DatasetStats,
    index: usize,
    outputs: usize,
) -> DataParams {
    let mut params = DataParams::from_core(ManifestCore {
        tokenizer: tokenizer.name().into(),
        tokenizer_file: tokenizer.file_entry(),
        packing,
        seq_len: config.seq_len,
        compression: config.compression,
        eos_id: tokenizer.eos_id(),
        pad_id: tokenizer.eos_id(),
        vocab_size: tokenizer.vocab_size(),
        shards,
        stats,
    });
    let setup: &mut Map<String, Value> = &mut params.setup;
    setup.insert(
        "input".into(),
        json!(config
            .inputs
            .iter()
            .map(|p| p.to_string_lossy())
            .collect::<Vec<_>>()),
    );
    setup.insert("input_files".into(), files_json(files));
    setup.insert("fingerprint".into(), fingerprint.into());
    setup.insert(
        "split".into(),
        (match config.part {
            DocPart::Head(_) => TRAIN_DIR,
            DocPart::Tail(_) => VAL_DIR,
            DocPart::Whole if outputs == 1 => "all",
            DocPart::Whole if index == 0 => TRAIN_DIR,
            DocPart::Whole => VAL_DIR,
        })
        .into(),
    );
    write_processing(&mut params.processing, config, tokenizer);
    write_post_process(
        &mut params.post_process.extra,
        config,
        tokenizer,
        files,
        run,
        counts,
        index,
    );
    params
}

/// The manifest's `processing`: how the shards were made (tokenizer, normalization, input
/// keys, split, seed, decontamination and dedup settings).
fn write_processing(p: &mut Map<String, Value>, config: &PreprocessConfig, tokenizer: &Tokenizer) {
    match (tokenizer.name(), tokenizer.json()) {
        ("gpt2", _) => {
            p.insert("tokenizer_type".into(), "GPT2Tokenizer".into());
            p.insert("encoding".into(), "r50k_base".into());
        }
        (name, None) => {
            p.insert("tokenizer_type".into(), "tiktoken".into());
            p.insert("encoding".into(), name.into());
        }
        (_, Some(_)) => {
            p.insert("tokenizer_type".into(), "HuggingFaceTokenizer".into());
            p.insert("huggingface_tokenizer".into(), TOKENIZER_FILE.into());
        }
    }
    match &config.tokenizer {
        TokenizerChoice::Given { name, .. } => {
            p.insert("tokenizer".into(), name.clone().into());
        }
        TokenizerChoice::Train(spec) => {
            p.insert("tokenizer_training".into(), json!(spec));
        }
    }
    p.insert("use_ftfy".into(), false.into());
    p.insert(
        "normalize".into(),
        (if config.normalize_nfc { "nfc" } else { "none" }).into(),
    );
    p.insert("jsonl_key".into(), config.text_key.clone().into());
    p.insert("glob".into(), config.glob.clone().into());
    p.insert("files_per_record".into(), config.examples_per_shard.into());
    p.insert("compression".into(), config.compression.to_string().into());
    match config.part {
        DocPart::Head(f) | DocPart::Tail(f) => {
            p.insert("val_fraction".into(), f.into());
            p.insert(
                "split_rule".into(),
                SplitRule::WithinDocuments.name().into(),
            );
        }
        DocPart::Whole => {
            p.insert("val_fraction".into(), config.val_fraction.into());
            if config.val_fraction > 0.0 {
                p.insert("split_rule".into(), SplitRule::Documents.name().into());
            }
        }
    }
    p.insert("seed".into(), config.seed.into());
    p.insert("skip_bad_records".into(), config.skip_bad_records.into());
    if !config.decontaminate.is_off() {
        p.insert(
            "decontaminate".into(),
            json!({
                "files": config.decontaminate.files,
                "ngram": config.decontaminate.ngram,
                "margin_chars": crate::decontaminate::MARGIN_CHARS,
                "max_pieces": crate::decontaminate::MAX_PIECES,
            }),
        );
    }
    if let Some(d) = &config.dedup_decisions {
        // Only with --dedup exact|near: without it this manifest is what it was.
        let settings = &d.settings;
        p.insert(
            "dedup".into(),
            json!({
                "mode": settings.mode,
                "ngram": settings.ngram,
                "perm": settings.perm,
                "seed": settings.seed,
                "threshold": settings.threshold,
                "bands": d.report.bands,
                "rows": d.report.rows,
                "report_only": settings.report_only,
                "normalisation": "nfc, lowercase, whitespace runs to one space, trimmed",
            }),
        );
    }
}

/// The manifest's `post_process` counts: documents, tokens, records read and skipped, what
/// decontamination (train/ only) and dedup removed, and the input's size.
fn write_post_process(
    extra: &mut Map<String, Value>,
    config: &PreprocessConfig,
    tokenizer: &Tokenizer,
    files: &[InputFile],
    run: &RunCounts,
    counts: &OutputCounts,
    index: usize,
) {
    extra.insert("n_docs".into(), counts.documents.into());
    if tokenizer.unk_id().is_some() {
        extra.insert("unknown_tokens".into(), counts.unknown.into());
    }
    extra.insert("num_stream_tokens".into(), counts.tokens.into());
    extra.insert("records_read".into(), run.records.into());
    extra.insert("empty_documents_skipped".into(), run.empty_skipped.into());
    extra.insert("bad_records_skipped".into(), run.bad_skipped.into());
    if let (Some(d), 0) = (&config.decontamination, index) {
        extra.insert(
            "decontamination".into(),
            json!({"report": d.report, "documents_dropped": run.decontaminated_dropped}),
        );
    }
    if let Some(d) = &config.dedup_decisions {
        let r = &d.report;
        extra.insert(
            "dedup".into(),
            json!({
                "documents_compared": r.documents,
                "duplicates_found": r.removed,
                "duplicate_bytes": r.removed_bytes,
                "exact": r.exact,
                "near": r.near,
                "documents_dropped": run.dedup_dropped,
            }),
        );
    }
    extra.insert("processed_files".into(), files.len().into());
    extra.insert(
        "raw_bytes_count".into(),
        files.iter().map(|f| f.bytes).sum::<u64>().into(),
    );
}

/// `path` relative to folder `base` (both canonical): `../train/tokenizer.json`.
fn relative_path(path: &Path, base: &Path) -> PathBuf {
    let (to, from): (Vec<Component>, Vec<Component>) =
        (path.components().collect(), base.components().collect());
    let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::relative_path;
    use std::path::Path;

    #[test]
    fn relative_paths_climb_to_the_common_folder() {
        let rel = |a: &str, b: &str| relative_path(Path::new(a), Path::new(b));
        assert_eq!(
            rel("/o/train/tokenizer.json", "/o/val"),
            Path::new("../train/tokenizer.json")
        );
        assert_eq!(rel("/o/tokenizer.json", "/o"), Path::new("tokenizer.json"));
        assert_eq!(rel("/t/tok.json", "/o/val"), Path::new("../../t/tok.json"));
    }
}
