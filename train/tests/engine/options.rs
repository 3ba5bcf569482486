//! The `train` options: declared once, and the help and docs/train.md agree with the declaration.

use clap::CommandFactory;
use h5gpt_train::options::TrainOptions;
use std::collections::BTreeSet;

/// Every declared built-in default parses, and the flag's help states it.
#[test]
fn declared_defaults_are_the_ones_the_help_states() {
    let builtin = TrainOptions::builtin();
    assert!(builtin.seed.is_some() && builtin.eval_every.is_some());
    let command = TrainOptions::command();
    let declared = TrainOptions::declared_defaults();
    assert!(declared.len() >= 10, "{declared:?}");
    for (field, default) in declared {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == *field)
            .unwrap_or_else(|| panic!("no flag for the setting {field}"));
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            help.contains(&format!("[default: {default}]")),
            "--{}: the help does not state the declared default {default}: {help}",
            field.replace('_', "-")
        );
    }
}

/// The long flags of `train --help`, without --help and --version.
fn help_flags() -> BTreeSet<String> {
    TrainOptions::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|l| l != "help" && l != "version")
        .collect()
}

/// The `train` page (docs/train.md): its flag tables' rows as (flags, default column).
fn doc_rows() -> Vec<(Vec<String>, String)> {
    // The whole page is the train section: blends and μP included, distributed runs and
    // Cerebras configs on pages of their own (they add no train flags).
    let page = include_str!("../../../docs/train.md");
    assert!(
        page.starts_with("# `train`"),
        "docs/train.md: not the train page"
    );
    page.lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let flags = cells[0]
                .split('`')
                .filter_map(|part| part.strip_prefix("--"))
                .map(|f| f.split_whitespace().next().unwrap_or("").to_owned())
                .collect();
            (
                flags,
                cells.get(1).unwrap_or(&"").trim_matches('`').to_owned(),
            )
        })
        .collect()
}

/// The flag tables of docs/train.md list exactly the flags of `train --help`, and a flag's
/// default there is its declared default.
#[test]
fn doc_train_tables_match_the_help() {
    let rows = doc_rows();
    let listed: BTreeSet<String> = rows.iter().flat_map(|(f, _)| f.clone()).collect();
    let flags = help_flags();
    let missing: Vec<_> = flags.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&flags).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/train.md tables: flags missing {missing:?}, flags that do not exist {unknown:?}"
    );
    let mut compared = 0;
    for (field, default) in TrainOptions::declared_defaults() {
        let flag = field.replace('_', "-");
        if let Some((_, doc_default)) = rows.iter().find(|(f, _)| f == &vec![flag.clone()]) {
            assert_eq!(
                doc_default, default,
                "docs/train.md: --{flag}'s default is {doc_default}, declared {default}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 8, "only {compared} defaults compared");
}
