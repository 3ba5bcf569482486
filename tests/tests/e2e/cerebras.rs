//! `train --config` and `plan --config` with the Cerebras Model Zoo configs as they are
//! (tests/fixtures/cerebras-configs), the shape overridden down to CPU size.

use h5gpt_tests::{fox_shards, run, text};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/cerebras-configs")
        .join(name)
}

/// A data root holding the config's relative `data_dir`s (its ten train directories and the
/// val directory), each a link to the same small shard directory.
fn data_root(dir: &Path) -> PathBuf {
    let shards = fox_shards(dir, 400, &[]);
    let root = dir.join("root");
    let base = root.join("language/datasets/pile_original/hdf5_dataset");
    std::fs::create_dir_all(base.join("train_shuffled_msl2048")).unwrap();
    for i in 0..10 {
        std::os::unix::fs::symlink(&shards, base.join(format!("train_shuffled_msl2048/{i}")))
            .unwrap();
    }
    std::os::unix::fs::symlink(&shards, base.join("val_msl2048")).unwrap();
    root
}

/// The CPU-sized shape and run length, given as flags over the file's.
const SMALL: &[&str] = &[
    "--n-layer",
    "2",
    "--n-head",
    "2",
    "--n-embd",
    "32",
    "--ffn-size",
    "96",
    "--n-ctx",
    "32",
    "--batch-size",
    "8",
    "--micro-batch",
    "4",
    "--max-steps",
    "3",
    "--eval-batches",
    "2",
    "--dtype",
    "fp32",
    "--device",
    "cpu",
];

/// `train --config CONFIG --data-root ROOT --out OUT`, shrunk to CPU size by [`SMALL`], with
/// `extra` flags after them.
fn train_from_config(
    config: &Path,
    root: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let paths = [config, root, out].map(|p| p.display().to_string());
    let mut args = vec![
        "--config",
        paths[0].as_str(),
        "--data-root",
        paths[1].as_str(),
        "--out",
        paths[2].as_str(),
    ];
    args.extend(SMALL);
    args.extend(extra);
    run("train", &args)
}

fn metrics(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn train_runs_the_gpt3_xl_config_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let root = data_root(dir.path());
    let out = dir.path().join("run");
    let config = fixture("r2.0.3-params_gpt3_xl.yaml");
    let o = train_from_config(&config, &root, &out, &[]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("Cerebras Model Zoo config"), "{log}");
    assert!(
        log.contains("1,315,723,264"),
        "the file's own model is reported: {log}"
    );
    let report = std::fs::read_to_string(out.join("cerebras-config-report.txt")).unwrap();
    assert!(report.contains("runconfig.use_cs_grad_accum"), "{report}");
    // The file's schedule, step for step: 0 at step 0, then 1/346 and 2/346 of 2e-4.
    let rows = metrics(&out);
    let lrs: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.get("lr").and_then(|v| v.as_f64()))
        .collect();
    assert_eq!(lrs.len(), 3, "{rows:?}");
    for (step, lr) in lrs.iter().enumerate() {
        let expected = 2e-4 * step as f64 / 346.0;
        assert!(
            (lr - expected).abs() < 1e-12,
            "step {step}: {lr} vs {expected}"
        );
    }
    // shuffle: false reads the rows in order; the saved options keep the file's settings.
    let segments = std::fs::read_to_string(out.join("segments.jsonl")).unwrap();
    assert!(segments.contains("\"shuffle\":false"), "{segments}");
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    for line in [
        "shuffle = false",
        "[[lr_schedule]]",
        "kind = \"cosine\"",
        "batch_size = 8",
        "init_residual_std = 0.0025",
    ] {
        assert!(saved.contains(line), "{line} in {saved}");
    }
    // A rerun into the run folder (no --config) continues with the same options.
    let o = run(
        "train",
        &[
            "--out",
            &out.display().to_string(),
            "--max-steps",
            "4",
            "--device",
            "cpu",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let rows = metrics(&out);
    let last = rows
        .iter()
        .rev()
        .find_map(|r| r.get("lr").and_then(|v| v.as_f64()))
        .unwrap();
    assert!((last - 2e-4 * 3.0 / 346.0).abs() < 1e-12, "{last}");
}

#[test]
fn train_runs_the_2_10_mup_config_and_refuses_unknown_keys() {
    let dir = tempfile::tempdir().unwrap();
    let root = data_root(dir.path());
    let out = dir.path().join("run");
    let config = fixture("r2.10.0-Cerebras_GPT-111m_mup.yaml");
    let o = train_from_config(&config, &root, &out, &[]);
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    assert!(log.contains("μP: on"), "{log}");
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        saved.contains("mup = true") && saved.contains("mup_base_width = 256"),
        "{saved}"
    );

    // A key this reader does not know: exit 2, naming the key and the file.
    let typo = dir.path().join("typo.yaml");
    let body = std::fs::read_to_string(&config).unwrap().replace(
        "      num_heads: 12\n",
        "      num_heads: 12\n      num_haeds: 3\n",
    );
    std::fs::write(&typo, body).unwrap();
    let run2 = dir.path().join("run2");
    let o = train_from_config(&typo, &root, &run2, &[]);
    let log = text(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(
        log.contains("typo.yaml") && log.contains("trainer.init.model.num_haeds"),
        "{log}"
    );
    assert!(!dir.path().join("run2/config.toml").exists());
    // --allow-unknown runs, and the report lists the key.
    let o = train_from_config(&typo, &root, &run2, &["--allow-unknown"]);
    assert!(o.status.success(), "{}", text(&o));
    let report =
        std::fs::read_to_string(dir.path().join("run2/cerebras-config-report.txt")).unwrap();
    assert!(
        report.contains("UNKNOWN") && report.contains("num_haeds"),
        "{report}"
    );
}

#[test]
fn plan_prints_both_parameter_counts_and_converts_to_mup() {
    let o = run(
        "plan",
        &[
            "--config",
            &fixture("r2.0.3-params_gpt3_xl.yaml").display().to_string(),
        ],
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("1,315,723,264") && out.contains("1,315,819,520"),
        "{out}"
    );
    let o = run(
        "plan",
        &[
            "--config",
            &fixture("r2.0.3-Cerebras_GPT-111m.yaml")
                .display()
                .to_string(),
        ],
    );
    assert!(text(&o).contains("111,050,496"), "{}", text(&o));
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("mup.yaml");
    let o = run(
        "plan",
        &[
            "convert-mup",
            &fixture("r2.0.3-Cerebras_GPT-111m.yaml")
                .display()
                .to_string(),
            "--format",
            "yaml",
            "--out",
            &converted.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The converted file plans as the μP fixture does.
    let plan = |path: &Path| {
        let o = run("plan", &["--config", &path.display().to_string(), "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["cerebras"]["options"].clone()
    };
    assert_eq!(
        plan(&converted),
        plan(&fixture("r2.0.3-Cerebras_GPT-111m_mup.yaml"))
    );
}
