#include "io/pickle.h"

#include <cstring>
#include <unordered_map>

#include "util/error.h"

namespace ptq4sam::io {
namespace {

using Kind = PickleValue::Kind;

PickleValuePtr make(Kind kind) {
  auto v = std::make_shared<PickleValue>();
  v->kind = kind;
  return v;
}

PickleValuePtr make_int(int64_t i, Kind kind = Kind::Int) {
  auto v = make(kind);
  v->int_value = i;
  return v;
}

PickleValuePtr make_string(std::string s) {
  auto v = make(Kind::String);
  v->string_value = std::move(s);
  return v;
}

// torch's storage classes and the dtype of their elements.
const std::unordered_map<std::string, at::ScalarType>& storage_types() {
  static const std::unordered_map<std::string, at::ScalarType> types = {
      {"torch.FloatStorage", at::kFloat},   {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.DoubleStorage", at::kDouble},
      {"torch.LongStorage", at::kLong},     {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},
      {"torch.ByteStorage", at::kByte},     {"torch.BoolStorage", at::kBool},
  };
  return types;
}

int64_t as_int(const PickleValuePtr& v, const char* what, const std::function<void(std::string)>& fail) {
  if (v->kind != Kind::Int && v->kind != Kind::Bool) fail(std::string("expected an integer for ") + what);
  return v->int_value;
}

}  // namespace

PickleValue::~PickleValue() {
  std::vector<PickleValuePtr> pending;
  const auto adopt = [&pending](PickleValue& v) {
    for (auto& item : v.items) pending.push_back(std::move(item));
    for (auto& [key, value] : v.dict) {
      pending.push_back(std::move(key));
      pending.push_back(std::move(value));
    }
    v.items.clear();
    v.dict.clear();
  };
  adopt(*this);
  while (!pending.empty()) {
    PickleValuePtr v = std::move(pending.back());
    pending.pop_back();
    // The last owner empties it first, so that its own destructor has nothing to recurse into.
    if (v && v.use_count() == 1) adopt(*v);
  }
}

namespace {

// What is still alive once its owners are gone is kept so by a cycle (a list appended to itself, a
// dict holding itself): emptied, it goes too.
void empty_survivors(const std::vector<std::weak_ptr<PickleValue>>& containers) {
  for (const auto& weak : containers) {
    if (const PickleValuePtr container = weak.lock()) {
      std::vector<PickleValuePtr> items = std::move(container->items);
      auto dict = std::move(container->dict);
      container->items.clear();
      container->dict.clear();
    }
  }
}

}  // namespace

Unpickler::LoadedTree::~LoadedTree() {
  root.reset();
  empty_survivors(containers);
}

// A pickle that failed half-way may have left cycles among what it built.
Unpickler::~Unpickler() {
  stack_.clear();
  memo_.clear();
  empty_survivors(containers_);
}

PickleValuePtr Unpickler::make_container(PickleValue::Kind kind) {
  PickleValuePtr v = make(kind);
  containers_.push_back(v);
  return v;
}

Unpickler::Unpickler(std::string where, std::string_view data, StorageLoader load_storage)
    : where_(std::move(where)), data_(data), load_storage_(std::move(load_storage)) {}

void Unpickler::run_out() {
  ran_out_ = true;
  fail("unexpected end of pickle data");
}

void Unpickler::fail(const std::string& problem) const {
  throw Error(where_, problem + " (pickle byte " + std::to_string(pos_) + ")");
}

uint8_t Unpickler::byte() {
  if (pos_ >= data_.size()) run_out();
  return static_cast<uint8_t>(data_[pos_++]);
}

std::string_view Unpickler::bytes(size_t n) {
  if (n > data_.size() - pos_) run_out();
  auto s = data_.substr(pos_, n);
  pos_ += n;
  return s;
}

PickleValuePtr Unpickler::pop() {
  if (stack_.empty()) fail("pickle stack underflow");
  auto v = stack_.back();
  stack_.pop_back();
  return v;
}

std::vector<PickleValuePtr> Unpickler::pop_to_mark() {
  std::vector<PickleValuePtr> items;
  while (true) {
    auto v = pop();
    if (v->kind == Kind::Mark) break;
    items.push_back(std::move(v));
  }
  std::reverse(items.begin(), items.end());
  return items;
}

PickleValuePtr Unpickler::make_global(const std::string& module, const std::string& name) {
  const std::string full = module + "." + name;
  static const char* const allowed[] = {
      "collections.OrderedDict", "torch._utils._rebuild_tensor_v2",
      "torch._utils._rebuild_parameter", "builtins.dict"};
  bool ok = storage_types().count(full) > 0;
  for (const char* a : allowed) ok = ok || full == a;
  if (!ok) fail("forbidden global '" + full + "' (only tensors and dicts are loaded, no code is run)");
  auto v = make(Kind::Global);
  v->string_value = full;
  return v;
}

PickleValuePtr Unpickler::persistent_load(const PickleValuePtr& pid) {
  // ('storage', <StorageType>, key, location, numel)
  if (pid->kind != Kind::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Kind::String ||
      pid->items[0]->string_value != "storage" || pid->items[1]->kind != Kind::Global ||
      pid->items[2]->kind != Kind::String)
    fail("unsupported persistent id");
  const auto type = storage_types().find(pid->items[1]->string_value);
  if (type == storage_types().end()) fail("unsupported storage type '" + pid->items[1]->string_value + "'");
  const int64_t numel = as_int(pid->items[4], "storage size", [this](std::string p) { fail(p); });
  auto v = make(Kind::Storage);
  v->tensor = load_storage_(pid->items[2]->string_value, type->second, numel);
  return v;
}

PickleValuePtr Unpickler::reduce(const PickleValuePtr& callable, const PickleValuePtr& args) {
  if (callable->kind != Kind::Global) fail("REDUCE on a non-callable");
  const std::string& name = callable->string_value;
  if (name == "collections.OrderedDict" || name == "builtins.dict") return make_container(Kind::Dict);
  if (name == "torch._utils._rebuild_parameter") {
    if (args->kind != Kind::Tuple || args->items.empty() || args->items[0]->kind != Kind::Tensor)
      fail("malformed _rebuild_parameter arguments");
    return args->items[0];
  }
  if (name == "torch._utils._rebuild_tensor_v2") {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (args->kind != Kind::Tuple || args->items.size() < 4 || args->items[0]->kind != Kind::Storage ||
        args->items[2]->kind != Kind::Tuple || args->items[3]->kind != Kind::Tuple)
      fail("malformed _rebuild_tensor_v2 arguments");
    auto on_fail = [this](std::string p) { fail(p); };
    const at::Tensor& storage = args->items[0]->tensor;
    const int64_t offset = as_int(args->items[1], "storage offset", on_fail);
    std::vector<int64_t> sizes, strides;
    for (const auto& s : args->items[2]->items) sizes.push_back(as_int(s, "tensor size", on_fail));
    for (const auto& s : args->items[3]->items) strides.push_back(as_int(s, "tensor stride", on_fail));
    if (sizes.size() != strides.size()) fail("tensor size and stride differ in length");
    // The view must lie inside its storage, and hold no more elements than it (an expanded or
    // overlapping view would turn a few stored bytes into an unbounded tensor). Every product
    // and sum is checked for overflow.
    if (offset < 0) fail("negative storage offset");
    int64_t last = offset, numel = 1;
    bool empty = false;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] < 0 || strides[i] < 0) fail("negative tensor size or stride");
      if (sizes[i] == 0) empty = true;
      if (sizes[i] > 1 && strides[i] == 0) fail("tensor view with stride 0 (an expanded tensor) is not supported");
      int64_t span = 0;
      if (__builtin_mul_overflow(sizes[i] > 0 ? sizes[i] - 1 : 0, strides[i], &span) ||
          __builtin_add_overflow(last, span, &last) || __builtin_mul_overflow(numel, sizes[i], &numel))
        fail("tensor view size overflows");
    }
    if (!empty && (last >= storage.numel() || numel > storage.numel())) fail("tensor view exceeds its storage");
    if (empty && offset > storage.numel()) fail("tensor view exceeds its storage");
    auto v = make(Kind::Tensor);
    v->tensor = storage.as_strided(sizes, strides, offset);
    return v;
  }
  fail("cannot call '" + name + "'");
}

