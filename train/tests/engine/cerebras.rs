//! Cerebras Model Zoo fixtures (tests/fixtures/cerebras-configs) built as models on CPU.

use h5gpt_core::cerebras::{load, LoadOptions};
use h5gpt_core::config::GptConfig;
use h5gpt_core::mup::{mup_table, TensorKind};
use h5gpt_train::model::{truncate_normal_init, Gpt};
use h5gpt_train::optim::{AdamW, AdamWConfig};
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

fn fixture(name: &str) -> GptConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/cerebras-configs")
        .join(name);
    load(&path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .model
}

fn allocated(vs: &nn::VarStore) -> usize {
    vs.trainable_variables().iter().map(|t| t.numel()).sum()
}

fn weight(vs: &nn::VarStore, name: &str) -> Tensor {
    vs.variables()
        .remove(name)
        .unwrap_or_else(|| panic!("no {name}"))
}

/// The 111M fixtures (both parameterizations, both generations) and GPT-3 XL (one of its 24
/// layers, every width as in the file) build with the parameters they count, initialized
/// as the files say: truncated at ±2σ with their stds.
#[test]
fn the_fixtures_build_on_cpu_with_their_initializers() {
    let _rng = crate::torch_rng();
    tch::manual_seed(0);
    for name in [
        "r2.0.3-Cerebras_GPT-111m.yaml",
        "r2.0.3-Cerebras_GPT-111m_mup.yaml",
        "r2.10.0-Cerebras_GPT-111m_mup.yaml",
        "r2.0.3-params_gpt3_xl.yaml",
    ] {
        let mut cfg = fixture(name);
        if cfg.n_layer > 10 {
            cfg.n_layer = 1;
        }
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), cfg);
        assert_eq!(allocated(&vs), cfg.parameter_count(), "{name}");
        for (tensor, kind) in [
            ("transformer.wte.weight", TensorKind::Embedding),
            ("transformer.h.0.attn.c_attn.weight", TensorKind::Hidden),
            ("transformer.h.0.mlp.c_fc.weight", TensorKind::Hidden),
            (
                "transformer.h.0.mlp.c_proj.weight",
                TensorKind::ResidualOutput,
            ),
        ] {
            let w = weight(&vs, tensor);
            let std = kind.init(&cfg).std();
            let max = w.abs().max().double_value(&[]);
            assert!(
                max <= 2.0 * std * (1.0 + 1e-6),
                "{name} {tensor}: {max} > 2σ ({std})"
            );
            assert!(max > 1.9 * std, "{name} {tensor}: {max} fills ±2σ ({std})");
            // A normal truncated at ±2σ has std 0.8796σ.
            let got = w.to_kind(Kind::Double).std(true).double_value(&[]);
            assert!(
                (got / (0.8796 * std) - 1.0).abs() < 0.02,
                "{name} {tensor}: std {got}, σ {std}"
            );
        }
        let mlp_in = weight(&vs, "transformer.h.0.mlp.c_fc.weight");
        assert_eq!(mlp_in.size(), [cfg.ffn_width() as i64, cfg.n_embd as i64]);
    }
    // The stds the files give: SP 0.02 and 0.02/√20; μP 0.08/√3 and 0.08/√60.
    let sp = fixture("r2.0.3-Cerebras_GPT-111m.yaml");
    let mup = fixture("r2.10.0-Cerebras_GPT-111m_mup.yaml");
    assert_eq!(TensorKind::Hidden.init(&sp).std(), 0.02);
    assert!((TensorKind::ResidualOutput.init(&sp).std() - 0.004472135954999579).abs() < 1e-15);
    assert!((TensorKind::Hidden.init(&mup).std() - 0.046188021535170064).abs() < 1e-15);
    assert!((TensorKind::ResidualOutput.init(&mup).std() - 0.010327955589886445).abs() < 1e-15);
}

/// The two generations of the 111M μP config give the same optimizer: the same groups, LR
/// multipliers (hidden matrices 1/3) and decay.
#[test]
fn both_111m_mup_generations_give_the_same_optimizer() {
    let _rng = crate::torch_rng();
    let old = fixture("r2.0.3-Cerebras_GPT-111m_mup.yaml");
    let new = fixture("r2.10.0-Cerebras_GPT-111m_mup.yaml");
    assert_eq!(mup_table(&old, 6e-3), mup_table(&new, 6e-3));
    let hidden = mup_table(&old, 6e-3)
        .into_iter()
        .find(|r| r.kind == TensorKind::Hidden)
        .unwrap();
    assert!((hidden.lr - 2e-3).abs() < 1e-15);
    // Small enough to build twice: the same shape with 1 layer.
    let groups = |cfg: GptConfig| {
        let cfg = GptConfig { n_layer: 1, ..cfg };
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), cfg);
        let opt = AdamW::for_model(&vs, AdamWConfig::default(), &cfg);
        opt.param_groups()
            .into_iter()
            .map(|g| {
                let names: Vec<String> = g.names.iter().map(|n| n.to_string()).collect();
                (g.lr_mult, g.weight_decay, names)
            })
            .collect::<Vec<_>>()
    };
    let (a, b) = (groups(old), groups(new));
    assert_eq!(a, b);
    assert!(a.iter().any(|g| (g.0 - 1.0 / 3.0).abs() < 1e-15), "{a:?}");
}

#[test]
fn truncated_normal_stays_within_its_bounds() {
    let _rng = crate::torch_rng();
    tch::manual_seed(1);
    let w = Tensor::zeros([200_000], (Kind::Float, Device::Cpu));
    truncate_normal_init(&w, 0.5, 1.5);
    let max = w.abs().max().double_value(&[]);
    assert!(max <= 0.75 + 1e-6 && max > 0.74, "{max}");
    // N(0, 1) truncated at ±1.5: std 0.7375 (of σ).
    let std = w.to_kind(Kind::Double).std(true).double_value(&[]);
    assert!((std / (0.7375 * 0.5) - 1.0).abs() < 0.01, "{std}");
    let mean = w.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]);
    assert!(mean.abs() < 0.005, "{mean}");
}
