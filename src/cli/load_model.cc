#include "cli/commands.h"

#include <cstdio>

#include "quant/artifact.h"

namespace ptq4sam::cli {

LoadedModel load_model(const std::string& path) {
  LoadedModel loaded;
  if (quant::is_artifact(path)) {
    loaded.quantized = quant::load_artifact(path);
    loaded.sam = loaded.quantized->model();
    std::fprintf(stderr, "quantized artifact: W%dA%d%s, simulated (fake-quant)\n", loaded.quantized->config().w.bit,
                 loaded.quantized->config().a.bit, loaded.quantized->quant_encoder() ? ", encoder quantized" : "");
  } else {
    loaded.sam = sam::load_sam(path);
  }
  return loaded;
}

}  // namespace ptq4sam::cli
