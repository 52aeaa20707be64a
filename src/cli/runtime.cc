#include <omp.h>
#include <torch/torch.h>

#include <thread>

#include "cli/commands.h"
#include "kernels/cpu_isa.h"
#include "util/heap_settings.h"

namespace ptq4sam::cli {

void init_runtime(int threads) {
  kernels::cpu_isa();  // a bad PTQ4SAM_CPU fails here, before any work
  const int n = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  // LibTorch and oneDNN share the OpenMP runtime, so one setting serves both.
  at::set_num_threads(n);
  omp_set_num_threads(n);
  // Every forward pass allocates the same activation-sized blocks again. Left to the defaults,
  // glibc hands them back to the kernel and every reuse pays page faults; keep them in the heap
  // instead. Blocks above glibc's largest mmap threshold (32 MB: a layer's 4096 x 3072 output is
  // 50 MB) would still be mapped afresh each time, so mmap is off altogether.
  HeapSettings heap;
  heap.mmap_threshold = 32 << 20;
  heap.mmap_max = 0;
  heap.trim_threshold = 1 << 30;
  heap.top_pad = 64 << 20;
  set_heap_settings(heap);
}

}  // namespace ptq4sam::cli
