//! The GPT-2 model on CPU.

use h5gpt_core::config::{InitConfig, MupConfig, Preset, PRESETS};
use h5gpt_core::params::param_specs;
use h5gpt_core::plan::auto_size;
use h5gpt_core::plan::model::ParamCounts;
use h5gpt_train::model::{cross_entropy, Gpt, GptConfig};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

#[test]
fn parameter_count_matches_what_is_allocated() {
    let _rng = crate::torch_rng();
    for cfg in [
        GptConfig::tiny(96, 16),
        GptConfig {
            bias: false,
            ..GptConfig::tiny(64, 8)
        },
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), cfg);
        let allocated: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(allocated as usize, cfg.parameter_count(), "{cfg:?}");
    }
    // GPT-2 small with the padded vocabulary (nanoGPT's figure: 124,475,904).
    assert_eq!(GptConfig::gpt2_small().parameter_count(), 124_475_904);
}

/// The model allocates exactly the parameter list: the same names, shapes and order of
/// creation, with and without biases, padded and unpadded vocabularies, under μP, and with
/// another FFN width and a truncated-normal initialization.
#[test]
fn the_model_allocates_the_parameter_list() {
    let _rng = crate::torch_rng();
    for cfg in [
        GptConfig::tiny(96, 16),
        GptConfig {
            bias: false,
            ..GptConfig::tiny(64, 8)
        },
        GptConfig {
            pad_vocab: true,
            n_layer: 3,
            ..GptConfig::tiny(6_350, 8) // padded to 6,400 rows
        },
        GptConfig {
            mup: Some(MupConfig::default()),
            ..GptConfig::tiny(64, 8)
        },
        GptConfig {
            ffn_size: Some(72),
            layer_norm_eps: 1e-6,
            init: Some(InitConfig {
                std: None,
                truncation: Some(2.0),
            }),
            ..GptConfig::tiny(64, 8)
        },
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), cfg);
        let variables = vs.variables();
        let specs = param_specs(&cfg);
        assert_eq!(variables.len(), specs.len(), "{cfg:?}");
        for spec in &specs {
            let var = variables
                .get(&spec.name)
                .unwrap_or_else(|| panic!("{} not allocated ({cfg:?})", spec.name));
            let shape: Vec<usize> = var.size().iter().map(|&n| n as usize).collect();
            assert_eq!(shape, spec.shape, "{}", spec.name);
            assert!(var.requires_grad(), "{}", spec.name);
        }
        // Created in the list's order: tch numbers variables as they are made.
        let created: Vec<String> = vs
            .trainable_variables()
            .iter()
            .map(|v| {
                let (name, _) = variables
                    .iter()
                    .find(|(_, t)| t.data_ptr() == v.data_ptr())
                    .unwrap();
                name.clone()
            })
            .collect();
        let listed: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        assert_eq!(created, listed, "{cfg:?}");
    }
}

#[test]
fn hugging_face_parameter_names() {
    let _rng = crate::torch_rng();
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = Gpt::new(&vs.root(), GptConfig::tiny(64, 8));
    let names: Vec<String> = vs.variables().into_keys().collect();
    for name in [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.1.mlp.c_proj.bias",
        "transformer.ln_f.weight",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }
}

#[test]
fn overfits_a_fixed_batch_and_ignores_masked_positions() {
    let _rng = crate::torch_rng();
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), GptConfig::tiny(64, 16));
    let idx = Tensor::randint(64, [4, 16], (Kind::Int64, Device::Cpu));
    let labels = idx.roll([-1], [1]);
    let mask = Tensor::ones([4, 16], (Kind::Int64, Device::Cpu));
    let _ = mask.narrow(1, 12, 4).fill_(0);
    let mut opt = nn::AdamW::default().build(&vs, 3e-3).unwrap();
    let initial = model.loss(&idx, &labels, &mask, true).double_value(&[]);
    assert!(
        (initial - (64f64).ln()).abs() < 0.5,
        "initial loss {initial} ≈ ln(64)"
    );
    let mut last = initial;
    for _ in 0..150 {
        let loss = model.loss(&idx, &labels, &mask, true);
        opt.backward_step(&loss);
        last = loss.double_value(&[]);
    }
    assert!(last < 0.3, "loss after 150 steps on one batch: {last}");
    // Masked positions do not count: garbage labels there leave the loss unchanged.
    let garbage = labels.where_self(&mask.ne(0), &Tensor::from(7i64));
    let a = model.loss(&idx, &labels, &mask, false).double_value(&[]);
    let b = model.loss(&idx, &garbage, &mask, false).double_value(&[]);
    assert_eq!(a, b);
}

