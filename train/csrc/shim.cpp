// h5gpt's libtorch shim: what tch 0.24 does not expose. Tensors cross as tch's C_tensor,
// which is an `at::Tensor*`.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_copy.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/version.h>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "guard.h"

#ifdef H5GPT_CUDA
// The CUDA runtime's headers (the venv's nvidia/cu13, as for NCCL): device properties, the
// current device and the sync-debug switch of libc10_cuda.
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
namespace at::cuda {
// ATen/cuda/CUDAContextLight.h declares it, but also pulls in cuSPARSE and cuSOLVER headers.
cudaDeviceProp *getDeviceProperties(c10::DeviceIndex device);
}
#endif

// The message of the CUDA functions below in a build without the CUDA headers.
static const char *h5gpt_no_cuda_headers =
    "this h5gpt was built without the CUDA runtime headers (see the README, Many GPUs and "
    "machines)";

extern "C" {

// The message of the last failure of any shim function (shim.cpp, dist.cpp) on this thread.
const char *h5gpt_last_error() { return h5gpt_last_error_message.c_str(); }

static std::vector<at::Tensor> tensors(at::Tensor **ts, int n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (int i = 0; i < n; i++) out.push_back(*ts[i]);
  return out;
}

// One fused AdamW step (PyTorch semantics, decoupled weight decay) over n tensors that share
// one lr and weight decay. `steps` are float scalar tensors, incremented in place by one
// foreach kernel. `found_inf` (may be null) is a float scalar tensor on the parameters'
// device: where it is 1, the kernel changes nothing and the step counters stay, as PyTorch's
// AdamW does under a GradScaler, so a non-finite step needs no host sync to be skipped.
int h5gpt_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                      at::Tensor **exp_avg_sqs, at::Tensor **steps, int n, double lr,
                      double beta1, double beta2, double weight_decay, double eps,
                      at::Tensor *found_inf) {
  return h5gpt_guard([&] {
    auto p = tensors(params, n), g = tensors(grads, n), m = tensors(exp_avgs, n),
         v = tensors(exp_avg_sqs, n), s = tensors(steps, n);
    std::optional<at::Tensor> inf;
    if (found_inf != nullptr) {
      inf = *found_inf;
      // 1 − found_inf: the counters advance only on a step that is applied.
      at::_foreach_add_(s, at::rsub(*found_inf, 1));
    } else {
      at::_foreach_add_(s, 1);
    }
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, s, lr, beta1, beta2, weight_decay,
                      eps, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/std::nullopt,
                      inf);
  });
}

// A pinned copy of a CPU tensor (Tensor.pin_memory() without the deprecated device argument,
// which tch always passes and PyTorch warns about on every call).
int h5gpt_pin_memory(at::Tensor *t, at::Tensor **out) {
  return h5gpt_guard([&] {
    *out = new at::Tensor(t->pin_memory());
  });
}

// Drops the gradients of n tensors (`optimizer.zero_grad(set_to_none=True)`): backward then
// writes them once instead of adding into zeros.
int h5gpt_grads_to_none(at::Tensor **params, int n) {
  return h5gpt_guard([&] {
    for (int i = 0; i < n; i++) params[i]->mutable_grad().reset();
  });
}

// Makes `grad` the gradient of `param` (a view into a flat buffer, for the all-reduce);
// backward then accumulates into it in place.
int h5gpt_set_grad(at::Tensor *param, at::Tensor *grad) {
  return h5gpt_guard([&] {
    param->mutable_grad() = *grad;
  });
}

// dst[i] = src[i] (add == 0) or dst[i] += src[i] (add != 0) over n pairs, converting dtypes
// (bf16 gradients into fp32 main gradients, fp32 masters into bf16 weights).
int h5gpt_foreach_copy_or_add(at::Tensor **dst, at::Tensor **src, int n, int add) {
  return h5gpt_guard([&] {
    auto d = tensors(dst, n), s = tensors(src, n);
    if (add) {
      at::_foreach_add_(d, s);
    } else {
      at::_foreach_copy_(d, s);
    }
  });
}

// torch.nn.utils.clip_grad_norm_ with foreach kernels and no host sync, of n gradients times
// `scale` (a 0-d float tensor on their device, or null for 1): the global L2 norm of the scaled
// gradients (fp32, a new 0-d tensor on their device, written to *out_norm), then every
// gradient × scale × min(1, max_norm / (norm + 1e-6)), one multiply.
int h5gpt_clip_grad_norm(at::Tensor **grads, int n, double max_norm, at::Tensor *scale,
                         at::Tensor **out_norm) {
  return h5gpt_guard([&] {
    auto g = tensors(grads, n);
    auto norms = at::_foreach_norm(g, 2, at::kFloat);
    auto total = at::linalg_vector_norm(at::stack(norms), 2);
    if (scale != nullptr) total = total * *scale;
    auto coef = at::clamp_max(max_norm / (total + 1e-6), 1.0);
    if (scale != nullptr) coef = coef * *scale;
    at::_foreach_mul_(g, coef);
    *out_norm = new at::Tensor(total);
  });
}

