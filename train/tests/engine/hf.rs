//! Hugging Face GPT-2 export and import: logits against `transformers` (through
//! `scripts/hf_logits.py`), round trip, pinned golden logits, refusals, the `export` binary.

use h5gpt_train::checkpoint::{checkpoint_name, read_state, CHECKPOINTS};
use h5gpt_train::hf::{self, HfError};
use h5gpt_train::model::{Gpt, GptConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

/// A tiny model whose padded vocabulary (6350 → 6400 rows: padding pays at ≤ 1% more rows)
/// exercises the trim on export.
fn tiny() -> GptConfig {
    GptConfig {
        pad_vocab: true,
        ..GptConfig::tiny(6350, 16)
    }
}

/// Token ids `(2, 16)`: every position of the context, ids below 300 (in every test vocabulary).
fn ids() -> Vec<Vec<i64>> {
    (0..2)
        .map(|b| (0..16).map(|t| (t * 37 + b * 101 + 5) % 300).collect())
        .collect()
}

fn ids_tensor() -> Tensor {
    let rows: Vec<Tensor> = ids().iter().map(|r| Tensor::from_slice(r)).collect();
    Tensor::stack(&rows, 0)
}

/// A model with random weights, biases and LayerNorm gains included (so that a wrong layout
/// of any of them shows in the logits).
fn random_model(config: GptConfig, seed: i64) -> (nn::VarStore, Gpt) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), config);
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            let noise = var.randn_like() * 0.05;
            var.copy_(&(&var + noise));
        }
    });
    (vs, model)
}

/// Our logits for [`ids`], the first `vocab_size` columns.
fn our_logits(model: &Gpt) -> Tensor {
    let vocab = model.config().vocab_size as i64;
    tch::no_grad(|| model.forward(&ids_tensor(), false).narrow(2, 0, vocab))
}

/// The Python that has torch and transformers: `$H5GPT_PYTHON`, else `python3` on PATH
/// (scripts/env.sh puts the venv's first).
fn python() -> String {
    std::env::var("H5GPT_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Logits of the HF directory `dir` for [`ids`], computed by transformers'
/// `GPT2LMHeadModel` through `scripts/hf_logits.py`. Fails (never skips) without Python or
/// transformers.
fn transformers_logits(dir: &Path) -> Tensor {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/hf_logits.py");
    let out = dir.with_file_name("hf_logits.json");
    let ids = serde_json::to_string(&ids()).unwrap();
    let hint =
        "---> HINT: run scripts/setup.sh (installs torch and transformers into .venv), then \
                `source scripts/env.sh`, or point H5GPT_PYTHON at a Python that has transformers";
    let result = Command::new(python())
        .arg(&script)
        .arg(dir)
        .arg(&ids)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}\n{hint}", python(), script.display()));
    assert!(
        result.status.success(),
        "{} {} failed ({}):\n{}\n{hint}",
        python(),
        script.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let shape: Vec<i64> = serde_json::from_value(json["shape"].clone()).unwrap();
    let values: Vec<f32> = serde_json::from_value(json["logits"].clone()).unwrap();
    Tensor::from_slice(&values).view(shape.as_slice())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn export_matches_transformers_logits() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let (vs, model) = random_model(tiny(), 3);
    hf::export(&vs, &tiny(), &dir).unwrap();

    // The files as HF expects them: f32, Conv1D [in, out], wte trimmed to the vocabulary,
    // no lm_head (tied).
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(tensors["transformer.wte.weight"].size(), [6350, 32]);
    assert_eq!(
        tensors["transformer.h.1.attn.c_attn.weight"].size(),
        [32, 96]
    );
    assert_eq!(
        tensors["transformer.h.0.mlp.c_proj.weight"].size(),
        [128, 32]
    );
    assert!(tensors.values().all(|t| t.kind() == Kind::Float));
    assert!(!tensors.contains_key("lm_head.weight"));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["vocab_size"], 6350);
    assert_eq!(config["n_positions"], 16);
    assert!(config["eos_token_id"].is_null(), "not GPT-2's vocabulary");

    let ours = our_logits(&model);
    let theirs = transformers_logits(&dir);
    let diff = max_abs_diff(&ours, &theirs);
    assert!(diff < 1e-4, "logits differ from transformers' by {diff}");
}

#[test]
fn round_trip_gives_identical_logits() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let (vs, model) = random_model(tiny(), 4);
    hf::export(&vs, &tiny(), &dir).unwrap();

    let (config, tensors) = hf::load(&dir).unwrap();
    assert_eq!(config, tiny());
    let wte = &tensors
        .iter()
        .find(|(n, _)| n == "transformer.wte.weight")
        .unwrap()
        .1;
    assert_eq!(wte.size(), [6400, 32], "padded back to embedding_rows()");
    assert_eq!(
        wte.narrow(0, 6350, 50)
            .abs()
            .sum(Kind::Float)
            .double_value(&[]),
        0.0
    );

    let fresh = nn::VarStore::new(Device::Cpu);
    let copy = Gpt::new(&fresh.root(), config);
    hf::copy_into(&fresh, &tensors).unwrap();
    assert!(our_logits(&model).equal(&our_logits(&copy)));

    // Exporting again replaces the earlier export.
    hf::export(&fresh, &config, &dir).unwrap();
    assert_eq!(hf::load(&dir).unwrap().0, config);
}