PickleValuePtr Unpickler::load() {
  while (true) {
    const uint8_t op = byte();
    switch (op) {
      case 0x80: byte(); break;                             // PROTO
      case 0x95: bytes(8); break;                           // FRAME
      case '.': {                                           // STOP
        auto tree = std::make_shared<LoadedTree>();
        tree->root = pop();
        tree->containers = std::move(containers_);
        containers_.clear();
        // The caller's pointer to the root shares ownership of the whole tree (aliasing).
        PickleValue* root = tree->root.get();
        return PickleValuePtr(tree, root);
      }
      case '(': stack_.push_back(make(Kind::Mark)); break;  // MARK
      case 'N': stack_.push_back(make(Kind::None)); break;
      case 0x88: stack_.push_back(make_int(1, Kind::Bool)); break;  // NEWTRUE
      case 0x89: stack_.push_back(make_int(0, Kind::Bool)); break;  // NEWFALSE
      case 'K': stack_.push_back(make_int(byte())); break;          // BININT1
      case 'M': {                                                   // BININT2
        const auto b = bytes(2);
        stack_.push_back(make_int(uint8_t(b[0]) | (uint8_t(b[1]) << 8)));
        break;
      }
      case 'J': {  // BININT
        int32_t i;
        std::memcpy(&i, bytes(4).data(), 4);
        stack_.push_back(make_int(i));
        break;
      }
      case 0x8a: {  // LONG1
        const uint8_t n = byte();
        const auto b = bytes(n);
        if (n > 8) fail("integer too large");
        // Little-endian two's complement, gathered unsigned (a signed shift into the sign bit is
        // undefined) and then taken as int64.
        uint64_t bits = 0;
        for (int i = n - 1; i >= 0; --i) bits = (bits << 8) | uint8_t(b[i]);
        int64_t value = static_cast<int64_t>(bits);
        if (n > 0 && n < 8 && (uint8_t(b[n - 1]) & 0x80)) value -= int64_t(1) << (8 * n);
        stack_.push_back(make_int(value));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian double
        const auto b = bytes(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | uint8_t(b[i]);
        auto v = make(Kind::Float);
        std::memcpy(&v->float_value, &bits, 8);
        stack_.push_back(v);
        break;
      }
      case 'X': case 0x8c: case 0x8d: case 'T': case 'U': case 'B': case 'C': {
        // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINSTRING, SHORT_BINSTRING, BINBYTES, SHORT_BINBYTES
        uint64_t n = 0;
        if (op == 0x8c || op == 'U' || op == 'C') {
          n = byte();
        } else if (op == 0x8d) {
          std::memcpy(&n, bytes(8).data(), 8);
        } else {
          uint32_t n32;
          std::memcpy(&n32, bytes(4).data(), 4);
          n = n32;
        }
        stack_.push_back(make_string(std::string(bytes(n))));
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        auto read_line = [this]() {
          const size_t end = data_.find('\n', pos_);
          if (end == std::string_view::npos) run_out();
          std::string s(data_.substr(pos_, end - pos_));
          pos_ = end + 1;
          return s;
        };
        const std::string module = read_line();
        const std::string name = read_line();
        stack_.push_back(make_global(module, name));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = pop();
        auto module = pop();
        if (name->kind != Kind::String || module->kind != Kind::String) fail("malformed STACK_GLOBAL");
        stack_.push_back(make_global(module->string_value, name->string_value));
        break;
      }
      case ')': stack_.push_back(make(Kind::Tuple)); break;  // EMPTY_TUPLE
      case ']': stack_.push_back(make_container(Kind::List)); break;  // EMPTY_LIST
      case '}': stack_.push_back(make_container(Kind::Dict)); break;  // EMPTY_DICT
      case 't': {                                            // TUPLE
        auto v = make(Kind::Tuple);
        v->items = pop_to_mark();
        stack_.push_back(v);
        break;
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        auto v = make(Kind::Tuple);
        v->items.resize(op - 0x84);
        for (size_t i = v->items.size(); i-- > 0;) v->items[i] = pop();
        stack_.push_back(v);
        break;
      }
      case 'l': {  // LIST
        auto v = make_container(Kind::List);
        v->items = pop_to_mark();
        stack_.push_back(v);
        break;
      }
      case 'a': {  // APPEND
        auto item = pop();
        if (stack_.empty() || stack_.back()->kind != Kind::List) fail("APPEND to a non-list");
        stack_.back()->items.push_back(item);
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_to_mark();
        if (stack_.empty() || stack_.back()->kind != Kind::List) fail("APPENDS to a non-list");
        for (auto& i : items) stack_.back()->items.push_back(i);
        break;
      }
      case 's': {  // SETITEM
        auto value = pop();
        auto key = pop();
        if (stack_.empty() || stack_.back()->kind != Kind::Dict) fail("SETITEM on a non-dict");
        stack_.back()->dict.emplace_back(key, value);
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_to_mark();
        if (items.size() % 2) fail("SETITEMS with an odd number of items");
        if (stack_.empty() || stack_.back()->kind != Kind::Dict) fail("SETITEMS on a non-dict");
        for (size_t i = 0; i < items.size(); i += 2) stack_.back()->dict.emplace_back(items[i], items[i + 1]);
        break;
      }
      case 'd': {  // DICT
        auto items = pop_to_mark();
        if (items.size() % 2) fail("DICT with an odd number of items");
        auto v = make_container(Kind::Dict);
        for (size_t i = 0; i < items.size(); i += 2) v->dict.emplace_back(items[i], items[i + 1]);
        stack_.push_back(v);
        break;
      }
      case 'q': case 'r': case 0x94: {  // BINPUT, LONG_BINPUT, MEMOIZE
        size_t index = memo_.size();
        if (op == 'q') index = byte();
        if (op == 'r') {
          uint32_t i;
          std::memcpy(&i, bytes(4).data(), 4);
          index = i;
        }
        if (stack_.empty()) fail("memo of an empty stack");
        memo_[uint32_t(index)] = stack_.back();
        break;
      }
      case 'h': case 'j': {  // BINGET, LONG_BINGET
        size_t index = 0;
        if (op == 'h') {
          index = byte();
        } else {
          uint32_t i;
          std::memcpy(&i, bytes(4).data(), 4);
          index = i;
        }
        const auto found = memo_.find(uint32_t(index));
        if (found == memo_.end()) fail("memo index out of range");
        stack_.push_back(found->second);
        break;
      }
      case 'Q': {  // BINPERSID
        auto pid = pop();
        stack_.push_back(persistent_load(pid));
        break;
      }
      case 'R': {  // REDUCE
        auto args = pop();
        auto callable = pop();
        stack_.push_back(reduce(callable, args));
        break;
      }
      case 'b': {  // BUILD: only an OrderedDict's attributes (torch's `_metadata`), which we drop
        auto state = pop();
        if (stack_.empty() || stack_.back()->kind != Kind::Dict) fail("BUILD on an unsupported object");
        break;
      }
      case '0': pop(); break;  // POP
      case '1': pop_to_mark(); break;  // POP_MARK
      default: {
        char hex[8];
        std::snprintf(hex, sizeof(hex), "0x%02x", op);
        fail(std::string("unsupported pickle opcode ") + hex);
      }
    }
  }
}

}  // namespace ptq4sam::io
