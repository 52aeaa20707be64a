#include <omp.h>
#include <torch/torch.h>

#include <thread>

#include "cli/commands.h"

namespace ptq4sam::cli {

void set_threads(int threads) {
  const int n = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
  // LibTorch and oneDNN share the OpenMP runtime, so one setting serves both.
  at::set_num_threads(n);
  omp_set_num_threads(n);
}

}  // namespace ptq4sam::cli
