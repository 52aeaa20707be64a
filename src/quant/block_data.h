#pragma once
// The calibration data of one reconstruction block (quant/reconstruct.h), held in memory up to a
// budget and spilled to a private temporary folder past it.
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace ptq4sam::quant {

// A block's calibration data, one entry per sample: the quantized model's inputs, the FP
// model's inputs and output. Entries stay on the model's device (keep_gpu) or go to the CPU,
// and past `memory_budget` bytes they are written to files in a private temporary folder.
class BlockData {
 public:
  BlockData(bool keep_on_device, size_t memory_budget);
  ~BlockData();
  BlockData(const BlockData&) = delete;
  BlockData& operator=(const BlockData&) = delete;

  struct Entry {
    std::vector<at::Tensor> quant_inputs, fp_inputs;
    at::Tensor fp_output;
  };
  void add(Entry entry);
  Entry get(size_t index, const at::Device& device) const;
  size_t size() const { return entries_.size(); }
  size_t spilled() const { return spilled_; }

 private:
  struct Stored {
    Entry entry;       // empty when spilled
    std::string file;  // set when spilled
    size_t quant_count = 0, fp_count = 0;
  };
  bool keep_on_device_;
  size_t memory_budget_, in_memory_ = 0, spilled_ = 0;
  std::string folder_;
  std::vector<Stored> entries_;
};

}  // namespace ptq4sam::quant
