#include "io/checkpoint.h"

#include <map>

#include "io/pickle.h"
#include "io/zip_archive.h"
#include "util/error.h"

namespace ptq4sam::io {

void StateDict::insert(const std::string& name, at::Tensor tensor) {
  if (!index_.count(name)) keys_.push_back(name);
  index_[name] = std::move(tensor);
}

const at::Tensor& StateDict::at(const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw Error(source_, "missing tensor '" + name + "'");
  return it->second;
}

at::Tensor StateDict::take(const std::string& name) {
  at::Tensor t = at(name);
  index_.erase(name);
  keys_.erase(std::find(keys_.begin(), keys_.end(), name));
  return t;
}

namespace {

void flatten(const PickleValuePtr& dict, const std::string& prefix, StateDict& out, const std::string& where) {
  for (const auto& [key, value] : dict->dict) {
    if (key->kind != PickleValue::Kind::String) throw Error(where, "state dict has a non-string key");
    const std::string name = prefix + key->string_value;
    if (value->kind == PickleValue::Kind::Tensor) {
      out.insert(name, value->tensor);
    } else if (value->kind == PickleValue::Kind::Dict) {
      flatten(value, name + ".", out, where);
    }
    // Other values (epochs, configs) are not tensors and not part of a model.
  }
}

}  // namespace

StateDict load_checkpoint(const std::string& path) {
  ZipArchive zip(path);
  const ZipEntry* pickle_entry = nullptr;
  for (const auto& e : zip.entries()) {
    const std::string suffix = "data.pkl";
    if (e.name.size() >= suffix.size() && e.name.compare(e.name.size() - suffix.size(), suffix.size(), suffix) == 0 &&
        (e.name.size() == suffix.size() || e.name[e.name.size() - suffix.size() - 1] == '/')) {
      pickle_entry = &e;
      break;
    }
  }
  if (!pickle_entry) throw Error(path, "zip archive has no data.pkl (not a torch.save checkpoint)");
  const std::string prefix = pickle_entry->name.substr(0, pickle_entry->name.size() - 8);
  if (const ZipEntry* order = zip.find(prefix + "byteorder")) {
    if (zip.read_string(*order) != "little") throw Error(path, "big-endian checkpoints are not supported");
  }
  const std::string pickle = zip.read_string(*pickle_entry);

  std::map<std::string, at::Tensor> storages;
  auto load_storage = [&](const std::string& key, at::ScalarType dtype, int64_t numel) {
    const auto cached = storages.find(key);
    if (cached != storages.end()) return cached->second;
    const ZipEntry* entry = zip.find(prefix + "data/" + key);
    if (!entry) throw Error(path, "missing tensor data '" + prefix + "data/" + key + "'");
    const uint64_t bytes = uint64_t(numel) * at::elementSize(dtype);
    if (numel < 0 || entry->size < bytes)
      throw Error(path, "tensor data '" + entry->name + "' holds " + std::to_string(entry->size) +
                            " bytes, expected " + std::to_string(bytes));
    at::Tensor storage = at::empty({numel}, at::TensorOptions().dtype(dtype));
    if (entry->size == bytes) {
      zip.read(*entry, storage.data_ptr());
    } else {
      std::string raw = zip.read_string(*entry);
      std::memcpy(storage.data_ptr(), raw.data(), bytes);
    }
    storages.emplace(key, storage);
    return storage;
  };

  Unpickler unpickler(path + ":" + pickle_entry->name, pickle, load_storage);
  const PickleValuePtr root = unpickler.load();
  if (root->kind != PickleValue::Kind::Dict) throw Error(path, "checkpoint root is not a dict of tensors");
  StateDict state;
  state.set_source(path);
  flatten(root, "", state, path);
  if (state.size() == 0) throw Error(path, "checkpoint holds no tensors");
  return state;
}

}  // namespace ptq4sam::io
