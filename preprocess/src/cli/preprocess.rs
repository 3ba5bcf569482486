//! `preprocess` (and `h5gpt preprocess`): raw text → GPT-2 BPE tokens → packed rows → HDF5 shards + `data_params.json`.

use crate::decontaminate::{DecontaminateSettings, DecontaminationReport};
use crate::dedup::{DedupMode, DedupSettings};
use crate::inspect::human_bytes;
use crate::pipeline::{self, PreprocessConfig, RunSummary, TokenizerChoice};
use crate::val_split::{DocPart, SplitRule};
use anyhow::Result;
use clap::{Parser, ValueEnum};
use h5gpt_formats::exit::UsageError;
use h5gpt_formats::text::thousands;
use h5gpt_formats::Compression;
use h5gpt_tokenizer::train::{TrainKind, TrainSpec};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    /// Contiguous, uncompressed, memory-mappable.
    None,
    /// Chunked (1, 3, seq_len) with deflate, like Cerebras Model Zoo.
    Gzip,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Normalize {
    /// Leave text as it is.
    None,
    /// Unicode NFC.
    Nfc,
}

/// Tokenize raw text (txt, jsonl, jsonl.zst, jsonl.gz, parquet) with GPT-2 BPE (or another
/// tokenizer, given or trained on the corpus), pack it into fixed-length rows and write HDF5
/// shards in the Cerebras Model Zoo layout.
#[derive(Debug, Parser)]
#[command(name = "preprocess", version, about)]
pub struct PreprocessArgs {
    /// Input files and/or directories (recursed, sorted by path).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output directory (with --val-fraction: OUT/train and OUT/val).
    #[arg(long)]
    out: PathBuf,
    /// Tokens per row.
    #[arg(long, default_value_t = 2048)]
    seq_len: usize,
    /// Rows per shard.
    #[arg(long, default_value_t = 50_000)]
    examples_per_shard: usize,
    /// Shard layout.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// One document per row (long documents split into windows, each document's last window
    /// padded) instead of one packed stream.
    #[arg(long)]
    no_pack: bool,
    /// JSON key (or Parquet column) holding the text.
    #[arg(long, default_value = "text")]
    text_key: String,
    /// Only files whose names match this pattern (`*`, `?`) inside input directories.
    #[arg(long)]
    glob: Option<String>,
    /// Unicode normalization before tokenizing.
    #[arg(long, value_enum, default_value_t = Normalize::None)]
    normalize: Normalize,
    /// Fraction of documents (chosen by --seed) written to OUT/val; the rest to OUT/train.
    #[arg(long, default_value_t = 0.0)]
    val_fraction: f64,
    /// Seed of the train/val choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Count and report bad records (invalid JSON, missing or non-string text, invalid UTF-8)
    /// instead of stopping at the first.
    #[arg(long)]
    skip_bad_records: bool,
    /// Tokenizer: `gpt2` (r50k_base), `cl100k_base`, `o200k_base`, or a Hugging Face
    /// tokenizer.json file (copied beside the shards).
    #[arg(long, default_value = "gpt2", conflicts_with = "train_tokenizer")]
    tokenizer: String,
    /// End-of-document token of a --tokenizer FILE [default: the first of `<|endoftext|>`,
    /// `</s>`, `<|end_of_text|>`, `<eos>`, `[EOS]`, `<|im_end|>` it knows].
    #[arg(long)]
    eos_token: Option<String>,
    /// Train a tokenizer on the training documents first: byte-level `bpe`, or `wordlevel`
    /// (one id per word, `[UNK]` for the rest). Written beside the shards as tokenizer.json.
    #[arg(long, value_enum, requires = "vocab_size")]
    train_tokenizer: Option<TrainKind>,
    /// Vocabulary size of --train-tokenizer, special tokens included.
    #[arg(long)]
    vocab_size: Option<u32>,
    /// Minimum count of a word (wordlevel) or of a pair to merge (bpe) with --train-tokenizer.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// Worker threads for reading, decompressing, tokenizing, writing and checksumming
    /// (default: all cores). Does not change the output.
    #[arg(long)]
    threads: Option<usize>,
    /// After the summary, print where the time went: seconds per stage (reading, decompression,
    /// JSON, tokenizing, packing, writing, HDF5 metadata, checksums, fsync), summed over threads.
    #[arg(long)]
    profile: bool,
    /// Start over, deleting shards of an earlier run in --out.
    #[arg(long)]
    force: bool,
    /// Remove duplicate documents before anything else (see docs/dedup.md): `exact` (equal
    /// after normalising case and whitespace), `near` (exact, and MinHash LSH near-duplicates)
    /// or `off`. The first document of each cluster in input order is kept.
    #[arg(long, value_enum, default_value_t = DedupMode::Off)]
    dedup: DedupMode,
    /// Words per n-gram of --dedup near.
    #[arg(long, default_value_t = 5)]
    dedup_ngram: usize,
    /// MinHash permutations of --dedup near.
    #[arg(long, default_value_t = 128)]
    dedup_perm: usize,
    /// Seed of the MinHash permutations.
    #[arg(long, default_value_t = 0)]
    dedup_seed: u64,
    /// Jaccard similarity at which --dedup near calls two documents duplicates (the LSH bands
    /// are chosen for it).
    #[arg(long, default_value_t = 0.8)]
    dedup_threshold: f64,
    /// Most memory the dedup index may take, in bytes (suffixes K, M, G, T: powers of 1024);
    /// a larger corpus is refused with the figure [default: half the machine's memory].
    #[arg(long, value_parser = parse_bytes)]
    dedup_mem: Option<u64>,
    /// Find and report the duplicates (dedup.jsonl, the summary) but keep them in the output.
    #[arg(long)]
    dedup_report_only: bool,
    /// Evaluation files (JSON lines of HellaSwag or LAMBADA items, or plain text lines) whose
    /// n-grams are cut out of the training documents with 200 characters on either side; a
    /// document cut into more than 10 pieces is dropped. val/ is left as it is.
    #[arg(long, num_args = 1..)]
    decontaminate: Vec<PathBuf>,
    /// Words per n-gram of --decontaminate.
    #[arg(long, default_value_t = 13)]
    decontaminate_ngram: usize,
}