/// The loss masks the padding logits to −∞ instead of slicing them off (cheaper): it must stay
/// the real-vocabulary loss, with the sliced version's gradients (none into the padding rows).
#[test]
fn padded_vocabulary_loss_equals_the_sliced_real_vocabulary_loss() {
    let _rng = crate::torch_rng();
    tch::manual_seed(3);
    let cfg = GptConfig {
        pad_vocab: true,
        ..GptConfig::tiny(6350, 8)
    };
    assert_eq!(cfg.embedding_rows(), 6400);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), cfg);
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let wte = named
        .iter()
        .position(|(name, _)| name == "transformer.wte.weight")
        .unwrap();
    let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
    let idx = Tensor::randint(6350, [3, 8], (Kind::Int64, Device::Cpu));
    let labels = idx.roll([-1], [1]);
    let mask = Tensor::ones([3, 8], (Kind::Int64, Device::Cpu));

    let loss = model.loss(&idx, &labels, &mask, true);
    let sliced = model
        .forward(&idx, true)
        .narrow(2, 0, 6350)
        .reshape([-1, 6350])
        .cross_entropy_for_logits(&labels.view([-1]));
    let (a, b) = (loss.double_value(&[]), sliced.double_value(&[]));
    assert!((a - b).abs() < 1e-6, "masked {a} vs sliced {b}");

    let ours = Tensor::run_backward(&[&loss], &params, false, false);
    let reference = Tensor::run_backward(&[&sliced], &params, false, false);
    for (g, r) in ours.iter().zip(&reference) {
        assert!(g.allclose(r, 1e-5, 1e-7, false), "{g:?} vs {r:?}");
    }
    let padding_rows = ours[wte].narrow(0, 6350, 50);
    assert_eq!(padding_rows.abs().max().double_value(&[]), 0.0);
}

#[test]
fn vocabulary_is_padded_only_when_that_costs_at_most_one_percent_more_rows() {
    use h5gpt_core::config::padded_vocab;
    assert_eq!(padded_vocab(50257), 50304);
    assert_eq!(padded_vocab(100_277), 100_288);
    assert_eq!(padded_vocab(6300), 6336);
    assert_eq!(padded_vocab(512), 512);
    // 17 padding rows would be 5.6% of a 303-token trained vocabulary.
    assert_eq!(padded_vocab(303), 303);
    assert_eq!(padded_vocab(1000), 1000);
}

/// In fp32 the loss is `cross_entropy_loss` with `ignore_index = -100`.
#[test]
fn cross_entropy_in_fp32_is_torchs() {
    let _rng = crate::torch_rng();
    tch::manual_seed(11);
    let logits = Tensor::randn([64, 50], (Kind::Float, Device::Cpu)) * 3.0;
    let targets = Tensor::randint(50, [64], (Kind::Int64, Device::Cpu));
    let _ = targets.narrow(0, 0, 5).fill_(-100);
    let ours = cross_entropy(&logits, &targets).double_value(&[]);
    let torch = logits
        .cross_entropy_loss(&targets, None::<Tensor>, tch::Reduction::Mean, -100, 0.0)
        .double_value(&[]);
    assert!((ours - torch).abs() < 1e-6 * torch, "{ours} vs {torch}");
}

/// bf16 logits (what autocast's head matmul gives) go through a bf16 log-softmax that
/// accumulates in fp32, as PyTorch's autocast path does, instead of an fp32 copy of the
/// logits: the loss is an fp32 scalar within bf16 tolerance (1e-2 relative, stated: one bf16
/// rounding of each log-probability) of the fp32 loss of the same values, and the gradient
/// reaching the logits is bf16. (It is not bit-identical to the fp32 loss: an fp32 softmax of
/// the same logits would be, since bf16 → fp32 is exact — that is what this test tells apart.)
#[test]
fn the_loss_runs_log_softmax_on_bf16_logits() {
    let _rng = crate::torch_rng();
    std::env::set_var("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16");
    tch::manual_seed(12);
    let logits = (Tensor::randn([256, 64], (Kind::Float, Device::Cpu)) * 2.0)
        .to_kind(Kind::BFloat16)
        .set_requires_grad(true);
    let targets = Tensor::randint(64, [256], (Kind::Int64, Device::Cpu));
    let loss = cross_entropy(&logits, &targets);
    assert_eq!(loss.kind(), Kind::Float);
    let fp32 = cross_entropy(&logits.to_kind(Kind::Float), &targets).double_value(&[]);
    let bf16 = loss.double_value(&[]);
    assert!((bf16 - fp32).abs() < 1e-2 * fp32, "{bf16} vs {fp32}");
    assert_ne!(bf16, fp32, "the softmax ran on an fp32 copy of the logits");
    loss.backward();
    assert_eq!(logits.grad().kind(), Kind::BFloat16);
}

#[test]
fn plan_counts_what_the_model_allocates() {
    // Small shapes are allocated; every preset's count is the config's formula.
    let mut configs: Vec<GptConfig> = ["tiny", "mini", "nano"]
        .iter()
        .map(|name| Preset::find(name).unwrap().config(Some(64)))
        .collect();
    configs.push(GptConfig {
        bias: false,
        pad_vocab: false,
        ..GptConfig::tiny(100, 16)
    });
    configs.push(auto_size(558_382.0, 20.0, 32, 50257).config);
    for cfg in configs {
        let vs = nn::VarStore::new(Device::Cpu);
        let _model = Gpt::new(&vs.root(), cfg);
        let allocated: usize = vs.variables().values().map(|t| t.numel()).sum();
        assert_eq!(ParamCounts::new(&cfg).total, allocated, "{cfg:?}");
    }
    for preset in PRESETS {
        let cfg = preset.config(Some(1024));
        assert_eq!(
            ParamCounts::new(&cfg).total,
            cfg.parameter_count(),
            "{}",
            preset.name
        );
    }
}

