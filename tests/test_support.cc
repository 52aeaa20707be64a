#include "test_support.h"

#include "io/checkpoint.h"
#include "sam/random_weights.h"

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <sys/wait.h>

namespace ptq4sam::test {

CommandResult run_cli(const std::string& args) {
  const std::string command = std::string(PTQ4SAM_BINARY) + " " + args + " 2>&1";
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

}  // namespace ptq4sam::test
