#pragma once
// Reconstruction's checkpoint file (safetensors): the learned state of every finished block
// (activation scales, AGQ scales and taus, AdaRound's hardened rounding) and their results,
// so that a killed run continues where it stopped and ends with the same result.
#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "quant/reconstruct.h"

namespace ptq4sam::quant {

// A block's activation quantizer parameters as named tensors ("<quantizer>.scale", and
// ".zero_point" or AGQ's ".tau"), on the CPU: what the checkpoint stores and a revert restores.
std::vector<std::pair<std::string, at::Tensor>> activation_params(const ReconBlock& block);

// Sets them back; `tensor(name)` finds each one (on the block's device).
void set_activation_params(ReconBlock& block, const std::function<at::Tensor(const std::string&)>& tensor);

// Writes (atomically) the state of blocks[0 .. results.size()) and their results, under
// `fingerprint`, which identifies the run.
void write_checkpoint(const std::string& path, const std::string& fingerprint, const std::vector<ReconBlock>& blocks,
                      const std::vector<ReconBlockResult>& results);

// Restores the finished blocks into `blocks` (their tensors moved to `device`) and returns their
// results, marked resumed. Errors name the file: not a checkpoint, another run's, malformed,
// or blocks that are not this model's.
std::vector<ReconBlockResult> read_checkpoint(const std::string& path, const std::string& fingerprint,
                                              std::vector<ReconBlock>& blocks, const at::Device& device);

}  // namespace ptq4sam::quant
