//! μP: the coordinate check, the table that drives initialization and the optimizer's groups,
//! the forward's multipliers, options, and the refusals (HF export, resuming a μP checkpoint
//! as a standard-parameterization run).

use clap::Parser;
use h5gpt_core::config::{MupConfig, Preset, MUP_BASE_LR};
use h5gpt_core::mup::{format_table, mup_table, rule_for, Init, TensorKind};
use h5gpt_formats::{Compression, ShardSetWriter};
use h5gpt_train::hf::{self, HfError};
use h5gpt_train::model::{Gpt, GptConfig};
use h5gpt_train::optim::{AdamW, AdamWConfig};
use h5gpt_train::options::{resolve, TrainOptions};
use h5gpt_train::trainer::{train, TrainConfig};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// The coordinate check's model: vocabulary 256, 2 layers, 4 heads, context 16.
fn coord_model(width: usize, mup: bool) -> GptConfig {
    GptConfig {
        n_head: 4,
        n_embd: width,
        mup: mup.then(MupConfig::default),
        ..GptConfig::tiny(256, 16)
    }
}

/// Mean |x| of the last block's output on a fixed batch, after 5 AdamW steps at base LR `lr`
/// on that batch (no clipping: the raw updates are what is measured).
fn last_block_activation(width: usize, mup: bool, lr: f64) -> f64 {
    tch::manual_seed(1234);
    let idx = Tensor::randint(256, [4, 16], (Kind::Int64, Device::Cpu)); // (B, T)
    let labels = idx.roll([-1], [1]);
    let mask = Tensor::ones([4, 16], (Kind::Int64, Device::Cpu));
    let cfg = coord_model(width, mup);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), cfg);
    let mut opt = AdamW::for_model(&vs, AdamWConfig::default(), &cfg);
    for _ in 0..5 {
        opt.zero_grad().unwrap();
        model.loss(&idx, &labels, &mask, true).backward();
        opt.step(lr, None).unwrap();
    }
    let (_, activations) = tch::no_grad(|| model.forward_with_activations(&idx, false));
    assert_eq!(activations.len(), cfg.n_layer + 1);
    let last = activations.last().unwrap(); // (B, T, C)
    last.abs().mean(Kind::Float).double_value(&[])
}

/// The μP paper's coordinate check (Yang et al. 2022, fig. 5), at base LR 6e-3 (Cerebras-GPT's
/// μP η_base) for both parameterizations. Under the standard parameterization every weight
/// moves by ~LR per Adam step whatever the width, so a hidden activation's change grows with
/// the width: SP visibly blows up (measured: mean |x| 0.22 → 3.2 → 40 for widths
/// 64 → 256 → 1024, 180×), μP stays put (5.7 → 4.3 → 4.1, 0.72×).
#[test]
fn coordinate_check_mup_is_width_stable_and_sp_blows_up() {
    let _rng = crate::torch_rng();
    let lr = MUP_BASE_LR;
    let widths = [64, 256, 1024];
    let mut ratios = [0.0; 2];
    for (i, mup) in [false, true].into_iter().enumerate() {
        let means: Vec<f64> = widths
            .iter()
            .map(|&w| last_block_activation(w, mup, lr))
            .collect();
        ratios[i] = means[2] / means[0];
        println!(
            "{}: mean |last block output| after 5 steps at lr {lr:e}, widths {widths:?}: {means:.4?} (1024/64: {:.2}×)",
            if mup { "μP" } else { "SP" },
            ratios[i]
        );
    }
    let [sp, mup] = ratios;
    assert!(
        mup < 2.0,
        "μP: activations grew {mup:.2}× from width 64 to 1024"
    );
    assert!(
        sp > 4.0,
        "SP: activations grew only {sp:.2}× from width 64 to 1024"
    );
}

/// A μP model at m = 2 (width 512, base width 256).
fn mup_512() -> GptConfig {
    GptConfig {
        n_head: 4,
        n_embd: 512,
        mup: Some(MupConfig::default()),
        ..GptConfig::tiny(256, 64)
    }
}

#[test]
fn every_parameter_has_exactly_one_rule() {
    let _rng = crate::torch_rng();
    for cfg in [
        mup_512(),
        GptConfig::tiny(64, 8),
        GptConfig {
            bias: false,
            ..mup_512()
        },
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), cfg);
        let table = mup_table(&cfg, 1.0);
        for name in vs.variables().keys() {
            let n = table.iter().filter(|r| r.matches(name)).count();
            assert_eq!(n, 1, "{name} matches {n} rules of {table:#?}");
        }
    }
}

