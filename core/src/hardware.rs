//! Accelerator peak throughput, free of libtorch: the one table that MFU (`train`) and time
//! estimates (`plan --gpu`) read.

/// Dense bf16 peak FLOP/s by GPU name, datasheet figures without sparsity. Looked up by
/// substring of the upper-cased name, first match wins, so the more specific names come first
/// (`GH200` before `H200`, `H100 PCIE` before `H100`, `L40S` before `L4`).
pub const PEAK_BF16_FLOPS: &[(&str, f64)] = &[
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
];

/// The short names `plan --gpu` documents (any name the table knows is accepted).
pub const GPU_NAMES: &[&str] = &["h100", "a100", "h200"];

/// Dense bf16 peak FLOP/s of a GPU called `name`: a marketing name as `nvidia-smi` prints it
/// (`NVIDIA H100 80GB HBM3`) or a short one (`h100`, `a100`, `h200`); `None` when unknown.
pub fn peak_bf16_flops(name: &str) -> Option<f64> {
    let upper = name.to_ascii_uppercase();
    PEAK_BF16_FLOPS
        .iter()
        .find(|(key, _)| upper.contains(key))
        .map(|&(_, flops)| flops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_marketing_names() {
        assert_eq!(peak_bf16_flops("h100"), Some(989e12));
        assert_eq!(peak_bf16_flops("a100"), Some(312e12));
        assert_eq!(peak_bf16_flops("h200"), Some(989e12));
        assert_eq!(peak_bf16_flops("NVIDIA H100 PCIe"), Some(756e12));
        assert_eq!(peak_bf16_flops("NVIDIA A100-SXM4-80GB"), Some(312e12));
        assert_eq!(peak_bf16_flops("NVIDIA L40S"), Some(362e12));
        assert_eq!(peak_bf16_flops("tpu"), None);
        for name in GPU_NAMES {
            assert!(peak_bf16_flops(name).is_some(), "{name}");
        }
    }
}
