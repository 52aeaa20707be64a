#include "quant/recon_checkpoint.h"

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "util/error.h"

namespace ptq4sam::quant {
namespace {

constexpr const char* kCheckpointFormat = "ptq4sam-recon-checkpoint";

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> activation_params(const ReconBlock& block) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& q : block.activations) {
    if (const auto* affine = dynamic_cast<const AffineQuantizer*>(q.get())) {
      tensors.emplace_back(q->name() + ".scale", affine->scale().detach().cpu().clone());
      tensors.emplace_back(q->name() + ".zero_point", affine->zero_point().cpu().clone());
    } else if (const auto* log = dynamic_cast<const LogQuantizer*>(q.get())) {
      tensors.emplace_back(q->name() + ".scale", at::full({1}, log->scale(), at::kDouble));
      tensors.emplace_back(q->name() + ".tau", at::full({1}, log->tau(), at::kDouble));
    }
  }
  return tensors;
}

void set_activation_params(ReconBlock& block, const std::function<at::Tensor(const std::string&)>& tensor) {
  for (const auto& q : block.activations) {
    if (auto* affine = dynamic_cast<AffineQuantizer*>(q.get())) {
      affine->set_params(tensor(q->name() + ".scale"), tensor(q->name() + ".zero_point"));
    } else if (auto* log = dynamic_cast<LogQuantizer*>(q.get())) {
      log->set_params(tensor(q->name() + ".scale").item<double>(), tensor(q->name() + ".tau").item<double>());
    }
  }
}

void write_checkpoint(const std::string& path, const std::string& fingerprint, const std::vector<ReconBlock>& blocks,
                      const std::vector<ReconBlockResult>& results) {
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  nlohmann::json list = nlohmann::json::array();
  for (size_t b = 0; b < results.size(); ++b) {
    const ReconBlock& block = blocks[b];
    for (auto& named : activation_params(block)) tensors.push_back(std::move(named));
    for (const auto& w : block.weights) tensors.emplace_back(w.quantizer->name() + ".adaround", w.quantizer->adaround_mask().cpu());
    list.push_back(to_json(results[b]));
  }
  io::write_safetensors(path, tensors,
                        {{"format", kCheckpointFormat}, {"fingerprint", fingerprint}, {"results", list.dump()}});
}

std::vector<ReconBlockResult> read_checkpoint(const std::string& path, const std::string& fingerprint,
                                              std::vector<ReconBlock>& blocks, const at::Device& device) {
  const io::SafetensorsFile file = io::read_safetensors(path);
  const auto meta = [&](const std::string& key) {
    const auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  if (meta("format") != kCheckpointFormat) throw Error(path, "is not a reconstruction checkpoint");
  if (meta("fingerprint") != fingerprint)
    throw Error(path, "is the checkpoint of another run (model, config, seed or calibration set differ); "
                      "delete it to start over");
  const auto tensor = [&](const std::string& name) {
    const at::Tensor* t = file.find(name);
    if (!t) throw Error(path, "lacks '" + name + "'");
    return t->to(device);
  };
  std::vector<ReconBlockResult> results;
  nlohmann::json list;
  try {
    list = nlohmann::json::parse(meta("results"));
    for (const auto& j : list) {
      ReconBlockResult r = recon_result_from_json(j);
      r.resumed = true;
      results.push_back(r);
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(path, std::string("has malformed results: ") + e.what());
  }
  if (results.size() > blocks.size()) throw Error(path, "holds more blocks than the model has");
  for (size_t b = 0; b < results.size(); ++b) {
    ReconBlock& block = blocks[b];
    if (results[b].block != block.name)
      throw Error(path, "block " + std::to_string(b) + " is '" + results[b].block + "', expected '" + block.name + "'");
    set_activation_params(block, tensor);
    for (auto& w : block.weights) {
      const at::Tensor mask = tensor(w.quantizer->name() + ".adaround");
      if (mask.sizes() != w.weight.sizes()) throw Error(path, "'" + w.quantizer->name() + ".adaround' has the wrong shape");
      w.quantizer->set_adaround_mask(mask);
    }
  }
  return results;
}

}  // namespace ptq4sam::quant
