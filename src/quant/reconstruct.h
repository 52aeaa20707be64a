#pragma once
// PTQ4SAM-L: QDrop block reconstruction after calibration (the seed's solver/recon.py). Block
// by block, from the input to the output, the quantized block is tuned so that its output on
// the calibration data matches the FP32 model's: AdaRound on its weights, the LSQ and AGQ
// scales of its activation quantizers, with QDrop mixing quantized and FP values. A checkpoint
// after each block lets a killed run continue where it stopped and end with the same result.
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "quant/block_data.h"
#include "quant/calibrate.h"
#include "quant/quantized_sam.h"

namespace ptq4sam::quant {

// One block as the seed reconstructs it: an encoder attention or MLP, the neck, a decoder
// attention or MLP.
struct ReconBlock {
  std::string name;  // "image_encoder.blocks.0.attn", "image_encoder.neck", "mask_decoder.transformer.layers.0.mlp"
  std::vector<std::shared_ptr<Quantizer>> activations;  // the block's activation quantizers
  struct Weight {
    std::shared_ptr<AffineQuantizer> quantizer;
    at::Tensor weight;  // the FP weight it quantizes
  };
  std::vector<Weight> weights;
  sam::BlockTap* tap = nullptr;  // sees the block's inputs and output as the model runs
  std::function<at::Tensor(const std::vector<at::Tensor>& inputs)> forward;
  bool in_encoder = false;
};

// The blocks that have quantizers, in the seed's order (encoder blocks' attention then MLP,
// the neck, each decoder layer's self attention, token-to-image attention, MLP,
// image-to-token attention, then the final attention).
std::vector<ReconBlock> reconstruction_blocks(QuantizedSam& qsam);

// Where reconstruction is, for a progress line.
struct ReconStatus {
  size_t block = 0, blocks = 0;  // 0-based index of the block at work, and how many there are
  std::string name;
  std::string stage;  // "collect" (samples done / total in iter / iters) or "train"
  int64_t iter = 0, iters = 0;
  double rec_loss = 0, round_loss = 0, b = 0;
};
using ReconProgress = std::function<void(const ReconStatus&)>;

struct ReconBlockResult {
  std::string block;
  // The block's output MSE against FP32 on the calibration data: after calibration, after
  // training, and as the block is left (after training, or after calibration when training
  // made it worse and the block went back to its calibrated state).
  double mse_before = 0, mse_trained = 0, mse_after = 0;
  bool reverted = false;
  double seconds = 0;  // collecting its data and training it
  double seconds_per_iter = 0;
  bool resumed = false;  // finished by an earlier run and read back from the checkpoint
};

// A result as the report and the checkpoint hold it ({"block", "mse_before", "mse_after",
// "mse_trained", "reverted", "seconds", "seconds_per_iter"}), and back (throws
// nlohmann::json::exception on a malformed entry).
nlohmann::json to_json(const ReconBlockResult& result);
ReconBlockResult recon_result_from_json(const nlohmann::json& entry);

struct ReconOptions {
  ReconConfig config;
  uint64_t seed = 0;
  // Resume file ("" for none), and what identifies the run that may continue from it (model,
  // config, seed, calibration set): a checkpoint of another run is an error.
  std::string checkpoint;
  std::string fingerprint;
  // In-memory block data (bytes) before spilling to disk when keep_gpu is false.
  size_t memory_budget = size_t(8) << 30;
  // Stops after this many blocks, as if killed (tests of resuming).
  size_t stop_after = std::numeric_limits<size_t>::max();
  // The seed keeps whatever training gives. By default a block whose error rose goes back to
  // its calibrated state; true keeps the seed's behaviour.
  bool keep_worse = false;
  ReconProgress progress;
};

// Reconstructs every block of a calibrated, simulating model on `count` samples; leaves it
// simulating with drop off and the rounding hardened (saved codes take it). Finished blocks
// found in options.checkpoint are restored instead of being run again. As in the seed, more
// than 16 samples turn keep_gpu off.
std::vector<ReconBlockResult> reconstruct(QuantizedSam& qsam, size_t count, const SampleSource& source,
                                          const ReconOptions& options);

// Collects one block's data from the model as it now is (quantized: every quantizer
// simulating; FP: every quantizer off).
void collect_block_data(QuantizedSam& qsam, ReconBlock& block, size_t count, const SampleSource& source,
                        BlockData& data, const ReconProgress& progress = nullptr);

// Trains one block on its data with the seed's loss and schedules; `seed` fixes every random
// choice (sample order, QDrop masks). Unless keep_worse, a block whose error rose is put back
// as calibration left it (its scales, and nearest rounding of its weights).
ReconBlockResult reconstruct_block(ReconBlock& block, const BlockData& data, const ReconConfig& config, uint64_t seed,
                                   bool keep_worse = false, const ReconProgress& progress = nullptr);

// The block's output MSE against FP32 over its data, every quantizer applied fully.
double block_mse(ReconBlock& block, const BlockData& data);

// The seed's lp_loss with p = 2: squared error summed over dim 1, averaged over the rest.
at::Tensor lp_loss(const at::Tensor& pred, const at::Tensor& target);

}  // namespace ptq4sam::quant