/// The optimizer's groups and learning rates are the table's: embeddings at η, hidden and
/// residual-output matrices at η/m, all decayed; LayerNorm and biases at η, not decayed.
#[test]
fn optimizer_groups_follow_the_table() {
    let _rng = crate::torch_rng();
    let cfg = mup_512();
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Gpt::new(&vs.root(), cfg);
    let config = AdamWConfig::default();
    let opt = AdamW::for_model(&vs, config, &cfg);
    let groups = opt.param_groups();
    let summary: Vec<(f64, f64, usize)> = groups
        .iter()
        .map(|g| (g.lr_mult, g.weight_decay, g.names.len()))
        .collect();
    // wte, wpe | 2 layers × 4 matrices | 2 × (2 LayerNorms × 2 + 4 biases) + ln_f's 2.
    assert_eq!(
        summary,
        [(1.0, 0.1, 2), (0.5, 0.1, 8), (1.0, 0.0, 18)],
        "{groups:#?}"
    );
    let base_lr = 6e-3;
    let mut seen = 0;
    for group in &groups {
        for name in &group.names {
            let rule = rule_for(&cfg, base_lr, name).unwrap();
            assert_eq!(rule.lr_mult, group.lr_mult, "{name}");
            assert_eq!(rule.lr, base_lr * group.lr_mult, "{name}");
            let decay = if rule.weight_decay {
                config.weight_decay
            } else {
                0.0
            };
            assert_eq!(decay, group.weight_decay, "{name}");
            seen += 1;
        }
    }
    assert_eq!(seen, vs.variables().len());
    // The standard parameterization keeps its two groups.
    let sp = GptConfig::tiny(64, 8);
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Gpt::new(&vs.root(), sp);
    let by_table = AdamW::for_model(&vs, config, &sp);
    let by_shape = AdamW::new(&vs, config);
    assert_eq!(by_table.param_groups(), by_shape.param_groups());
    assert_eq!(by_table.param_groups().len(), 2);
}

/// Each tensor's empirical std and mean are the table's within five standard errors (μP's
/// tensors have ≥ 32k entries: within 2%); LayerNorm gains are ones, biases zeros.
#[test]
fn initialization_follows_the_table() {
    let _rng = crate::torch_rng();
    for cfg in [mup_512(), GptConfig::tiny(64, 8)] {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), cfg);
        for (name, t) in vs.variables() {
            let rule = rule_for(&cfg, 1.0, &name).unwrap();
            match rule.init {
                Init::Normal(std) => {
                    // Five standard errors of the sample std and mean.
                    let n = t.numel() as f64;
                    let got = t.std(true).double_value(&[]);
                    let mean = t.mean(Kind::Float).double_value(&[]);
                    let tolerance = 5.0 / (2.0 * n).sqrt();
                    assert!(
                        (got / std - 1.0).abs() < tolerance,
                        "{name}: std {got}, table {std}"
                    );
                    assert!(mean.abs() < 5.0 * std / n.sqrt(), "{name}: mean {mean}");
                }
                Init::Zeros => assert_eq!(t.abs().max().double_value(&[]), 0.0, "{name}"),
                Init::Ones => assert_eq!((t - 1.0).abs().max().double_value(&[]), 0.0, "{name}"),
            }
        }
    }
    // m = 2, σ_base = 0.08, L = 2.
    let cfg = mup_512();
    let std = |kind: TensorKind| kind.init(&cfg).std();
    assert_eq!(std(TensorKind::Embedding), 0.08);
    assert!((std(TensorKind::Hidden) - 0.08 / 2f64.sqrt()).abs() < 1e-15);
    assert!((std(TensorKind::ResidualOutput) - 0.08 / 8f64.sqrt()).abs() < 1e-15);
}

/// `plan --mup --model cerebras-gpt-1.3b`'s numbers: m = 2048 / 256 = 8, L = 24.
#[test]
fn cerebras_1_3b_table() {
    let _rng = crate::torch_rng();
    let cfg = GptConfig {
        mup: Some(MupConfig::default()),
        ..Preset::find("cerebras-gpt-1.3b").unwrap().config(None)
    };
    assert_eq!(cfg.width_mult(), 8.0);
    let table = mup_table(&cfg, MUP_BASE_LR);
    let rule = |name: &str| *table.iter().find(|r| r.matches(name)).unwrap();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    let wte = rule("transformer.wte.weight");
    assert_eq!(
        (wte.init, wte.lr, wte.weight_decay),
        (Init::Normal(0.08), 6e-3, true)
    );
    let qkv = rule("transformer.h.23.attn.c_attn.weight");
    assert!(close(qkv.init.std(), 0.08 / 8f64.sqrt()), "{qkv:?}"); // 0.028284
    assert!(close(qkv.lr, 7.5e-4), "{qkv:?}");
    let fc2 = rule("transformer.h.0.mlp.c_proj.weight");
    assert!(close(fc2.init.std(), 0.08 / 384f64.sqrt()), "{fc2:?}"); // 0.0040825
    assert!(close(fc2.lr, 7.5e-4), "{fc2:?}");
    let ln = rule("transformer.ln_f.weight");
    assert_eq!((ln.init, ln.lr, ln.weight_decay), (Init::Ones, 6e-3, false));
    let bias = rule("transformer.h.3.mlp.c_fc.bias");
    assert_eq!(
        (bias.init, bias.lr, bias.weight_decay),
        (Init::Zeros, 6e-3, false)
    );
    let text = format_table(&cfg, MUP_BASE_LR);
    println!("{text}");
    assert!(text.contains("m 8"), "{text}");
    assert!(text.contains("0.028284"), "{text}");
    assert!(text.contains("7.5000e-4"), "{text}");
}