/// `123`, `512M`, `8G`, `1.5T` (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (number, scale) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let scale: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s}: unknown suffix {c} (use K, M, G or T)")),
            };
            (&t[..i], scale)
        }
        _ => (t, 1),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s}: not a number of bytes (e.g. 16G)"))?;
    if value.is_nan() || value <= 0.0 {
        return Err(format!("{s}: must be positive"));
    }
    Ok((value * scale as f64) as u64)
}

/// Runs `preprocess` with `args` (parsed by the `preprocess` or the `h5gpt` executable).
pub fn run(args: PreprocessArgs) -> Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if args.vocab_size.is_some() && args.train_tokenizer.is_none() {
        anyhow::bail!(UsageError::new(
            "--vocab-size applies to --train-tokenizer only"
        ));
    }
    let tokenizer = tokenizer_choice(&args)?;
    let tokenizer_label = tokenizer_label(&tokenizer);
    let config = preprocess_config(args, tokenizer, threads)?;
    print_settings(&config, &tokenizer_label);
    let summary = pipeline::run(&config)?;
    if summary.already_complete {
        println!(
            "{} already holds this run, complete; nothing to do (use --force to redo it)",
            config.out.display()
        );
        return Ok(());
    }
    if summary.resumed {
        println!("continued an interrupted run");
    }
    print_inputs(&summary);
    print_val_split(&config, &summary);
    if let Some(d) = &summary.dedup {
        print_dedup(d);
    }
    if let Some(d) = &summary.decontamination {
        print_decontamination(&config, d);
    }
    print_outputs(&config, &summary);
    Ok(())
}

/// The tokenizer to use: `--tokenizer` (with `--eos-token`), or one to train with
/// `--train-tokenizer` and `--vocab-size`.
fn tokenizer_choice(args: &PreprocessArgs) -> Result<TokenizerChoice> {
    Ok(match (args.train_tokenizer, args.vocab_size) {
        (Some(kind), Some(vocab_size)) => {
            if args.eos_token.is_some() {
                anyhow::bail!(UsageError::new("--eos-token applies to --tokenizer FILE only (trained tokenizers use <|endoftext|>)"));
            }
            TokenizerChoice::Train(TrainSpec {
                kind,
                vocab_size,
                min_frequency: args.min_frequency,
            })
        }
        _ => TokenizerChoice::Given {
            name: args.tokenizer.clone(),
            eos_token: args.eos_token.clone(),
        },
    })
}