// A marker recorded on the current stream of CUDA device `index`: synchronizing on it waits
// for the work queued before it, not for what was queued after (as a device sync would).
void *h5gpt_cuda_event_record(int index) {
  c10::Event *event = nullptr;
  int failed = h5gpt_guard([&] {
    c10::Device device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
    auto recorded = std::make_unique<c10::Event>(c10::DeviceType::CUDA);
    recorded->record(c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->getStream(device));
    event = recorded.release();
  });
  return failed ? nullptr : event;
}

int h5gpt_cuda_event_synchronize(void *event) {
  return h5gpt_guard([&] {
    static_cast<c10::Event *>(event)->synchronize();
  });
}

void h5gpt_cuda_event_free(void *event) { delete static_cast<c10::Event *>(event); }

// Peak bytes allocated and reserved by the caching allocator of CUDA device `index` since
// the last reset (torch.cuda.max_memory_allocated / max_memory_reserved); reset != 0 then
// resets the peaks.
int h5gpt_cuda_peak_memory(int index, int64_t *allocated, int64_t *reserved, int reset) {
  return h5gpt_guard([&] {
    auto *alloc = c10::getDeviceAllocator(c10::DeviceType::CUDA);
    auto stats = alloc->getDeviceStats(static_cast<c10::DeviceIndex>(index));
    auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = stats.allocated_bytes[all].peak;
    *reserved = stats.reserved_bytes[all].peak;
    if (reset) alloc->resetPeakStats(static_cast<c10::DeviceIndex>(index));
  });
}

// Autocast as PyTorch's context manager does it: enter saves the device's autocast state
// (enabled, dtype) into *prev_enabled / *prev_dtype, sets the dtype, enables and bumps the
// nesting counter; exit decrements and, at the outermost level, clears the cast cache so
// weights updated by the optimizer are re-cast on the next forward, then restores the saved
// state (an inner guard's exit leaves the outer one's autocast on).
// device: 0 = CPU, 1 = CUDA. dtype: 0 = bfloat16, 1 = float16. prev_dtype: a c10::ScalarType.
static at::DeviceType autocast_device(int device) { return device == 1 ? at::kCUDA : at::kCPU; }

int h5gpt_autocast_enter(int device, int dtype, int *prev_enabled, int *prev_dtype) {
  return h5gpt_guard([&] {
    auto dev = autocast_device(device);
    *prev_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_dtype(dev, dtype == 1 ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::increment_nesting();
  });
}

int h5gpt_autocast_exit(int device, int prev_enabled, int prev_dtype) {
  return h5gpt_guard([&] {
    auto dev = autocast_device(device);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(prev_dtype));
  });
}

// Whether autocast is on for device (0 = CPU, 1 = CUDA) on this thread.
int h5gpt_autocast_enabled(int device) {
  return at::autocast::is_autocast_enabled(autocast_device(device)) ? 1 : 0;
}

const char *h5gpt_torch_version() { return TORCH_VERSION; }

// float32 matmul precision, as torch.set_float32_matmul_precision: "highest" (true fp32) or
// "high" (TF32 tensor cores on CUDA).
int h5gpt_set_float32_matmul_precision(const char *precision) {
  return h5gpt_guard([&] {
    at::globalContext().setFloat32MatmulPrecision(precision);
  });
}

// Makes CUDA device `index` this process's current device (cudaSetDevice): the device every
// later guard restores and every event or stream defaults to, so no CUDA context is ever
// created on another GPU.
int h5gpt_cuda_set_device(int index) {
  return h5gpt_guard([&] {
#ifdef H5GPT_CUDA
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(index), /*force=*/true);
#else
    throw std::runtime_error(h5gpt_no_cuda_headers);
#endif
  });
}

// Name (NUL-terminated, at most name_len bytes with the NUL) and compute capability of CUDA
// device `index`, from its properties (no context is created).
int h5gpt_cuda_device_info(int index, char *name, int name_len, int *major, int *minor) {
  return h5gpt_guard([&] {
#ifdef H5GPT_CUDA
    const cudaDeviceProp *prop = at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(index));
    std::string full(prop->name);
    std::snprintf(name, static_cast<size_t>(name_len), "%s", full.c_str());
    *major = prop->major;
    *minor = prop->minor;
#else
    throw std::runtime_error(h5gpt_no_cuda_headers);
#endif
  });
}

// CUDA's synchronizing-call check (torch.cuda.set_sync_debug_mode): 0 off, 1 a warning at
// every call that makes the host wait for the device, 2 an error there.
int h5gpt_cuda_set_sync_debug_mode(int mode) {
  return h5gpt_guard([&] {
#ifdef H5GPT_CUDA
    c10::cuda::warning_state().set_sync_debug_mode(static_cast<c10::cuda::SyncDebugMode>(mode));
#else
    throw std::runtime_error(h5gpt_no_cuda_headers);
#endif
  });
}

// Whether this libtorch has a CUDA backend registered (libtorch_cuda loaded).
int h5gpt_has_cuda() { return at::hasCUDA() ? 1 : 0; }
}
