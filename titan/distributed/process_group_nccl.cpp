// NCCL process groups for CUDA tensors, built where CUDA code is compiled.
#include "titan/distributed/backend_internal.h"
#include "titan/common/error.h"

#ifdef TITAN_HAVE_CUDA
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace titan::distributed {

std::shared_ptr<BackendHandle> make_nccl_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                                 std::chrono::milliseconds timeout) {
#ifdef TITAN_HAVE_CUDA
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
  auto handle = std::make_shared<BackendHandle>();
  handle->backend = pg;
  handle->completes_on_device = true;
  return handle;
#else
  (void)store, (void)rank, (void)size, (void)timeout;
  throw Error("CUDA process groups (NCCL) are not built into this titan", "rebuild against a CUDA torch with the CUDA toolkit present");
#endif
}

}  // namespace titan::distributed
