// libFuzzer's entry for one target, named at compile time (PTQ4SAM_FUZZ_TARGET): a contract
// violation aborts, so libFuzzer keeps the input as a crash.
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>

#include "targets.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // One core per fuzzer: several targets run side by side.
  at::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    ptq4sam::fuzz::run_target(PTQ4SAM_FUZZ_TARGET, data, size);
  } catch (const ptq4sam::fuzz::ContractViolation& e) {
    std::fprintf(stderr, "contract violation: %s\n", e.what());
    std::abort();
  }
  return 0;
}
