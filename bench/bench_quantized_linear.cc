// The integer linear layer (u8 x s8 oneDNN, compensation and dequantization) against the
// float32 one on ViT-B's MLP shape, whole layer included (quantizing the input, output pass).
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <vector>

#include "cli/commands.h"
#include "kernels/quantized_linear.h"

using namespace ptq4sam;

namespace {

double best_seconds(int runs, const std::function<void()>& work) {
  work();  // warm-up: primitive creation
  std::vector<double> times;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    work();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return *std::min_element(times.begin(), times.end());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_quantized_linear: integer vs float32 linear layer"};
  int threads = 2, runs = 5, bits = 8;
  int64_t m = 4096, k = 768, n = 3072;
  app.add_option("--threads", threads, "Threads");
  app.add_option("--runs", runs, "Timed runs (best reported)");
  app.add_option("--bits", bits, "Weight bit width");
  app.add_option("-m", m, "Rows (tokens)");
  app.add_option("-k", k, "Input features");
  app.add_option("-n", n, "Output features");
  CLI11_PARSE(app, argc, argv);
  cli::init_runtime(threads);
  at::manual_seed(0);
  const at::Tensor x = at::randn({m, k});
  const at::Tensor weight = at::randn({n, k}) * 0.02, bias = at::randn({n});
  const at::Tensor codes = at::randint(0, int64_t(1) << bits, {n, k}, at::kLong);
  const kernels::QuantizedWeight qw = kernels::make_quantized_weight(
      codes, at::full({n}, 0.001f), at::full({n}, int64_t(1) << (bits - 1), at::kLong), bits, false, bias);
  const kernels::ActivationQuantization aq{8.0f / 255.0f, 128, 0, 255};
  const double ops = 2.0 * double(m) * double(k) * double(n);
  const double fp32 = best_seconds(runs, [&] { kernels::linear(x, weight, bias); });
  const double int8 = best_seconds(runs, [&] { kernels::quantized_linear(x, aq, qw); });
  std::printf("linear %lldx%lldx%lld, %d threads\n", (long long)m, (long long)k, (long long)n, threads);
  std::printf("  float32 (oneDNN f32)     %8.2f ms  %7.1f GFLOP/s\n", fp32 * 1e3, ops / fp32 / 1e9);
  std::printf("  integer W%dA8 (u8 x s8)   %8.2f ms  %7.1f GOP/s  (%.2fx)\n", bits, int8 * 1e3, ops / int8 / 1e9, fp32 / int8);
  return 0;
}