/// How the settings line names the tokenizer.
fn tokenizer_label(tokenizer: &TokenizerChoice) -> String {
    match tokenizer {
        TokenizerChoice::Given { name, .. } => name.clone(),
        TokenizerChoice::Train(spec) => format!(
            "train {} {} (min frequency {})",
            spec.kind.tokenizer_name().trim_start_matches("trained-"),
            spec.vocab_size,
            spec.min_frequency
        ),
    }
}

/// The pipeline's configuration from the flags (a zero `--decontaminate-ngram` is a usage
/// error).
fn preprocess_config(
    args: PreprocessArgs,
    tokenizer: TokenizerChoice,
    threads: usize,
) -> Result<PreprocessConfig> {
    Ok(PreprocessConfig {
        notes: crate::pipeline::Notes::to(|line| eprintln!("{line}")),
        inputs: args.input,
        out: args.out,
        text_key: args.text_key,
        glob: args.glob,
        seq_len: args.seq_len,
        examples_per_shard: args.examples_per_shard,
        compression: match args.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
        },
        pack: !args.no_pack,
        normalize_nfc: matches!(args.normalize, Normalize::Nfc),
        val_fraction: args.val_fraction,
        part: DocPart::Whole,
        seed: args.seed,
        skip_bad_records: args.skip_bad_records,
        dedup: DedupSettings {
            mode: args.dedup,
            ngram: args.dedup_ngram,
            perm: args.dedup_perm,
            seed: args.dedup_seed,
            threshold: args.dedup_threshold,
            report_only: args.dedup_report_only,
            mem: args.dedup_mem.unwrap_or_else(crate::dedup::default_mem),
        },
        dedup_decisions: None,
        decontaminate: if args.decontaminate.is_empty() {
            DecontaminateSettings::default()
        } else {
            if args.decontaminate_ngram == 0 {
                anyhow::bail!(UsageError::new(
                    "--decontaminate-ngram 0: must be at least 1 (words)"
                ));
            }
            DecontaminateSettings::new(args.decontaminate, args.decontaminate_ngram)?
        },
        decontamination: None,
        tokenizer,
        threads,
        force: args.force,
        progress: std::io::stderr().is_terminal(),
        profile: args.profile,
    })
}

/// The effective settings, on stderr (and dedup's when it is on).
fn print_settings(config: &PreprocessConfig, tokenizer_label: &str) {
    eprintln!(
        "preprocess: {} -> {} | tokenizer {} | seq_len {} | {} | examples/shard {} | compression {} | normalize {} | val {} (seed {}) | threads {}",
        config.inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "),
        config.out.display(),
        tokenizer_label,
        config.seq_len,
        if config.pack { "packing stream" } else { "packing document" },
        config.examples_per_shard,
        config.compression,
        if config.normalize_nfc { "nfc" } else { "none" },
        config.val_fraction,
        config.seed,
        config.threads
    );
    if config.dedup.mode != DedupMode::Off {
        let d = &config.dedup;
        eprintln!(
            "preprocess: dedup {:?}{} | ngram {} | perm {} | seed {} | threshold {} | index memory at most {} ({} bytes per document)",
            d.mode,
            if d.report_only { " (report only)" } else { "" },
            d.ngram,
            d.perm,
            d.seed,
            d.threshold,
            human_bytes(d.mem),
            crate::dedup::bytes_per_document(d)
        );
    }
}

/// The tokenizer, the input read and the records skipped.
fn print_inputs(summary: &RunSummary) {
    println!(
        "tokenizer          {} ({} tokens)",
        summary.tokenizer,
        thousands(u64::from(summary.vocab_size))
    );
    println!("input files        {}", summary.files);
    println!("input size         {}", human_bytes(summary.input_bytes));
    println!("records read       {}", thousands(summary.counts.records));
    println!(
        "empty skipped      {}",
        thousands(summary.counts.empty_skipped)
    );
    println!(
        "bad skipped        {}",
        thousands(summary.counts.bad_skipped)
    );
}