#[test]
fn load_accepts_hub_names_buffers_and_a_tied_head() {
    let _rng = crate::torch_rng();
    // The original `gpt2` hub checkpoint: no `transformer.` prefix, causal-mask buffers, and
    // (in some exports) an lm_head equal to wte.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let (vs, model) = random_model(tiny(), 5);
    hf::export(&vs, &tiny(), &dir).unwrap();
    let weights = dir.join("model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&weights)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n.trim_start_matches("transformer.").to_string(), t))
        .collect();
    let wte = tensors
        .iter()
        .find(|(n, _)| n == "wte.weight")
        .unwrap()
        .1
        .copy();
    tensors.push(("lm_head.weight".into(), wte));
    for i in 0..2 {
        tensors.push((
            format!("h.{i}.attn.bias"),
            Tensor::ones([1, 1, 16, 16], (Kind::Float, Device::Cpu)),
        ));
        tensors.push((format!("h.{i}.attn.masked_bias"), Tensor::from(-1e4f32)));
    }
    Tensor::write_safetensors(&tensors, &weights).unwrap();

    let (config, tensors) = hf::load(&dir).unwrap();
    let fresh = nn::VarStore::new(Device::Cpu);
    let copy = Gpt::new(&fresh.root(), config);
    hf::copy_into(&fresh, &tensors).unwrap();
    assert!(our_logits(&model).equal(&our_logits(&copy)));
}

/// Fills every variable by a formula of its element index and its rank among the sorted
/// variable names (independent of torch's RNG): `base + 0.1·sin(0.731·k + 1.37·v)`, base 1
/// for LayerNorm gains, 0 otherwise.
fn formula_model(config: GptConfig) -> (nn::VarStore, Gpt) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), config);
    let variables: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    tch::no_grad(|| {
        for (v, (name, var)) in variables.iter().enumerate() {
            let base = if name.contains(".ln_") && name.ends_with(".weight") {
                1.0
            } else {
                0.0
            };
            let values: Vec<f32> = (0..var.numel())
                .map(|k| (base + 0.1 * (0.731 * k as f64 + 1.37 * v as f64).sin()) as f32)
                .collect();
            var.shallow_clone()
                .copy_(&Tensor::from_slice(&values).view(var.size().as_slice()));
        }
    });
    (vs, model)
}

#[test]
fn golden_logits() {
    let _rng = crate::torch_rng();
    // Pinned with a 300-token vocabulary padded to 320 rows (no longer padded: the real rows,
    // and so these logits, are the same).
    let golden_config = GptConfig::tiny(300, 16);
    let (vs, model) = formula_model(golden_config);
    let logits = our_logits(&model);
    // (batch, position, token, logit), printed by this test (`{got:.7}`) and cross-checked
    // against transformers 5.23.0 (torch 2.11.0, CPU), which agreed within 4e-7:
    //   H5GPT_GOLDEN_EXPORT=/tmp/golden cargo test -p h5gpt-train --test engine hf::golden
    //   python3 scripts/hf_logits.py /tmp/golden "$IDS" /tmp/golden.json
    // with IDS the JSON of `ids()`:
    //   [[5,42,79,116,153,190,227,264,1,38,75,112,149,186,223,260],
    //    [106,143,180,217,254,291,28,65,102,139,176,213,250,287,24,61]]
    let golden: [(i64, i64, i64, f64); 6] = [
        (0, 0, 0, -1.4822561),
        (0, 5, 17, 0.1917444),
        (0, 15, 299, -1.6686460),
        (1, 3, 100, -0.5542032),
        (1, 9, 250, 0.5049525),
        (1, 15, 7, -1.8758079),
    ];
    for (b, t, v, expected) in golden {
        let got = logits.double_value(&[b, t, v]);
        println!("({b}, {t}, {v}, {got:.7}),");
        assert!(
            (got - expected).abs() < 1e-5,
            "logit [{b}, {t}, {v}] = {got}, pinned {expected}"
        );
    }
    // To re-check against transformers: export this model where the variable says.
    if let Some(dir) = std::env::var_os("H5GPT_GOLDEN_EXPORT") {
        hf::export(&vs, &golden_config, Path::new(&dir)).unwrap();
    }
}

