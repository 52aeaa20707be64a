#include "quant/reconstruct.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "quant/adaround.h"
#include "quant/recon_checkpoint.h"
#include "util/error.h"
#include "util/heap_settings.h"

namespace ptq4sam::quant {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

at::Device model_device(const QuantizedSam& qsam) { return qsam.model()->pixel_mean.device(); }

// Where the block computes: its weights' device.
at::Device block_device(const ReconBlock& block) {
  return block.weights.empty() ? at::Device(at::kCPU) : block.weights.front().weight.device();
}

// The seed's LinearTempDecay: b stays at start until warm_up, then falls linearly to end.
double temperature(int64_t t, int64_t t_max, double warm_up, double start_b, double end_b) {
  const double start_decay = warm_up * double(t_max);
  if (double(t) < start_decay) return start_b;
  if (t > t_max) return end_b;
  const double rel_t = (double(t) - start_decay) / (double(t_max) - start_decay);
  return end_b + (start_b - end_b) * std::max(0.0, 1.0 - rel_t);
}

// Training allocates and frees the same large tensors every iteration. glibc would hand each
// one back to the kernel and have it zero fresh pages the next time; while reconstructing,
// freed memory stays in the heap.
HeapSettings keeping_freed_memory() {
  HeapSettings settings = heap_settings();
  settings.mmap_max = 0;
  settings.trim_threshold = -1;
  return settings;
}

// Runs calibration samples through the model. Decoder blocks come after every encoder block is
// final, so each sample's image embedding (quantized and FP) is computed once and reused.
class SampleRunner {
 public:
  SampleRunner(QuantizedSam& qsam, const SampleSource& source) : qsam_(qsam), source_(source), predictor_(qsam.model()) {
    predictor_.set_decoder_chunk(0);
  }

  void run(size_t index, bool quantized, bool decoder_only) {
    qsam_.set_mode(quantized ? QuantMode::kSimulate : QuantMode::kOff);
    const CalibrationSample sample = source_(index);
    if (!decoder_only) {
      predictor_.set_image(sample.image);
    } else {
      // With an FP encoder both models share the embedding.
      const std::pair<size_t, bool> key{index, quantized && qsam_.quant_encoder()};
      const auto it = embeddings_.find(key);
      if (it != embeddings_.end()) {
        predictor_.set_features(it->second.features, it->second.input_size, it->second.original_size);
      } else {
        predictor_.set_image(sample.image);
        embeddings_[key] = {predictor_.features(), predictor_.input_size(), predictor_.original_size()};
      }
    }
    predictor_.predict(box_prompts(sample), /*multimask_output=*/false, /*return_logits=*/true);
  }

 private:
  struct Embedding {
    at::Tensor features;
    std::pair<int64_t, int64_t> input_size, original_size;
  };
  QuantizedSam& qsam_;
  const SampleSource& source_;
  sam::Predictor predictor_;
  std::map<std::pair<size_t, bool>, Embedding> embeddings_;
};

struct Caught {
  std::vector<at::Tensor> inputs;
  at::Tensor output;
};

// The block's inputs and output on one run of the model, which stops right after the block.
Caught catch_block(ReconBlock& block, const std::function<void()>& run) {
  Caught caught;
  *block.tap = [&caught](const std::vector<at::Tensor>& inputs, const at::Tensor& output) {
    for (const auto& t : inputs) caught.inputs.push_back(t.detach().clone());
    caught.output = output.detach().clone();
    throw sam::StopForward{};
  };
  struct Untap {
    sam::BlockTap* tap;
    ~Untap() { *tap = nullptr; }
  } untap{block.tap};
  try {
    run();
  } catch (const sam::StopForward&) {
  }
  if (caught.inputs.empty()) throw Error(block.name, "did not run on the calibration sample");
  return caught;
}

void collect(QuantizedSam& qsam, ReconBlock& block, size_t count, SampleRunner& runner, BlockData& data,
             const ReconProgress& progress, ReconStatus status) {
  torch::NoGradGuard no_grad;
  status.stage = "collect";
  status.iters = int64_t(count);
  for (size_t i = 0; i < count; ++i) {
    status.iter = int64_t(i);
    if (progress) progress(status);
    BlockData::Entry entry;
    entry.quant_inputs = catch_block(block, [&] { runner.run(i, true, !block.in_encoder); }).inputs;
    Caught fp = catch_block(block, [&] { runner.run(i, false, !block.in_encoder); });
    entry.fp_inputs = std::move(fp.inputs);
    entry.fp_output = std::move(fp.output);
    data.add(std::move(entry));
  }
  qsam.set_mode(QuantMode::kSimulate);
  status.iter = int64_t(count);
  if (progress) progress(status);
}

// A block's quantizers as calibration left them (activation parameters, nearest rounding of
// the weights), to go back to.
class CalibratedState {
 public:
  explicit CalibratedState(const ReconBlock& block) {
    for (auto& [name, t] : activation_params(block)) params_.emplace(name, t);
  }

