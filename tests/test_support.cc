#include "test_support.h"

#include "io/checkpoint.h"
#include "util/error.h"
#include "sam/random_weights.h"

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <sys/wait.h>

namespace ptq4sam::test {

CommandResult run_cli(const std::string& args) { return run_cli_with_env("", args); }

CommandResult run_cli_with_env(const std::string& env, const std::string& args) {
  const std::string command = (env.empty() ? "" : "env " + env + " ") + std::string(PTQ4SAM_BINARY) + " " + args + " 2>&1";
  CommandResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) result.output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_small_model(const std::string& path, uint64_t seed) {
  io::save_checkpoint(path, sam::random_state_dict(sam::vit_config(64, 2, 2, {1}), seed));
}

// Pickle pieces for hand-made files.
std::string unicode(const std::string& s) {
  const uint32_t n = uint32_t(s.size());
  return std::string("X") + std::string(reinterpret_cast<const char*>(&n), 4) + s;
}
std::string long8(int64_t v) { return std::string("\x8a\x08", 2) + std::string(reinterpret_cast<const char*>(&v), 8); }
std::string int_tuple(const std::vector<int64_t>& values) {
  std::string t = "(";
  for (const int64_t v : values) t += long8(v);
  return t + "t";
}

// The stream of a legacy torch.save file (`_use_new_zipfile_serialization=False`) up to its
// object: the magic number, the protocol version 1001 and an empty system-info dict.
std::string legacy_header() {
  return std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e", 15) +
         std::string("\x80\x02M\xe9\x03.", 6) + "\x80\x02}.";
}

// A legacy file holding one float tensor "w" viewed with `sizes` and `strides` on a storage
// that claims `claimed` elements and stores `data`.
std::string legacy_file(int64_t claimed, const std::vector<float>& data, const std::vector<int64_t>& sizes,
                        const std::vector<int64_t>& strides) {
  std::string out = legacy_header();
  out += "\x80\x02}(" + unicode("w") + "ctorch._utils\n_rebuild_tensor_v2\n((" + unicode("storage") +
         "ctorch\nFloatStorage\n" + unicode("0") + unicode("cpu") + long8(claimed) + "NtQ" + long8(0) +
         int_tuple(sizes) + int_tuple(strides) + "\x89" + "ccollections\nOrderedDict\n)RtRu.";
  out += "\x80\x02]" + unicode("0") + "a.";  // storage keys
  const int64_t count = int64_t(data.size());
  out += std::string(reinterpret_cast<const char*>(&count), 8);
  out += std::string(reinterpret_cast<const char*>(data.data()), data.size() * 4);
  return out;
}

}  // namespace ptq4sam::test
