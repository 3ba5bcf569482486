//! The Model Zoo fixtures (tests/fixtures/cerebras-configs, Apache-2.0, unmodified) read,
//! mapped and converted.

use super::convert::{convert_to_mup, to_yaml_text, MupBase};
use super::map::{map, Generation, LoadOptions, Mapped};
use super::report::{cerebras_parameter_count, render};
use super::yaml::{Disposition, Document};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

const GPT3_XL: &str = "r2.0.3-params_gpt3_xl.yaml";
const SP_111M: &str = "r2.0.3-Cerebras_GPT-111m.yaml";
const MUP_111M: &str = "r2.0.3-Cerebras_GPT-111m_mup.yaml";
const MUP_111M_2_10: &str = "r2.10.0-Cerebras_GPT-111m_mup.yaml";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/cerebras-configs")
        .join(name)
}

fn raw(name: &str) -> Yaml {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn mapped(name: &str) -> Mapped {
    super::load(&fixture(name), &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn num(y: &Yaml) -> f64 {
    match y {
        Yaml::Integer(i) => *i as f64,
        other => other.as_f64().unwrap_or_else(|| panic!("{other:?}")),
    }
}

#[test]
fn every_fixture_maps_with_every_key_accounted_for() {
    for (name, generation) in [
        (GPT3_XL, Generation::Release2_0),
        (SP_111M, Generation::Release2_0),
        (MUP_111M, Generation::Release2_0),
        (MUP_111M_2_10, Generation::Release2_10),
    ] {
        let m = mapped(name);
        assert_eq!(m.generation, generation, "{name}");
        assert!(!m.entries.is_empty());
        let unknown: Vec<_> = m
            .entries
            .iter()
            .filter(|e| e.disposition == Disposition::Unknown)
            .collect();
        assert!(unknown.is_empty(), "{name}: {unknown:?}");
        // Hardware keys are ignored, with a reason.
        assert!(
            m.entries.iter().any(|e| e.key.ends_with("num_workers")
                && matches!(&e.disposition, Disposition::Ignored(why) if !why.is_empty())),
            "{name}"
        );
        let report = render(&m);
        assert!(report.contains("hidden_size = 768") || report.contains("hidden_size = 2048"));
    }
}

#[test]
fn parameter_counts_are_cerebras_convention() {
    for name in [SP_111M, MUP_111M, MUP_111M_2_10] {
        let m = mapped(name);
        assert_eq!(cerebras_parameter_count(&m), 111_050_496, "{name}");
        // Ours pads the vocabulary 50257 → 50304: 47 rows × 768 more.
        assert_eq!(m.model.parameter_count(), 111_050_496 + 47 * 768, "{name}");
    }
    let xl = mapped(GPT3_XL);
    assert_eq!(cerebras_parameter_count(&xl), 1_315_723_264);
    assert_eq!(xl.model.ffn_width(), 8192);
    assert!(render(&xl).contains("1,315,723,264"));
}

/// LR at step 0, at each phase boundary, at the last trained step and after, from the YAML's
/// own numbers.
#[test]
fn the_schedule_is_cerebras_step_for_step() {
    for name in [GPT3_XL, SP_111M, MUP_111M] {
        let m = mapped(name);
        let phases = raw(name)["optimizer"]["learning_rate"]
            .as_vec()
            .unwrap()
            .clone();
        let (first, second) = (&phases[0], &phases[1]);
        let warmup = num(&first["total_iters"]) as usize;
        let decay = num(&second["total_iters"]) as usize;
        let s = &m.schedule;
        assert_eq!(
            s.lr(0),
            num(&first["initial_learning_rate"]),
            "{name}: step 0"
        );
        let peak = num(&first["end_learning_rate"]);
        let expected_before = num(&first["initial_learning_rate"])
            + (peak - num(&first["initial_learning_rate"])) * (warmup - 1) as f64 / warmup as f64;
        assert!((s.lr(warmup - 1) - expected_before).abs() < 1e-15, "{name}");
        assert_eq!(
            s.lr(warmup),
            num(&second["initial_learning_rate"]),
            "{name}: end of warm-up"
        );
        let total = warmup + decay;
        assert_eq!(s.total_steps(), Some(total));
        let end = num(&second["end_learning_rate"]);
        let start = num(&second["initial_learning_rate"]);
        let progress = (decay - 1) as f64 / decay as f64;
        let last = match second["scheduler"].as_str().unwrap() {
            "Linear" => start + (end - start) * progress,
            "CosineDecay" => {
                end + (start - end) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            other => panic!("{other}"),
        };
        assert!(
            (s.lr(total - 1) - last).abs() < 1e-15,
            "{name}: last trained step"
        );
        assert!((s.lr(total) - end).abs() < 1e-18, "{name}: the end value");
        assert!(
            (s.lr(total + 100) - end).abs() < 1e-18,
            "{name}: held after"
        );
    }
    // 2.10's SequentialLR of LinearLRs.
    let m = mapped(MUP_111M_2_10);
    let y = raw(MUP_111M_2_10);
    let inner = y["trainer"]["init"]["schedulers"][0]["SequentialLR"]["schedulers"]
        .as_vec()
        .unwrap()
        .clone();
    let warmup = num(&inner[0]["LinearLR"]["total_iters"]) as usize;
    let decay = num(&inner[1]["LinearLR"]["total_iters"]) as usize;
    assert_eq!(
        m.schedule.lr(0),
        num(&inner[0]["LinearLR"]["initial_learning_rate"])
    );
    assert_eq!(
        m.schedule.lr(warmup),
        num(&inner[1]["LinearLR"]["initial_learning_rate"])
    );
    assert_eq!(
        m.schedule.lr(warmup + decay),
        num(&inner[1]["LinearLR"]["end_learning_rate"])
    );
    // 111M: 0 at step 0, 6e-3 at 1525, 6e-4 at 9037 = max_steps.
    assert_eq!((warmup, decay), (1525, 7512));
    assert_eq!(m.options["max_steps"].as_integer(), Some(9037));
}

#[test]
fn both_generations_of_the_111m_mup_config_give_the_same_run() {
    let old = mapped(MUP_111M);
    let new = mapped(MUP_111M_2_10);
    assert_eq!(old.model, new.model);
    let mup = old.model.mup.expect("μP");
    assert_eq!(
        (mup.base_width, mup.embed_mult, mup.init_std),
        (256, 10.0, 0.08)
    );
    assert_eq!(old.model.width_mult(), 3.0);
    assert_eq!(old.schedule, new.schedule);
    // Every option: optimizer, schedule, batch, data, loop, precision.
    assert_eq!(old.options, new.options);
    for key in [
        "adam_beta1",
        "adam_beta2",
        "adam_eps",
        "weight_decay",
        "grad_clip",
    ] {
        assert!(old.options.contains_key(key), "{key}");
    }
    // And the SP fixture is another model: no μP, GPT-2-like stds.
    let sp = mapped(SP_111M);
    assert!(sp.model.mup.is_none());
    assert_ne!(sp.model, old.model);
    let std = sp.model.init.and_then(|i| i.std).unwrap();
    assert_eq!((std.embedding, std.hidden), (0.02, 0.02));
    assert!((std.residual - 0.02 / 20f64.sqrt()).abs() < 1e-15);
    assert_eq!(sp.model.init.unwrap().truncation, Some(2.0));
}

fn assert_same_numbers(a: &Yaml, b: &Yaml, path: &str) {
    match (a, b) {
        (Yaml::Hash(x), Yaml::Hash(y)) => {
            let keys = |h: &yaml_rust2::yaml::Hash| {
                let mut k: Vec<String> =
                    h.keys().map(|k| k.as_str().unwrap().to_string()).collect();
                k.sort();
                k
            };
            assert_eq!(keys(x), keys(y), "{path}");
            for (k, v) in x {
                assert_same_numbers(v, &y[k], &format!("{path}.{}", k.as_str().unwrap()));
            }
        }
        (Yaml::Array(x), Yaml::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                assert_same_numbers(u, v, &format!("{path}[{i}]"));
            }
        }
        (Yaml::Real(_) | Yaml::Integer(_), Yaml::Real(_) | Yaml::Integer(_)) => {
            let (u, v) = (num(a), num(b));
            assert!(
                (u - v).abs() <= 1e-12 * u.abs().max(v.abs()),
                "{path}: {u} vs {v}"
            );
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn convert_mup_turns_the_sp_config_into_the_mup_one() {
    let sp = Document::read(&fixture(SP_111M)).unwrap();
    let converted = convert_to_mup(&sp, &MupBase::default()).unwrap();
    let expected = raw(MUP_111M);
    for section in ["model", "optimizer"] {
        assert_same_numbers(&converted[section], &expected[section], section);
    }
    // Written as YAML, read back and mapped: the μP fixture's run.
    let text = to_yaml_text(&converted);
    assert!(text.contains("0.046188021535170"), "{text}");
    // Reals as PyYAML (YAML 1.1) reads them: a decimal point, a signed exponent.
    assert_eq!(super::convert::real(1e-8), Yaml::Real("1.0e-8".into()));
    assert_eq!(super::convert::real(2e20), Yaml::Real("2.0e+20".into()));
    assert_eq!(super::convert::real(0.006), Yaml::Real("0.006".into()));
    let doc = Document::parse(Path::new("converted.yaml"), &text).unwrap();
    let ours = map(&doc, &LoadOptions::default()).unwrap();
    assert_eq!(ours.options, mapped(MUP_111M).options);
    // A μP config is not converted twice.
    let mup = Document::read(&fixture(MUP_111M)).unwrap();
    assert!(convert_to_mup(&mup, &MupBase::default())
        .unwrap_err()
        .to_string()
        .contains("μP already"));
}

#[test]
fn convert_mup_keeps_the_2_10_layout() {
    // The 2.10 μP fixture with its μP keys removed and SP stds is the SP input.
    let mut y = raw(MUP_111M_2_10);
    if let Yaml::Hash(model) = &mut y["trainer"]["init"]["model"] {
        for key in [
            "mup_base_filter_size",
            "mup_base_hidden_size",
            "scale_qk_dot_by_d",
            "output_logits_alpha",
            "embeddings_scale",
        ] {
            model.remove(&Yaml::String(key.into()));
        }
    }
    let sp = Document::from_yaml(Path::new("sp-2.10.yaml"), y).unwrap();
    let converted = convert_to_mup(&sp, &MupBase::default()).unwrap();
    let expected = raw(MUP_111M_2_10);
    assert_same_numbers(
        &converted["trainer"]["init"]["model"],
        &expected["trainer"]["init"]["model"],
        "model",
    );
    assert_same_numbers(
        &converted["trainer"]["init"]["schedulers"],
        &expected["trainer"]["init"]["schedulers"],
        "schedulers",
    );
}

#[test]
fn unknown_keys_are_errors_naming_key_and_file_unless_allowed() {
    let text = std::fs::read_to_string(fixture(SP_111M)).unwrap().replace(
        "    num_heads: 12\n",
        "    num_heads: 12\n    num_hedas: 3\n",
    );
    let file = Path::new("typo.yaml");
    let doc = Document::parse(file, &text).unwrap();
    assert!(text.contains("num_hedas"));
    let err = map(&doc, &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("typo.yaml") && err.contains("model.num_hedas"),
        "{err}"
    );
    let doc = Document::parse(file, &text).unwrap();
    let allowed = map(
        &doc,
        &LoadOptions {
            allow_unknown: true,
            data_root: None,
        },
    )
    .unwrap();
    assert!(allowed
        .entries
        .iter()
        .any(|e| e.key == "model.num_hedas" && e.disposition == Disposition::Unknown));
    assert!(render(&allowed).contains("UNKNOWN"));
}

#[test]
fn unsupported_values_are_refused_by_key() {
    for (from, to, key) in [
        (
            "position_embedding_type: \"learned\"",
            "position_embedding_type: \"rotary\"",
            "model.position_embedding_type",
        ),
        (
            "use_ffn_bias: True",
            "use_ffn_bias: False",
            "model.use_ffn_bias",
        ),
        (
            "nonlinearity: \"gelu\"",
            "nonlinearity: \"relu\"",
            "model.nonlinearity",
        ),
        (
            "scheduler: \"Linear\"",
            "scheduler: \"Exponential\"",
            "optimizer.learning_rate[0]",
        ),
        (
            "optimizer_type: \"AdamW\"",
            "optimizer_type: \"SGD\"",
            "optimizer.optimizer_type",
        ),
    ] {
        let text = std::fs::read_to_string(fixture(SP_111M))
            .unwrap()
            .replacen(from, to, 1);
        let doc = Document::parse(Path::new("x.yaml"), &text).unwrap();
        let err = map(&doc, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    // A μP config whose stds break our μP's rules.
    let text = std::fs::read_to_string(fixture(MUP_111M))
        .unwrap()
        .replace("std: 0.046188021535170064", "std: 0.05");
    let doc = Document::parse(Path::new("x.yaml"), &text).unwrap();
    let err = map(&doc, &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("model.initializer") && err.contains("σ_base/√m"),
        "{err}"
    );
}

#[test]
fn data_dirs_are_one_set_resolved_against_data_root() {
    let m = mapped(SP_111M);
    let shards = m.options["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 10);
    assert!(
        !m.options.contains_key("weights"),
        "a list is one set, not a blend"
    );
    assert!(shards[0].as_str().unwrap().starts_with("./language/"));
    assert_eq!(m.options["batch_size"].as_integer(), Some(120));
    assert_eq!(m.options["val_shards"].as_array().unwrap().len(), 1);
    let rooted = super::load(
        &fixture(SP_111M),
        &LoadOptions {
            allow_unknown: false,
            data_root: Some("/data/pile".into()),
        },
    )
    .unwrap();
    assert!(rooted.options["shards"][0]
        .as_str()
        .unwrap()
        .starts_with("/data/pile/./language/"));
    // GPT-3 XL: shuffle false, a micro-batch of its own, bf16.
    let xl = mapped(GPT3_XL);
    assert_eq!(xl.options["shuffle"].as_bool(), Some(false));
    assert_eq!(xl.options["micro_batch"].as_integer(), Some(264));
    assert_eq!(xl.options["batch_size"].as_integer(), Some(528));
    assert_eq!(xl.options["dtype"].as_str(), Some("bf16"));
    assert_eq!(xl.options["eval_batches"].as_integer(), Some(702));
    let std = xl.model.init.and_then(|i| i.std).unwrap();
    assert_eq!(
        std.residual, 0.0025,
        "the file's own output std, not 0.02/√48"
    );
}

#[test]
fn the_mapped_options_read_as_a_toml_config() {
    // Through TOML text, as `train --config` would read a file: every key is an option.
    for name in [GPT3_XL, SP_111M, MUP_111M, MUP_111M_2_10] {
        let text = toml::to_string(&mapped(name).options).unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(table, mapped(name).options, "{name}");
    }
}

/// A "billion laughs" YAML: `levels` anchors, each a list of nine aliases of the one before
/// (`a: &a [x,…]`, `b: &b [*a,…]`, …): a few hundred bytes that expand to 9^levels values.
fn alias_bomb(levels: usize) -> String {
    let names: Vec<char> = ('a'..='z').take(levels).collect();
    let mut text = format!("{}: &{} [x, x, x, x, x, x, x, x, x]\n", names[0], names[0]);
    for pair in names.windows(2) {
        let items = vec![format!("*{}", pair[0]); 9].join(", ");
        text.push_str(&format!("{}: &{} [{items}]\n", pair[1], pair[1]));
    }
    text
}

/// Issue 24 item 2: a 546-byte config with nine levels of nested aliases grew without bound
/// (yaml-rust2's loader clones each alias); twelve levels were killed at 24 GB. The node count
/// is taken from the parser's events before anything is built, and refused past the limit.
#[test]
fn alias_bombs_are_refused_before_they_are_built() {
    for levels in [9, 12] {
        let text = alias_bomb(levels);
        assert!(text.len() < 1000, "{}", text.len());
        let err = match Document::parse(Path::new("bomb.yaml"), &text) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{levels} levels accepted"),
        };
        assert!(
            err.contains("bomb.yaml") && err.contains("100000 values") && err.contains("aliases"),
            "{err}"
        );
    }
    // A few aliases within the limit still expand as YAML says.
    let small = Document::parse(Path::new("ok.yaml"), &alias_bomb(3)).unwrap();
    let Yaml::Array(c) = &small.root()["c"] else {
        panic!("c is a list")
    };
    assert_eq!(c.len(), 9);
    assert_eq!(c[0], small.root()["b"]);
}

#[test]
fn oversized_and_over_deep_configs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.yaml");
    let mut text = String::from("model:\n");
    while text.len() <= super::yaml::MAX_CONFIG_BYTES as usize {
        text.push_str("  # padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).unwrap();
    let err = Document::read(&big).err().expect("refused").to_string();
    assert!(err.contains("big.yaml") && err.contains("1 MiB"), "{err}");
    let deep = format!("a: {}{}\n", "[".repeat(150), "]".repeat(150));
    let err = Document::parse(Path::new("deep.yaml"), &deep)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("deep.yaml") && err.contains("nested"), "{err}");
}

/// Issue 24 item 19: release 2.0.3's `params_gpt3_20b.yaml` was refused for
/// `optimizer.ws_summary` (a TensorFlow-era logging switch). Its other extra keys (loss
/// scaling, cluster settings, numerics switches) are known too.
#[test]
fn the_2_0_3_gpt3_20b_keys_are_known() {
    let text = std::fs::read_to_string(fixture(SP_111M))
        .unwrap()
        .replace(
            "    log_summaries: True\n",
            "    log_summaries: True\n    ws_summary: True\n    loss_scaling_factor: \"dynamic\"\n    initial_loss_scale: 2147483648.0\n    max_loss_scale: 2147483648.0\n",
        )
        .replace(
            "    mixed_precision: True\n",
            "    mixed_precision: True\n    boundary_casting: False\n    tf_summary: False\n",
        )
        .replace(
            "runconfig:\n",
            "runconfig:\n    keep_checkpoint_max: 21\n    seed: 0\n    num_wgt_servers: 24\n    num_workers_per_csx: 1\n",
        );
    assert!(text.contains("ws_summary") && text.contains("num_wgt_servers"));
    let doc = Document::parse(Path::new("20b.yaml"), &text).unwrap();
    let m = map(&doc, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let ws = m
        .entries
        .iter()
        .find(|e| e.key == "optimizer.ws_summary")
        .expect("recorded");
    assert!(matches!(ws.disposition, Disposition::Ignored(_)), "{ws:?}");
    assert_eq!(m.options["seed"].as_integer(), Some(0));
}

/// Issue 24 item 19: release 2.10's GPT-3 XL config sets its micro-batch in a callback
/// (`ScopedTrainFlags: {csx.performance.micro_batch_size: 88}`); it is our --micro-batch, the
/// validation one and ComputeNorm are known and ignored, and any other callback is unknown.
#[test]
fn the_2_10_callbacks_are_read_one_by_one() {
    let base = std::fs::read_to_string(fixture(MUP_111M_2_10)).unwrap();
    let flags = "    callbacks:\n    - ScopedTrainFlags:\n        csx.performance.micro_batch_size: 30\n    - ScopedValidateFlags:\n        csx.performance.micro_batch_size: 30\n    - ComputeNorm: {}\n";
    let text = base.replace("    callbacks:\n    - ComputeNorm: {}\n", flags);
    assert!(text.contains("ScopedTrainFlags"));
    let doc = Document::parse(Path::new("xl.yaml"), &text).unwrap();
    let m = map(&doc, &LoadOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.options["micro_batch"].as_integer(), Some(30));
    for (key, read) in [
        (
            "trainer.init.callbacks[0].ScopedTrainFlags.csx.performance.micro_batch_size",
            true,
        ),
        (
            "trainer.init.callbacks[1].ScopedValidateFlags.csx.performance.micro_batch_size",
            false,
        ),
        ("trainer.init.callbacks[2].ComputeNorm", false),
    ] {
        let e = m
            .entries
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("{key}"));
        assert_eq!(matches!(e.disposition, Disposition::Read(_)), read, "{e:?}");
    }
    // A callback or flag not in the Model Zoo's configs stays an error.
    for (from, to, key) in [
        (
            "- ComputeNorm: {}",
            "- CheckLos: {}",
            "trainer.init.callbacks[2]",
        ),
        (
            "micro_batch_size: 30\n    - ScopedValidateFlags",
            "micro_batch_sise: 30\n    - ScopedValidateFlags",
            "trainer.init.callbacks[0]",
        ),
    ] {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{key}");
        let doc = Document::parse(Path::new("xl.yaml"), &bad).unwrap();
        let err = map(&doc, &LoadOptions::default()).unwrap_err().to_string();
        assert!(
            err.contains("does not know") && err.contains(key),
            "{key}: {err}"
        );
    }
}

/// Issue 24 item 19: the Model Zoo's sparsity configs are refused as what they are.
#[test]
fn sparsity_configs_are_refused_by_name() {
    let text = std::fs::read_to_string(fixture(SP_111M)).unwrap()
        + "sparsity:\n    type: \"static\"\n    sparsity: 0.75\n";
    let doc = Document::parse(Path::new("sparse.yaml"), &text).unwrap();
    let err = map(&doc, &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("sparse.yaml: sparsity") && err.contains("not supported"),
        "{err}"
    );
    let text = std::fs::read_to_string(fixture(MUP_111M_2_10))
        .unwrap()
        .replace(
            "    callbacks:\n",
            "    sparsity:\n      sparsity: 0.75\n    callbacks:\n",
        );
    let doc = Document::parse(Path::new("sparse.yaml"), &text).unwrap();
    let err = map(&doc, &LoadOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("trainer.init.sparsity") && err.contains("not supported"),
        "{err}"
    );
}
