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
    let norm = opt.clip_grad_norm(1.0);
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
        opt.zero_grad();
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
