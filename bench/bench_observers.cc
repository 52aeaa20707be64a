// Time of the calibration searches that dominate `ptq4sam quantize` on ViT-B shapes: the
// per-channel MSE grid of a weight (100 ranges x 2^b zero points), the AvgMSEFast Brent search
// of an activation, and AGQ's search over one global attention's probabilities.
#include <ATen/Parallel.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <functional>

#include "cli/commands.h"
#include "quant/observer.h"
#include "quant/observer_search.h"

using namespace ptq4sam;

namespace {

double seconds_of(const std::function<void()>& work) {
  const auto start = std::chrono::steady_clock::now();
  work();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_observers: time of the MSE grid, AvgMSEFast and AGQ searches on ViT-B shapes"};
  int threads = 2, bits = 8;
  int64_t weight_rows = 2304, weight_cols = 768, heads = 12, tokens = 4096;
  std::string only;
  app.add_option("--threads", threads, "Threads");
  app.add_option("--bits", bits, "Bit width");
  app.add_option("--weight-rows", weight_rows, "Rows (output channels) of the weight");
  app.add_option("--weight-cols", weight_cols, "Columns of the weight");
  app.add_option("--heads", heads, "Attention heads (AGQ)");
  app.add_option("--tokens", tokens, "Tokens of the attention (AGQ): 4096 is a ViT-B global block");
  app.add_option("--only", only, "Run one search: mse, msefast or agq");
  CLI11_PARSE(app, argc, argv);
  cli::init_runtime(threads);
  at::manual_seed(0);
  const quant::QuantRange range{bits, false};

  if (only.empty() || only == "mse") {
    const at::Tensor weight = at::randn({weight_rows, weight_cols}) * 0.02;
    quant::MseObserver observer(range, 0);
    const double s = seconds_of([&] { observer.observe(weight); });
    std::printf("mse_grid    weight %lldx%lld  W%d  %8.2f s\n", (long long)weight_rows, (long long)weight_cols, bits, s);
  }
  if (only.empty() || only == "msefast") {
    const at::Tensor activation = at::randn({tokens, 768});
    quant::MseFastObserver observer(range);
    const double s = seconds_of([&] { observer.observe(activation); });
    std::printf("avg_msefast act    %lldx768   A%d  %8.2f s\n", (long long)tokens, bits, s);
  }
  if (only.empty() || only == "agq") {
    const at::Tensor attn = at::softmax(at::randn({heads, tokens, tokens}) * 2.0, -1);
    const at::Tensor value = at::randn({heads, tokens, 64});
    const at::Tensor reference = at::matmul(attn, value);
    const double one = seconds_of([&] { quant::agq_loss(attn, value, reference, 0.5, range, 2.0); });
    std::printf("agq_loss    one candidate            %8.3f s\n", one);
    quant::AgqObserver observer(range);
    const double s = seconds_of([&] { observer.observe(attn, value); });
    std::printf("agq         attn   %lldx%lldx%lld A%d  %8.2f s  (tau %g)\n", (long long)heads, (long long)tokens,
                (long long)tokens, bits, s, observer.tau());
  }
  return 0;
}
