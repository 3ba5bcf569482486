//! What `h5gpt inspect` prints: the summary of a shard set and the reports of a run's audit
//! (`--run` with `--step`, `--check-epochs`, `--find`), for people; `--json` prints the same
//! values as JSON. The library computes them (`crate::inspect`, `crate::run_inspect`); this
//! module, part of the command line, is where they are printed.

use crate::inspect::{human_bytes, InspectOutput};
use crate::run_inspect::{FindReport, StepReport};
use h5gpt_formats::audit::EpochReport;
use h5gpt_formats::text::thousands;

/// Prints the human-readable report.
pub fn print_human(out: &InspectOutput, decode: bool) {
    let s = &out.summary;
    println!("shards            {}", s.shards);
    println!("rows              {}", thousands(s.rows));
    println!("seq_len           {}", s.seq_len);
    println!("tokens            {}", thousands(s.stats.num_tokens));
    println!("non-pad tokens    {}", thousands(s.stats.non_pad_tokens));
    if let Some(d) = &out.duplicates {
        println!(
            "duplicate rows    {} exact ({:.2}%), {} more near (exact + near: {:.2}%; token {}-grams, MinHash {} bands × {} rows, Jaccard ≥ {})",
            thousands(d.exact),
            100.0 * d.exact_share,
            thousands(d.near),
            100.0 * d.near_share,
            d.ngram,
            d.banding.0,
            d.banding.1,
            d.threshold
        );
    }
    println!("loss-valid tokens {}", thousands(s.stats.loss_valid_tokens));
    println!(
        "access path       {} fast (mmap), {} slow (hdf5)",
        s.fast_path_shards, s.slow_path_shards
    );
    println!("size on disk      {}", human_bytes(s.bytes_on_disk));
    if let Some(t) = &s.tokenizer {
        println!("tokenizer         {t}");
    }
    if let Some(p) = &s.packing {
        println!("packing           {p}");
    }
    if s.files.len() <= 16 {
        for f in &s.files {
            println!(
                "  {}  {} rows  {}  {}",
                f.path.display(),
                thousands(f.rows as u64),
                human_bytes(f.bytes),
                f.access
            );
        }
    }
    for row in &out.rows {
        println!(
            "\n--- row {} ({} row {}, {} tokens)",
            row.index,
            row.shard.display(),
            row.row,
            row.valid_tokens
        );
        match (&row.text, decode) {
            (Some(text), _) => println!("{text}"),
            (None, true) => println!("(no decoder for this tokenizer) {:?}", row.input_ids),
            (None, false) => {
                let head: Vec<String> = row.input_ids.iter().take(64).map(i32::to_string).collect();
                let more = if row.input_ids.len() > 64 { " …" } else { "" };
                println!("[{}{more}]", head.join(", "));
            }
        }
    }
    if let Some(v) = &out.verify {
        println!();
        for note in &v.notes {
            println!("verify: note: {note}");
        }
        if v.ok {
            println!(
                "verify: OK ({} rows, {} checksums)",
                thousands(v.rows_checked),
                v.checksums_checked
            );
        } else {
            println!(
                "verify: FAILED, {} violations; the first {}:",
                thousands(v.violation_count),
                v.violations.len()
            );
            for line in &v.violations {
                println!("  {line}");
            }
        }
    }
}

/// Prints a [`StepReport`].
pub fn print_step(report: &StepReport) {
    println!(
        "step {} | segment {} | world size {} | {} rows per step, micro-batch {} | stream positions {}..{}",
        report.step,
        report.segment,
        report.world_size,
        report.global_batch,
        report.micro_batch,
        report.position,
        report.position + report.global_batch as u64
    );
    for feed in &report.feeds {
        println!("rank {} micro {}:", feed.rank, feed.micro);
        for r in &feed.rows {
            println!(
                "  position {:>8} | id {:>8} | set {} | {} row {}",
                r.position.unwrap_or(0),
                r.id,
                r.set,
                r.shard.display(),
                r.row
            );
            if let Some(text) = &r.text {
                println!("    {text:?}");
            }
        }
    }
}

/// Prints an [`EpochReport`].
pub fn print_epochs(report: &EpochReport) {
    println!(
        "{} steps in {} segments (world sizes {:?})",
        report.steps, report.segments, report.world_sizes
    );
    for s in &report.sets {
        println!(
            "{}: {} rows | {} reads | {} complete epochs, every row exactly once in each | {} distinct rows of the epoch in progress, none twice",
            s.name, s.rows, s.reads, s.complete_epochs, s.partial_epoch_rows
        );
    }
    if report.ok {
        println!("ok: every row seen exactly once per epoch");
    } else {
        println!("FAILED:");
        for v in &report.violations {
            println!("  {v}");
        }
    }
}

/// Prints a [`FindReport`].
pub fn print_find(report: &FindReport) {
    println!(
        "{:?}: {} matches, read at {} steps",
        report.text,
        report.matches.len(),
        report.steps.len()
    );
    for m in &report.matches {
        let what = if m.rows.len() > 1 {
            "spans rows"
        } else {
            "row"
        };
        let parts: Vec<String> = m
            .rows
            .iter()
            .zip(&m.steps)
            .map(|(r, steps)| {
                format!(
                    "id {} ({} row {}) at steps {:?}",
                    r.id,
                    r.shard.display(),
                    r.row,
                    steps
                )
            })
            .collect();
        println!("  {what} {}", parts.join(" + "));
    }
    println!("steps: {:?}", report.steps);
}
