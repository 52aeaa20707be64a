#pragma once
// Reader for torch.save checkpoints (the zip format of the official SAM .pth files).
#include <ATen/ATen.h>

#include <string>
#include <unordered_map>
#include <vector>

namespace ptq4sam::io {

// Named tensors in file order.
class StateDict {
 public:
  void insert(const std::string& name, at::Tensor tensor);
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  // Throws ptq4sam::Error naming `source()` when absent.
  const at::Tensor& at(const std::string& name) const;
  const std::vector<std::string>& keys() const { return keys_; }
  size_t size() const { return keys_.size(); }
  const std::string& source() const { return source_; }
  void set_source(std::string source) { source_ = std::move(source); }
  // Removes and returns a tensor, so that a model taking ownership leaves no second copy.
  at::Tensor take(const std::string& name);
  // The entries under `prefix` ("state_dict."), with the prefix removed; same source.
  StateDict under(const std::string& prefix) const;

 private:
  std::string source_;
  std::vector<std::string> keys_;
  std::unordered_map<std::string, at::Tensor> index_;
};

// Loads every tensor of a torch.save checkpoint whose pickle root is a (Ordered)dict (nested
// dicts are flattened with '.': mmdetection's {'meta', 'state_dict'} gives "state_dict.<key>",
// Megvii's {'model', 'optimizer', ...} gives "model.<key>"; other values are skipped). Both of
// torch.save's formats: the zip archive (torch >= 1.6) and the legacy stream of pickles
// (`_use_new_zipfile_serialization=False`, as mmdetection's model zoo publishes). Storages
// shared between views are read once; tensors keep their dtype, shape and strides. Never runs
// pickled code. Throws ptq4sam::Error naming the file for anything it cannot read; a legacy
// file's storages together may not claim more bytes than the file holds.
StateDict load_checkpoint(const std::string& path);

// Writes tensors in torch.save's zip format (protocol-2 pickle of an OrderedDict, one storage
// entry per distinct storage, views keep their offset and strides), readable by torch.load and
// by load_checkpoint. Atomic. With `with_metadata`, the OrderedDict carries a `_metadata`
// attribute as a module's state_dict() does.
void save_checkpoint(const std::string& path, const StateDict& state, bool with_metadata = true);

}  // namespace ptq4sam::io
