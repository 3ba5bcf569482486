//! The `train` options: declared once, and the help and docs/train.md agree with the declaration.

use h5gpt_train::options::TrainOptions;
use std::collections::BTreeSet;

/// Every declared built-in default parses, and every setting's help states its declared default
/// (a built-in value, or what it depends on), from the declaration itself.
#[test]
fn declared_defaults_are_the_ones_the_help_states() {
    let builtin = TrainOptions::builtin();
    assert!(builtin.seed.is_some() && builtin.eval_every.is_some());
    let command = TrainOptions::command_with_defaults();
    let stated = TrainOptions::stated_defaults();
    assert!(stated.len() >= 50, "{} settings", stated.len());
    for (field, _) in TrainOptions::declared_defaults() {
        assert!(stated.iter().any(|(f, _)| f == field), "{field}");
    }
    for (field, default) in stated {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == *field)
            .unwrap_or_else(|| panic!("no flag for the setting {field}"));
        for help in [arg.get_help(), arg.get_long_help()].into_iter().flatten() {
            let help = help.to_string();
            assert!(
                help.ends_with(&format!("[default: {default}]")),
                "--{}: the help does not state the declared default {default}: {help}",
                field.replace('_', "-")
            );
        }
    }
}

/// The structs the trainer steps with take their defaults from the declaration.
#[test]
fn adamw_and_mup_defaults_are_the_declared_ones() {
    let builtin = TrainOptions::builtin();
    let adamw = h5gpt_train::optim::AdamWConfig::default();
    assert_eq!(
        (adamw.beta1, adamw.beta2, adamw.eps, adamw.weight_decay),
        (0.9, 0.95, 1e-8, 0.1)
    );
    assert_eq!(Some(adamw.beta1), builtin.adam_beta1);
    let mup = h5gpt_core::config::MupConfig::default();
    assert_eq!(
        (mup.base_width, mup.embed_mult, mup.init_std),
        (256, 10.0, 0.08)
    );
    assert_eq!(
        builtin.ratio,
        Some(h5gpt_core::plan::scaling::CHINCHILLA_RATIO)
    );
}

/// A `config.toml` as `train` wrote it before the options had their stated defaults loads and
/// validates as it was written; the same file with a misspelled key is refused, naming it.
#[test]
fn a_config_toml_written_before_loads() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/config-before-schema.toml"
    );
    let options = TrainOptions::read_file(std::path::Path::new(fixture)).unwrap();
    options.validate().unwrap();
    assert_eq!(options.lr, Some(0.001));
    assert_eq!(options.n_layer, Some(2));
    assert_eq!(options.log_every, Some(1));
    assert_eq!(options.adam_eps, Some(1e-8));
    let dir = tempfile::tempdir().unwrap();
    let misspelled = dir.path().join("config.toml");
    let text = std::fs::read_to_string(fixture).unwrap();
    std::fs::write(&misspelled, text.replace("adam_beta1", "adam_beta_1")).unwrap();
    let error = TrainOptions::read_file(&misspelled)
        .unwrap_err()
        .to_string();
    assert!(error.contains("adam_beta_1"), "{error}");
}

/// The long flags of `train --help`, without --help and --version.
fn help_flags() -> BTreeSet<String> {
    TrainOptions::command_with_defaults()
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
    // A row of one flag states its default; a row of several states one per flag, in order,
    // when it lists as many (`0.9, 0.95, 1e-8, 0.1`).
    let mut compared = 0;
    for (field, default) in TrainOptions::declared_defaults() {
        let flag = field.replace('_', "-");
        let Some((flags, doc_default)) = rows.iter().find(|(f, _)| f.contains(&flag)) else {
            continue;
        };
        let defaults: Vec<&str> = doc_default.split(", ").collect();
        let doc_default = match (flags.len(), defaults.len()) {
            (1, _) => doc_default.as_str(),
            (n, m) if n == m => defaults[flags.iter().position(|f| f == &flag).unwrap()],
            _ => continue,
        };
        assert_eq!(
            doc_default, *default,
            "docs/train.md: --{flag}'s default is {doc_default}, declared {default}"
        );
        compared += 1;
    }
    assert!(compared >= 25, "only {compared} defaults compared");
}

/// `validate` reports every bad setting at once, each as its flag alone would be reported.
#[test]
fn validate_reports_every_bad_setting() {
    let options = TrainOptions {
        dropout: Some(1.5),
        adam_beta2: Some(1.0),
        grad_clip: Some(-1.0),
        n_head: Some(0),
        n_embd: Some(64),
        ..TrainOptions::default()
    };
    let error = options.validate().unwrap_err().to_string();
    assert!(
        error.starts_with("4 settings are out of range:\n"),
        "{error}"
    );
    for flag in [
        "--dropout 1.5",
        "--adam-beta2 1",
        "--grad-clip -1",
        "--n-head 0",
    ] {
        assert!(error.contains(&format!("\n  {flag}: ")), "{flag}: {error}");
    }
    let one = TrainOptions {
        dropout: Some(1.5),
        ..TrainOptions::default()
    };
    let error = one.validate().unwrap_err().to_string();
    assert!(
        error.starts_with("--dropout 1.5: the dropout probability must be in [0, 1)"),
        "{error}"
    );
}
