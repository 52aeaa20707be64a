// torch.save's zip format, written: used to make official-format checkpoints (random ViT-B
// models in benches and tests) and to exercise the reader on every dtype and view.
#include <map>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/zip_archive.h"
#include "util/error.h"

namespace ptq4sam::io {
namespace {

const char* storage_class(at::ScalarType type, const std::string& path) {
  switch (type) {
    case at::kFloat: return "FloatStorage";
    case at::kHalf: return "HalfStorage";
    case at::kBFloat16: return "BFloat16Storage";
    case at::kDouble: return "DoubleStorage";
    case at::kLong: return "LongStorage";
    case at::kInt: return "IntStorage";
    case at::kShort: return "ShortStorage";
    case at::kChar: return "CharStorage";
    case at::kByte: return "ByteStorage";
    case at::kBool: return "BoolStorage";
    default: throw Error(path, "cannot save dtype " + std::string(c10::toString(type)));
  }
}

class PickleWriter {
 public:
  std::string bytes;
  void op(char c) { bytes.push_back(c); }
  void global(const std::string& module, const std::string& name) { bytes += "c" + module + "\n" + name + "\n"; }
  void str(const std::string& s) {
    op('X');
    const uint32_t n = uint32_t(s.size());
    bytes.append(reinterpret_cast<const char*>(&n), 4);
    bytes += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      op('J');
      const int32_t i = int32_t(v);
      bytes.append(reinterpret_cast<const char*>(&i), 4);
    } else {
      op('\x8a');
      op('\x08');
      bytes.append(reinterpret_cast<const char*>(&v), 8);
    }
  }
  void ordered_dict() {
    global("collections", "OrderedDict");
    op(')');
    op('R');
  }
};

}  // namespace

void save_checkpoint(const std::string& path, const StateDict& state, bool with_metadata) {
  // One storage entry per distinct storage; views refer to it with their offset and strides.
  std::map<const void*, std::pair<std::string, at::Tensor>> storages;
  std::vector<at::Tensor> storage_order;
  PickleWriter p;
  p.op('\x80');
  p.op('\x02');
  p.ordered_dict();
  p.op('(');
  for (const auto& name : state.keys()) {
    const at::Tensor& t = state.at(name);
    const c10::Storage& storage = t.storage();
    const void* id = storage.data();
    if (!storages.count(id)) {
      const int64_t numel = int64_t(storage.nbytes() / t.element_size());
      at::Tensor flat = at::empty({0}, t.options()).set_(storage, 0, {numel}, {1});
      storages[id] = {std::to_string(storage_order.size()), flat};
      storage_order.push_back(flat);
    }
    const auto& [key, flat] = storages[id];
    p.str(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');
    p.op('(');
    p.str("storage");
    p.global("torch", storage_class(t.scalar_type(), path));
    p.str(key);
    p.str("cpu");
    p.integer(flat.numel());
    p.op('t');
    p.op('Q');
    p.integer(t.storage_offset());
    p.op('(');
    for (const int64_t s : t.sizes()) p.integer(s);
    p.op('t');
    p.op('(');
    for (const int64_t s : t.strides()) p.integer(s);
    p.op('t');
    p.op('\x89');
    p.ordered_dict();
    p.op('t');
    p.op('R');
  }
  p.op('u');
  if (with_metadata) {
    p.op('}');
    p.str("_metadata");
    p.ordered_dict();
    p.op('(');
    p.str("");
    p.op('}');
    p.str("version");
    p.integer(1);
    p.op('s');
    p.op('u');
    p.op('s');
    p.op('b');
  }
  p.op('.');

  write_file_atomic(path, [&](std::ostream& out) {
    ZipWriter zip(out, path);
    const std::string prefix = "archive/";
    zip.add(prefix + "data.pkl", p.bytes.data(), p.bytes.size());
    zip.add(prefix + "byteorder", "little", 6);
    for (size_t i = 0; i < storage_order.size(); ++i) {
      const at::Tensor& flat = storage_order[i];
      zip.add(prefix + "data/" + std::to_string(i), flat.data_ptr(), uint64_t(flat.numel()) * flat.element_size());
    }
    zip.add(prefix + "version", "3\n", 2);
    zip.finish();
  });
}

}  // namespace ptq4sam::io
