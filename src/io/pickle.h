#pragma once
// A restricted unpickler for torch.save checkpoints. It rebuilds only what a state_dict holds
// (dicts, OrderedDicts, tuples, lists, scalars, strings and tensors) and never runs pickled code:
// any global outside a short allow-list is an error naming it.
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ptq4sam::io {

struct PickleValue;
using PickleValuePtr = std::shared_ptr<PickleValue>;

struct PickleValue {
  PickleValue() = default;
  PickleValue(const PickleValue&) = delete;
  PickleValue& operator=(const PickleValue&) = delete;
  // Frees nested values with a worklist instead of recursion, so that a pickle of a million
  // nested tuples cannot overflow the stack when its tree goes away.
  ~PickleValue();

  enum class Kind { None, Bool, Int, Float, String, Tuple, List, Dict, Global, Storage, Tensor, Mark };
  Kind kind = Kind::None;
  int64_t int_value = 0;  // Bool and Int
  double float_value = 0;
  std::string string_value;  // String; Global's "module.name"
  std::vector<PickleValuePtr> items;  // Tuple and List
  std::vector<std::pair<PickleValuePtr, PickleValuePtr>> dict;  // Dict, in insertion order
  at::Tensor tensor;  // Storage (flat, 1-D) and Tensor
};

class Unpickler {
 public:
  // Loads the bytes of storage `key` as a flat tensor of `numel` elements of `dtype`.
  using StorageLoader =
      std::function<at::Tensor(const std::string& key, at::ScalarType dtype, int64_t numel)>;

  // `where` names the source in error messages (e.g. "model.pth:archive/data.pkl").
  Unpickler(std::string where, std::string_view data, StorageLoader load_storage);
  // Frees what a failed load built, cycles included.
  ~Unpickler();
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

  // Reads one pickle, up to and including its STOP opcode. The root owns the values the load
  // built: once the last pointer to it goes, every list and dict of the load is emptied, so
  // that values which refer to themselves are freed too (keep the root while using a part).
  PickleValuePtr load();
  // Bytes of `data` read so far: where the next pickle of a stream of pickles begins.
  size_t consumed() const { return pos_; }
  // Whether load() failed because the data ended (more bytes of a longer stream might do).
  bool ran_out() const { return ran_out_; }

 private:
  [[noreturn]] void fail(const std::string& problem) const;
  [[noreturn]] void run_out();
  uint8_t byte();
  std::string_view bytes(size_t n);
  PickleValuePtr pop();
  std::vector<PickleValuePtr> pop_to_mark();
  PickleValuePtr make_global(const std::string& module, const std::string& name);
  PickleValuePtr reduce(const PickleValuePtr& callable, const PickleValuePtr& args);
  PickleValuePtr persistent_load(const PickleValuePtr& pid);
  PickleValuePtr make_container(PickleValue::Kind kind);

  struct LoadedTree {
    PickleValuePtr root;
    std::vector<std::weak_ptr<PickleValue>> containers;
    ~LoadedTree();
  };

  std::string where_;
  std::string_view data_;
  size_t pos_ = 0;
  bool ran_out_ = false;
  StorageLoader load_storage_;
  std::vector<PickleValuePtr> stack_;
  // A map, as Python's: a few bytes of LONG_BINPUT may name any index without allocating up to it.
  std::unordered_map<uint32_t, PickleValuePtr> memo_;
  std::vector<std::weak_ptr<PickleValue>> containers_;  // every list and dict made so far
};

}  // namespace ptq4sam::io