/// The forward pass written out by hand for a 1-layer μP model at m = 4: embedding output × 10,
/// attention scores × 1/d_head, logits × 1/m. The same computation at 1/√d_head differs, so
/// the comparison sees the attention scale.
#[test]
fn forward_applies_the_mup_multipliers() {
    let _rng = crate::torch_rng();
    let cfg = GptConfig {
        n_layer: 1,
        n_head: 2,
        n_embd: 64,
        mup: Some(MupConfig {
            base_width: 16,
            ..MupConfig::default()
        }),
        ..GptConfig::tiny(50, 8)
    };
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), cfg);
    // Weights large enough that attention is far from uniform.
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            let noise = var.randn_like() * 0.3;
            let _ = var.g_add_(&noise);
        }
    });
    let v = vs.variables();
    let w = |name: &str| v[&format!("transformer.{name}")].shallow_clone();
    let idx = Tensor::from_slice(&[3i64, 1, 4, 1, 5, 9, 2, 6]).view([1, 8]);
    let ln = |x: &Tensor, name: &str| {
        x.layer_norm(
            [64],
            Some(&w(&format!("{name}.weight"))),
            Some(&w(&format!("{name}.bias"))),
            1e-5,
            false,
        )
    };
    let linear = |x: &Tensor, name: &str| {
        x.matmul(&w(&format!("{name}.weight")).tr()) + w(&format!("{name}.bias"))
    };
    let by_hand = |scale: f64| {
        let x = (w("wte.weight").index_select(0, &idx.view([-1]))
            + w("wpe.weight").narrow(0, 0, 8))
            * 10.0; // (T, C)
        let qkv = linear(&ln(&x, "h.0.ln_1"), "h.0.attn.c_attn"); // (T, 3C)
                                                                  // (T, C) -> (nh, T, hs)
        let heads = |i: i64| qkv.narrow(1, i * 64, 64).view([8, 2, 32]).transpose(0, 1);
        let (q, k, vv) = (heads(0), heads(1), heads(2));
        let causal = Tensor::ones([8, 8], (Kind::Bool, Device::Cpu)).tril(0);
        let scores = (q.matmul(&k.transpose(1, 2)) * scale)
            .masked_fill(&causal.logical_not(), f64::NEG_INFINITY)
            .softmax(-1, Kind::Float); // (nh, T, T)
        let y = scores.matmul(&vv).transpose(0, 1).reshape([8, 64]); // (T, C)
        let x = &x + linear(&y, "h.0.attn.c_proj");
        let h = linear(&ln(&x, "h.0.ln_2"), "h.0.mlp.c_fc").gelu("tanh");
        let x = &x + linear(&h, "h.0.mlp.c_proj");
        ln(&x, "ln_f").matmul(&w("wte.weight").tr()) / 4.0 // (T, vocab)
    };
    let logits = tch::no_grad(|| model.forward(&idx, false)).view([8, 50]);
    let diff = |a: &Tensor| (a - &logits).abs().max().double_value(&[]);
    let mup = tch::no_grad(|| by_hand(1.0 / 32.0));
    let sp = tch::no_grad(|| by_hand(1.0 / 32f64.sqrt()));
    assert!(diff(&mup) < 1e-4, "μP by hand differs by {}", diff(&mup));
    assert!(
        diff(&sp) > 1e-2,
        "1/√d_head gives nearly the same logits: {}",
        diff(&sp)
    );
}