#[test]
fn refuses_a_model_without_biases() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let config = GptConfig {
        bias: false,
        ..tiny()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Gpt::new(&vs.root(), config);
    let err = hf::export(&vs, &config, &tmp.path().join("hf")).unwrap_err();
    assert!(matches!(err, HfError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("bias"), "{err}");
    assert!(!tmp.path().join("hf").exists());
}

#[test]
fn refuses_another_activation_and_a_foreign_directory() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hf");
    let (vs, _model) = random_model(tiny(), 6);
    hf::export(&vs, &tiny(), &dir).unwrap();
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["activation_function"] = "relu".into();
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let err = hf::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("activation_function") && err.contains("relu") && err.contains("config.json"),
        "{err}"
    );

    // A non-empty directory that is not an export is left alone.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = hf::export(&vs, &tiny(), &foreign).unwrap_err();
    assert!(matches!(err, HfError::TargetNotAnExport { .. }), "{err:?}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(
        std::fs::read_to_string(foreign.join("notes.txt")).unwrap(),
        "mine"
    );
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Issue 24 item 1: a folder holding a `config.json` was taken for an earlier export and
/// replaced whole, deleting the user's other files. Only a directory with our marker and only
/// the files it lists (or an export from before the marker: export files only) is replaced;
/// `--force` writes into any other and deletes nothing it did not write.
#[test]
fn a_folder_with_a_config_json_is_not_an_export() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let (vs, _model) = random_model(tiny(), 9);
    let project = tmp.path().join("p");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("config.json"), "{}").unwrap();
    std::fs::write(project.join("main.py"), "x\n").unwrap();
    std::fs::write(project.join("src/lib.py"), "y\n").unwrap();
    let err = hf::export(&vs, &tiny(), &project).unwrap_err();
    assert!(matches!(err, HfError::TargetNotAnExport { .. }), "{err:?}");
    assert_eq!(names(&project), ["config.json", "main.py", "src"]);
    assert_eq!(
        std::fs::read_to_string(project.join("config.json")).unwrap(),
        "{}"
    );

    // --force: our files are written, the user's others stay.
    hf::export_with_tokenizer(&vs, &tiny(), &project, None, hf::Replace::Force).unwrap();
    assert_eq!(
        names(&project),
        [
            "config.json",
            "h5gpt-export.json",
            "main.py",
            "model.safetensors",
            "src"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(project.join("main.py")).unwrap(),
        "x\n"
    );
    assert_eq!(
        std::fs::read_to_string(project.join("src/lib.py")).unwrap(),
        "y\n"
    );
    assert_eq!(hf::load(&project).unwrap().0, tiny());
    // Still not an export (main.py is not ours): a plain export refuses it again.
    assert!(matches!(
        hf::export(&vs, &tiny(), &project).unwrap_err(),
        HfError::TargetNotAnExport { .. }
    ));
    // Nothing is left beside it.
    assert_eq!(names(tmp.path()), ["p"]);

    // A marker that lists a file no export writes is not ours.
    let forged = tmp.path().join("forged");
    std::fs::create_dir(&forged).unwrap();
    std::fs::write(
        forged.join(hf::MARKER_FILE),
        r#"{"written_by": "h5gpt export", "version": 1, "files": ["main.py"]}"#,
    )
    .unwrap();
    std::fs::write(forged.join("main.py"), "x").unwrap();
    assert!(hf::export(&vs, &tiny(), &forged).is_err());
    assert!(forged.join("main.py").exists());

    // An export from before the marker (export files only) is replaced, and gets the marker.
    let legacy = tmp.path().join("legacy");
    hf::export(&vs, &tiny(), &legacy).unwrap();
    std::fs::remove_file(legacy.join(hf::MARKER_FILE)).unwrap();
    hf::export(&vs, &tiny(), &legacy).unwrap();
    assert_eq!(
        names(&legacy),
        ["config.json", "h5gpt-export.json", "model.safetensors"]
    );
}

