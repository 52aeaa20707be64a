// torch.save's zip format, written: used to make official-format checkpoints (random ViT-B
// models in benches and tests) and to exercise the reader on every dtype and view.
#include <zlib.h>

#include <map>

#include "io/atomic_file.h"
#include "io/checkpoint.h"
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

struct ZipWriter {
  struct Record {
    std::string name;
    uint32_t crc;
    uint64_t size, offset;
  };
  std::ostream& out;
  uint64_t offset = 0;
  std::vector<Record> records;
  std::string path;

  static void put16(std::string& s, uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
  static void put32(std::string& s, uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }

  void add(const std::string& name, const void* data, uint64_t size) {
    if (size >= 0xFFFFFFFFull || offset >= 0xFFFFFFFFull) throw Error(path, "checkpoint entries over 4 GB are not supported");
    const uint32_t crc = uint32_t(crc32_z(crc32_z(0, nullptr, 0), static_cast<const Bytef*>(data), size));
    // Like torch.save, pad the local header's extra field so that data starts 64-byte aligned.
    const uint64_t base = offset + 30 + name.size() + 4;
    const uint16_t pad = uint16_t((64 - base % 64) % 64);
    std::string h;
    put32(h, 0x04034b50);
    put16(h, 20); put16(h, 0); put16(h, 0); put16(h, 0); put16(h, 0);
    put32(h, crc); put32(h, uint32_t(size)); put32(h, uint32_t(size));
    put16(h, uint16_t(name.size())); put16(h, uint16_t(4 + pad));
    h += name;
    put16(h, 0xFFFF); put16(h, pad);  // private extra field id, then padding
    h.append(pad, 'Z');
    out.write(h.data(), std::streamsize(h.size()));
    out.write(static_cast<const char*>(data), std::streamsize(size));
    records.push_back({name, crc, size, offset});
    offset += h.size() + size;
  }

  void finish() {
    std::string dir;
    for (const auto& r : records) {
      put32(dir, 0x02014b50);
      put16(dir, 20); put16(dir, 20); put16(dir, 0); put16(dir, 0); put16(dir, 0); put16(dir, 0);
      put32(dir, r.crc); put32(dir, uint32_t(r.size)); put32(dir, uint32_t(r.size));
      put16(dir, uint16_t(r.name.size())); put16(dir, 0); put16(dir, 0); put16(dir, 0); put16(dir, 0);
      put32(dir, 0); put32(dir, uint32_t(r.offset));
      dir += r.name;
    }
    std::string end;
    put32(end, 0x06054b50);
    put16(end, 0); put16(end, 0); put16(end, uint16_t(records.size())); put16(end, uint16_t(records.size()));
    put32(end, uint32_t(dir.size())); put32(end, uint32_t(offset)); put16(end, 0);
    out.write(dir.data(), std::streamsize(dir.size()));
    out.write(end.data(), std::streamsize(end.size()));
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
    ZipWriter zip{out};
    zip.path = path;
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
