// C ABI over PyTorch's c10d (TCPStore + ProcessGroupGloo / ProcessGroupNCCL) and the autocast
// dtype, for lkd-dist. Every entry point catches every C++ exception and returns its message as
// a malloc'ed string (null on success): no exception may unwind into Rust.
//
// Tensors arrive as `at::Tensor*`, the same handle torch-sys/tch use for `C_tensor`.

// Gloo's headers are not in the torch wheel (Debian's libgloo-dev has them); the Gloo code that
// runs is the copy inside libtorch_cpu.so.
#define USE_C10D_GLOO 1

#include <ATen/autocast_mode.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#ifdef LKD_WITH_NCCL
#define USE_C10D_NCCL 1
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char *copy_message(const char *msg) {
  const char *text = msg ? msg : "(no message)";
  size_t n = std::strlen(text);
  char *out = static_cast<char *>(std::malloc(n + 1));
  if (out) std::memcpy(out, text, n + 1);
  return out;
}

// Runs `body`; returns null on success or the exception's message. c10::Error's `what()` carries
// a C++ backtrace that means nothing to a user, so its short form is used.
template <typename F>
char *guarded(F &&body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error &e) {
    return copy_message(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case 1:
      return c10d::ReduceOp(c10d::ReduceOp::MAX);
    case 2:
      return c10d::ReduceOp(c10d::ReduceOp::MIN);
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

at::ScalarType precision_dtype(int precision) {
  switch (precision) {
    case 0:
      return at::kFloat;
    case 1:
      return at::kBFloat16;
    case 2:
      return at::kHalf;
    default:
      throw std::invalid_argument("unknown autocast dtype code " + std::to_string(precision));
  }
}

at::DeviceType device_type(int device) {
  switch (device) {
    case 0:
      return at::kCPU;
    case 1:
      return at::kCUDA;
    default:
      throw std::invalid_argument("unknown device type code " + std::to_string(device));
  }
}

}  // namespace

struct lkd_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

extern "C" {

void lkd_free_message(char *msg) { std::free(msg); }

int lkd_has_nccl() {
#ifdef LKD_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// backend: 0 = Gloo, 1 = NCCL. `cuda_device` is the CUDA device this rank drives (NCCL only).
char *lkd_pg_new(int backend, const char *master_addr, int master_port, int rank, int world_size,
                 int cuda_device, int64_t timeout_ms, lkd_pg **out) {
  *out = nullptr;
  return guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions store_opts;
    store_opts.port = static_cast<std::uint16_t>(master_port);
    store_opts.isServer = rank == 0;
    store_opts.numWorkers = static_cast<std::size_t>(world_size);
    store_opts.waitWorkers = true;
    store_opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(master_addr), store_opts);
    c10::intrusive_ptr<c10d::Backend> group;
    if (backend == 0) {
      auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
      // As torch.distributed: GLOO_SOCKET_IFNAME picks the interface, else the hostname's address.
      const char *ifname = std::getenv("GLOO_SOCKET_IFNAME");
      if (ifname && *ifname) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, opts);
    } else if (backend == 1) {
#ifdef LKD_WITH_NCCL
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(cuda_device));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = timeout;
      group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, opts);
#else
      (void)cuda_device;
      throw std::runtime_error(
          "this build has no NCCL: lkd-dist was compiled against a libtorch without "
          "libtorch_cuda.so or without the CUDA/NCCL headers");
#endif
    } else {
      throw std::invalid_argument("unknown backend code " + std::to_string(backend));
    }
    *out = new lkd_pg{store, group, timeout};
  });
}

void lkd_pg_free(lkd_pg *pg) { delete pg; }

char *lkd_pg_broadcast(lkd_pg *pg, const at::Tensor *tensor, int root) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = pg->timeout;
    pg->backend->broadcast(tensors, opts)->wait(pg->timeout);
  });
}

// op: 0 = sum, 1 = max, 2 = min (averaging is a sum then a division on the Rust side: Gloo has
// no AVG).
char *lkd_pg_allreduce(lkd_pg *pg, const at::Tensor *tensor, int op) {
  return guarded([&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    opts.timeout = pg->timeout;
    pg->backend->allreduce(tensors, opts)->wait(pg->timeout);
  });
}

char *lkd_pg_barrier(lkd_pg *pg) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    opts.timeout = pg->timeout;
    pg->backend->barrier(opts)->wait(pg->timeout);
  });
}

// Gives `param` the gradient `grad` (used for parameters that got no gradient on this rank, so
// every rank sends the same bucket layout).
char *lkd_set_grad(const at::Tensor *param, const at::Tensor *grad) {
  return guarded([&] {
    at::Tensor p = *param;
    p.mutable_grad() = *grad;
  });
}

// device: 0 = CPU, 1 = CUDA; precision: 0 = fp32, 1 = bf16, 2 = fp16. Autocast state is
// thread-local in ATen: this affects the calling thread only.
char *lkd_set_autocast_dtype(int device, int precision) {
  return guarded([&] { at::autocast::set_autocast_dtype(device_type(device), precision_dtype(precision)); });
}

char *lkd_get_autocast_dtype(int device, int *precision) {
  return guarded([&] {
    at::ScalarType t = at::autocast::get_autocast_dtype(device_type(device));
    if (t == at::kFloat) {
      *precision = 0;
    } else if (t == at::kBFloat16) {
      *precision = 1;
    } else if (t == at::kHalf) {
      *precision = 2;
    } else {
      throw std::runtime_error(std::string("unexpected autocast dtype ") + c10::toString(t));
    }
  });
}

// Enters an autocast region for a device type on the calling thread (as `torch.autocast`'s
// __enter__): enables it, bumps the nesting count and reports the previous enabled state.
char *lkd_autocast_enter(int device, int *previous) {
  return guarded([&] {
    at::DeviceType t = device_type(device);
    *previous = at::autocast::is_autocast_enabled(t) ? 1 : 0;
    at::autocast::set_autocast_enabled(t, true);
    at::autocast::increment_nesting();
  });
}

// Leaves the region: restores the previous state and, at the outermost exit, drops the cast
// cache (cached low-precision weight copies would be stale after an optimizer step).
char *lkd_autocast_exit(int device, int previous) {
  return guarded([&] {
    at::autocast::set_autocast_enabled(device_type(device), previous != 0);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  });
}

}  // extern "C"
