//! AdamW groups, clipping, and gradient accumulation.

use h5gpt_train::model::{Gpt, GptConfig};
use h5gpt_train::optim::{AdamW, AdamWConfig};
use tch::{nn, Device, Kind, Tensor};

#[test]
fn matrices_decay_and_vectors_do_not() {
    let _rng = crate::torch_rng();
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Gpt::new(&vs.root(), GptConfig::tiny(64, 8));
    let opt = AdamW::new(&vs, AdamWConfig::default());
    let (decay, no_decay) = opt.groups();
    assert!(decay.contains(&"transformer.wte.weight"));
    assert!(decay.contains(&"transformer.h.0.attn.c_attn.weight"));
    assert!(no_decay.contains(&"transformer.h.0.attn.c_attn.bias"));
    assert!(no_decay.contains(&"transformer.ln_f.weight"));
    assert_eq!(decay.len() + no_decay.len(), vs.variables().len());
}

#[test]
fn clipping_reports_the_pre_clip_norm_and_bounds_it() {
    let _rng = crate::torch_rng();
    let vs = nn::VarStore::new(Device::Cpu);
    let w = vs.root().randn("w", &[3, 4], 0.0, 1.0);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    (&w * 100.0).sum(Kind::Float).backward();
    let norm = opt.clip_grad_norm(1.0).unwrap().unwrap();
    assert_eq!(
        norm.size(),
        Vec::<i64>::new(),
        "a 0-d tensor, read when the caller wants"
    );
    let norm = norm.double_value(&[]);
    assert!((norm - (12f64).sqrt() * 100.0).abs() < 1e-3, "{norm}");
    let after = w.grad().norm().double_value(&[]);
    assert!((after - 1.0).abs() < 1e-4, "{after}");
}

/// k micro-batches of loss/k accumulate the same gradient as one k× larger batch.
#[test]
fn accumulated_micro_batches_equal_one_large_batch() {
    let _rng = crate::torch_rng();
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), GptConfig::tiny(64, 8));
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let idx = Tensor::randint(64, [8, 8], (Kind::Int64, Device::Cpu));
    let labels = idx.roll([-1], [1]);
    let mask = Tensor::ones([8, 8], (Kind::Int64, Device::Cpu));
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    let mut grads = |k: i64| {
        opt.zero_grad().unwrap();
        for i in 0..k {
            let rows = 8 / k;
            let sl = |t: &Tensor| t.narrow(0, i * rows, rows);
            let loss = model.loss(&sl(&idx), &sl(&labels), &sl(&mask), false) / k as f64;
            loss.backward();
        }
        let vars = vs.variables();
        names
            .iter()
            .map(|n| vars[n].grad().copy())
            .collect::<Vec<_>>()
    };
    let (one, four) = (grads(1), grads(4));
    for (a, b) in one.iter().zip(&four) {
        let rel = ((a - b).abs().max() / (a.abs().max() + 1e-12)).double_value(&[]);
        assert!(rel < 1e-5, "relative difference {rel}");
    }
}

/// A tiny model's gradients after one backward of its loss × `scale`.
fn model_with_grads(scale: f64) -> (nn::VarStore, Gpt, Vec<String>) {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), GptConfig::tiny(64, 8));
    let idx = Tensor::randint(64, [4, 8], (Kind::Int64, Device::Cpu));
    let mask = Tensor::ones([4, 8], (Kind::Int64, Device::Cpu));
    (model.loss(&idx, &idx.roll([-1], [1]), &mask, true) * scale).backward();
    let mut names: Vec<String> = vs.variables().into_keys().collect();
    names.sort();
    (vs, model, names)
}

/// zero_grad drops the gradients (`set_to_none`): none is defined afterwards (no fill with
/// zeros), and one backward writes the same gradients as before.
#[test]
fn zero_grad_drops_gradients_and_one_backward_writes_them_again() {
    let _rng = crate::torch_rng();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Gpt::new(&vs.root(), GptConfig::tiny(64, 8));
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let idx = Tensor::randint(64, [4, 8], (Kind::Int64, Device::Cpu));
    let mask = Tensor::ones([4, 8], (Kind::Int64, Device::Cpu));
    let backward = || {
        model
            .loss(&idx, &idx.roll([-1], [1]), &mask, false)
            .backward()
    };
    backward();
    let vars = vs.variables();
    let before: Vec<(String, Tensor)> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.grad().copy()))
        .collect();
    opt.zero_grad().unwrap();
    for (name, var) in &vars {
        assert!(
            !var.grad().defined(),
            "{name}: gradient still defined after zero_grad"
        );
    }
    backward();
    for (name, old) in &before {
        assert!(
            vars[name].grad().equal(old),
            "{name}: another gradient after one backward"
        );
    }
}

