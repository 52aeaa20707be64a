#pragma once
// Shared helpers for the tests: where the reference fixtures are, temp dirs, running the CLI.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace ptq4sam::test {

// $PTQ4SAM_FIXTURES, else ../shared/fixtures beside the source tree; empty when absent.
inline std::string fixtures_dir() {
  const char* env = std::getenv("PTQ4SAM_FIXTURES");
  const std::string dir = env && *env ? env : std::string(PTQ4SAM_SOURCE_DIR) + "/../shared/fixtures";
  return std::filesystem::is_directory(dir) ? dir : std::string();
}

#define PTQ4SAM_REQUIRE_FIXTURES(sub)                                                              \
  const std::string fixtures = ::ptq4sam::test::fixtures_dir();                                    \
  if (fixtures.empty() || !std::filesystem::exists(fixtures + "/" + sub))                          \
    GTEST_SKIP() << "reference fixtures not found (set PTQ4SAM_FIXTURES or put ../shared/fixtures " \
                    "beside the source tree)";

// A fresh directory under the system temp dir, removed when the object goes away.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "ptq4sam_test_XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs the ptq4sam binary with `args` (shell-quoted by the caller).
CommandResult run_cli(const std::string& args);
// The same with `env` ("NAME=value ...") set for the command alone.
CommandResult run_cli_with_env(const std::string& env, const std::string& args);

// The message of the ptq4sam::Error that `f` throws, or "" when it throws none.
std::string error_of(const std::function<void()>& f);

// Writes `bytes` to `path`.
void write_bytes(const std::string& path, const std::string& bytes);
std::string read_bytes(const std::string& path);

// Writes a small random SAM (encoder embed 64, depth 2, global block 1; standard prompt
// encoder and decoder) in the official checkpoint format: loads and runs in a fraction of a second.
void write_small_model(const std::string& path, uint64_t seed);

// Pickle pieces for hand-made checkpoint files: a BINUNICODE string, a LONG1 of 8 bytes, a
// tuple of them.
std::string unicode(const std::string& s);
std::string long8(int64_t v);
std::string int_tuple(const std::vector<int64_t>& values);
// The stream of a legacy torch.save file (`_use_new_zipfile_serialization=False`) up to its
// object: the magic number, the protocol version 1001 and an empty system-info dict.
std::string legacy_header();
// A legacy file holding one float tensor "w" viewed with `sizes` and `strides` on a storage
// that claims `claimed` elements and stores `data`.
std::string legacy_file(int64_t claimed, const std::vector<float>& data, const std::vector<int64_t>& sizes = {4},
                        const std::vector<int64_t>& strides = {1});

}  // namespace ptq4sam::test
