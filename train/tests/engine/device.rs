//! The device a rank uses, what it does first, and the precision `--dtype` resolves to: pure
//! functions, so the GPU-only paths are tested on the CPU.

use h5gpt_train::device::{bf16_supported, cuda_index_for, startup_actions, StartupAction};
use h5gpt_train::precision::{DtypeRequest, Precision};
use h5gpt_train::shim::SyncDebug;
use tch::Device;

/// One process per node sees every GPU and takes its local rank's; a launcher that binds one
/// GPU per process (SLURM `--gpus-per-task=1`) leaves each the only one; anything else is a
/// clear error naming both numbers.
#[test]
fn each_rank_takes_its_gpu_or_the_only_one() {
    assert_eq!(cuda_index_for(0, 8), Ok(0));
    assert_eq!(cuda_index_for(5, 8), Ok(5));
    // Per-task binding: local ranks 1.. see one GPU, their own.
    assert_eq!(cuda_index_for(3, 1), Ok(0));
    // LOCAL_RANK unset falls back to RANK: rank 9 on a node of 8 GPUs.
    let e = cuda_index_for(9, 8).unwrap_err();
    assert!(
        e.contains("local rank 9") && e.contains("sees 8 CUDA devices"),
        "{e}"
    );
    let e = cuda_index_for(0, 0).unwrap_err();
    assert!(e.contains("no CUDA device"), "{e}");
}

/// A CUDA rank makes its GPU current before anything else (else libtorch's guards and events
/// create a context on GPU 0 in every rank), then joins the group bound to that GPU; a CPU rank
/// only joins.
#[test]
fn a_rank_sets_its_device_before_it_joins_the_group() {
    assert_eq!(
        startup_actions(Device::Cuda(3), true),
        vec![
            StartupAction::SetCudaDevice(3),
            StartupAction::JoinGroup {
                bound_device: Some(3)
            }
        ]
    );
    assert_eq!(
        startup_actions(Device::Cuda(0), false),
        vec![StartupAction::SetCudaDevice(0)]
    );
    assert_eq!(
        startup_actions(Device::Cpu, true),
        vec![StartupAction::JoinGroup { bound_device: None }]
    );
    assert!(startup_actions(Device::Cpu, false).is_empty());
}

/// bf16 needs compute capability 8.0 on a GPU: `auto` falls back to fp32 with a note there,
/// `bf16` and `bf16-pure` are refused; the CPU and newer GPUs are unchanged.
#[test]
fn dtype_auto_picks_bf16_only_where_the_gpu_has_it() {
    assert!(bf16_supported(None));
    assert!(bf16_supported(Some((8, 0))));
    assert!(bf16_supported(Some((9, 0))));
    assert!(!bf16_supported(Some((7, 0))), "V100");
    assert!(!bf16_supported(Some((7, 5))), "T4");
    let gpu = Device::Cuda(0);
    assert_eq!(
        Precision::resolve(DtypeRequest::Auto, gpu, true),
        Ok((Precision::Bf16, None))
    );
    let (precision, note) = Precision::resolve(DtypeRequest::Auto, gpu, false).unwrap();
    assert_eq!(precision, Precision::Fp32);
    assert!(note.unwrap().contains("compute capability below 8.0"));
    for request in [DtypeRequest::Bf16, DtypeRequest::Bf16Pure] {
        let e = Precision::resolve(request, gpu, false).unwrap_err();
        assert!(e.contains(&format!("--dtype {request}")), "{e}");
    }
    assert_eq!(
        Precision::resolve(DtypeRequest::Fp32, gpu, false),
        Ok((Precision::Fp32, None))
    );
    assert_eq!(
        Precision::resolve(DtypeRequest::Auto, Device::Cpu, true),
        Ok((Precision::Fp32, None))
    );
    assert_eq!(
        Precision::resolve(DtypeRequest::Bf16, Device::Cpu, true),
        Ok((Precision::Bf16, None))
    );
}

#[test]
fn sync_debug_reads_its_variable() {
    assert_eq!(SyncDebug::parse(""), Ok(SyncDebug::Off));
    assert_eq!(SyncDebug::parse("off"), Ok(SyncDebug::Off));
    assert_eq!(SyncDebug::parse("warn"), Ok(SyncDebug::Warn));
    assert_eq!(SyncDebug::parse("error"), Ok(SyncDebug::Error));
    let e = SyncDebug::parse("loud").unwrap_err();
    assert!(e.contains("H5GPT_CUDA_SYNC_DEBUG"), "{e}");
}