#[test]
fn export_refuses_a_mup_model() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = GptConfig {
        mup: Some(MupConfig::default()),
        ..GptConfig::tiny(64, 8)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Gpt::new(&vs.root(), cfg);
    let err = hf::export(&vs, &cfg, &tmp.path().join("hf")).unwrap_err();
    assert!(matches!(err, HfError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("μP"), "{err}");
    assert!(err.to_string().contains("--mup"), "{err}");
    assert!(!tmp.path().join("hf").exists());
}

/// `state.json` and config files from before μP load (no `mup` key), a standard model writes
/// none, and a μP model's settings round-trip.
#[test]
fn config_files_without_mup_still_load() {
    let _rng = crate::torch_rng();
    let sp = GptConfig::tiny(64, 8);
    let json = serde_json::to_string(&sp).unwrap();
    assert!(!json.contains("mup"), "{json}");
    let old = r#"{"vocab_size":64,"pad_vocab":false,"n_ctx":8,"n_layer":2,"n_head":2,"n_embd":32,"bias":true,"dropout":0.0}"#;
    assert_eq!(serde_json::from_str::<GptConfig>(old).unwrap(), sp);
    let mup = mup_512();
    let json = serde_json::to_string(&mup).unwrap();
    assert_eq!(serde_json::from_str::<GptConfig>(&json).unwrap(), mup);
}

/// 64 rows of 16 tokens below 64.
fn shards(dir: &Path) {
    let mut w = ShardSetWriter::new(dir, 16, Compression::None, 40).unwrap();
    for r in 0..64 {
        let row: Vec<i32> = (0..17).map(|t| (r * 7 + t * 3) % 64).collect();
        w.push(&row[..16], &[1; 16], &row[1..]).unwrap();
    }
    w.finish().unwrap();
}

/// A μP run logs μP with its m and records it in the checkpoint; the same run directory resumed
/// as a standard-parameterization model is refused by the model check.
#[test]
fn mup_checkpoints_resume_only_as_mup() {
    let _rng = crate::torch_rng();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shards");
    shards(&data);
    let out = dir.path().join("run");
    let mup = GptConfig {
        mup: Some(MupConfig {
            base_width: 16,
            ..MupConfig::default()
        }),
        ..GptConfig::tiny(64, 16)
    };
    let run = |model: GptConfig, steps: usize| TrainConfig {
        micro_batch: 4,
        total_batch_tokens: 4 * 16,
        lr: MUP_BASE_LR,
        warmup_steps: 1,
        max_steps: Some(steps),
        save_every: 1,
        ..TrainConfig::new(&data, &out, model)
    };
    let mut lines = Vec::new();
    let first = train(&run(mup, 1), &mut |l| lines.push(l.to_owned())).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("μP: on | m = 32 / 16 = 2")),
        "{lines:#?}"
    );
    let state = h5gpt_train::checkpoint::read_state(first.checkpoint.as_ref().unwrap()).unwrap();
    assert_eq!(state.model, mup);
    let sp = GptConfig { mup: None, ..mup };
    let err = train(&run(sp, 2), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("checkpoint of another model"), "{err}");
    let resumed = train(&run(mup, 2), &mut |_| {}).unwrap();
    assert_eq!((resumed.start_step, resumed.end_step), (1, 2));
}

#[test]
fn options_turn_mup_on_with_its_defaults() {
    let _rng = crate::torch_rng();
    let tmp = tempfile::tempdir().unwrap();
    let shards = tmp.path().join("shards");
    // The options check that --shards exists; the model comes from the flags, not the shards.
    std::fs::create_dir(&shards).unwrap();
    let out = tmp.path().join("run");
    let parse = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--shards",
            shards.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--model",
            "tiny",
            "--n-embd",
            "512",
        ];
        args.extend_from_slice(extra);
        TrainOptions::parse_from(args)
    };
    let on = resolve(parse(&["--mup"])).unwrap();
    assert_eq!(on.config.model.mup, Some(MupConfig::default()));
    assert_eq!(on.config.model.width_mult(), 2.0);
    assert_eq!(on.config.lr, MUP_BASE_LR);
    // config.toml carries the settings back.
    let file: TrainOptions = toml::from_str(&on.options.to_toml().unwrap()).unwrap();
    assert_eq!(file.mup, Some(true));
    assert_eq!(file.mup_base_width, Some(256));
    let custom = resolve(parse(&[
        "--mup",
        "--mup-base-width",
        "128",
        "--mup-embed-mult",
        "5",
        "--mup-init-std",
        "0.05",
        "--lr",
        "1e-2",
    ]))
    .unwrap();
    let expected = MupConfig {
        base_width: 128,
        embed_mult: 5.0,
        init_std: 0.05,
    };
    assert_eq!(custom.config.model.mup, Some(expected));
    assert_eq!(custom.config.lr, 1e-2);
    let off = resolve(parse(&[])).unwrap();
    assert_eq!(off.config.model.mup, None);
    assert_eq!(off.config.lr, Preset::find("mini").unwrap().lr);
    let err = resolve(parse(&["--mup-base-width", "128"])).err().unwrap();
    assert!(err.to_string().contains("only apply with --mup"), "{err}");
}
