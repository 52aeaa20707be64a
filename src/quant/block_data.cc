#include "quant/block_data.h"

#include <torch/torch.h>

#include <atomic>
#include <filesystem>
#include <limits>

#include <unistd.h>

#include "util/error.h"

namespace ptq4sam::quant {
namespace {

size_t bytes_of(const std::vector<at::Tensor>& tensors) {
  size_t total = 0;
  for (const auto& t : tensors) total += size_t(t.numel()) * t.element_size();
  return total;
}

}  // namespace

BlockData::BlockData(bool keep_on_device, size_t memory_budget)
    : keep_on_device_(keep_on_device), memory_budget_(keep_on_device ? std::numeric_limits<size_t>::max() : memory_budget) {}

BlockData::~BlockData() {
  if (folder_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(folder_, ec);
}

void BlockData::add(Entry entry) {
  Stored stored;
  stored.quant_count = entry.quant_inputs.size();
  stored.fp_count = entry.fp_inputs.size();
  std::vector<at::Tensor> all = entry.quant_inputs;
  all.insert(all.end(), entry.fp_inputs.begin(), entry.fp_inputs.end());
  all.push_back(entry.fp_output);
  const size_t bytes = bytes_of(all);
  if (in_memory_ + bytes <= memory_budget_) {
    if (!keep_on_device_) {
      for (auto& t : entry.quant_inputs) t = t.cpu();
      for (auto& t : entry.fp_inputs) t = t.cpu();
      entry.fp_output = entry.fp_output.cpu();
    }
    stored.entry = std::move(entry);
    in_memory_ += bytes;
  } else {
    if (folder_.empty()) {
      static std::atomic<int> serial{0};
      const auto folder = std::filesystem::temp_directory_path() /
                          ("ptq4sam-recon-" + std::to_string(::getpid()) + "-" + std::to_string(serial++));
      std::filesystem::create_directories(folder);
      folder_ = folder.string();
    }
    stored.file = folder_ + "/entry_" + std::to_string(entries_.size()) + ".pt";
    for (auto& t : all) t = t.cpu();
    try {
      torch::save(all, stored.file);
    } catch (const c10::Error& e) {
      throw Error(stored.file, std::string("cannot spill reconstruction data: ") + e.what_without_backtrace());
    }
    ++spilled_;
  }
  entries_.push_back(std::move(stored));
}

BlockData::Entry BlockData::get(size_t index, const at::Device& device) const {
  const Stored& stored = entries_.at(index);
  Entry entry;
  if (stored.file.empty()) {
    entry = stored.entry;
  } else {
    std::vector<at::Tensor> all;
    torch::load(all, stored.file);
    entry.quant_inputs.assign(all.begin(), all.begin() + int64_t(stored.quant_count));
    entry.fp_inputs.assign(all.begin() + int64_t(stored.quant_count), all.begin() + int64_t(stored.quant_count + stored.fp_count));
    entry.fp_output = all.back();
  }
  for (auto& t : entry.quant_inputs) t = t.to(device);
  for (auto& t : entry.fp_inputs) t = t.to(device);
  entry.fp_output = entry.fp_output.to(device);
  return entry;
}

}  // namespace ptq4sam::quant
