#include <malloc.h>
#include <omp.h>
#include <torch/torch.h>

#include <thread>

#include "cli/commands.h"
#include "kernels/cpu_isa.h"

namespace ptq4sam::cli {

void init_runtime(int threads) {
  kernels::cpu_isa();  // a bad PTQ4SAM_CPU fails here, before any work
  const int n = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  // LibTorch and oneDNN share the OpenMP runtime, so one setting serves both.
  at::set_num_threads(n);
  omp_set_num_threads(n);
  // Every forward pass allocates the same activation-sized blocks again. Left to the defaults,
  // glibc hands them back to the kernel and every reuse pays page faults (a fifth of the image
  // encoder's time on this VM); keep them in the heap instead. Blocks above glibc's largest
  // mmap threshold (32 MB: a layer's 4096 x 3072 output is 50 MB) would still be mapped afresh
  // each time, so mmap is off altogether.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
}

}  // namespace ptq4sam::cli