#[test]
fn copy_into_names_a_missing_or_mismatched_tensor() {
    let _rng = crate::torch_rng();
    let (vs, _model) = random_model(tiny(), 7);
    let dir = tempfile::tempdir().unwrap();
    hf::export(&vs, &tiny(), &dir.path().join("hf")).unwrap();
    let (_, mut tensors) = hf::load(&dir.path().join("hf")).unwrap();
    let fresh = nn::VarStore::new(Device::Cpu);
    let _copy = Gpt::new(&fresh.root(), tiny());

    let i = tensors
        .iter()
        .position(|(n, _)| n == "transformer.h.1.mlp.c_fc.weight")
        .unwrap();
    let (name, t) = tensors.remove(i);
    let err = hf::copy_into(&fresh, &tensors).unwrap_err().to_string();
    assert!(
        err.contains("transformer.h.1.mlp.c_fc.weight") && err.contains("missing"),
        "{err}"
    );
    tensors.push((name, t.tr()));
    let err = hf::copy_into(&fresh, &tensors).unwrap_err().to_string();
    assert!(
        err.contains("transformer.h.1.mlp.c_fc.weight") && err.contains("shape"),
        "{err}"
    );
}

/// A run directory with one checkpoint of `model` (what `train` writes, minus the optimizer).
fn fake_run(dir: &Path, vs: &nn::VarStore, model: GptConfig) -> PathBuf {
    let checkpoint = dir.join(CHECKPOINTS).join(checkpoint_name(3));
    std::fs::create_dir_all(&checkpoint).unwrap();
    vs.save(checkpoint.join("model.safetensors")).unwrap();
    // state.json written as JSON, so that fields added later with defaults need no change here.
    let state = serde_json::json!({
        "step": 3,
        "position": 0,
        "seed": 1,
        "global_batch": 1,
        "seq_len": model.n_ctx,
        "model": model,
    });
    std::fs::write(
        checkpoint.join("state.json"),
        serde_json::to_vec_pretty(&state).unwrap(),
    )
    .unwrap();
    assert_eq!(read_state(&checkpoint).unwrap().model, model);
    dir.to_path_buf()
}

#[test]
fn export_binaries_write_a_loadable_directory() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let (vs, model) = random_model(tiny(), 8);
    let run = fake_run(&tmp.path().join("run"), &vs, tiny());
    // `h5gpt export` runs `h5gpt-torch export`; `h5gpt-export` is its deprecated alias.
    for (bin, exe, first) in [
        ("export", env!("CARGO_BIN_EXE_h5gpt-torch"), Some("export")),
        ("h5gpt-export", env!("CARGO_BIN_EXE_h5gpt-export"), None),
    ] {
        let out = tmp.path().join(format!("hf-{bin}"));
        let result = Command::new(exe)
            .args(first)
            .arg("--checkpoint")
            .arg(&run)
            .arg("--hf")
            .arg(&out)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&result.stdout);
        assert!(
            result.status.success(),
            "{bin}: {}\n{stdout}{}",
            result.status,
            String::from_utf8_lossy(&result.stderr)
        );
        if first.is_none() {
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert!(
                stderr.contains("deprecated: use `h5gpt export`"),
                "{stderr}"
            );
        }
        let params = tiny().breakdown_unpadded().total();
        assert!(stdout.contains(&format!("{params} parameters")), "{stdout}");
        assert!(stdout.contains("vocab 6350"), "{stdout}");
        let (config, tensors) = hf::load(&out).unwrap();
        let fresh = nn::VarStore::new(Device::Cpu);
        let copy = Gpt::new(&fresh.root(), config);
        hf::copy_into(&fresh, &tensors).unwrap();
        assert!(our_logits(&model).equal(&our_logits(&copy)));
    }
    // A folder that is not an export: exit 1, nothing of it lost; --force keeps its files.
    let project = tmp.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("config.json"), "{}").unwrap();
    std::fs::write(project.join("main.py"), "x").unwrap();
    for (force, code) in [(false, 1), (true, 0)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_h5gpt-export"));
        cmd.arg("--checkpoint").arg(&run).arg("--hf").arg(&project);
        if force {
            cmd.arg("--force");
        }
        let result = cmd.output().unwrap();
        assert_eq!(
            result.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&result.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(project.join("main.py")).unwrap(),
            "x"
        );
    }
    assert_eq!(hf::load(&project).unwrap().0, tiny());
    // Refusals name the problem and exit non-zero.
    let result = Command::new(env!("CARGO_BIN_EXE_h5gpt-export"))
        .args(["--checkpoint", "/nonexistent/run", "--hf"])
        .arg(tmp.path().join("never"))
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("h5gpt-export: error") && stderr.contains("/nonexistent/run"),
        "{stderr}"
    );
}
