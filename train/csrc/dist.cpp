// h5gpt's data-parallel shim: c10d's TCPStore rendezvous and process groups (Gloo on CPU;
// NCCL only when built with H5GPT_NCCL), the collectives the trainer needs. Errors follow
// shim.cpp (guard.h): an int return code and the shim's one thread-local message, read by
// h5gpt_last_error().
#include "guard.h"
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef H5GPT_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <chrono>
#include <string>
#include <vector>

// A process group: the store (kept alive: rank 0 serves it) and the backend.
struct H5gptGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

extern "C" {

// Whether the NCCL backend was compiled in.
int h5gpt_dist_has_nccl() {
#ifdef H5GPT_NCCL
  return 1;
#else
  return 0;
#endif
}

// Connects to (or, with is_server, hosts) the TCPStore at master_addr:master_port, wraps it in
// `prefix` when non-empty, and creates the process group of `world` ranks.
// backend: 0 = Gloo, 1 = NCCL; an NCCL group is bound to CUDA device `cuda_device` (the
// rank's, already current), so its communicator is made there and never guessed from the rank.
// For Gloo, `gloo_iface` (a network interface name) or else
// `gloo_host` (an address of this machine) picks the transport device; both empty: the
// address this machine's hostname resolves to.
int h5gpt_dist_new(int backend, int rank, int world, const char *master_addr, int master_port,
                   int is_server, const char *prefix, long long timeout_ms,
                   const char *gloo_iface, const char *gloo_host, int cuda_device,
                   H5gptGroup **out) {
  return h5gpt_guard([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(master_port);
    opts.isServer = is_server != 0;
    opts.numWorkers = std::nullopt;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    opts.multiTenant = true;
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), opts);
    if (prefix[0] != '\0') {
      store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store);
    }
    auto group = new H5gptGroup{store, {}};
    try {
      if (backend == 0) {
        auto options = c10d::ProcessGroupGloo::Options::create(timeout);
        if (gloo_iface[0] != '\0') {
          options->devices.push_back(
              c10d::ProcessGroupGloo::createDeviceForInterface(gloo_iface));
        } else if (gloo_host[0] != '\0') {
          options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(gloo_host));
        } else {
          options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        group->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
      } else {
#ifdef H5GPT_NCCL
        auto options = c10d::ProcessGroupNCCL::Options::create();
        options->timeout = timeout;
        group->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
        group->backend->setBoundDeviceId(
            at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(cuda_device)));
#else
        throw std::runtime_error(
            "NCCL backend not built: this h5gpt was compiled without the NCCL headers "
            "(see the README, Many GPUs and machines); use --device cpu (Gloo)");
#endif
      }
    } catch (...) {
      delete group;
      throw;
    }
    *out = group;
  });
}

// Sums `tensor` in place over all ranks.
int h5gpt_dist_all_reduce_sum(H5gptGroup *group, at::Tensor *tensor) {
  return h5gpt_guard([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    group->backend->allreduce(tensors, opts)->wait();
  });
}

// Overwrites `tensor` on every rank with rank `root`'s.
int h5gpt_dist_broadcast(H5gptGroup *group, at::Tensor *tensor, int root) {
  return h5gpt_guard([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    group->backend->broadcast(tensors, opts)->wait();
  });
}

// Waits until every rank gets here.
int h5gpt_dist_barrier(H5gptGroup *group) {
  return h5gpt_guard([&] { group->backend->barrier()->wait(); });
}

// Shuts the backend down cleanly (NCCL: its communicators finalized, instead of aborted with a
// warning by the destructor); a no-op for Gloo. Call after the last collective.
int h5gpt_dist_shutdown(H5gptGroup *group) {
  return h5gpt_guard([&] { group->backend->shutdown(); });
}

void h5gpt_dist_free(H5gptGroup *group) { delete group; }
}