/// How the validation split was made, and a warning when it came out far from asked.
fn print_val_split(config: &PreprocessConfig, summary: &RunSummary) {
    match (summary.split_rule, summary.documents_counted) {
        (Some(SplitRule::WithinDocuments), Some(n)) => println!(
            "val split          inside documents: {n} documents are too few for --val-fraction {} of whole documents (fewer than {} / {}); each is cut at the newline nearest {:.0}% of its length, head to train/, tail to val/",
            config.val_fraction,
            crate::val_split::MIN_DOCUMENTS_PER_FRACTION,
            config.val_fraction,
            100.0 * (1.0 - config.val_fraction)
        ),
        (Some(_), _) => println!(
            "val split          whole documents (a seeded hash sends --val-fraction {} of them to val/)",
            config.val_fraction
        ),
        (None, _) => {}
    }
    if let Some(warning) = summary.val_fraction_warning(config.val_fraction) {
        eprintln!("preprocess: warning: {warning}");
    }
}

/// What decontamination cut and dropped.
fn print_decontamination(config: &PreprocessConfig, d: &DecontaminationReport) {
    println!(
        "decontaminated     {} training documents held {} matches of the {} {}-grams of {} evaluation items; {} of them dropped (more than {} pieces); see {}",
        thousands(d.documents_cut),
        thousands(d.matches),
        thousands(d.ngrams),
        config.decontaminate.ngram,
        thousands(d.items),
        thousands(d.documents_dropped),
        crate::decontaminate::MAX_PIECES,
        crate::decontaminate::DECONTAMINATION_JSONL
    );
}

/// Each output folder's counts, the time and rates, unknown words, skipped records and the
/// profile.
fn print_outputs(config: &PreprocessConfig, summary: &RunSummary) {
    let tokens: u64 = summary.outputs.iter().map(|o| o.tokens).sum();
    for out in &summary.outputs {
        println!(
            "{:<18} {} documents, {} tokens, {} rows, {} shards",
            out.dir.display(),
            thousands(out.documents),
            thousands(out.tokens),
            thousands(out.rows),
            out.shards
        );
    }
    println!(
        "time               {:.2} s ({:.1} MB/s, {:.0}k tokens/s)",
        summary.seconds,
        summary.input_bytes as f64 / 1e6 / summary.seconds,
        tokens as f64 / 1e3 / summary.seconds
    );
    if let Some(unknown) = summary.unknown_tokens {
        println!(
            "unknown words      {} ([UNK], {:.3}% of tokens)",
            thousands(unknown),
            100.0 * unknown as f64 / tokens.max(1) as f64
        );
    }
    for bad in &summary.bad_examples {
        println!("skipped: {bad}");
    }
    if config.profile {
        let text_bytes = summary.input_bytes;
        print!(
            "{}",
            crate::profile::report(summary.seconds, text_bytes, config.threads)
        );
    }
}

/// The dedup part of the summary.
fn print_dedup(d: &crate::dedup::Decisions) {
    let r = &d.report;
    println!(
        "dedup              {} of {} documents are duplicates ({} exact, {} near; {}){}{}",
        thousands(r.removed),
        thousands(r.documents),
        thousands(r.exact),
        thousands(r.near),
        human_bytes(r.removed_bytes),
        if d.settings.report_only {
            ", kept (--dedup-report-only)"
        } else {
            ", dropped"
        },
        if d.loaded {
            "; decisions reused from the output folder"
        } else {
            ""
        }
    );
    if r.bands > 0 {
        println!(
            "dedup banding      {} bands × {} rows (S-curve 50% at Jaccard {:.3})",
            r.bands, r.rows, r.half_point
        );
    }
    for f in &r.per_file {
        println!(
            "dedup removed      {}: {} documents, {}",
            f.file,
            thousands(f.documents),
            human_bytes(f.bytes)
        );
    }
    for c in r.largest_clusters.iter().take(5) {
        println!(
            "dedup cluster      {} documents, kept {}:{}",
            thousands(c.documents),
            c.file,
            c.line
        );
    }
}
