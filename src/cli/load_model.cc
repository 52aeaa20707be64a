#include <malloc.h>

#include <cstdio>

#include "cli/commands.h"
#include "kernels/large_block_pool.h"

namespace ptq4sam::cli {

namespace {

// Loading leaves its file buffers and unpacked codes freed in the heap, which init_runtime
// keeps from the kernel (M_TRIM_THRESHOLD) for the forward passes' sake: hand them back once.
// Then the forward passes' tensors go to the pool. Its range then holds no weights, whose
// blocks, scattered among the loading's freed ones, would split the free space (W8A8 ViT-B:
// 517 MB pool footprint with the weights in it).
void release_load_garbage() {
  malloc_trim(0);
  kernels::use_large_block_pool();
}

}  // namespace

LoadedModel load_model(const std::string& path, quant::Backend backend) {
  LoadedModel loaded;
  if (!quant::is_artifact(path)) {
    loaded.sam = sam::load_sam(path);
    release_load_garbage();
    return loaded;
  }
  loaded.quantized = quant::load_artifact(path, {backend});
  release_load_garbage();
  loaded.sam = loaded.quantized->model();
  const auto& config = loaded.quantized->config();
  const auto& integer = loaded.quantized->integer_layers();
  std::string runs = "simulated (fake-quant)";
  if (backend == quant::Backend::kInteger)
    runs = "integer runtime, " + std::to_string(integer.names.size()) + " layers and " +
           std::to_string(integer.attentions.size()) + " attentions on u8 x s8 codes";
  std::fprintf(stderr, "quantized artifact: W%dA%d%s, %s\n", config.w.bit, config.a.bit,
               loaded.quantized->quant_encoder() ? ", encoder quantized" : "", runs.c_str());
  if (!integer.fallback.empty()) {
    std::string names;
    for (const auto& name : integer.fallback) names += (names.empty() ? "" : ", ") + name;
    std::fprintf(stderr, "warning: %zu layers stay simulated (%s): %s\n", integer.fallback.size(),
                 integer.fallback_reason.c_str(), names.c_str());
  }
  return loaded;
}

void add_backend_option(CLI::App& cmd, quant::Backend& backend) {
  cmd.add_option_function<std::string>(
         "--backend",
         [&backend](const std::string& name) {
           backend = name == "simulated" ? quant::Backend::kSimulated : quant::Backend::kInteger;
         },
         "How a quantized artifact runs: integer (u8 x s8 kernels) or simulated (fake-quant float32)")
      ->check(CLI::IsMember({"integer", "simulated"}))
      ->option_text("integer|simulated (default: integer)");
}

const char* backend_name(quant::Backend backend) {
  return backend == quant::Backend::kInteger ? "integer" : "simulated";
}

}  // namespace ptq4sam::cli
