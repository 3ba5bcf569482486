//! The libtorch shim on CPU: fused AdamW against a reference, and autocast.

use h5gpt_train::shim::{
    autocast_enabled, foreach_copy_or_add, fused_adamw, torch_version, AdamWHyper, AutocastDevice,
    AutocastGuard,
};
use tch::{Device, Kind, Tensor};

fn cpu_bf16_safe() {
    // Some VMs advertise AMX without enabling it: keep oneDNN's bf16 kernels off AMX.
    std::env::set_var("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16");
}

/// AdamW written with plain tensor ops (PyTorch's `torch.optim.AdamW` update rule).
fn refs(ts: &[Tensor]) -> Vec<&Tensor> {
    ts.iter().collect()
}

fn reference_adamw(
    p: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    step: i32,
    h: AdamWHyper,
) {
    *p = &*p * (1.0 - h.lr * h.weight_decay);
    *m = &*m * h.beta1 + g * (1.0 - h.beta1);
    *v = &*v * h.beta2 + g * g * (1.0 - h.beta2);
    let bc1 = 1.0 - h.beta1.powi(step);
    let bc2 = 1.0 - h.beta2.powi(step);
    let denom = (&*v / bc2).sqrt() + h.eps;
    *p = &*p - (&*m / bc1) / denom * h.lr;
}

#[test]
fn links_the_expected_libtorch() {
    let _rng = crate::torch_rng();
    assert!(torch_version().starts_with("2.11"), "{}", torch_version());
}

#[test]
fn fused_adamw_equals_the_reference_for_five_steps() {
    let _rng = crate::torch_rng();
    tch::manual_seed(0);
    let h = AdamWHyper {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        weight_decay: 0.1,
        eps: 1e-8,
    };
    let shapes: [&[i64]; 3] = [&[7, 5], &[5], &[3, 4, 2]];
    let params: Vec<Tensor> = shapes
        .iter()
        .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
        .collect();
    let mut reference: Vec<Tensor> = params.iter().map(|p| p.copy()).collect();
    let zeros = |p: &Tensor| p.zeros_like();
    let (m, v): (Vec<Tensor>, Vec<Tensor>) = (
        params.iter().map(zeros).collect(),
        params.iter().map(zeros).collect(),
    );
    let mut rm: Vec<Tensor> = params.iter().map(zeros).collect();
    let mut rv: Vec<Tensor> = params.iter().map(zeros).collect();
    let steps: Vec<Tensor> = params
        .iter()
        .map(|_| Tensor::zeros([], (Kind::Float, Device::Cpu)))
        .collect();
    for step in 1..=5 {
        let grads: Vec<Tensor> = params.iter().map(|p| p.randn_like()).collect();
        fused_adamw(
            &refs(&params),
            &refs(&grads),
            &refs(&m),
            &refs(&v),
            &refs(&steps),
            h,
            None,
        )
        .unwrap();
        for i in 0..params.len() {
            let (mut p, mut mi, mut vi) = (reference[i].copy(), rm[i].copy(), rv[i].copy());
            reference_adamw(&mut p, &grads[i], &mut mi, &mut vi, step, h);
            (reference[i], rm[i], rv[i]) = (p, mi, vi);
        }
        for (a, b) in params.iter().zip(&reference) {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "step {step}: max difference {diff}");
        }
        assert_eq!(steps[0].double_value(&[]), step as f64);
    }
}

#[test]
fn autocast_casts_matmuls_to_bf16_and_sees_updated_weights() {
    let _rng = crate::torch_rng();
    cpu_bf16_safe();
    let x = Tensor::ones([2, 4], (Kind::Float, Device::Cpu));
    let mut w = Tensor::ones([4, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let first = {
        let _guard = AutocastGuard::bf16(AutocastDevice::Cpu).unwrap();
        let y = x.matmul(&w);
        assert_eq!(
            y.kind(),
            Kind::BFloat16,
            "matmul under autocast runs in bf16"
        );
        y.to_kind(Kind::Float)
    };
    assert_eq!(
        x.matmul(&w).kind(),
        Kind::Float,
        "autocast is off after the guard"
    );
    // An optimizer step changes the weights in place.
    tch::no_grad(|| {
        let _ = w.g_mul_scalar_(2.0);
    });
    let second = {
        let _guard = AutocastGuard::bf16(AutocastDevice::Cpu).unwrap();
        x.matmul(&w).to_kind(Kind::Float)
    };
    assert_eq!(first.double_value(&[0, 0]), 4.0);
    assert_eq!(
        second.double_value(&[0, 0]),
        8.0,
        "a stale bf16 copy of the weights was reused"
    );
}

/// Regression: `h5gpt_autocast_exit` always disabled autocast, so leaving an inner guard
/// turned off the outer one's. Exit now restores the state enter found.
#[test]
fn an_inner_autocast_guard_leaves_the_outer_one_on() {
    let _rng = crate::torch_rng();
    cpu_bf16_safe();
    let cpu = AutocastDevice::Cpu;
    let x = Tensor::ones([2, 4], (Kind::Float, Device::Cpu));
    let w = Tensor::ones([4, 3], (Kind::Float, Device::Cpu));
    assert!(!autocast_enabled(cpu), "autocast starts off");
    let outer = AutocastGuard::bf16(cpu).unwrap();
    {
        let _inner = AutocastGuard::bf16(cpu).unwrap();
        assert_eq!(x.matmul(&w).kind(), Kind::BFloat16);
    }
    assert!(
        autocast_enabled(cpu),
        "the inner guard's exit turned the outer one's autocast off"
    );
    assert_eq!(
        x.matmul(&w).kind(),
        Kind::BFloat16,
        "still under the outer guard"
    );
    drop(outer);
    assert!(
        !autocast_enabled(cpu),
        "the outer guard's exit turns it off"
    );
    assert_eq!(x.matmul(&w).kind(), Kind::Float);
}

/// A libtorch error inside the shim comes back through its one error channel, with
/// libtorch's message and without the C++ stack trace c10 appends.
#[test]
fn a_shim_error_carries_the_libtorch_message() {
    let _rng = crate::torch_rng();
    let dst = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    let src = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let err = foreach_copy_or_add(&[&dst], &[&src], false).unwrap_err();
    let message = err.to_string();
    assert!(message.starts_with("libtorch: "), "{message}");
    assert!(message.contains("size"), "{message}");
    assert!(!message.contains("Exception raised from"), "{message}");
    // A later success leaves no stale error behind in the result.
    foreach_copy_or_add(&[&dst], &[&dst.ones_like()], true).unwrap();
    assert_eq!(dst.double_value(&[0]), 1.0);
}