/// The foreach clip gives the per-parameter clip's norm and gradients (within 1e-6 relative),
/// both when it scales and when the norm is already below the bound.
#[test]
fn foreach_clip_equals_the_per_parameter_clip() {
    let _rng = crate::torch_rng();
    for (seed, scale, max_norm) in [(5, 50.0, 1.0), (6, 1e-3, 1.0)] {
        tch::manual_seed(seed);
        let (vs, _model, names) = model_with_grads(scale);
        let vars = vs.variables();
        let grads: Vec<Tensor> = names.iter().map(|n| vars[n].grad().copy()).collect();
        // The per-parameter reference: one norm per gradient, then one multiply each.
        let norm_ref = Tensor::stack(&grads.iter().map(|g| g.norm()).collect::<Vec<_>>(), 0)
            .norm()
            .double_value(&[]);
        let coef = (max_norm / (norm_ref + 1e-6)).min(1.0);
        let clipped_ref: Vec<Tensor> = grads.iter().map(|g| g * coef).collect();

        let mut opt = AdamW::new(&vs, AdamWConfig::default());
        let norm = opt
            .clip_grad_norm(max_norm)
            .unwrap()
            .unwrap()
            .double_value(&[]);
        let rel = (norm - norm_ref).abs() / norm_ref;
        assert!(rel < 1e-6, "norm {norm} vs {norm_ref}");
        assert_eq!(
            norm_ref > max_norm,
            scale > 1.0,
            "one case clips, one does not"
        );
        for (name, want) in names.iter().zip(&clipped_ref) {
            let got = vars[name].grad();
            let rel = ((&got - want).abs().max() / (want.abs().max() + 1e-30)).double_value(&[]);
            assert!(rel < 1e-6, "{name}: relative difference {rel}");
        }
    }
}

/// A step whose `found_inf` is 1 changes nothing (weights, moments, step counters); with 0 it
/// is the plain step.
#[test]
fn a_step_with_found_inf_changes_nothing() {
    let _rng = crate::torch_rng();
    tch::manual_seed(8);
    let (vs, _model, names) = model_with_grads(1.0);
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    let snapshot = |opt: &AdamW| -> Vec<Tensor> {
        let vars = vs.variables();
        let mut all: Vec<Tensor> = names.iter().map(|n| vars[n].copy()).collect();
        all.extend(opt.state().into_iter().map(|(_, t)| t.copy()));
        all
    };
    let before = snapshot(&opt);
    let inf = Tensor::from(1.0f32);
    opt.step(1e-2, Some(&inf)).unwrap();
    let after = snapshot(&opt);
    assert!(
        before.iter().zip(&after).all(|(a, b)| a.equal(b)),
        "a skipped step changed state"
    );
    opt.step(1e-2, Some(&Tensor::from(0.0f32))).unwrap();
    let stepped = snapshot(&opt);
    assert!(!before[0].equal(&stepped[0]), "a finite step is applied");
    let steps: Vec<f64> = opt
        .state()
        .iter()
        .filter(|(n, _)| n.ends_with(".step"))
        .map(|(_, t)| t.double_value(&[]))
        .collect();
    assert!(steps.iter().all(|&s| s == 1.0), "{steps:?}");
}

/// bf16-pure keeps the bf16 gradients in flat buffers (views, as the data-parallel buckets do)
/// and moves them into the fp32 main gradients with one copy or add per buffer: over three
/// micro-batches the main gradients equal, element for element, what per-tensor accumulation of
/// freshly written bf16 gradients gave (the code before).
#[test]
fn bf16_pure_flat_accumulation_equals_per_tensor_accumulation() {
    use h5gpt_train::shim::{foreach_copy_or_add, grads_to_none};
    let _rng = crate::torch_rng();
    std::env::set_var("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16");
    let cfg = GptConfig::tiny(64, 8);
    tch::manual_seed(5);
    let idx = Tensor::randint(64, [6, 8], (Kind::Int64, Device::Cpu));
    let labels = idx.roll([-1], [1]);
    let mask = Tensor::ones([6, 8], (Kind::Int64, Device::Cpu));
    let micro = |model: &Gpt, i: i64| {
        let sl = |t: &Tensor| t.narrow(0, 2 * i, 2);
        model
            .loss_sum(&sl(&idx), &sl(&labels), &sl(&mask), false)
            .sum
    };
    let build = || {
        tch::manual_seed(6);
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Gpt::new(&vs.root(), cfg);
        (vs, model)
    };

    // Ours: flat buffers, one copy/add per buffer (small buckets: several buffers).
    let (mut vs, model) = build();
    let mut opt = AdamW::new(&vs, AdamWConfig::default());
    opt.keep_fp32_masters(&mut vs, 4096).unwrap();
    let buffers = opt.main_grad_buffers().unwrap();
    assert!(buffers.len() > 1, "several buffers");
    opt.zero_grad().unwrap();
    for i in 0..3 {
        micro(&model, i).backward();
        opt.accumulate_main_grads(i == 0).unwrap();
    }
    let ours: Vec<(String, Tensor)> = opt
        .master_weights()
        .unwrap()
        .into_iter()
        .map(|(n, m)| (n, m.grad()))
        .collect();
    // The bf16 gradients are views into flat buffers, zero again after the accumulation.
    let wte = vs.variables()["transformer.wte.weight"].grad();
    assert_eq!(wte.kind(), Kind::BFloat16);
    assert_eq!(wte.abs().max().double_value(&[]), 0.0);

    // Before: the bf16 gradients written fresh by each backward, added tensor by tensor.
    let (mut vs, model) = build();
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let main: Vec<Tensor> = named
        .iter()
        .map(|(_, p)| p.zeros_like().to_kind(Kind::Float))
        .collect();
    vs.bfloat16();
    let params: Vec<&Tensor> = named.iter().map(|(_, p)| p).collect();
    for i in 0..3 {
        micro(&model, i).backward();
        let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).collect();
        tch::no_grad(|| {
            foreach_copy_or_add(
                &main.iter().collect::<Vec<_>>(),
                &grads.iter().collect::<Vec<_>>(),
                i > 0,
            )
        })
        .unwrap();
        grads_to_none(&params).unwrap();
    }
    for (name, grad) in &ours {
        let at = named.iter().position(|(n, _)| n == name).unwrap();
        assert!(grad.equal(&main[at]), "{name}: main gradients differ");
    }
}
