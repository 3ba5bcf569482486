// h5gpt's libtorch shim: what tch 0.24 does not expose. Tensors cross as tch's C_tensor,
// which is an `at::Tensor*`.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/ops/_fused_adamw.h>
#include <torch/version.h>
#include <string>
#include <vector>

static thread_local std::string last_error;

extern "C" {

const char *h5gpt_last_error() { return last_error.c_str(); }

// One fused AdamW step (PyTorch semantics, decoupled weight decay) over n tensors that share
// one lr and weight decay. `steps` are float scalar tensors, incremented in place.
int h5gpt_fused_adamw(at::Tensor **params, at::Tensor **grads, at::Tensor **exp_avgs,
                      at::Tensor **exp_avg_sqs, at::Tensor **steps, int n, double lr,
                      double beta1, double beta2, double weight_decay, double eps) {
  try {
    std::vector<at::Tensor> p, g, m, v, s;
    for (int i = 0; i < n; i++) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      m.push_back(*exp_avgs[i]);
      v.push_back(*exp_avg_sqs[i]);
      s.push_back(*steps[i]);
    }
    for (auto &t : s) t.add_(1);
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, s, lr, beta1, beta2, weight_decay,
                      eps, /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return 1;
  }
}

// Autocast as PyTorch's context manager does it: enter sets dtype, enables and bumps the
// nesting counter; exit decrements and, at the outermost level, clears the cast cache so
// weights updated by the optimizer are re-cast on the next forward.
// device: 0 = CPU, 1 = CUDA. dtype: 0 = bfloat16, 1 = float16.
int h5gpt_autocast_enter(int device, int dtype) {
  try {
    auto dev = device == 1 ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_dtype(dev, dtype == 1 ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return 1;
  }
}

int h5gpt_autocast_exit(int device) {
  try {
    auto dev = device == 1 ? at::kCUDA : at::kCPU;
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dev, false);
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return 1;
  }
}

const char *h5gpt_torch_version() { return TORCH_VERSION; }

// float32 matmul precision, as torch.set_float32_matmul_precision: "highest" (true fp32) or
// "high" (TF32 tensor cores on CUDA).
int h5gpt_set_float32_matmul_precision(const char *precision) {
  try {
    at::globalContext().setFloat32MatmulPrecision(precision);
    return 0;
  } catch (const std::exception &e) {
    last_error = e.what();
    return 1;
  }
}

// Whether this libtorch has a CUDA backend registered (libtorch_cuda loaded).
int h5gpt_has_cuda() { return at::hasCUDA() ? 1 : 0; }
}