/// The loss marks ignored targets with a fill of the scalar −100 (`masked_fill`), not a `where`
/// with a 0-d tensor moved to the device (a blocking copy on CUDA): the targets, the loss and
/// every gradient are bit-identical to the `where` formulation's.
#[test]
fn masked_targets_by_a_scalar_fill_leave_loss_and_gradients_bit_identical() {
    let _rng = crate::torch_rng();
    tch::manual_seed(21);
    let cfg = GptConfig {
        pad_vocab: true,
        ..GptConfig::tiny(100, 8)
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), cfg);
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
    let idx = Tensor::randint(100, [3, 8], (Kind::Int64, Device::Cpu));
    let labels = idx.roll([-1], [1]);
    let mask = Tensor::randint(2, [3, 8], (Kind::Int64, Device::Cpu));
    let _ = mask.get(0).get(0).fill_(1);

    let ours = model.loss(&idx, &labels, &mask, false);
    // What the loss did before: `where` with a 0-d −100 tensor, then the mean.
    let logits = model.forward(&idx, false);
    let rows = logits.size()[2];
    tch::no_grad(|| {
        let _ = logits.narrow(2, 100, rows - 100).fill_(f64::NEG_INFINITY);
    });
    let targets = labels.where_self(&mask.ne(0), &Tensor::from(-100i64));
    let reference = cross_entropy(&logits.reshape([-1, rows]), &targets.view([-1]));
    assert_eq!(
        ours.double_value(&[]).to_bits(),
        reference.double_value(&[]).to_bits()
    );
    let (g, r) = (
        Tensor::run_backward(&[&ours], &params, false, false),
        Tensor::run_backward(&[&reference], &params, false, false),
    );
    for (a, b) in g.iter().zip(&r) {
        assert!(a.equal(b), "a gradient differs");
    }
}

/// `loss_sum` is the summed loss of the loss tokens and their count: with rows of different
/// lengths, the per-token mean over two halves of a batch (sums added, counts added) is the
/// whole batch's mean, which a mean of the halves' means is not.
#[test]
fn summed_losses_and_counts_give_the_batch_mean_over_tokens() {
    let _rng = crate::torch_rng();
    tch::manual_seed(22);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), GptConfig::tiny(64, 8));
    let idx = Tensor::randint(64, [4, 8], (Kind::Int64, Device::Cpu));
    let labels = idx.roll([-1], [1]);
    let mask = Tensor::ones([4, 8], (Kind::Int64, Device::Cpu));
    // Rows 0 and 1 keep 2 positions, rows 2 and 3 all 8.
    let _ = mask.narrow(0, 0, 2).narrow(1, 2, 6).fill_(0);
    let whole = model.loss(&idx, &labels, &mask, false).double_value(&[]);
    let halves: Vec<_> = (0..2)
        .map(|h| {
            let sl = |t: &Tensor| t.narrow(0, 2 * h, 2);
            model.loss_sum(&sl(&idx), &sl(&labels), &sl(&mask), false)
        })
        .collect();
    let sum: f64 = halves.iter().map(|l| l.sum.double_value(&[])).sum();
    let tokens: f64 = halves.iter().map(|l| l.tokens.double_value(&[])).sum();
    assert_eq!(tokens, 20.0);
    assert!(
        ((sum / tokens) - whole).abs() < 1e-6 * whole,
        "{} vs {whole}",
        sum / tokens
    );
    let mean_of_means: f64 = halves
        .iter()
        .map(|l| l.sum.double_value(&[]) / l.tokens.double_value(&[]))
        .sum::<f64>()
        / 2.0;
    assert!(
        (mean_of_means - whole).abs() > 1e-4,
        "the test needs unequal halves"
    );
}

/// `forward_at` gives `forward`'s logits at the chosen positions (to float rounding: the head's
/// matmul has another shape), for a μP model (whose head has a multiplier) too.
#[test]
fn logits_at_chosen_positions_are_the_full_forwards() {
    let _rng = crate::torch_rng();
    for mup in [None, Some(MupConfig::default())] {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut cfg = GptConfig::tiny(64, 16);
        cfg.mup = mup;
        let model = Gpt::new(&vs.root(), cfg);
        let idx = Tensor::randint(64, [3, 16], (Kind::Int64, Device::Cpu));
        let rows = Tensor::from_slice(&[0i64, 2, 2, 1]);
        let positions = Tensor::from_slice(&[15i64, 0, 7, 3]);
        let full = tch::no_grad(|| model.forward(&idx, false));
        let at = tch::no_grad(|| model.forward_at(&idx, &rows, &positions));
        let want = full.index(&[Some(&rows), Some(&positions)]);
        assert_eq!(at.size(), want.size());
        assert!(at.allclose(&want, 1e-5, 1e-6, false), "{mup:?}");
    }
}
