//! Fault injection for tests: `H5GPT_FAULT=KIND:N` arms the fault point named `KIND` at its N-th
//! occurrence (e.g. `abort-after-shard:2`, `abort-during-save:1`). A testing aid: it lets kill
//! tests stop a process at a known point without depending on timing.

/// The occurrence at which fault point `kind` fires, if `H5GPT_FAULT` arms it.
pub fn armed(kind: &str) -> Option<usize> {
    std::env::var("H5GPT_FAULT")
        .ok()?
        .strip_prefix(kind)?
        .strip_prefix(':')?
        .parse()
        .ok()
}
