#pragma once
// The fuzz targets' entry points: each feeds one input, as bytes, through one of the readers a
// user points at files from the internet, exactly as the CLI calls it. libFuzzer's mains
// (fuzz_main.cc) and the corpus replay test (tests/fuzz_replay_test.cc) share them, so CI
// checks every corpus and crash file without clang.
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ptq4sam::fuzz {

// An input broke the readers' contract: an exception other than ptq4sam::Error, or an error
// message that is not one line naming the input. (Crashes, leaks and allocations past the
// limit are the sanitizers' and libFuzzer's to catch.)
class ContractViolation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

enum class Outcome { kAccepted, kRejected };

// The targets by name: checkpoint, safetensors, artifact, npy, coco_annotations,
// coco_results, qconfig, prompt_options, image.
const std::vector<std::string>& target_names();

// Runs `data` through the named target. Returns whether the reader accepted it or refused it
// with a one-line ptq4sam::Error naming the input; throws ContractViolation otherwise, and
// std::invalid_argument for an unknown target name.
Outcome run_target(const std::string& target, const uint8_t* data, size_t size);

}  // namespace ptq4sam::fuzz