  void restore(ReconBlock& block) const {
    at::NoGradGuard no_grad;
    const at::Device device = block_device(block);
    set_activation_params(block, [&](const std::string& name) { return params_.at(name).to(device); });
    for (auto& w : block.weights) w.quantizer->set_adaround_mask(adaround_nearest_mask(w.weight, w.quantizer->scale()));
  }

 private:
  std::map<std::string, at::Tensor> params_;
};

ReconBlockResult train_block(ReconBlock& block, const BlockData& data, const ReconConfig& config, uint64_t seed,
                             bool keep_worse, const ReconProgress& progress, ReconStatus status) {
  if (data.size() == 0) throw Error(block.name, "has no calibration data to reconstruct on");
  torch::manual_seed(seed);
  ReconBlockResult result;
  result.block = block.name;
  result.mse_before = block_mse(block, data);
  const CalibratedState calibrated(block);
  const auto start = std::chrono::steady_clock::now();

  std::vector<at::Tensor> weight_params, scale_params;
  for (auto& w : block.weights) weight_params.push_back(w.quantizer->begin_adaround(w.weight));
  for (auto& q : block.activations) {
    q->set_drop_prob(config.drop_prob);
    for (auto& t : q->begin_scale_learning()) scale_params.push_back(t);
  }
  std::unique_ptr<torch::optim::Adam> weight_opt, scale_opt;
  if (!weight_params.empty()) weight_opt = std::make_unique<torch::optim::Adam>(weight_params);
  if (!scale_params.empty())
    scale_opt = std::make_unique<torch::optim::Adam>(scale_params, torch::optim::AdamOptions(config.scale_lr));

  const at::Device device = block_device(block);
  const int64_t iters = config.iters;
  const double loss_start = double(iters) * config.warm_up;
  status.stage = "train";
  status.iters = iters;
  status.iter = 0;
  if (progress) progress(status);
  const ScopedHeapSettings keep_freed_memory(keeping_freed_memory());
  for (int64_t it = 0; it < iters; ++it) {
    const int64_t count = it + 1;  // the seed's LossFunction counts from 1
    const int64_t index = at::randint(0, int64_t(data.size()), {1}).item<int64_t>();
    const BlockData::Entry entry = data.get(size_t(index), device);
    std::vector<at::Tensor> inputs;
    for (size_t k = 0; k < entry.quant_inputs.size(); ++k) {
      const at::Tensor& q = entry.quant_inputs[k];
      inputs.push_back(config.drop_prob < 1.0 ? at::where(at::rand_like(q) < config.drop_prob, q, entry.fp_inputs[k]) : q);
    }
    if (weight_opt) weight_opt->zero_grad();
    if (scale_opt) scale_opt->zero_grad();
    const at::Tensor rec_loss = lp_loss(block.forward(inputs), entry.fp_output);
    const double b = temperature(count, iters, config.warm_up, config.b_range.first, config.b_range.second);
    at::Tensor round_loss = at::zeros({}, rec_loss.options());
    if (double(count) >= loss_start) {
      for (auto& w : block.weights) {
        const at::Tensor h = w.quantizer->adaround_soft_rounding();
        round_loss = round_loss + config.weight * (1 - ((h - 0.5).abs() * 2).pow(b)).sum();
      }
    }
    const at::Tensor total = rec_loss + round_loss;
    total.backward();
    if (weight_opt) weight_opt->step();
    if (scale_opt) {
      scale_opt->step();
      // CosineAnnealingLR(T_max = iters, eta_min = 0) after this step.
      const double lr = config.scale_lr * (1 + std::cos(std::acos(-1.0) * double(count) / double(iters))) / 2;
      for (auto& group : scale_opt->param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
    }
    for (auto& q : block.activations) q->settle_learned_scale();
    if (progress && (count % 10 == 0 || count == iters)) {
      status.iter = count;
      status.rec_loss = rec_loss.item<double>();
      status.round_loss = round_loss.item<double>();
      status.b = b;
      progress(status);
    }
  }

  for (auto& w : block.weights) w.quantizer->harden_adaround();
  for (auto& q : block.activations) {
    q->end_scale_learning();
    q->set_drop_prob(1.0);
  }
  result.seconds_per_iter = iters > 0 ? seconds_since(start) / double(iters) : 0.0;
  result.mse_trained = result.mse_after = block_mse(block, data);
  // A diverged training (NaN error) goes back too.
  if (!keep_worse && !(result.mse_trained <= result.mse_before)) {
    calibrated.restore(block);
    result.reverted = true;
    result.mse_after = block_mse(block, data);
  }
  return result;
}

uint64_t block_seed(uint64_t seed, size_t block) { return seed * 1000003u + block; }

}  // namespace

nlohmann::json to_json(const ReconBlockResult& r) {
  return {{"block", r.block},
          {"mse_before", r.mse_before},
          {"mse_after", r.mse_after},
          {"mse_trained", r.mse_trained},
          {"reverted", r.reverted},
          {"seconds", r.seconds},
          {"seconds_per_iter", r.seconds_per_iter}};
}

ReconBlockResult recon_result_from_json(const nlohmann::json& j) {
  ReconBlockResult r;
  r.block = j.at("block").get<std::string>();
  r.mse_before = j.at("mse_before").get<double>();
  r.mse_after = j.at("mse_after").get<double>();
  r.mse_trained = j.at("mse_trained").get<double>();
  r.reverted = j.at("reverted").get<bool>();
  r.seconds = j.at("seconds").get<double>();
  r.seconds_per_iter = j.at("seconds_per_iter").get<double>();
  return r;
}

at::Tensor lp_loss(const at::Tensor& pred, const at::Tensor& target) { return (pred - target).abs().pow(2).sum(1).mean(); }

std::vector<ReconBlock> reconstruction_blocks(QuantizedSam& qsam) {
  sam::Sam& model = *qsam.model();
  const auto params = model.named_parameters(/*recurse=*/true);
  std::vector<ReconBlock> blocks;
  const auto add = [&](const std::string& name, sam::BlockTap* tap, std::function<at::Tensor(const std::vector<at::Tensor>&)> forward,
                       bool in_encoder) {
    ReconBlock block;
    block.name = name;
    block.tap = tap;
    block.forward = std::move(forward);
    block.in_encoder = in_encoder;
    const std::string prefix = name + ".";
    for (const auto& q : qsam.quantizers()) {
      if (q->name().rfind(prefix, 0) != 0) continue;
      if (!q->is_weight()) {
        block.activations.push_back(q);
        continue;
      }
      auto affine = std::dynamic_pointer_cast<AffineQuantizer>(q);
      const at::Tensor* weight = params.find(q->weight_key());
      if (!affine || !weight) throw Error(q->name(), "has no affine quantizer or weight for AdaRound");
      block.weights.push_back({affine, *weight});
    }
    if (!block.activations.empty() || !block.weights.empty()) blocks.push_back(std::move(block));
  };
  if (qsam.quant_encoder()) {
    const auto encoder = model.image_encoder;
    for (size_t i = 0; i < encoder->blocks.size(); ++i) {
      const std::string prefix = "image_encoder.blocks." + std::to_string(i);
      const auto attn = encoder->blocks[i]->attn;
      const auto mlp = encoder->blocks[i]->mlp;
      add(prefix + ".attn", &attn->tap, [attn](const std::vector<at::Tensor>& in) { return attn->forward(in.at(0)); }, true);
      add(prefix + ".mlp", &mlp->tap, [mlp](const std::vector<at::Tensor>& in) { return mlp->forward(in.at(0)); }, true);
    }
    add("image_encoder.neck", &encoder->neck_tap,
        [encoder](const std::vector<at::Tensor>& in) { return encoder->neck(in.at(0)); }, true);
  }
  const auto transformer = model.mask_decoder->transformer;
  const auto add_attention = [&](const std::string& name, const std::shared_ptr<sam::Attention>& attn) {
    add(name, &attn->tap, [attn](const std::vector<at::Tensor>& in) { return attn->forward(in.at(0), in.at(1), in.at(2)); },
        false);
  };
  for (size_t i = 0; i < transformer->layers.size(); ++i) {
    const auto& layer = transformer->layers[i];
    const std::string prefix = "mask_decoder.transformer.layers." + std::to_string(i);
    add_attention(prefix + ".self_attn", layer->self_attn);
    add_attention(prefix + ".cross_attn_token_to_image", layer->cross_attn_token_to_image);
    const auto mlp = layer->mlp;
    add(prefix + ".mlp", &mlp->tap, [mlp](const std::vector<at::Tensor>& in) { return mlp->forward(in.at(0)); }, false);
    add_attention(prefix + ".cross_attn_image_to_token", layer->cross_attn_image_to_token);
  }
  add_attention("mask_decoder.transformer.final_attn_token_to_image", transformer->final_attn_token_to_image);
  return blocks;
}

double block_mse(ReconBlock& block, const BlockData& data) {
  torch::NoGradGuard no_grad;
  double sum = 0, count = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    const BlockData::Entry entry = data.get(i, block_device(block));
    const at::Tensor out = block.forward(entry.quant_inputs);
    sum += (out - entry.fp_output).to(at::kDouble).pow(2).sum().item<double>();
    count += double(out.numel());
  }
  return count > 0 ? sum / count : 0.0;
}

