//! The report of a mapped config: the model, its parameter counts in both conventions, the
//! schedule, and what became of every key.

use super::map::Mapped;
use super::schedule::show_lr;
use super::yaml::Disposition;
use h5gpt_formats::text::thousands;
use std::fmt::Write as _;

/// Parameters as Cerebras counts them: the unpadded vocabulary, the tied head once, the
/// position embeddings included (111,050,496 for Cerebras-GPT 111M).
pub fn cerebras_parameter_count(mapped: &Mapped) -> usize {
    mapped.model.breakdown_unpadded().total()
}

/// The report as text (printed when a run starts and written to its folder).
pub fn render(mapped: &Mapped) -> String {
    let mut out = String::new();
    let m = &mapped.model;
    let _ = writeln!(out, "Cerebras Model Zoo config {}", mapped.file.display());
    let _ = writeln!(out, "layout: {}", mapped.generation.describe());
    let _ = writeln!(
        out,
        "model: {} layers, {} heads, width {}, FFN {}, context {}, vocabulary {}, LayerNorm ε {:e}{}",
        m.n_layer,
        m.n_head,
        m.n_embd,
        m.ffn_width(),
        m.n_ctx,
        m.vocab_size,
        m.layer_norm_eps,
        match m.mup {
            Some(mup) => format!(
                " | μP: base width {} (m = {}), embedding output × {}, logits × 1/m, attention 1/d_head, σ_base {}",
                mup.base_width,
                m.width_mult(),
                mup.embed_mult,
                mup.init_std
            ),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "parameters: {} as Cerebras counts them (vocabulary {} unpadded, tied head once, position embeddings included); {} as we allocate them (vocabulary padded to {} rows for the GPU's matmuls)",
        thousands(cerebras_parameter_count(mapped) as u64),
        m.vocab_size,
        thousands(m.parameter_count() as u64),
        m.embedding_rows()
    );
    if !mapped.schedule.0.is_empty() {
        let _ = writeln!(out, "learning rate (Cerebras' semantics, step for step):");
        for line in mapped.schedule.describe() {
            let _ = writeln!(out, "  {line}");
        }
        if let Some(total) = mapped.schedule.total_steps().filter(|t| *t > 0) {
            let _ = writeln!(
                out,
                "  step 0: {} | last trained step {}: {} | step {total} (never trained at): {}",
                show_lr(mapped.schedule.lr(0)),
                total - 1,
                show_lr(mapped.schedule.lr(total - 1)),
                show_lr(mapped.schedule.lr(total))
            );
        }
    }
    let _ = writeln!(out, "keys:");
    let width = mapped
        .entries
        .iter()
        .map(|e| e.key.len() + e.value.len() + 3)
        .max()
        .unwrap_or(0)
        .min(64);
    for e in &mapped.entries {
        let (what, how) = match &e.disposition {
            Disposition::Read(to) => ("read   ", format!("→ {to}")),
            Disposition::Ignored(why) if why.is_empty() => ("ignored", String::new()),
            Disposition::Ignored(why) => ("ignored", format!("({why})")),
            Disposition::Unknown => (
                "UNKNOWN",
                "(not known to this reader; ignored under --allow-unknown)".to_string(),
            ),
        };
        let _ = writeln!(
            out,
            "  {what} {:<width$} {how}",
            format!("{} = {}", e.key, e.value)
        );
    }
    if !mapped.notes.is_empty() {
        let _ = writeln!(out, "notes:");
        for note in &mapped.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}
