#include "io/checkpoint.h"

#include <cstring>
#include <fstream>
#include <iterator>
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

StateDict StateDict::under(const std::string& prefix) const {
  StateDict out;
  out.set_source(source_);
  for (const auto& key : keys_)
    if (key.size() > prefix.size() && key.compare(0, prefix.size(), prefix) == 0)
      out.insert(key.substr(prefix.size()), index_.at(key));
  return out;
}

namespace {

// Dicts nested deeper than this are no checkpoint (and a dict holding itself would never end).
constexpr int kMaxDictDepth = 32;

void flatten(const PickleValuePtr& dict, const std::string& prefix, StateDict& out, const std::string& where,
             int depth = 0) {
  if (depth > kMaxDictDepth)
    throw Error(where, "dicts nested more than " + std::to_string(kMaxDictDepth) + " deep (not a checkpoint)");
  for (const auto& [key, value] : dict->dict) {
    if (key->kind != PickleValue::Kind::String) throw Error(where, "state dict has a non-string key");
    const std::string name = prefix + key->string_value;
    if (value->kind == PickleValue::Kind::Tensor) {
      out.insert(name, value->tensor);
    } else if (value->kind == PickleValue::Kind::Dict) {
      flatten(value, name + ".", out, where, depth + 1);
    }
    // Other values (epochs, configs) are not tensors and not part of a model.
  }
}

PickleValuePtr load_zip(const std::string& path) {
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
    if (numel < 0 || uint64_t(numel) > entry->size || entry->size < bytes)
      throw Error(path, "tensor data '" + entry->name + "' holds " + std::to_string(entry->size) +
                            " bytes, expected " + std::to_string(bytes));
    zip.verify(*entry);
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
  return unpickler.load();
}

// The legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c (a LONG1 of
// 10 bytes after a PROTO opcode), then pickles the protocol version (1001) and a dict of system
// facts, then the object with ('storage', type, key, location, numel, view) persistent ids, then
// the sorted list of storage keys; then, per key in that order, an int64 element count and the
// storage's raw little-endian bytes.
constexpr char kLegacyMagic[] = "\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e";
constexpr size_t kLegacyMagicSize = sizeof(kLegacyMagic) - 1;

bool is_legacy(std::string_view head) {
  return head.size() >= 2 + kLegacyMagicSize && uint8_t(head[0]) == 0x80 &&
         head.substr(2, kLegacyMagicSize) == std::string_view(kLegacyMagic, kLegacyMagicSize);
}

// Thrown when the pickles run past the bytes read so far, and the file has more.
struct NeedMoreBytes {};

// The pickles of a legacy file, parsed from its first bytes: the object, its storages
// (allocated, to be filled) in the order of the key list, and where their data starts.
struct LegacyPickles {
  PickleValuePtr root;
  std::vector<std::pair<std::string, at::Tensor>> storages;
  uint64_t data_offset = 0;
};

LegacyPickles parse_legacy_pickles(const std::string& path, std::string_view head, uint64_t file_size) {
  size_t offset = 0;
  // Each pickle of the stream, parsed from `offset`; storages only in the object's.
  auto next_pickle = [&](const char* what, const Unpickler::StorageLoader& loader) {
    Unpickler unpickler(path + " (" + what + " at byte " + std::to_string(offset) + ")", head.substr(offset), loader);
    try {
      PickleValuePtr value = unpickler.load();
      offset += unpickler.consumed();
      return value;
    } catch (const Error&) {
      if (unpickler.ran_out() && head.size() < file_size) throw NeedMoreBytes{};
      throw;
    }
  };
  const Unpickler::StorageLoader no_storages = [&](const std::string&, at::ScalarType, int64_t) -> at::Tensor {
    throw Error(path, "legacy checkpoint header refers to tensor data");
  };
  offset = 2 + kLegacyMagicSize;
  const PickleValuePtr protocol = next_pickle("protocol version", no_storages);
  if (protocol->kind != PickleValue::Kind::Int || protocol->int_value != 1001)
    throw Error(path, "unsupported legacy torch.save protocol version (expected 1001)");
  const PickleValuePtr sys_info = next_pickle("system info", no_storages);
  if (sys_info->kind != PickleValue::Kind::Dict) throw Error(path, "legacy checkpoint has no system info dict");
  for (const auto& [key, value] : sys_info->dict)
    if (key->kind == PickleValue::Kind::String && key->string_value == "little_endian" && value->int_value == 0)
      throw Error(path, "big-endian checkpoints are not supported");

  // Storages are allocated (untouched) when the object names them and filled from the data
  // that follows; together they may not claim more bytes than the file holds.
  std::map<std::string, at::Tensor> declared;
  uint64_t claimed = 0;
  const Unpickler::StorageLoader declare = [&](const std::string& key, at::ScalarType dtype, int64_t numel) {
    const auto known = declared.find(key);
    if (known != declared.end()) return known->second;
    const uint64_t bytes = uint64_t(numel) * at::elementSize(dtype);
    if (numel < 0 || uint64_t(numel) > file_size || bytes > file_size - std::min(claimed, file_size))
      throw Error(path, "tensor storage '" + key + "' of " + std::to_string(numel) +
                            " elements is larger than what the file holds");
    claimed += bytes;
    at::Tensor storage = at::empty({numel}, at::TensorOptions().dtype(dtype));
    declared.emplace(key, storage);
    return storage;
  };
  LegacyPickles out;
  out.root = next_pickle("object", declare);
  const PickleValuePtr keys = next_pickle("storage keys", no_storages);
  if (keys->kind != PickleValue::Kind::List) throw Error(path, "legacy checkpoint has no storage key list");
  for (const auto& key : keys->items) {
    if (key->kind != PickleValue::Kind::String) throw Error(path, "legacy storage key is not a string");
    const auto it = declared.find(key->string_value);
    if (it == declared.end()) throw Error(path, "legacy storage key '" + key->string_value + "' names no tensor");
    out.storages.emplace_back(it->first, it->second);
  }
  if (out.storages.size() != declared.size()) throw Error(path, "legacy checkpoint lacks the data of some tensor storages");
  out.data_offset = offset;
  return out;
}

// The pickles are parsed from the file's first bytes (more when they run longer), the
// storages' data read straight into the tensors: the file is never held whole in memory.
PickleValuePtr load_legacy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open file");
  in.seekg(0, std::ios::end);
  const uint64_t file_size = uint64_t(in.tellg());
  LegacyPickles pickles;
  for (uint64_t head_size = std::min<uint64_t>(file_size, 1 << 20);; head_size = std::min(file_size, 4 * head_size)) {
    std::string head(head_size, '\0');
    in.seekg(0);
    if (!in.read(head.data(), std::streamsize(head_size))) throw Error(path, "read error");
    try {
      pickles = parse_legacy_pickles(path, head, file_size);
      break;
    } catch (const NeedMoreBytes&) {
    }
  }
  uint64_t offset = pickles.data_offset;
  in.seekg(std::streamoff(offset));
  for (auto& [key, storage] : pickles.storages) {
    int64_t count = 0;
    if (file_size - offset < 8) throw Error(path, "truncated: tensor data of storage '" + key + "' is missing");
    in.read(reinterpret_cast<char*>(&count), 8);
    offset += 8;
    if (count != storage.numel())
      throw Error(path, "storage '" + key + "' holds " + std::to_string(count) + " elements, expected " +
                            std::to_string(storage.numel()));
    const uint64_t bytes = uint64_t(storage.numel()) * storage.element_size();
    if (file_size - offset < bytes) throw Error(path, "truncated: tensor data of storage '" + key + "' is cut short");
    if (!in.read(static_cast<char*>(storage.data_ptr()), std::streamsize(bytes))) throw Error(path, "read error");
    offset += bytes;
  }
  return pickles.root;
}

std::string read_head(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path, "cannot open file");
  std::string head(n, '\0');
  in.read(head.data(), std::streamsize(n));
  head.resize(size_t(in.gcount()));
  return head;
}

}  // namespace

StateDict load_checkpoint(const std::string& path) {
  // The zip reader names what is wrong with anything that is not a legacy file either.
  const PickleValuePtr root = is_legacy(read_head(path, 64)) ? load_legacy(path) : load_zip(path);
  if (root->kind != PickleValue::Kind::Dict) throw Error(path, "checkpoint root is not a dict of tensors");
  StateDict state;
  state.set_source(path);
  flatten(root, "", state, path);
  if (state.size() == 0) throw Error(path, "checkpoint holds no tensors");
  return state;
}

}  // namespace ptq4sam::io