void collect_block_data(QuantizedSam& qsam, ReconBlock& block, size_t count, const SampleSource& source,
                        BlockData& data, const ReconProgress& progress) {
  SampleRunner runner(qsam, source);
  ReconStatus status;
  status.name = block.name;
  collect(qsam, block, count, runner, data, progress, status);
}

ReconBlockResult reconstruct_block(ReconBlock& block, const BlockData& data, const ReconConfig& config, uint64_t seed,
                                   bool keep_worse, const ReconProgress& progress) {
  ReconStatus status;
  status.name = block.name;
  return train_block(block, data, config, seed, keep_worse, progress, status);
}

std::vector<ReconBlockResult> reconstruct(QuantizedSam& qsam, size_t count, const SampleSource& source,
                                          const ReconOptions& options) {
  if (count == 0) throw Error("reconstruct", "no calibration samples");
  std::vector<ReconBlock> blocks = reconstruction_blocks(qsam);
  const at::Device device = model_device(qsam);
  std::vector<ReconBlockResult> results;
  if (!options.checkpoint.empty() && std::filesystem::exists(options.checkpoint))
    results = read_checkpoint(options.checkpoint, options.fingerprint, blocks, device);
  // As the seed's recon_model: past 16 samples the block data leaves the device.
  const bool keep_on_device = options.config.keep_gpu && count <= 16;
  SampleRunner runner(qsam, source);
  for (size_t b = results.size(); b < blocks.size() && b < options.stop_after; ++b) {
    const auto start = std::chrono::steady_clock::now();
    ReconStatus status;
    status.block = b;
    status.blocks = blocks.size();
    status.name = blocks[b].name;
    BlockData data(keep_on_device, options.memory_budget);
    collect(qsam, blocks[b], count, runner, data, options.progress, status);
    ReconBlockResult result = train_block(blocks[b], data, options.config, block_seed(options.seed, b), options.keep_worse,
                                          options.progress, status);
    result.seconds = seconds_since(start);
    results.push_back(result);
    if (!options.checkpoint.empty()) write_checkpoint(options.checkpoint, options.fingerprint, blocks, results);
  }
  qsam.set_mode(QuantMode::kSimulate);
  return results;
}

}  // namespace ptq4sam::quant
